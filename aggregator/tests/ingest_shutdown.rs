//! A shutdown under load, with the real binary and a real Mosquitto: SIGTERM while a gateway
//! keeps publishing. The aggregator exits 0, its log has no `ack not queued` warning (before,
//! the MQTT event loop was gone while the last batch committed, and every shutdown under load
//! logged one), every record it committed was acked before it went (the drain), and it leaves
//! its retained offline status.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use store_support::*;
use threadline_aggregator::store::Db;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-aggregator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_acks_what_it_committed_and_logs_no_ack_warning() {
    let t = sqlite().await;
    let m = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agg.toml");
    let log = dir.path().join("agg.log");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nid = \"agg-shut\"\nbatch_max_wait_ms = 5\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\n[database]\nurl = \"{}\"\n",
            m.port,
            free_port(),
            t.url
        ),
    )
    .unwrap();
    let mut agg = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The aggregator's status, to see it go offline at the end.
    let mut watcher = gateway_client(m.port).await;
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let mut o = rumqttc::MqttOptions::new("status-watch", "127.0.0.1", m.port);
        o.set_clean_session(true);
        let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
        c.subscribe(
            threadline_shared::Topic::aggregator_status_filter(ROOT),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            let _c = c;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let s: Result<threadline_shared::Status, _> =
                            serde_json::from_slice(&p.payload);
                        if let Ok(s) = s {
                            let _ = status_tx.send((p.topic.clone(), s.state));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    // Ready once the first envelope is acked.
    let mut seq = 0u64;
    let mut next = move |n: u64| {
        let recs = (0..n)
            .map(|_| {
                seq += 1;
                rec(
                    seq,
                    (seq % 3600) as u32,
                    "scan_rejected",
                    json!({"station": "ST10", "scanner": "s1", "raw": format!("X{seq}"), "reason": "no pattern"}),
                )
            })
            .collect();
        envelope("gw-s", recs)
    };
    let hello = next(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        watcher.publish(topic("gw-s"), hello.clone()).await;
        if let Ok(Some((_, a))) =
            tokio::time::timeout(Duration::from_millis(500), watcher.acks.recv()).await
        {
            break a;
        }
        assert!(Instant::now() < deadline, "aggregator never acked");
    };
    // Load: envelopes of trace events (FULL-sync commits) without pause, then SIGTERM midway.
    let client = watcher.client.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_load = stop.clone();
    let load = tokio::spawn(async move {
        let mut sent = 1u64;
        let started = Instant::now();
        // Until the aggregator has exited (the load goes on through its shutdown).
        while !stop_load.load(std::sync::atomic::Ordering::Relaxed)
            && started.elapsed() < Duration::from_secs(60)
        {
            let payload = next(50);
            if client
                .publish(topic("gw-s"), rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            sent += 50;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sent
    });
    // SIGTERM mid-ingest: once the load has reached the database (not after a fixed time —
    // on a loaded machine the first commits can take longer than any guess).
    let count = || async {
        let Db::Sqlite(p) = &t.db else { unreachable!() };
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE gateway = 'gw-s'")
            .fetch_one(p)
            .await
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count().await <= 200 {
        assert!(
            Instant::now() < deadline && !load.is_finished(),
            "the load never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = agg.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = agg.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "aggregator still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status:?}\n{text}");
    assert!(text.contains("shutting down"), "{text}");
    assert!(!text.contains("ack not queued"), "{text}");
    // Everything committed was acked before the process went.
    let committed = count().await;
    assert!(
        committed > 50,
        "load reached the database: {committed} of {sent}"
    );
    let mut acked: std::collections::BTreeSet<u64> =
        first.ranges.iter().flat_map(|[lo, hi]| *lo..=*hi).collect();
    let until = Instant::now() + Duration::from_secs(15);
    while (acked.len() as i64) < committed && Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), watcher.acks.recv()).await {
            Ok(Some((_, a))) => {
                for [lo, hi] in a.ranges {
                    acked.extend(lo..=hi);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    assert_eq!(
        acked.len() as i64,
        committed,
        "every committed record acked ({sent} sent)\n{text}"
    );
    // The retained offline status, published on the way out.
    let mut last = None;
    while let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(2), status_rx.recv()).await {
        last = Some(s);
    }
    assert_eq!(
        last,
        Some((
            threadline_shared::Topic::aggregator_status(ROOT, "agg-shut"),
            threadline_shared::GatewayState::Offline
        )),
        "{text}"
    );
}
