//! The serial reader driver against a real pseudo-terminal (the simulated scanner): framing,
//! garbage, over-long lines, de-duplication, unplug / replug, shutdown — and the scans it
//! delivers driving a station.

#![allow(clippy::unwrap_used)] // helpers of tests panic on purpose

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use threadline_gateway::config::{Framing, ScannerConfig, ScannerKind};
use threadline_gateway::drivers::{DeviceMetrics, DriverContext, RawScan, spawn_scanner};
use threadline_simulators::scanner::{SimFraming, SimScanner};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(5);

struct Rig {
    scans: mpsc::Receiver<RawScan>,
    metrics: Arc<DeviceMetrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _tags: mpsc::Receiver<threadline_gateway::drivers::TagUpdate>,
}

fn start(port: &std::path::Path, dedup_ms: u64, max_line_len: usize) -> Rig {
    start_with(
        port,
        dedup_ms,
        max_line_len,
        Framing::Cr,
        ScannerKind::Barcode,
    )
}

fn start_with(
    port: &std::path::Path,
    dedup_ms: u64,
    max_line_len: usize,
    framing: Framing,
    kind: ScannerKind,
) -> Rig {
    let cfg = ScannerConfig {
        baud: Some(9600),
        framing: Some(framing),
        kind,
        dedup_ms,
        max_line_len,
        ..ScannerConfig::serial("st10-scanner", &port.to_string_lossy(), "ST10")
    };
    let (out, tags) = mpsc::channel(16);
    let (scans_tx, scans) = mpsc::channel(16);
    let metrics = Arc::new(DeviceMetrics::default());
    let shutdown = CancellationToken::new();
    let ctx = DriverContext {
        out,
        scans: scans_tx,
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        data_dir: std::env::temp_dir(),
    };
    let task = spawn_scanner(&cfg, ctx);
    Rig {
        scans,
        metrics,
        shutdown,
        task,
        _tags: tags,
    }
}

async fn next(rig: &mut Rig) -> RawScan {
    match tokio::time::timeout(DEADLINE, rig.scans.recv()).await {
        Ok(Some(s)) => s,
        Ok(None) => panic!("driver stopped"),
        Err(_) => panic!("no scan within {DEADLINE:?}"),
    }
}

/// Polls until `cond` holds (the driver opens the port asynchronously).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `code` until the driver delivers it (the port may not be open yet: bytes written to
/// a pty before the reader opens it are still delivered, but a reopen flushes them).
async fn scan_until_seen(sim: &mut SimScanner, rig: &mut Rig, code: &str) -> RawScan {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        sim.scan(code).unwrap();
        if let Ok(Some(s)) =
            tokio::time::timeout(Duration::from_millis(200), rig.scans.recv()).await
        {
            return s;
        }
        assert!(tokio::time::Instant::now() < end, "{code} never arrived");
    }
}

