//! Poison-record isolation through a real Mosquitto, on PostgreSQL and SQLite: a record the
//! database refuses (a NUL character in a reading's string value, an operation's recipe, a
//! gateway status; an id of 10 kB beyond PostgreSQL's btree limit) is dead-lettered alone with
//! the reason, every other record of its envelope commits and is acked, and valid records of two
//! gateways keep arriving within seconds.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use store_support::*;
use threadline_aggregator::config::AggregatorConfig;
use threadline_aggregator::ingest::{self, IngestStats};
use threadline_aggregator::store::Db;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn config(mqtt_port: u16, db_url: &str) -> AggregatorConfig {
    let text = format!(
        "[aggregator]\nid = \"agg-poison-{}\"\nbatch_max_wait_ms = 50\nmax_payload_kb = 256\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\n\n[database]\nurl = \"{db_url}\"\n",
        uuid::Uuid::new_v4().simple()
    );
    AggregatorConfig::parse("test.toml", &text).expect("config")
}

/// Waits until the seqs acked for gateway `name` (in this run, kept in `seen` across calls,
/// whichever gateway's ack arrives first) cover `want`.
async fn acked_until(
    gw: &mut Gw,
    seen: &mut std::collections::HashMap<String, BTreeSet<u64>>,
    name: &str,
    want: &BTreeSet<u64>,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !want.is_subset(seen.entry(name.to_owned()).or_default()) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some((topic, ack))) = tokio::time::timeout(left, gw.acks.recv()).await else {
            panic!("{name}: acked only {:?}, want {want:?}", seen.get(name));
        };
        let g = topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
        for [a, b] in ack.ranges {
            seen.entry(g.clone()).or_default().extend(a..=b);
        }
    }
}

async fn dead_letters(db: &Db) -> Vec<(String, String, Vec<u8>)> {
    let q = "SELECT kind, reason, payload FROM dead_letters ORDER BY id";
    match db {
        Db::Postgres(p) => sqlx::query_as(q).fetch_all(p).await.unwrap(),
        Db::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await.unwrap(),
    }
}

/// An id of `n` characters that does not compress (PostgreSQL compresses index tuples: a
/// repeated character would fit the btree limit).
fn incompressible_id(n: usize) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ABC[(x % ABC.len() as u64) as usize] as char
        })
        .collect()
}

