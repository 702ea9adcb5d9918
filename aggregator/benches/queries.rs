//! Trace query benchmark on a generated plant (see `threadline-datagen`).
//!
//! ```text
//! threadline-datagen --db postgres://postgres@127.0.0.1:5432/threadline_bench --units 1000000
//! cargo bench -p threadline-aggregator --bench queries -- \
//!     --db postgres://postgres@127.0.0.1:5432/threadline_bench --plans docs/query-plans.md
//! ```
//!
//! Measures, through the library functions the HTTP handlers call (JSON serialization
//! included): the unit report and the backward trace of random finished units (p50/p99/max over
//! `--n` calls after a warm-up), and the recall of the big fastener lot FAST-000000.
//! `--plans FILE` also writes EXPLAIN (ANALYZE, BUFFERS) of the main queries (PostgreSQL).

use std::time::{Duration, Instant};

use threadline_aggregator::store::Db;
use threadline_aggregator::trace::{self, Direction, ItemKind, TraceRequest};

struct Args {
    db: String,
    n: usize,
    plans: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        db: std::env::var("THREADLINE_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/threadline_bench".to_owned()),
        n: 1000,
        plans: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--db" => a.db = it.next().unwrap_or_default(),
            "--n" => a.n = it.next().and_then(|v| v.parse().ok()).unwrap_or(1000),
            "--plans" => a.plans = it.next(),
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
        "{name:<28} n={:<5} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        d.len(),
        pct(&d, 0.5),
        pct(&d, 0.99),
        d.last().map(|x| x.as_secs_f64() * 1e3).unwrap_or(0.0)
    )
}

