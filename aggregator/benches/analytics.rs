//! Analytics benchmark on a generated plant (see `threadline-datagen`, whose injected causes it
//! uses).
//!
//! ```text
//! threadline-datagen --db postgres://postgres@127.0.0.1:5432/threadline_bench --units 2000000
//! cargo bench -p threadline-aggregator --bench analytics -- \
//!     --db postgres://postgres@127.0.0.1:5432/threadline_bench
//! ```
//!
//! Measures, through the library functions the HTTP handlers call (JSON serialization
//! included), p50/p99/max over `--n` calls after a warm-up:
//! - SPC: the I-MR chart of `press.pressure` at ST10 over a window of 10,000 operations (the
//!   window moves on every call), and the chart computation alone on 10,000 values;
//! - common-cause: 100 serials that failed the ST30 leak test, taken from the injected bad
//!   lot's products (a different 100 on every call), against the default population.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use threadline_aggregator::analytics::spc::{self, ChartKind, Sample, SpcRequest};
use threadline_aggregator::analytics::{self, CommonCauseRequest};
use threadline_aggregator::store::Db;

struct Args {
    db: String,
    n: usize,
}

fn args() -> Args {
    let mut a = Args {
        db: std::env::var("THREADLINE_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/threadline_bench".to_owned()),
        n: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--db" => a.db = it.next().unwrap_or_default(),
            "--n" => a.n = it.next().and_then(|v| v.parse().ok()).unwrap_or(30),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn summary(name: &str, mut d: Vec<Duration>) -> String {
    d.sort();
    format!(
        "{name:<34} n={:<4} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        d.len(),
        pct(&d, 0.5),
        pct(&d, 0.99),
        d.last().map(|x| x.as_secs_f64() * 1e3).unwrap_or(0.0)
    )
}

async fn strings(db: &Db, sql: &str) -> anyhow::Result<Vec<String>> {
    Ok(match db {
        Db::Postgres(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await?
        }
        Db::Sqlite(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await?
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = args();
    let db = Db::connect(&a.db, 4).await?;
    let units = strings(
        &db,
        "SELECT CAST(count(*) AS TEXT) FROM items WHERE kind = 'unit'",
    )
    .await?;
    println!("backend={} units={}", db.backend(), units.join(""));

    // SPC: windows of 10,000 ST10 operations. datagen's first product is built at its START,
    // 2026-01-05T06:00:00Z.
    let t0: DateTime<Utc> = threadline_shared::time::parse("2026-01-05T06:00:00Z")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // One ST10 operation per finished product, a product every 6 s (datagen's takt).
    let span = chrono::Duration::seconds(6 * 10_000);
    let mut spc_times = Vec::with_capacity(a.n);
    let mut n_points = 0;
    let mut flagged = 0;
    for i in 0..a.n + 3 {
        let from = t0 + chrono::Duration::seconds(6 * 10_000 * i as i64);
        let req = SpcRequest {
            station: "ST10".to_owned(),
            parameter: "press.pressure".to_owned(),
            from: Some(from),
            to: Some(from + span),
            chart: ChartKind::Imr,
            subgroup: 5,
        };
        let t = Instant::now();
        let s = spc::spc(&db, &req)
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = serde_json::to_vec(&s)?;
        if i >= 3 {
            spc_times.push(t.elapsed());
        }
        n_points = s.n;
        flagged = s.violating_points;
    }
    println!(
        "{}  ({n_points} points, {flagged} flagged in the last)",
        summary("spc imr, 10,000 points", spc_times)
    );
    let samples: Vec<Sample> = (0..10_000)
        .map(|i| Sample {
            unit: format!("SN{i:010}"),
            completed_at: format!("{i:08}"),
            value: 200.0 + ((i * 7919) % 97) as f64 / 10.0,
        })
        .collect();
    let mut compute = Vec::new();
    for _ in 0..a.n {
        let t = Instant::now();
        let c = spc::chart(&samples, ChartKind::Imr, 0, Some(180.0), Some(220.0))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = serde_json::to_vec(&c.points)?;
        compute.push(t.elapsed());
    }
    println!("{}", summary("spc chart compute only, 10,000", compute));

    // Common-cause: failed leak tests of the bad lot's products.
    let lot = strings(
        &db,
        "SELECT ext_id FROM items WHERE kind = 'lot' AND ext_id LIKE 'LOT-L3-%' ORDER BY ext_id",
    )
    .await?;
    let bad = lot.get(lot.len() / 2).cloned().unwrap_or_default();
    let failed = strings(
        &db,
        &format!(
            "SELECT u.ext_id FROM items l JOIN edges e ON e.child_id = l.id AND e.relation = 'consumed' \
             JOIN edges a ON a.child_id = e.parent_id AND a.relation = 'assembled' \
             JOIN edges b ON b.child_id = a.parent_id AND b.relation = 'assembled' \
             JOIN items u ON u.id = b.parent_id \
             JOIN operations o ON o.unit_id = u.id AND o.station = 'ST30' AND o.result = 'fail' \
             WHERE l.kind = 'lot' AND l.ext_id = '{bad}' ORDER BY u.ext_id"
        ),
    )
    .await?;
    println!(
        "bad lot {bad}: {} failed finished units to draw complaints from",
        failed.len()
    );
    if failed.len() < 100 {
        anyhow::bail!(
            "fewer than 100 failed units of {bad}: is this a plant with injected causes?"
        );
    }
    let mut cc = Vec::with_capacity(a.n);
    let mut top = String::new();
    let mut population = 0;
    for i in 0..a.n + 2 {
        let start = (i * 37) % (failed.len() - 100 + 1);
        let req = CommonCauseRequest {
            units: failed[start..start + 100].to_vec(),
            population: None,
            limit: None,
        };
        let t = Instant::now();
        let r = analytics::common_cause(&db, &req).await?;
        let _ = serde_json::to_vec(&r)?;
        if i >= 2 {
            cc.push(t.elapsed());
        }
        population = r.population;
        top = r
            .factors
            .iter()
            .take(6)
            .map(|f| {
                format!(
                    "{} {} ({}/{}, p={:.1e})",
                    f.kind, f.id, f.affected, f.population_with, f.p_value
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    println!(
        "{}  (population {population})",
        summary("common-cause, 100 serials", cc)
    );
    println!("top factors of the last: {top}");
    Ok(())
}