async fn poison_is_isolated(t: TestDb) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let postgres = matches!(t.db, Db::Postgres(_));
    let m = Mosquitto::start().await;
    let stats = Arc::new(IngestStats::default());
    let cancel = CancellationToken::new();
    let (cfg, db, s, c) = (
        config(m.port, &t.url),
        t.db.clone(),
        stats.clone(),
        cancel.clone(),
    );
    let task = tokio::spawn(async move { ingest::run(&cfg, db, s, c).await });
    let st = stats.clone();
    eventually("ingest connected", WAIT, || {
        let st = st.clone();
        async move { st.mqtt_connected.load(Ordering::Relaxed).then_some(()) }
    })
    .await;
    let mut gw = gateway_client(m.port).await;

    let mut seen = std::collections::HashMap::new();
    let long_id = incompressible_id(10 * 1024);
    let records = vec![
        reading(1, 1, 1.0),
        rec(
            2,
            2,
            "reading",
            json!({"device":"plc","tag":"scanner.code","value":"AB\u{0}CD","quality":"good"}),
        ),
        rec(
            3,
            3,
            "unit_started",
            json!({"unit":"SN-1","station":"st-10"}),
        ),
        rec(
            4,
            4,
            "operation_completed",
            json!({"unit":"SN-1","station":"st-10","operation":"press",
            "recipe":"R-7\u{0}","result":"pass","parameters":[]}),
        ),
        rec(
            5,
            5,
            "assembled",
            json!({"parent":"SN-1","child":{"kind":"unit","id":long_id}}),
        ),
        rec(
            6,
            6,
            "quality_check",
            json!({"unit":"SN-1","characteristic":"d","value":1.0,"result":"pass"}),
        ),
        reading(7, 7, 7.0),
        rec(
            8,
            8,
            "unit_started",
            json!({"unit":long_id.clone(),"station":"st-10"}),
        ),
        rec(
            9,
            9,
            "operation_completed",
            json!({"unit":"SN-1","station":"st-20","operation":"leak",
            "result":"pass","parameters":[]}),
        ),
    ];
    gw.publish(topic("gw-p"), envelope("gw-p", records)).await;
    gw.publish(
        format!("{ROOT}/plant-a/line-1/gw-p/status"),
        serde_json::to_vec(&json!({"state":"online","since":ts(0),"buffer_depth":0,
            "devices":[{"id":"plc\u{0}","state":"ok"}]}))
        .unwrap(),
    )
    .await;
    gw.publish(
        topic("gw-q"),
        envelope("gw-q", (1..=3).map(|s| reading(s, s as u32, 0.5)).collect()),
    )
    .await;

    // Every seq acked: the stored ones and the dead-lettered ones alike.
    acked_until(&mut gw, &mut seen, "gw-p", &(1..=9).collect()).await;
    acked_until(&mut gw, &mut seen, "gw-q", &(1..=3).collect()).await;

    // The valid records are stored; the refused ones are not (and nothing half of them).
    let events = t.db.count("events").await.unwrap();
    let readings = t.db.count("readings").await.unwrap();
    assert_eq!(readings, 2 + 3, "readings 1, 7 of gw-p and all of gw-q");
    // unit_started SN-1, quality_check, operation_completed 9; on SQLite the 10 kB ids fit.
    assert_eq!(events, if postgres { 3 } else { 5 });
    assert!(
        t.db.verify_chains().await.unwrap().ok,
        "chain intact around the holes"
    );

    let dl = dead_letters(&t.db).await;
    let refused: Vec<_> = dl.iter().filter(|d| d.0 == "refused").collect();
    assert_eq!(refused.len(), if postgres { 5 } else { 3 }, "{dl:#?}");
    for (_, reason, payload) in &refused {
        assert!(!reason.is_empty());
        assert!(!payload.is_empty());
    }
    assert!(
        refused
            .iter()
            .any(|d| d.1.contains("record seq 2 ") && d.1.contains("NUL"))
    );
    assert!(
        refused
            .iter()
            .any(|d| d.1.contains("record seq 4 ") && d.1.contains("NUL"))
    );
    assert!(
        refused
            .iter()
            .any(|d| d.1.starts_with("status message") && d.1.contains("NUL"))
    );
    if postgres {
        // Found by bisecting the batch: the database's own reason, its SQLSTATE, and the
        // record as a replayable envelope.
        for seq in [5, 8] {
            let d = refused
                .iter()
                .find(|d| d.1.contains(&format!("record seq {seq} ")))
                .unwrap_or_else(|| panic!("seq {seq} dead-lettered: {dl:#?}"));
            assert!(
                d.1.contains("refused by the database") && d.1.contains("code 54000"),
                "{}",
                d.1
            );
            let env: serde_json::Value = serde_json::from_slice(&d.2).unwrap();
            assert_eq!(env["v"], 1);
            assert_eq!(env["records"][0]["seq"], seq);
        }
        assert!(
            stats.unhealthy_reason().is_none(),
            "a refused record is not an outage"
        );
    }
    assert_eq!(stats.dead_letters_of("refused"), refused.len() as u64);

    // Ingest goes on for both gateways: new valid records arrive within seconds.
    let started = std::time::Instant::now();
    gw.publish(
        topic("gw-p"),
        envelope(
            "gw-p",
            (10..=12).map(|s| reading(s, s as u32, 1.0)).collect(),
        ),
    )
    .await;
    gw.publish(
        topic("gw-q"),
        envelope(
            "gw-q",
            vec![rec(
                4,
                4,
                "unit_started",
                json!({"unit":"SN-Q","station":"st-10"}),
            )],
        ),
    )
    .await;
    acked_until(&mut gw, &mut seen, "gw-p", &(10..=12).collect()).await;
    acked_until(&mut gw, &mut seen, "gw-q", &BTreeSet::from([4])).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t.db.count("readings").await.unwrap(), readings + 3);
    assert_eq!(t.db.count("events").await.unwrap(), events + 1);

    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_poison_records_are_dead_lettered_alone() {
    let Some(t) = postgres().await else { return };
    poison_is_isolated(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_records_are_dead_lettered_alone() {
    poison_is_isolated(sqlite().await).await;
}
