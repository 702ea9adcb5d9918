//! Analytics API against a small generated plant, on SQLite and on PostgreSQL (fresh database
//! per test; PostgreSQL from THREADLINE_TEST_DATABASE_URL, skipped loudly when unreachable,
//! failing with CI=true).
//!
//! The plant: 40 units U00..U39 of part FG-1, first seen 20 minutes apart from 2026-03-01T06:00Z.
//! U00–U19 consumed bearing lot BRG-1 (SKF batch B-1), U20–U39 BRG-2 (SKF batch B-2). Every unit
//! has a sub-assembly S00..S39 (part SA-1) that consumed grease GRS-1 (even units) or GRS-2
//! (odd). One press operation each at ST10: PRESS-1 for U00–U29, PRESS-2 for U30–U39;
//! operators OP-A (even) / OP-B (odd); work orders WO-1 (U00–U19) / WO-2 (U20–U39).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use threadline_aggregator::api::{AppState, auth::Tokens, router};
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

fn ts(i: usize, extra_s: usize) -> String {
    let m = i * 20;
    format!(
        "2026-03-01T{:02}:{:02}:{:02}.000000Z",
        6 + m / 60,
        m % 60,
        extra_s
    )
}

fn plant() -> Vec<String> {
    let mut s = vec![
        "INSERT INTO items (id, kind, ext_id, part, placeholder, supplier, supplier_batch, qty) VALUES \
         (1, 'lot', 'BRG-1', 'P-6202', FALSE, 'SKF', 'B-1', 1000), \
         (2, 'lot', 'BRG-2', 'P-6202', FALSE, 'SKF', 'B-2', 1000), \
         (3, 'lot', 'GRS-1', 'GREASE', FALSE, 'Klueber', 'K-1', 20), \
         (4, 'lot', 'GRS-2', 'GREASE', FALSE, 'Klueber', 'K-2', 20)"
            .to_owned(),
    ];
    let mut edge = 1;
    for i in 0..40 {
        let (u, sub) = (100 + i, 200 + i);
        s.push(format!(
            "INSERT INTO items (id, kind, ext_id, part, placeholder, work_order, line, first_seen_at) VALUES \
             ({u}, 'unit', 'U{i:02}', 'FG-1', FALSE, '{}', 'line-1', '{}'), \
             ({sub}, 'unit', 'S{i:02}', 'SA-1', FALSE, 'WO-S', 'line-1', '{}')",
            if i < 20 { "WO-1" } else { "WO-2" },
            ts(i, 0),
            ts(i, 1)
        ));
        let brg = if i < 20 { 1 } else { 2 };
        let grs = if i % 2 == 0 { 3 } else { 4 };
        s.push(format!(
            "INSERT INTO edges (id, parent_id, child_id, relation, qty, station, valid_from) VALUES \
             ({}, {u}, {brg}, 'consumed', 1, 'ST10', '{}'), \
             ({}, {sub}, {grs}, 'consumed', 1, 'ST05', '{}'), \
             ({}, {u}, {sub}, 'assembled', 1, 'ST20', '{}')",
            edge,
            ts(i, 10),
            edge + 1,
            ts(i, 2),
            edge + 2,
            ts(i, 20)
        ));
        edge += 3;
        s.push(format!(
            "INSERT INTO operations (id, unit_id, station, operation, equipment, operator, recipe, completed_at, result, out_of_spec, environment, gateway) VALUES \
             ({}, {u}, 'ST10', 'press-fit', '{}', '{}', '3', '{}', 'pass', FALSE, '[]', 'gw-1')",
            1000 + i,
            if i < 30 { "PRESS-1" } else { "PRESS-2" },
            if i % 2 == 0 { "OP-A" } else { "OP-B" },
            ts(i, 30)
        ));
    }
    s
}

