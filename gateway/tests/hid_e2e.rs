//! The real `threadline-gateway` binary with a HID scanner: `check` prints its wiring, and
//! `run` turns what the scanner types into its FIFO-backed device node into trace events that
//! go through the outbox to the broker (a real Mosquitto and a stand-in aggregator).

#![allow(clippy::unwrap_used)]

mod delivery_support;
mod hid_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delivery_support::*;
use hid_support::HidSim;
use threadline_gateway::config::KeyboardLayout;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");
const ROOT: &str = "threadline/v1";

fn scanner_sections(device: &str) -> String {
    format!(
        r#"
[[scanner]]
id = "st10-hid"
interface = "hid"
device = "{device}"
layout = "de"
terminator = "enter"
station = "ST10"

[[pattern]]
kind = "container"
gs1_ai = "00"
[[pattern]]
kind = "unit"
gs1_ai = "21"
[[pattern]]
kind = "operator"
regex = '^OP\d{{4}}$'

[[station]]
id = "ST10"
kind = "pack"
level = "case"
pack_size = 2
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hid_scans_become_trace_events_through_the_outbox() {
    if !have_mosquitto() {
        return;
    }
    let broker = Mosquitto::start().await;
    let acker = Acker::start(broker.port, ROOT).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::De);
    let data_dir = dir.path().join("data");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        gateway_toml(&data_dir, &broker.url(), "", 64) + &scanner_sections(&sim.path_str()),
    )
    .unwrap();

    // `check` shows how the scanner is read and where its scans go.
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wiring = format!(
        "scanners:\n  st10-hid: hid {} (exclusive grab), layout de, terminator enter, GS as Ctrl+] or ALT+0029, char timeout 50 ms → station ST10 (barcode, dedup 500 ms, max 512 bytes)",
        sim.path_str()
    );
    assert!(stdout.contains(&wiring), "{stdout}");
    assert!(stdout.contains("ST10 pack"), "{stdout}");

    let log = dir.path().join("gw.log");
    let mut gw = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Typed into the device before or after the gateway opened it: the FIFO keeps it.
    for code in [
        "OP0007",
        "]C100006141410000000104",
        "]d20109506000134352\u{1d}10LOT1\u{1d}21SN0001",
        "]d20109506000134352\u{1d}10LOT1\u{1d}21SN0002",
        "NONSENSE",
    ] {
        sim.scan(code);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let bodies = loop {
        let bodies: Vec<serde_json::Value> = acker
            .seen
            .lock()
            .unwrap()
            .records
            .values()
            .flat_map(|m| m.values())
            .map(|r| serde_json::to_value(&r.body).unwrap())
            .collect();
        if bodies.len() >= 3 {
            break bodies;
        }
        assert!(
            Instant::now() < deadline,
            "no trace events after 20 s: {bodies:#?}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["packed", "packed", "scan_rejected"], "{bodies:#?}");
    assert_eq!(
        bodies[1],
        serde_json::json!({"type":"packed","container":"006141410000000104","level":"case",
            "child":{"kind":"unit","id":"SN0002"},"station":"ST10","operator":"OP0007"})
    );
    assert_eq!(bodies[2]["raw"], "NONSENSE");

    // Graceful stop.
    assert!(
        Command::new("kill")
            .args(["-TERM", &gw.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(st) = gw.try_wait().unwrap() {
            break st;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "a FIFO device is read without warnings: {log}"
    );
    acker.stop().await;
}
