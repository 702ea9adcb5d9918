//! `/metrics` and `/healthz` over a real socket, with the outbox and device metrics behind them.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use threadline_gateway::drivers::DeviceMetrics;
use threadline_gateway::health::{HealthState, serve};
use threadline_gateway::outbox::{NewRecord, Outbox, OutboxOptions};
use threadline_gateway::publish::PublishMetrics;
use threadline_shared::event::{Quality, Reading, RecordBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf[9..12].parse().unwrap();
    (code, buf.split_once("\r\n\r\n").unwrap().1.to_owned())
}

#[tokio::test]
async fn healthz_names_the_silent_device_and_the_old_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(
        Outbox::open(OutboxOptions {
            path: dir.path().join("outbox.db"),
            max_bytes: u64::MAX,
        })
        .await
        .unwrap(),
    );
    let plc = Arc::new(DeviceMetrics::default());
    plc.record_error("timeout after 1000 ms");
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let state = Arc::new(HealthState {
        outbox: outbox.clone(),
        publish: Arc::new(PublishMetrics::default()),
        devices: vec![("press-plc".into(), plc.clone())].into(),
        max_device_silence_s: 60,
        max_outbox_age_s: 30,
        // Started two minutes ago and never heard from the PLC.
        started_ms: now_ms - 120_000,
        route: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, state, stop.clone()));

    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 503);
    assert!(body.contains("device press-plc: no good poll"), "{body}");
    assert!(body.contains("timeout after 1000 ms"), "{body}");

    // A record from a minute ago waiting in the outbox.
    let old = NewRecord {
        ts: threadline_shared::time::now() - chrono::Duration::seconds(60),
        body: RecordBody::Reading(Reading {
            device: "press-plc".into(),
            tag: "t".into(),
            value: None,
            unit: None,
            quality: Quality::Bad,
            error: Some("timeout".into()),
        }),
    };
    outbox.append(&[old]).await.unwrap();
    plc.record_ok(1500);
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 503);
    assert!(!body.contains("press-plc"), "device is fine now: {body}");
    assert!(body.contains("outbox: oldest record is 60 s old"), "{body}");

    outbox.ack(&[[1, 1]]).await.unwrap();
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));

    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "threadline_outbox_depth 0",
        "threadline_outbox_appended_total 1",
        "threadline_outbox_acked_total 1",
        "threadline_device_polls_total{device=\"press-plc\"} 2",
        "threadline_device_errors_total{device=\"press-plc\"} 1",
        "threadline_device_rtt_seconds{device=\"press-plc\"} 0.001500",
        "threadline_publish_inflight_batches 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert_eq!(get(addr, "/nope").await.0, 404);
    stop.cancel();
    server.await.unwrap();
}

/// A scanner with its port open and nobody scanning for longer than `max_device_silence_s` is
/// idle, not broken; once it fails (unplugged) the silence counts again.
#[tokio::test]
async fn an_idle_open_scanner_is_healthy_and_a_failed_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(
        Outbox::open(OutboxOptions {
            path: dir.path().join("outbox.db"),
            max_bytes: u64::MAX,
        })
        .await
        .unwrap(),
    );
    let scanner = Arc::new(DeviceMetrics::default());
    // Opened two minutes ago, silent since.
    scanner.record_open();
    let two_min_ago = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap() - 120_000;
    scanner
        .last_ok_ms
        .store(two_min_ago, std::sync::atomic::Ordering::Relaxed);
    let state = Arc::new(HealthState {
        outbox,
        publish: Arc::new(PublishMetrics::default()),
        devices: vec![("st110-gun".into(), scanner.clone())].into(),
        max_device_silence_s: 60,
        max_outbox_age_s: 30,
        started_ms: two_min_ago,
        route: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, state, stop.clone()));

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));

    scanner.record_error("reading /dev/ttyUSB0: end of file (device gone)");
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 503);
    assert!(body.contains("device st110-gun: no good poll"), "{body}");
    assert!(body.contains("device gone"), "{body}");
    stop.cancel();
    server.await.unwrap();
}