async fn load(db: &Db) {
    for sql in plant() {
        match db {
            Db::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(|_| ()),
            Db::Sqlite(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("plant statement failed: {e}\n{sql}"));
    }
}

fn app(db: Db) -> Router {
    router(AppState {
        db,
        ingest: Arc::new(Default::default()),
        tokens: Arc::new(Tokens::default()),
    })
}

async fn postgres_db() -> Option<(Db, String, String)> {
    use sqlx::Connection as _;
    let admin = std::env::var("THREADLINE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL at {admin} unreachable ({e}) and CI=true");
            }
            eprintln!("SKIPPING the PostgreSQL half: {admin} unreachable ({e})");
            return None;
        }
    };
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("bad THREADLINE_TEST_DATABASE_URL {admin}"),
    };
    let db = Db::connect(&url, 4).await.expect("connect test database");
    Some((db, admin, name))
}

async fn each_backend<F, Fut>(body: F)
where
    F: Fn(Router, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, 2).await.expect("sqlite");
    load(&db).await;
    body(app(db), "sqlite").await;
    if let Some((db, admin, name)) = postgres_db().await {
        use sqlx::Connection as _;
        load(&db).await;
        body(app(db.clone()), "postgres").await;
        if let Db::Postgres(p) = db {
            p.close().await;
        }
        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("router");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

fn factor<'a>(v: &'a Value, kind: &str, id: &str) -> &'a Value {
    v["factors"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["kind"] == kind && f["id"] == id))
        .unwrap_or_else(|| panic!("no factor {kind} {id} in {v}"))
}

fn close(got: &Value, want: f64) {
    let g = got.as_f64().unwrap_or(f64::NAN);
    assert!(
        ((g - want) / want).abs() < 1e-9,
        "p_value {g:e}, want {want:e}"
    );
}

const ROUTE: &str = "/api/v1/analysis/common-cause";

