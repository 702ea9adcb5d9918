//! SQLite durability: a batch with trace events (or dead letters) commits with
//! `synchronous = FULL` — a power cut after its ack cannot roll it back —; a readings-only batch
//! may commit `NORMAL`. Observed on the connection that commits, just before the commit.

#![allow(clippy::unwrap_used)]

mod store_support;

use serde_json::json;
use store_support::*;

#[tokio::test]
async fn sqlite_trace_event_commits_are_synchronous_full() {
    let t = sqlite().await;
    let readings = batch(&[(topic("gw-d"), envelope("gw-d", vec![reading(1, 1, 1.0)]))]);
    let out = t.db.write_batch(&readings).await.unwrap();
    assert_eq!(out.sqlite_synchronous, Some(1), "readings only: NORMAL");

    let events = batch(&[(
        topic("gw-d"),
        envelope(
            "gw-d",
            vec![
                reading(2, 2, 2.0),
                rec(
                    3,
                    3,
                    "unit_started",
                    json!({"unit":"SN-1","station":"st-10"}),
                ),
            ],
        ),
    )]);
    let out = t.db.write_batch(&events).await.unwrap();
    assert_eq!(out.sqlite_synchronous, Some(2), "trace events: FULL");

    // The pooled connection does not keep FULL for the next readings-only batch, nor NORMAL
    // for a batch that is only a dead letter (its seq is acked).
    let out =
        t.db.write_batch(&batch(&[(
            topic("gw-d"),
            envelope("gw-d", vec![reading(4, 4, 4.0)]),
        )]))
        .await
        .unwrap();
    assert_eq!(out.sqlite_synchronous, Some(1));
    let dead = batch(&[(topic("gw-d"), b"not json".to_vec())]);
    assert_eq!(dead.dead_letters.len(), 1);
    let out = t.db.write_batch(&dead).await.unwrap();
    assert_eq!(out.sqlite_synchronous, Some(2));
}

#[tokio::test]
async fn postgres_reports_no_sqlite_pragma() {
    let Some(t) = postgres().await else { return };
    let out =
        t.db.write_batch(&batch(&[(
            topic("gw-d"),
            envelope("gw-d", vec![reading(1, 1, 1.0)]),
        )]))
        .await
        .unwrap();
    assert_eq!(out.sqlite_synchronous, None);
}
