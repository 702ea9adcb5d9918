//! EPCIS 2.0 export throughput: `GET /api/v1/epcis/events` over a whole plant's event log,
//! through the real router, the body consumed as the stream it is.
//!
//! ```text
//! cargo bench -p threadline-aggregator --bench epcis -- [--db URL] [--products N]
//! ```
//!
//! The plant has the shape `threadline-datagen` generates (its module doc): each product a
//! 5-level BOM chain of units (`SN…` finished, `SA2-…` … `SA5-…`), each unit consuming one lot
//! of its level's part (lots of 2 000), level 5 also a fastener lot; 3 operations on a finished
//! unit and 1 on each sub-assembly, 10 parameters and 2 environment values each; a quality
//! check per finished unit; 20 units to a case, 40 cases to a pallet, 2 pallets to a shipment.
//! datagen itself writes the projections only (no event log — the export reads the log), so
//! this bench writes the same plant as trace records through the real write path
//! (`Db::write_batch`, hash chain included), then exports it.
//!
//! Default database: a fresh SQLite file in a temp dir; `--db postgres://…/postgres` makes (and
//! drops) a fresh database on that server. Prints events, bytes, body frames, the largest
//! frame, events/s, and the process's peak RSS before and after the export (a buffered export
//! would grow it by the body size).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use futures::StreamExt as _;
use serde_json::{Value, json};
use threadline_aggregator::api::{AppState, router};
use threadline_aggregator::ingest::{Incoming, decode};
use threadline_aggregator::store::{Batch, Db};
use tower::ServiceExt as _;

const ROOT: &str = "threadline/v1";
const LEVELS: usize = 5;
const LOT_SIZE: usize = 2000;
const CASE_SIZE: usize = 20;
const PALLET_SIZE: usize = 40;

struct Args {
    db: Option<String>,
    products: usize,
}

