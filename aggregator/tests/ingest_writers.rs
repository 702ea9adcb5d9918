//! Several writers on one PostgreSQL database: lines commit in parallel, and items that several
//! lines touch at the same time (a shared material lot received on one line while consumed on
//! the others) are written without a failed transaction, each gateway's chain intact, every
//! record acked once.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use store_support::*;
use threadline_aggregator::ingest::{
    AckSink, DecodeConfig, IngestStats, WriterConfig, Writers, writer_for,
};
use threadline_aggregator::store::Db;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const GATEWAYS: usize = 6;
const ENVELOPES: u64 = 12;
const PER_ENVELOPE: u64 = 40;

/// Envelope `k` of gateway `g`: units of its own, all consuming the two shared lots; every
/// gateway also receives one of the shared lots (fills the item others only reference).
fn records(g: usize, k: u64) -> Vec<serde_json::Value> {
    (0..PER_ENVELOPE)
        .map(|i| {
            let seq = k * PER_ENVELOPE + i + 1;
            let t = (seq % 3000) as u32;
            let unit = format!("SN-{g}-{seq}");
            match seq % 4 {
                0 => rec(seq, t, "lot_received", json!({"lot": if g.is_multiple_of(2) { "LOT-A" } else { "LOT-B" }, "part":"P-1", "supplier": format!("SUP-{g}"), "qty": 1000.0})),
                1 => rec(seq, t, "unit_started", json!({"unit": unit, "part":"P-9", "station":"ST10"})),
                2 => rec(seq, t, "operation_completed", json!({"unit": unit, "station":"ST10", "operation":"OP10", "result":"pass",
                        "materials":[{"lot":"LOT-A","qty":1.0},{"lot":"LOT-B","qty":1.0}]})),
                _ => reading(seq, t, seq as f64),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_writers_share_items_without_conflicts() {
    let Some(t) = postgres().await else { return };
    let gateways: Vec<String> = (0..GATEWAYS).map(|g| format!("gw-par-{g}")).collect();
    let spread: BTreeSet<usize> = gateways.iter().map(|g| writer_for(Some(g), 4)).collect();
    assert!(
        spread.len() >= 3,
        "the test gateways land on several writers: {spread:?}"
    );
    let stats = Arc::new(IngestStats::default());
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let writers = Writers::spawn(
        &t.db,
        4,
        256,
        DecodeConfig {
            root: ROOT.to_owned(),
            max_payload_bytes: 1 << 20,
            keys: None,
        },
        &AckSink::Channel(ack_tx),
        &stats,
        // Small batches, many transactions: as much overlap between writers as possible.
        &WriterConfig {
            batch_max_records: 80,
            batch_max_bytes: 64 << 20,
            batch_max_wait: Duration::from_millis(5),
        },
        &CancellationToken::new(),
    );
    for k in 0..ENVELOPES {
        for (g, gw) in gateways.iter().enumerate() {
            writers
                .send_raw(topic(gw), envelope(gw, records(g, k)).into())
                .await
                .unwrap();
        }
    }
    writers.join().await;

    assert_eq!(
        stats.batch_failures.load(Ordering::Relaxed),
        0,
        "no transaction failed (deadlock, conflict)"
    );
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    while let Ok((gw, ack)) = ack_rx.try_recv() {
        *acked.entry(gw).or_default() += ack.count();
    }
    let per_gateway = ENVELOPES * PER_ENVELOPE;
    for gw in &gateways {
        assert_eq!(
            acked.get(gw),
            Some(&per_gateway),
            "{gw}: every record acked once"
        );
    }
    let n = (GATEWAYS as u64 * per_gateway) as i64;
    assert_eq!(t.db.count("readings").await.unwrap(), n / 4);
    assert_eq!(t.db.count("events").await.unwrap(), n - n / 4);
    assert_eq!(t.db.count("operations").await.unwrap(), n / 4);
    assert_eq!(t.db.count("operation_materials").await.unwrap(), n / 2);
    let report = t.db.verify_chains().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.gateways, GATEWAYS as u64);
    // The shared lots exist once each, received (not placeholders) and consumed by every line.
    let Db::Postgres(p) = &t.db else {
        unreachable!()
    };
    let lots: Vec<(String, bool)> =
        sqlx::query_as("SELECT ext_id, placeholder FROM items WHERE kind = 'lot' ORDER BY ext_id")
            .fetch_all(p)
            .await
            .unwrap();
    assert_eq!(
        lots,
        vec![("LOT-A".to_owned(), false), ("LOT-B".to_owned(), false)]
    );
}

/// Batches are bounded in bytes as well as records: with a 4 KiB bound, 12 envelopes of about
/// 1.6 KiB each (well under the record bound) commit in several transactions — at most three
/// envelopes each — and every record is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_in_bytes() {
    let t = sqlite().await;
    let stats = Arc::new(IngestStats::default());
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let writers = Writers::spawn(
        &t.db,
        1,
        256,
        DecodeConfig {
            root: ROOT.to_owned(),
            max_payload_bytes: 1 << 20,
            keys: None,
        },
        &AckSink::Channel(ack_tx),
        &stats,
        &WriterConfig {
            batch_max_records: 100_000,
            batch_max_bytes: 4096,
            // Long enough that only the byte bound can end a batch early.
            batch_max_wait: Duration::from_millis(500),
        },
        &CancellationToken::new(),
    );
    let mut sizes = Vec::new();
    for k in 0..12u64 {
        let recs = (1..=10)
            .map(|i| reading(k * 10 + i, (k * 10 + i) as u32, 1.0))
            .collect();
        let payload = envelope("gw-bytes", recs);
        sizes.push(payload.len());
        writers
            .send_raw(topic("gw-bytes"), payload.into())
            .await
            .unwrap();
    }
    writers.join().await;
    assert!(sizes.iter().all(|s| (1200..2048).contains(s)), "{sizes:?}");
    let batches = stats.batches.load(Ordering::Relaxed);
    assert!(
        batches >= 4,
        "12 envelopes of ~1.6 KiB under a 4 KiB bound: {batches} batches"
    );
    let mut acked = 0;
    while let Ok((_, ack)) = ack_rx.try_recv() {
        acked += ack.count();
    }
    assert_eq!(acked, 120);
    assert_eq!(t.db.count("readings").await.unwrap(), 120);
}
