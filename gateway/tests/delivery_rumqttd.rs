//! Delivery through the embedded broker the aggregator can run (rumqttd, in-process): every
//! record arrives, in order, and the outbox empties once acked.

#![allow(clippy::unwrap_used)]

mod delivery_support;

use std::time::{Duration, Instant};

use delivery_support::*;
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::outbox::read_file_stats;
use threadline_gateway::runtime::{RunOptions, run_with};
use threadline_gateway::test_support::Synthetic;
use tokio_util::sync::CancellationToken;

const ROOT: &str = "threadline/v1";

/// Starts rumqttd on a free port in its own thread (it has no shutdown API; it ends with the
/// test process) and waits until it accepts connections.
async fn start_rumqttd() -> u16 {
    let port = free_port();
    let text = format!(
        r#"
id = 0
[router]
max_connections = 100
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 67108864
    max_inflight_count = 100
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).unwrap();
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    wait_for("rumqttd to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_through_embedded_rumqttd() {
    let port = start_rumqttd().await;
    let acker = Acker::start(port, ROOT).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cfg = GatewayConfig::parse("gw.toml", &gateway_toml(dir.path(), &url, "", 64)).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_with(
        cfg,
        stop.clone(),
        RunOptions {
            synthetic: Some(Synthetic {
                rate_per_s: 5000,
                event_every: 20,
                total: Some(4000),
            }),
        },
    ));
    wait_for("everything delivered", Duration::from_secs(30), || {
        acker.count() >= 4000
    })
    .await;
    let path = outbox_path(dir.path());
    let deadline = Instant::now() + Duration::from_secs(15);
    let epoch = loop {
        let s = read_file_stats(&path).await.unwrap();
        if s.readings + s.events == 0 {
            break s.epoch;
        }
        assert!(Instant::now() < deadline, "outbox not emptied: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_complete(&acker.seen.lock().unwrap(), epoch, 4000, 20);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    acker.stop().await;
}