fn args() -> Args {
    let mut a = Args {
        db: std::env::var("THREADLINE_BENCH_DATABASE_URL").ok(),
        products: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--db" => a.db = it.next(),
            "--products" => a.products = it.next().and_then(|v| v.parse().ok()).unwrap_or(10_000),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn ts(i: usize) -> String {
    let t = chrono::DateTime::from_timestamp(
        1_795_000_000 + (i / 10) as i64,
        (i % 10) as u32 * 100_000_000,
    )
    .unwrap_or_default();
    threadline_shared::time::format(&t)
}

fn unit_id(level: usize, p: usize) -> String {
    if level == 1 {
        format!("SN{p:010}")
    } else {
        format!("SA{level}-{p:010}")
    }
}

fn lot_id(level: usize, p: usize) -> String {
    format!("LOT-L{level}-{:06}", p / LOT_SIZE)
}

fn operation(unit: &str, station: String, op: &str, lots: Vec<String>, n: usize) -> Value {
    let parameters: Vec<Value> = (0..10)
        .map(|k| {
            json!({"name": format!("{op}.p{k}"), "value": 10.0 + ((n * 7 + k) % 97) as f64 * 0.01,
                   "unit": if k % 2 == 0 { "bar" } else { "mm" }, "lsl": 9.5, "usl": 11.5})
        })
        .collect();
    json!({"type":"operation_completed","unit":unit,"station":station,"operation":op,
           "equipment":"EQ-1","operator":"OP0001","recipe":"R7","result":"pass",
           "parameters":parameters,
           "environment":[{"name":"hall.temp","value":21.5,"unit":"°C"},{"name":"hall.rh","value":40.0,"unit":"%"}],
           "materials": lots.into_iter().map(|l| json!({"lot": l, "qty": 1.0})).collect::<Vec<_>>()})
}

/// Every trace record of product `p`, in plant order (lots and packing when they start).
fn product(p: usize, out: &mut Vec<Value>) {
    if p.is_multiple_of(LOT_SIZE) {
        for level in 1..=LEVELS {
            out.push(json!({"type":"lot_received","lot":lot_id(level, p),"part":format!("P-L{level}"),
                "supplier":"Acme","supplier_batch":format!("B{level}-{}", p / LOT_SIZE),"qty":LOT_SIZE as f64,"station":"GOODS-IN"}));
        }
    }
    if p.is_multiple_of(20_000) {
        out.push(json!({"type":"lot_received","lot":format!("FAST-{:06}", p / 20_000),"part":"P-FAST","qty":1.0e6}));
    }
    for level in (1..=LEVELS).rev() {
        let unit = unit_id(level, p);
        out.push(json!({"type":"unit_started","unit":unit,"part":format!("P-L{level}"),"work_order":"WO-1","station":format!("ST{level}0")}));
        let mut lots = vec![lot_id(level, p)];
        if level == LEVELS {
            lots.push(format!("FAST-{:06}", p / 20_000));
        }
        let ops = if level == 1 { 3 } else { 1 };
        for k in 0..ops {
            let l = if k == 0 { lots.clone() } else { Vec::new() };
            out.push(operation(&unit, format!("ST{level}{k}"), "press", l, p + k));
        }
        if level < LEVELS {
            out.push(json!({"type":"assembled","parent":unit,"child":{"kind":"unit","id":unit_id(level + 1, p)},"station":format!("ST{level}9")}));
        }
    }
    let sn = unit_id(1, p);
    out.push(json!({"type":"quality_check","unit":sn,"characteristic":"diameter","value":10.01,"unit_of_measure":"mm","lsl":9.9,"usl":10.1,"result":"pass","station":"QC1"}));
    let case = format!("CASE-{:08}", p / CASE_SIZE);
    out.push(json!({"type":"packed","container":case,"level":"case","child":{"kind":"unit","id":sn},"station":"PACK"}));
    if (p + 1).is_multiple_of(CASE_SIZE) {
        let pallet = format!("PAL-{:07}", p / (CASE_SIZE * PALLET_SIZE));
        out.push(json!({"type":"packed","container":pallet,"level":"pallet","child":{"kind":"container","id":case},"station":"PACK"}));
        if (p + 1).is_multiple_of(CASE_SIZE * PALLET_SIZE) {
            let n = p / (CASE_SIZE * PALLET_SIZE);
            out.push(
                json!({"type":"shipped","container":pallet,"shipment":format!("SHP-{:06}", n / 2),
                "customer":format!("CUST-{:03}", n % 300),"station":"DOCK"}),
            );
        }
    }
}

async fn write_plant(db: &Db, products: usize) -> usize {
    let epoch = uuid::Uuid::new_v4();
    let mut seq = 0usize;
    let mut records = 0usize;
    let mut recs = Vec::new();
    let mut p = 0;
    while p < products {
        recs.clear();
        while recs.len() < 1000 && p < products {
            product(p, &mut recs);
            p += 1;
        }
        for r in &mut recs {
            seq += 1;
            if let Value::Object(o) = r {
                o.insert("seq".into(), json!(seq));
                o.insert("ts".into(), json!(ts(seq)));
            }
        }
        records += recs.len();
        let mut b = Batch::default();
        for chunk in recs.chunks(500) {
            let payload = serde_json::to_vec(&json!({"v":1,"gateway":"gw-1","plant":"p","line":"l","epoch":epoch,"records":chunk}))
                .unwrap_or_default();
            match decode(
                ROOT,
                &format!("{ROOT}/p/l/gw-1/records"),
                &payload,
                64 << 20,
            ) {
                Incoming::Records(e, d) => {
                    b.envelopes.push(e);
                    b.dead_letters.extend(d);
                }
                _ => panic!("bench records did not decode"),
            }
        }
        assert!(b.dead_letters.is_empty(), "bench records dead-lettered");
        db.write_batch(&b).await.expect("write the plant");
    }
    records
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Counts `needle` in a stream of chunks (occurrences split across chunks included).
struct Counter {
    tail: Vec<u8>,
    n: usize,
}
impl Counter {
    fn feed(&mut self, chunk: &[u8], needle: &[u8]) {
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(chunk);
        self.n += buf.windows(needle.len()).filter(|w| *w == needle).count();
        let keep = needle.len() - 1;
        self.tail = buf[buf.len().saturating_sub(keep)..].to_vec();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let dir = tempfile::tempdir()?;
    let mut drop_pg: Option<(String, String)> = None;
    let url = match &a.db {
        Some(u) if u.starts_with("postgres") => {
            let pool = sqlx::PgPool::connect(u).await?;
            let name = format!("tl_bench_epcis_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await?;
            let url = format!("{}/{name}", u.rsplit_once('/').map_or(u.as_str(), |x| x.0));
            drop_pg = Some((u.clone(), name));
            url
        }
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("epcis.db").display()),
    };
    let db = Db::connect(&url, 4).await?;
    let t = Instant::now();
    let records = write_plant(&db, a.products).await;
    println!(
        "backend={} products={} trace records={records} written in {:.1} s",
        db.backend(),
        a.products,
        t.elapsed().as_secs_f64()
    );

    let app = router(AppState::new(
        db.clone(),
        Arc::new(Default::default()),
        Default::default(),
    ));
    for run in 0..2 {
        let rss0 = peak_rss_kib();
        let t = Instant::now();
        let res = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/api/v1/epcis/events")
                    .body(Body::empty())?,
            )
            .await?;
        assert!(
            res.status().is_success(),
            "export answered {}",
            res.status()
        );
        let mut body = res.into_body().into_data_stream();
        let (mut bytes, mut frames, mut largest) = (0usize, 0usize, 0usize);
        let mut events = Counter {
            tail: Vec::new(),
            n: 0,
        };
        let mut first_frame = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            first_frame.get_or_insert_with(|| t.elapsed());
            bytes += chunk.len();
            frames += 1;
            largest = largest.max(chunk.len());
            events.feed(&chunk, b"\"eventID\"");
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "export run {run}: {} events, {:.1} MB in {frames} frames (largest {} KiB, first after {:.0} ms) \
             in {secs:.2} s = {:.0} events/s, {:.1} MB/s; peak RSS {} → {} MiB",
            events.n,
            bytes as f64 / 1e6,
            largest / 1024,
            first_frame.map_or(0.0, |d| d.as_secs_f64() * 1e3),
            events.n as f64 / secs,
            bytes as f64 / 1e6 / secs,
            rss0 / 1024,
            peak_rss_kib() / 1024,
        );
    }
    drop(app);
    drop(db);
    if let Some((admin, name)) = drop_pg {
        let pool = sqlx::PgPool::connect(&admin).await?;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await;
    }
    Ok(())
}
