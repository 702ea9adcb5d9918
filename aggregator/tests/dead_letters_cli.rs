//! Dead letters once, acked, and `dead-letters list|replay`, with the real binary and a real
//! Mosquitto: an envelope of an unsupported version is stored once however often it is re-sent
//! (counted) and acked so the gateway moves on; malformed JSON likewise stored once; `replay`
//! stores the dead letters that the running version accepts and keeps the others with the new
//! reason.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use store_support::*;
use threadline_aggregator::store::Db;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-aggregator");

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(cfg: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_envelope_failures_are_stored_once_acked_and_replayable() {
    let t = sqlite().await;
    let m = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nbatch_max_wait_ms = 20\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\n[database]\nurl = \"{}\"\n",
            m.port,
            free_port(),
            t.url
        ),
    )
    .unwrap();
    let agg = Kill(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut gw = gateway_client(m.port).await;
    // Ready when a probe envelope is acked (the aggregator has subscribed).
    let probe = envelope("gw-probe", vec![reading(1, 1, 1.0)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        gw.publish(topic("gw-probe"), probe.clone()).await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), gw.acks.recv()).await
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "aggregator never acked"
        );
    }
    while gw.acks.try_recv().is_ok() {}

    // A future envelope version, re-sent three times (a gateway that got no ack would).
    let v2 = serde_json::to_vec(&json!({
        "v": 2, "gateway": "gw-x", "plant": "plant-a", "line": "line-1", "epoch": EPOCH,
        "records": [reading(1, 1, 1.0), reading(2, 2, 2.0)], "extra": {"new": true},
    }))
    .unwrap();
    for _ in 0..3 {
        gw.publish(topic("gw-x"), v2.clone()).await;
        let (ack_topic, ack) = gw.next_ack().await;
        assert_eq!(ack_topic, format!("{ROOT}/plant-a/line-1/gw-x/ack"));
        assert_eq!(ack.ranges, vec![[1, 2]], "acked: the gateway moves on");
    }
    // Malformed JSON (cannot be acked: no epoch to name), twice.
    for _ in 0..2 {
        gw.publish(topic("gw-x"), b"{\"v\":1, garbage".to_vec())
            .await;
    }
    let db = t.db.clone();
    let Db::Sqlite(pool) = &t.db else {
        unreachable!()
    };
    eventually("dead letters counted", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT kind, count FROM dead_letters ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            (rows
                == vec![
                    ("unsupported_version".to_owned(), 3),
                    ("malformed_envelope".to_owned(), 2),
                ])
            .then_some(())
        }
    })
    .await;
    drop(agg);
    drop(db);

    // What an older version dead-lettered and this one stores: a record of a type it did not
    // know, kept as its own envelope.
    let stored_now = envelope(
        "gw-x",
        vec![rec(
            7,
            7,
            "unit_started",
            json!({"unit":"SN-7","station":"st-10"}),
        )],
    );
    sqlx::query(
        "INSERT INTO dead_letters (topic, gateway, reason, kind, payload, count)
         VALUES ($1, 'gw-x', 'unknown record type \"unit_started\"', 'unknown_record_type', $2, 1)",
    )
    .bind(topic("gw-x"))
    .bind(&stored_now)
    .execute(pool)
    .await
    .unwrap();

    let (code, out) = cli(&cfg, &["dead-letters", "list"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\t3\t") && out.contains("unsupported_version"),
        "{out}"
    );
    assert!(
        out.contains("malformed_envelope") && out.contains("unknown_record_type"),
        "{out}"
    );
    assert!(out.contains("3 dead letters"), "{out}");

    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM dead_letters ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let id = ids[2].to_string();
    let (code, out) = cli(&cfg, &["dead-letters", "replay", "--id", &id]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{id}: stored")), "{out}");
    let units: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE gateway = 'gw-x' AND seq = 7")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(units, 1, "the replayed record is in the log");

    let (code, out) = cli(&cfg, &["dead-letters", "replay", "--all"]);
    assert_eq!(code, Some(1), "two still fail: {out}");
    assert!(
        out.contains("replayed 2: 0 stored, 2 still failing"),
        "{out}"
    );
    assert!(out.contains("envelope version 2 is not supported"), "{out}");
    let left: Vec<(i64, String)> = sqlx::query_as("SELECT id, kind FROM dead_letters ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![
            (ids[0], "unsupported_version".to_owned()),
            (ids[1], "malformed_envelope".to_owned())
        ]
    );
    let (code, out) = cli(&cfg, &["dead-letters", "replay", "--id", "99"]);
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = cli(&cfg, &["dead-letters", "replay"]);
    assert_eq!(code, Some(2), "--id or --all is required: {out}");
}