/// A tiny deterministic PRNG (xorshift64*), so the bench needs no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Slow statements (sqlx warns above 1 s) show up on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = args();
    let db = Db::connect(&a.db, 4).await?;
    let last: Option<String> = match &db {
        Db::Postgres(p) => sqlx::query_scalar("SELECT max(ext_id) FROM items WHERE kind = 'unit' AND ext_id >= 'SN' AND ext_id < 'SO'").fetch_one(p).await?,
        Db::Sqlite(p) => sqlx::query_scalar("SELECT max(ext_id) FROM items WHERE kind = 'unit' AND ext_id >= 'SN' AND ext_id < 'SO'").fetch_one(p).await?,
    };
    let products: u64 = last
        .as_deref()
        .and_then(|s| s.strip_prefix("SN"))
        .and_then(|s| s.parse::<u64>().ok())
        .map(|n| n + 1)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no generated plant in {}; run threadline-datagen first",
                a.db
            )
        })?;
    let units: i64 = match &db {
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM items WHERE kind = 'unit'")
                .fetch_one(p)
                .await?
        }
        Db::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM items WHERE kind = 'unit'")
                .fetch_one(p)
                .await?
        }
    };
    println!(
        "backend={} units={units} finished products={products}",
        db.backend()
    );
    let mut results: Vec<String> = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let serial = |rng: &mut Rng| format!("SN{:010}", rng.next(products));

    // Warm-up (connections, caches).
    for _ in 0..50 {
        let s = serial(&mut rng);
        trace::unit_report(&db, &s).await?;
    }

    let mut report = Vec::with_capacity(a.n);
    let mut report_bytes = 0usize;
    for _ in 0..a.n {
        let s = serial(&mut rng);
        let t = Instant::now();
        let r = trace::unit_report(&db, &s).await?;
        report_bytes = serde_json::to_vec(&r)?.len();
        report.push(t.elapsed());
    }
    results.push(format!(
        "{}  (last body {report_bytes} B)",
        summary("unit report", report)
    ));

    let mut back = Vec::with_capacity(a.n);
    let mut nodes = 0;
    for _ in 0..a.n {
        let s = serial(&mut rng);
        let t = Instant::now();
        let g = trace::trace(
            &db,
            &TraceRequest::new(ItemKind::Unit, s, Direction::Backward),
        )
        .await?;
        let _ = serde_json::to_vec(&g)?;
        nodes = g.nodes.len();
        back.push(t.elapsed());
    }
    results.push(format!(
        "{}  ({nodes} nodes each)",
        summary("backward trace", back)
    ));

    let mut fwd = Vec::with_capacity(a.n / 4);
    for _ in 0..a.n / 4 {
        let s = serial(&mut rng);
        let t = Instant::now();
        let g = trace::trace(
            &db,
            &TraceRequest::new(
                ItemKind::Unit,
                format!("SA5-{}", &s[2..]),
                Direction::Forward,
            ),
        )
        .await?;
        let _ = serde_json::to_vec(&g)?;
        fwd.push(t.elapsed());
    }
    results.push(summary("forward trace (level 5)", fwd));

    for lot in ["FAST-000000", "LOT-L1-000000"] {
        let mut rec = Vec::new();
        let mut counts = None;
        for _ in 0..5 {
            let t = Instant::now();
            let r = trace::recall(&db, lot, false).await?;
            let body = serde_json::to_vec(&r)?;
            rec.push(t.elapsed());
            counts = Some((r.counts, body.len()));
        }
        if let Some((c, len)) = counts {
            results.push(format!(
                "{}  ({} units, {} containers, {} shipments, {} customers, {len} B)",
                summary(&format!("recall {lot}"), rec),
                c.units,
                c.containers,
                c.shipments,
                c.customers
            ));
        }
    }

    for r in &results {
        println!("{r}");
    }

    if let (Some(path), Db::Postgres(p)) = (&a.plans, &db) {
        let mut md = String::from("# Query plans (EXPLAIN ANALYZE, BUFFERS)\n\n");
        md.push_str(&format!("Captured by `cargo bench -p threadline-aggregator --bench queries -- --plans {path}` on a generated plant: {units} units ({products} finished products), PostgreSQL.\n\n"));
        md.push_str(&format!(
            "Latencies of that run (library call + JSON serialization):\n\n```text\n{}\n```\n\n",
            results.join("\n")
        ));
        let lot_id: i64 = sqlx::query_scalar(
            "SELECT id FROM items WHERE kind = 'lot' AND ext_id = 'FAST-000000'",
        )
        .fetch_one(p)
        .await?;
        let unit_id: i64 =
            sqlx::query_scalar("SELECT id FROM items WHERE kind = 'unit' AND ext_id = $1")
                .bind(serial(&mut rng))
                .fetch_one(p)
                .await?;
        let plans: Vec<(&str, String)> = vec![
            ("Recall of FAST-000000 (trace::recall)", format!(
                "WITH RECURSIVE up(id) AS ( SELECT CAST({lot_id} AS BIGINT) UNION \
                 SELECT o.unit_id FROM operation_materials om JOIN operations o ON o.id = om.operation_id WHERE om.lot_id = {lot_id} UNION \
                 SELECT e.parent_id FROM edges e JOIN up ON e.child_id = up.id \
                 WHERE e.relation IN ('consumed', 'assembled', 'packed', 'shipped') AND e.valid_to IS NULL ) \
                 SELECT i.kind, i.ext_id, i.customer FROM up \
                 CROSS JOIN LATERAL (SELECT kind, ext_id, customer FROM items WHERE items.id = up.id OFFSET 0) i \
                 WHERE i.kind <> 'lot'")),
            ("Backward trace, one BFS level (trace::trace)", format!(
                "SELECT e.id, e.parent_id, e.child_id, e.relation, e.qty, e.station, e.valid_from, e.valid_to, e.closed_reason, \
                 i.kind, i.ext_id, i.part, i.placeholder, i.supplier, i.level, i.customer \
                 FROM edges e JOIN items i ON i.id = e.child_id WHERE e.parent_id = ANY(ARRAY[{unit_id}]::bigint[]) ORDER BY e.id LIMIT 10001")),
            ("Unit report: sub-assembly materials (trace::unit_report)", format!(
                "WITH RECURSIVE sub(id) AS ( SELECT e.child_id FROM edges e \
                 WHERE e.parent_id = {unit_id} AND e.relation = 'assembled' AND e.valid_to IS NULL UNION \
                 SELECT e.child_id FROM sub JOIN edges e ON e.parent_id = sub.id \
                 WHERE e.relation = 'assembled' AND e.valid_to IS NULL ) \
                 SELECT s.ext_id, l.ext_id, l.part, l.supplier, e.qty, e.station FROM sub JOIN items s ON s.id = sub.id AND s.kind = 'unit' \
                 JOIN edges e ON e.parent_id = sub.id AND e.relation IN ('consumed', 'assembled') AND e.valid_to IS NULL \
                 JOIN items l ON l.id = e.child_id AND l.kind = 'lot'")),
            ("Unit report: parameters of all operations (trace::unit_report)", format!(
                "SELECT p.operation_id, p.name, p.value_num, p.value_text, p.unit, p.lsl, p.usl, p.in_spec \
                 FROM operation_parameters p JOIN operations o ON o.id = p.operation_id WHERE o.unit_id = {unit_id} ORDER BY p.operation_id")),
            ("Unit report: containers valid now", format!(
                "WITH RECURSIVE up(id, depth) AS ( SELECT CAST({unit_id} AS BIGINT), 0 UNION \
                 SELECT e.parent_id, up.depth + 1 FROM edges e JOIN up ON e.child_id = up.id \
                 WHERE e.relation = 'packed' AND e.valid_to IS NULL AND up.depth < 16 ) \
                 SELECT i.id, i.ext_id, i.level, MIN(up.depth) FROM up JOIN items i ON i.id = up.id \
                 WHERE up.depth > 0 GROUP BY i.id, i.ext_id, i.level ORDER BY MIN(up.depth), i.ext_id")),
            ("Internal trace: PRESS-1, one hour, press.pressure out of spec (trace::operations)",
                "SELECT o.id, u.ext_id FROM operations o JOIN items u ON u.id = o.unit_id \
                 WHERE o.equipment = 'PRESS-1' AND o.completed_at >= '2026-01-05T10:00:00Z'::timestamptz AND o.completed_at < '2026-01-05T11:00:00Z'::timestamptz \
                 AND EXISTS (SELECT 1 FROM operation_parameters p WHERE p.operation_id = o.id AND p.name = 'press.pressure' AND p.in_spec = false) \
                 ORDER BY o.id LIMIT 1001".to_owned()),
        ];
        for (title, sql) in plans {
            // jit = off as trace::recall sets it for its transaction.
            let mut tx = p.begin().await?;
            sqlx::raw_sql("SET LOCAL jit = off")
                .execute(&mut *tx)
                .await?;
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {sql}"
            )))
            .fetch_all(&mut *tx)
            .await?;
            tx.rollback().await?;
            md.push_str(&format!(
                "## {title}\n\n```sql\n{sql}\n```\n\n```text\n{}\n```\n\n",
                rows.join("\n")
            ));
        }
        std::fs::write(path, md)?;
        println!("plans written to {path}");
    }
    Ok(())
}
