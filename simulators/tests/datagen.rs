//! The benchmark data generator writes a plant the trace queries answer correctly, on both
//! backends (the query benchmark's numbers mean nothing otherwise).

#![allow(clippy::unwrap_used)]

use threadline_aggregator::store::Db;
use threadline_aggregator::trace;
use threadline_simulators::datagen::{Plan, generate};

const UNITS: u64 = 10_000;

/// What every generated plant of `UNITS` units must answer.
async fn check(url: &str) {
    let plan = Plan {
        units: UNITS,
        seed: 7,
    };
    let w = generate(url, &plan).await.unwrap();
    assert_eq!(w.products, UNITS / 5);
    assert_eq!(w.rows["operation_parameters"], (UNITS / 5) * (3 + 4) * 10);
    let db = Db::connect(url, 2).await.unwrap();
    // Every product's five levels hang under the fastener lot (2,000 products < one lot's 20,000).
    let r = trace::recall(&db, "FAST-000000", false).await.unwrap();
    assert_eq!(r.counts.units as u64, UNITS);
    assert!(
        r.counts.shipments > 0 && r.counts.customers > 0,
        "{:?}",
        r.counts
    );
    let report = trace::unit_report(&db, "SN0000000007").await.unwrap();
    assert_eq!(report.operations.len(), 3);
    assert!(report.shipment.is_some());
    assert_eq!(db.count("readings").await.unwrap() as u64, UNITS / 5);
    // The injected causes (2,000 products: one lot per level, so the bad lot is lot 0 and holds
    // every product; the drift window is products 1,000..2,000): ~30 % + ~2 % of the leak tests
    // fail, and PRESS-1's pressure is higher in the window than before it (by half a spread on
    // average, ~3.3 bar: the ramp reaches one spread at the window's end).
    let failed = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS DOUBLE PRECISION) FROM operations WHERE station = 'ST30' AND result = 'fail'",
    )
    .await;
    assert!(
        (500.0..800.0).contains(&failed),
        "{failed} of 2,000 leak tests failed"
    );
    let mean = |window: bool| {
        let cmp = if window { ">=" } else { "<" };
        format!(
            "SELECT AVG(p.value_num) FROM operation_parameters p JOIN operations o ON o.id = p.operation_id \
             JOIN items u ON u.id = o.unit_id WHERE o.station = 'ST10' AND o.equipment = 'PRESS-1' \
             AND p.name = 'press.pressure' AND u.ext_id {cmp} 'SN0000001000'"
        )
    };
    let (before, during) = (
        scalar(&db, &mean(false)).await,
        scalar(&db, &mean(true)).await,
    );
    assert!(
        during - before > 1.5,
        "PRESS-1 {before} bar before the drift, {during} in it"
    );
    if let Db::Postgres(p) = &db {
        // Readings went to their day partitions, not the default one.
        let in_default: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings_default")
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(in_default, 0);
    }
}

/// One floating-point value of `sql` on either backend.
async fn scalar(db: &Db, sql: &str) -> f64 {
    match db {
        Db::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(p)
            .await
            .unwrap(),
        Db::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(p)
            .await
            .unwrap(),
    }
}

#[tokio::test]
async fn sqlite_plant_answers() {
    let dir = tempfile::tempdir().unwrap();
    check(&format!("sqlite://{}", dir.path().join("g.db").display())).await;
}

#[tokio::test]
async fn postgres_plant_answers() {
    let admin = std::env::var("THREADLINE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = match sqlx::PgPool::connect(&admin).await {
        Ok(p) => p,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL at {admin} unreachable ({e}) and CI=true"
            );
            eprintln!(
                "SKIPPED (PostgreSQL at {admin} unreachable: {e}); set THREADLINE_TEST_DATABASE_URL to run"
            );
            return;
        }
    };
    let name = format!("tl_datagen_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    check(&url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await
    .unwrap();
}