#[tokio::test]
async fn common_cause_ranks_the_shared_batch_first() {
    each_backend(|app, be| async move {
        // 7 of 8 complaint units carry BRG-2; U01 carries BRG-1; NOPE does not exist.
        let units = [
            "U01", "U21", "U22", "U23", "U25", "U27", "U29", "U38", "NOPE", "U21",
        ];
        let (st, v) = post(&app, ROUTE, json!({"units": units, "limit": 100})).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!(v["units"], 8, "[{be}] duplicates count once");
        assert_eq!(v["missing"], json!(["NOPE"]), "[{be}]");
        // Default population: FG-1 units first seen from U01 to U38 (sub-assemblies are SA-1).
        assert_eq!(v["population"], 38, "[{be}] {v}");
        assert_eq!(v["population_parts"], json!(["FG-1"]), "[{be}]");

        // Top: the hour U21–U23 were pressed in (3 of 3: the strongest evidence here), then
        // the bearing lot, its batch and the work order (the same 7 units: tied, by kind).
        let top: Vec<(&str, &str)> = v["factors"].as_array().unwrap()[..4]
            .iter()
            .map(|f| (f["kind"].as_str().unwrap(), f["id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            top,
            [
                ("station_hour", "ST10@2026-03-01T13"),
                ("lot", "BRG-2"),
                ("supplier_batch", "B-2"),
                ("work_order", "WO-2")
            ],
            "[{be}] {v}"
        );
        for (kind, id) in [("lot", "BRG-2"), ("supplier_batch", "B-2")] {
            let f = factor(&v, kind, id);
            assert_eq!(
                (f["affected"].as_u64(), f["population_with"].as_u64()),
                (Some(7), Some(19)),
                "[{be}] {f}"
            );
            // scipy: hypergeom.sf(6, 38, 19, 8) = 0.021122295315843705; table [[7,1],[12,18]].
            close(&f["p_value"], 0.021122295315843705);
            let lift = f["lift"].as_f64().unwrap();
            assert!(
                (lift - (7.0 / 8.0) / (19.0 / 38.0)).abs() < 1e-12,
                "[{be}] {lift}"
            );
        }
        // Grease of the sub-assembly: a component lot (U22, U38 are even).
        let g = factor(&v, "component_lot", "GRS-1");
        assert_eq!(
            (g["affected"].as_u64(), g["population_with"].as_u64()),
            (Some(2), Some(19)),
            "[{be}] {g}"
        );
        // scipy: hypergeom.sf(1, 38, 19, 8) = 0.9788777046841562.
        close(&g["p_value"], 0.9788777046841562);
        assert!(
            v["factors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| !(f["kind"] == "lot" && f["id"] == "GRS-1")),
            "[{be}] grease is not a direct lot"
        );
        // A factor every unit has: p = 1, lift 1.
        let skf = factor(&v, "supplier", "SKF");
        assert_eq!(
            (skf["affected"].as_u64(), skf["population_with"].as_u64()),
            (Some(8), Some(38)),
            "[{be}]"
        );
        close(&skf["p_value"], 1.0);
        // Process factors: PRESS-2 has U30..U38 in the span, one complaint unit.
        let p2 = factor(&v, "equipment", "PRESS-2");
        assert_eq!(
            (p2["affected"].as_u64(), p2["population_with"].as_u64()),
            (Some(1), Some(9)),
            "[{be}]"
        );
        // scipy: hypergeom.sf(0, 38, 9, 8) = 0.9122323411996837.
        close(&p2["p_value"], 0.9122323411996837);
        let wo = factor(&v, "work_order", "WO-2");
        assert_eq!(
            (wo["affected"].as_u64(), wo["population_with"].as_u64()),
            (Some(7), Some(19)),
            "[{be}]"
        );
        let sh = factor(&v, "station_hour", "ST10@2026-03-01T13");
        // U21 (13:00), U22 (13:20), U23 (13:40) are all in that hour and so is nobody else.
        assert_eq!(
            (sh["affected"].as_u64(), sh["population_with"].as_u64()),
            (Some(3), Some(3)),
            "[{be}] {sh}"
        );
        // scipy: hypergeom.sf(2, 38, 3, 8) = 0.006638217164532954.
        close(&sh["p_value"], 0.006638217164532954);
        let ps: Vec<f64> = v["factors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["p_value"].as_f64().unwrap())
            .collect();
        assert!(
            ps.windows(2).all(|w| w[0] <= w[1]),
            "[{be}] ranked by p_value: {ps:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn common_cause_explicit_population_single_unit_and_bad_input() {
    each_backend(|app, be| async move {
        // Explicit population: every FG-1 unit; complaint = all of BRG-2's first 8.
        let units: Vec<String> = (20..28).map(|i| format!("U{i}")).collect();
        let (st, v) = post(
            &app,
            ROUTE,
            json!({"units": units, "population": {"part": "FG-1", "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!(v["population"], 40, "[{be}]");
        let f = factor(&v, "supplier_batch", "B-2");
        assert_eq!((f["affected"].as_u64(), f["population_with"].as_u64()), (Some(8), Some(20)), "[{be}]");
        // scipy: hypergeom.sf(7, 40, 20, 8) = 0.001638001638001638 (fisher_exact
        // [[8,0],[12,20]], alternative='greater' agrees).
        close(&f["p_value"], 0.001638001638001638);

        // One unit: its span is one instant; the population is itself; every p is 1.
        let (st, v) = post(&app, ROUTE, json!({"units": ["U05"]})).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!((v["units"].as_u64(), v["population"].as_u64()), (Some(1), Some(1)), "[{be}]");
        assert!(v["factors"].as_array().unwrap().iter().all(|f| f["p_value"] == 1.0), "[{be}] {v}");

        // Bad input is refused with the reason.
        let (st, v) = post(&app, ROUTE, json!({"units": []})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {v}");
        let (st, v) = post(&app, ROUTE, json!({"unit": ["U01"]})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {v}");
        assert!(v["error"].as_str().unwrap().contains("unknown field"), "[{be}] {v}");
        // Only unknown serials: nothing to analyse, but an answer.
        let (st, v) = post(&app, ROUTE, json!({"units": ["X1", "X2"]})).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!((v["units"].as_u64(), v["population"].as_u64()), (Some(0), Some(0)), "[{be}]");
        assert_eq!(v["missing"], json!(["X1", "X2"]), "[{be}]");
    })
    .await;
}
