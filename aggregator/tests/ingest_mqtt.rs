//! Ingest through real brokers: a Mosquitto process started on a free port and the embedded
//! rumqttd; acks after commit, duplicates absorbed and acked again, a database outage through a
//! TCP proxy we cut and restore (broker and proxy: `threadline_shared::testing`).

#![allow(clippy::unwrap_used)]

mod store_support;

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

fn config(mqtt: &str, db_url: &str) -> AggregatorConfig {
    let text = format!(
        "[aggregator]\nid = \"agg-test-{}\"\nbatch_max_wait_ms = 20\nmax_payload_kb = 64\n\n{mqtt}\n\n[database]\nurl = \"{db_url}\"\n",
        uuid::Uuid::new_v4().simple()
    );
    AggregatorConfig::parse("test.toml", &text).expect("config")
}

struct Running {
    stats: Arc<IngestStats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task
            .await
            .expect("join")
            .expect("ingest ended cleanly");
    }
}

async fn start_ingest(cfg: AggregatorConfig, db: Db) -> Running {
    let stats = Arc::new(IngestStats::default());
    let cancel = CancellationToken::new();
    let (s, c) = (stats.clone(), cancel.clone());
    let task = tokio::spawn(async move { ingest::run(&cfg, db, s, c).await });
    let st = stats.clone();
    eventually("ingest connected", WAIT, || {
        let st = st.clone();
        async move { st.mqtt_connected.load(Ordering::Relaxed).then_some(()) }
    })
    .await;
    Running {
        stats,
        cancel,
        task,
    }
}

fn trace_batch(gw: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    envelope(
        gw,
        seqs.map(|s| {
            if s % 2 == 0 {
                reading(s, s as u32, s as f64)
            } else {
                rec(s, s as u32, "quality_check", json!({"unit":format!("SN{s}"),"characteristic":"d","value":1.0,"result":"pass"}))
            }
        })
        .collect(),
    )
}

async fn round_trip(port: u16, mqtt_section: String) {
    let t = sqlite().await;
    let run = start_ingest(config(&mqtt_section, &t.url), t.db.clone()).await;
    let mut gw = gateway_client(port).await;
    // Records: stored, then acked on the gateway's ack topic.
    gw.publish(topic("gw-m"), trace_batch("gw-m", 1..=4)).await;
    let (ack_topic, ack) = gw.next_ack().await;
    assert_eq!(ack_topic, format!("{ROOT}/plant-a/line-1/gw-m/ack"));
    assert_eq!(ack.ranges, vec![[1, 4]]);
    assert_eq!(ack.epoch.to_string(), EPOCH);
    assert_eq!(t.db.count("events").await.unwrap(), 2);
    assert_eq!(t.db.count("readings").await.unwrap(), 2);
    // Re-delivery (a gateway that missed the ack): acked again, nothing doubled.
    gw.publish(topic("gw-m"), trace_batch("gw-m", 1..=4)).await;
    let (_, ack2) = gw.next_ack().await;
    assert_eq!(ack2, ack);
    assert_eq!(t.db.count("events").await.unwrap(), 2);
    assert_eq!(t.db.count("readings").await.unwrap(), 2);
    assert_eq!(run.stats.duplicates.load(Ordering::Relaxed), 4);
    // Status → gateway row; oversized → refused, counted, dead-lettered.
    gw.publish(
        format!("{ROOT}/plant-a/line-1/gw-m/status"),
        serde_json::to_vec(&json!({"state":"online","since":ts(0),"buffer_depth":7,"devices":[{"id":"plc","state":"ok"}]})).unwrap(),
    )
    .await;
    gw.publish(topic("gw-m"), vec![b' '; 65 * 1024]).await;
    let db = t.db.clone();
    eventually("status and dead letter stored", WAIT, || {
        let db = db.clone();
        async move {
            let g = db.gateways().await.ok()?;
            let ok = g
                .first()
                .is_some_and(|g| g.state == "online" && g.buffer_depth == 7)
                && db.count("dead_letters").await.ok()? == 1;
            ok.then_some(())
        }
    })
    .await;
    assert_eq!(run.stats.dead_letters_of("oversized"), 1);
    let gws = t.db.gateways().await.unwrap();
    assert_eq!(gws[0].devices[0]["id"], "plc");
    assert_eq!(
        gws[0].last_record_at.as_deref(),
        Some("2026-11-25T08:00:04.000001Z")
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_round_trip_acks_after_commit_and_absorbs_redelivery() {
    let m = Mosquitto::start().await;
    round_trip(
        m.port,
        format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"", m.port),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_round_trip() {
    let port = free_port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    threadline_aggregator::ingest::broker::start_embedded(
        listen,
        1 << 20,
        threadline_aggregator::ingest::broker_auth::BrokerAuth::Anonymous,
    )
    .expect("embedded broker");
    round_trip(
        port,
        format!("[mqtt]\nembedded = true\nallow_anonymous = true\nlisten = \"{listen}\""),
    )
    .await;
}

#[test]
fn embedded_broker_on_a_busy_port_is_a_clear_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let err = threadline_aggregator::ingest::broker::start_embedded(
        addr,
        1 << 20,
        threadline_aggregator::ingest::broker_auth::BrokerAuth::Anonymous,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot listen on") && err.contains("[mqtt] listen"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_stops_acks_and_recovers_without_loss_or_doubles() {
    let Some(t) = postgres().await else { return };
    // Route the aggregator's database connections through a proxy we can cut.
    let proxy = TcpProxy::start(url_authority(&t.url, 5432)).await;
    let proxied_url = proxy.route(&t.url);
    let db = Db::connect(&proxied_url, 2)
        .await
        .expect("connect through proxy");
    let m = Mosquitto::start().await;
    let run = start_ingest(
        config(
            &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"", m.port),
            &proxied_url,
        ),
        db,
    )
    .await;
    let mut gw = gateway_client(m.port).await;
    gw.publish(topic("gw-o"), trace_batch("gw-o", 1..=4)).await;
    assert_eq!(gw.next_ack().await.1.ranges, vec![[1, 4]]);

    proxy.cut();
    gw.publish(topic("gw-o"), trace_batch("gw-o", 5..=8)).await;
    let st = run.stats.clone();
    eventually("a failed write", WAIT, || {
        let st = st.clone();
        async move { (st.batch_failures.load(Ordering::Relaxed) > 0).then_some(()) }
    })
    .await;
    let reason = run
        .stats
        .unhealthy_reason()
        .expect("unhealthy while the database is down");
    assert!(reason.starts_with("database unavailable"), "{reason}");
    assert!(
        gw.acks.try_recv().is_err(),
        "no ack may be sent before the commit"
    );

    proxy.restore();
    let (_, ack) = gw.next_ack().await;
    assert_eq!(ack.ranges, vec![[5, 8]]);
    assert!(run.stats.unhealthy_reason().is_none());
    assert_eq!(t.db.count("events").await.unwrap(), 4);
    assert_eq!(t.db.count("readings").await.unwrap(), 4);
    assert!(t.db.verify_chains().await.unwrap().ok);
    run.stop().await;
}