#[tokio::test]
async fn reads_codes_rejects_garbage_dedups_and_survives_replug() {
    let (mut sim, path) = SimScanner::new().unwrap();
    let mut rig = start(&path, 300, 32);

    let first = scan_until_seen(&mut sim, &mut rig, "OP0001").await;
    assert_eq!(first.raw, "OP0001");
    assert_eq!(first.station, "ST10");
    assert_eq!(first.scanner, "st10-scanner");
    assert!(!first.rfid);
    assert_eq!(first.error, None);

    // Several codes in one write, a code split over two writes.
    sim.send_raw(b"SN0000000001\rLOT-P-6202-").unwrap();
    sim.send_raw(b"000001\r").unwrap();
    assert_eq!(next(&mut rig).await.raw, "SN0000000001");
    assert_eq!(next(&mut rig).await.raw, "LOT-P-6202-000001");

    // Garbage and an over-long line come out as errors; the reader resyncs after them.
    sim.garbled().unwrap();
    let g = next(&mut rig).await;
    assert_eq!(g.error.as_deref(), Some("not valid UTF-8"));
    sim.scan(&"X".repeat(100)).unwrap();
    let long = next(&mut rig).await;
    assert!(
        long.error.as_deref().unwrap().contains("longer than 32"),
        "{long:?}"
    );
    sim.scan("SN0000000002").unwrap();
    assert_eq!(next(&mut rig).await.raw, "SN0000000002");

    // The same code within dedup_ms is one scan; a different code is not held back.
    sim.scan("SN0000000003").unwrap();
    sim.scan("SN0000000003").unwrap();
    sim.scan("SN0000000004").unwrap();
    assert_eq!(next(&mut rig).await.raw, "SN0000000003");
    assert_eq!(next(&mut rig).await.raw, "SN0000000004");

    // Unplug: the driver counts errors while the link dangles, and reads again after replug.
    let errors_before = rig.metrics.errors.load(Ordering::Relaxed);
    sim.unplug();
    wait_for("the driver to notice the unplug", || {
        rig.metrics.errors.load(Ordering::Relaxed) > errors_before + 1
    })
    .await;
    assert!(
        rig.metrics
            .last_error
            .lock()
            .unwrap()
            .as_deref()
            .is_some_and(|e| e.contains("usb-Threadline_Sim_Scanner-if00")),
    );
    sim.replug().unwrap();
    let back = scan_until_seen(&mut sim, &mut rig, "SN0000000005").await;
    assert_eq!(back.raw, "SN0000000005");
    assert_eq!(back.error, None);

    // Shutdown stops the task promptly.
    rig.shutdown.cancel();
    tokio::time::timeout(DEADLINE, rig.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn scans_through_the_pty_drive_a_station() {
    use threadline_gateway::config::GatewayConfig;
    use threadline_gateway::stations::StationEngine;

    let cfg = GatewayConfig::parse(
        "pty.toml",
        r#"
[gateway]
id = "gw"
plant = "p"
line = "l"
data_dir = "/nonexistent"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[pattern]]
kind = "unit"
regex = '^SN\d{10}$'
[[pattern]]
kind = "container"
gs1_ai = "00"
[[pattern]]
kind = "operator"
regex = '^OP\d{4}$'
[[station]]
id = "ST10"
kind = "pack"
level = "case"
pack_size = 2
"#,
    )
    .unwrap();
    let mut engine = StationEngine::new(&cfg, None);
    let (mut sim, path) = SimScanner::new().unwrap();
    let mut rig = start(&path, 300, 64);
    let mut events = Vec::new();
    let first = scan_until_seen(&mut sim, &mut rig, "OP0007").await;
    events.extend(engine.on_scan(&first));
    for code in [
        "]C100006141410000000104",
        "SN0000000001",
        "SN0000000002",
        "NONSENSE",
    ] {
        sim.scan(code).unwrap();
        let s = next(&mut rig).await;
        events.extend(engine.on_scan(&s));
    }
    let types: Vec<&str> = events.iter().map(|e| e.body.type_name()).collect();
    assert_eq!(types, ["packed", "packed", "scan_rejected"]);
    let json = serde_json::to_value(&events[1].body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type":"packed","container":"006141410000000104","level":"case",
            "child":{"kind":"unit","id":"SN0000000002"},"station":"ST10","operator":"OP0007"})
    );
    rig.shutdown.cancel();
}

#[tokio::test]
async fn rfid_reader_with_crlf_framing() {
    let (mut sim, path) = SimScanner::with_framing(SimFraming::CrLf).unwrap();
    let mut rig = start_with(&path, 0, 64, Framing::Crlf, ScannerKind::Rfid);
    let s = scan_until_seen(&mut sim, &mut rig, "3074257BF7194E4000001A85").await;
    assert_eq!(s.raw, "3074257BF7194E4000001A85");
    assert!(s.rfid);
    // dedup_ms = 0: a tag read twice is two reads.
    sim.scan("3114257BF4499602D2000000").unwrap();
    sim.scan("3114257BF4499602D2000000").unwrap();
    assert_eq!(next(&mut rig).await.raw, "3114257BF4499602D2000000");
    assert_eq!(next(&mut rig).await.raw, "3114257BF4499602D2000000");
    rig.shutdown.cancel();
    tokio::time::timeout(DEADLINE, rig.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn missing_port_is_retried_until_it_appears() {
    let (mut sim, path) = SimScanner::new().unwrap();
    sim.unplug();
    let mut rig = start(&path, 300, 64);
    wait_for("open failures to be counted", || {
        rig.metrics.errors.load(Ordering::Relaxed) >= 2
    })
    .await;
    sim.replug().unwrap();
    assert_eq!(
        scan_until_seen(&mut sim, &mut rig, "SN0000000001")
            .await
            .raw,
        "SN0000000001"
    );
    rig.shutdown.cancel();
    tokio::time::timeout(DEADLINE, rig.task)
        .await
        .unwrap()
        .unwrap();
}
