//! The USB HID scanner driver against a FIFO standing in for the scanner's evdev node: every
//! layout, shift, the GS1 separator in each form a keyboard-mode scanner sends it (and the
//! same scan events as from a serial reader), terminators, the per-character timeout, a
//! replug, a scanner faster than 1 ms per key, bad device paths and bad config values.

#![allow(clippy::unwrap_used)] // helpers of tests panic on purpose

mod hid_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hid_support::{GsAs, HidSim};
use threadline_gateway::config::{
    GatewayConfig, GsSubstitute, KeyboardLayout, ScannerConfig, Terminator,
};
use threadline_gateway::drivers::hid::keys::{KEY_ENTER, KEY_TAB};
use threadline_gateway::drivers::{DeviceMetrics, DriverContext, RawScan, spawn_scanner};
use threadline_gateway::stations::StationEngine;
use threadline_simulators::scanner::SimScanner;
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

/// A HID scanner config for `sim`'s device and layout; no de-duplication.
fn hid_cfg(sim: &HidSim) -> ScannerConfig {
    ScannerConfig {
        layout: Some(sim.layout),
        dedup_ms: 0,
        ..ScannerConfig::hid("st10-scanner", &sim.path_str(), "ST10")
    }
}

fn start(cfg: &ScannerConfig) -> Rig {
    let (out, tags) = mpsc::channel(16);
    // Room for every scan of the bulk test: the typist writes from the test task.
    let (scans_tx, scans) = mpsc::channel(4096);
    let metrics = Arc::new(DeviceMetrics::default());
    let shutdown = CancellationToken::new();
    let ctx = DriverContext {
        out,
        scans: scans_tx,
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        data_dir: std::env::temp_dir(),
    };
    let task = spawn_scanner(cfg, ctx);
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

async fn next_code(rig: &mut Rig) -> String {
    let s = next(rig).await;
    assert_eq!(s.error, None, "{s:?}");
    s.raw
}

/// Polls until `cond` holds (the driver opens the device asynchronously).
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

async fn stop(rig: Rig) {
    rig.shutdown.cancel();
    tokio::time::timeout(DEADLINE, rig.task)
        .await
        .expect("the driver stops promptly")
        .unwrap();
}

/// Codes with every character class a GS1 label or a serial number carries: the GS1
/// character set 82 symbols, AIM symbology identifiers, GS separators, a Digital Link URI,
/// the letters German and French keyboards move, and the rest of printable ASCII.
const CODES: [&str; 8] = [
    "SN0000000001",
    "LOT-2024-000123",
    "]C100006141410000000104",
    "]d20109506000134352\u{1d}10ABC-12/x\u{1d}21Zy7",
    "]Q3https://id.gs1.org/01/09506000134352/10/AB%2F1?17=251231",
    "!\"%&'()*+,-./:;<=>?_",
    "@#$[]{}|~^`\\ yzYZ aqAQ wWmM",
    "0123456789",
];

#[tokio::test]
async fn each_layout_types_gs1_symbols_and_serials_back_exactly() {
    for layout in [KeyboardLayout::Us, KeyboardLayout::De, KeyboardLayout::Fr] {
        let dir = tempfile::tempdir().unwrap();
        let mut sim = HidSim::new(dir.path(), layout);
        let mut rig = start(&hid_cfg(&sim));
        for code in CODES {
            sim.scan(code);
            assert_eq!(next_code(&mut rig).await, code, "{layout:?}");
        }
        assert_eq!(
            rig.metrics.values.load(Ordering::Relaxed),
            CODES.len() as u64
        );
        stop(rig).await;
    }
}

#[tokio::test]
async fn a_layout_mismatch_shows_in_the_code() {
    // A German scanner read as US: Y and Z swapped, `-` typed as `/` — the code is wrong,
    // which is why `layout` must match the scanner's keyboard country.
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::De);
    let cfg = ScannerConfig {
        layout: Some(KeyboardLayout::Us),
        ..hid_cfg(&sim)
    };
    let mut rig = start(&cfg);
    sim.scan("LOT-Zy");
    assert_eq!(next_code(&mut rig).await, "LOT/Yz");
    stop(rig).await;
}

const STATION_CONFIG: &str = r#"
[gateway]
id = "gw"
plant = "p"
line = "l"
data_dir = "/nonexistent"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[pattern]]
kind = "container"
gs1_ai = "00"
[[pattern]]
kind = "unit"
gs1_ai = "21"
[[pattern]]
kind = "operator"
regex = '^OP\d{4}$'
[[station]]
id = "ST10"
kind = "pack"
level = "case"
pack_size = 3
"#;

/// Operator, a case label, then three unit labels whose AI 10 must end at a GS for AI 21 to
/// be found.
fn station_codes() -> Vec<String> {
    let mut codes = vec!["OP0007".to_owned(), "]C100006141410000000104".to_owned()];
    for i in 1..=3 {
        codes.push(format!("]d20109506000134352\u{1d}10LOT{i}\u{1d}21SN000{i}"));
    }
    codes
}

/// The events a station engine makes of `scans`, as JSON.
fn station_events(scans: &[RawScan]) -> Vec<serde_json::Value> {
    let cfg = GatewayConfig::parse("hid.toml", STATION_CONFIG).unwrap();
    let mut engine = StationEngine::new(&cfg, None);
    scans
        .iter()
        .flat_map(|s| engine.on_scan(s))
        .map(|e| serde_json::to_value(&e.body).unwrap())
        .collect()
}

#[tokio::test]
async fn gs1_separators_in_every_form_make_the_same_scans_and_events_as_a_serial_reader() {
    let codes = station_codes();

    // The serial reader (a pty) reading the same labels.
    let (mut serial, port) = SimScanner::new().unwrap();
    let serial_cfg = ScannerConfig {
        dedup_ms: 0,
        ..ScannerConfig::serial("st10-scanner", &port.to_string_lossy(), "ST10")
    };
    let mut serial_rig = start(&serial_cfg);
    let mut via_serial = Vec::new();
    // The pty may not be open yet: bytes before the open are flushed, so repeat the first.
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        serial.scan(&codes[0]).unwrap();
        if let Ok(Some(s)) =
            tokio::time::timeout(Duration::from_millis(200), serial_rig.scans.recv()).await
        {
            via_serial.push(s);
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "serial reader never read"
        );
    }
    for code in &codes[1..] {
        serial.scan(code).unwrap();
        via_serial.push(next(&mut serial_rig).await);
    }
    stop(serial_rig).await;
    let serial_events = station_events(&via_serial);
    let types: Vec<&str> = serial_events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["packed", "packed", "packed"], "{serial_events:#?}");
    assert_eq!(serial_events[2]["child"]["id"], "SN0003");
    assert_eq!(serial_events[2]["container"], "006141410000000104");

    for (gs, substitute) in [
        (GsAs::CtrlBracket, None),
        (GsAs::AltCode, None),
        (GsAs::Substitute('|'), Some('|')),
    ] {
        for layout in [KeyboardLayout::Us, KeyboardLayout::De, KeyboardLayout::Fr] {
            let dir = tempfile::tempdir().unwrap();
            let mut sim = HidSim::new(dir.path(), layout);
            sim.gs = gs;
            let cfg = ScannerConfig {
                gs_substitute: substitute.map(GsSubstitute::Char),
                ..hid_cfg(&sim)
            };
            let mut rig = start(&cfg);
            let mut via_hid = Vec::new();
            for code in &codes {
                sim.scan(code);
                via_hid.push(next(&mut rig).await);
            }
            stop(rig).await;
            for (h, s) in via_hid.iter().zip(&via_serial) {
                assert_eq!(
                    (&h.raw, &h.error, &h.scanner, &h.station, h.rfid),
                    (&s.raw, &s.error, &s.scanner, &s.station, s.rfid),
                    "{gs:?} {layout:?}"
                );
            }
            assert_eq!(station_events(&via_hid), serial_events, "{gs:?} {layout:?}");
        }
    }
}

#[tokio::test]
async fn terminator_tab_and_a_stray_enter() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::Us);
    sim.terminator = KEY_TAB;
    let cfg = ScannerConfig {
        terminator: Some(Terminator::Tab),
        ..hid_cfg(&sim)
    };
    let mut rig = start(&cfg);
    sim.scan("SN0000000001");
    assert_eq!(next_code(&mut rig).await, "SN0000000001");
    // A scanner with an Enter suffix before the Tab: the Enter is framing, not data.
    let mut events = Vec::new();
    sim.type_text("SN0000000002", &mut events);
    sim.tap(&[], KEY_ENTER, &mut events);
    sim.tap(&[], KEY_TAB, &mut events);
    sim.write(&events);
    assert_eq!(next_code(&mut rig).await, "SN0000000002");
    stop(rig).await;
}

#[tokio::test]
async fn the_char_timeout_splits_two_half_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::Us);
    let mut rig = start(&hid_cfg(&sim));

    // By the kernel's timestamps: half a code, 200 ms of silence, then the next code — all
    // read in one go. The half code is reported, not glued to the next one.
    let mut events = Vec::new();
    sim.type_text("SN00", &mut events);
    sim.pause_us(200_000);
    sim.type_text("LOT-1", &mut events);
    sim.tap(&[], KEY_ENTER, &mut events);
    sim.write(&events);
    let half = next(&mut rig).await;
    assert_eq!(half.raw, "SN00");
    let error = half.error.unwrap();
    assert!(
        error.contains("incomplete code: no enter key within 50 ms"),
        "{error}"
    );
    assert_eq!(next_code(&mut rig).await, "LOT-1");

    // By the driver's clock: half a code and then nothing — reported without further input.
    let mut events = Vec::new();
    sim.type_text("HALF", &mut events);
    sim.write(&events);
    let half = next(&mut rig).await;
    assert_eq!(half.raw, "HALF");
    assert!(half.error.unwrap().contains("incomplete code"));
    sim.scan("SN0000000009");
    assert_eq!(next_code(&mut rig).await, "SN0000000009");
    stop(rig).await;
}

#[tokio::test]
async fn replug_resumes_reading_and_reports_the_code_cut_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::De);
    let mut rig = start(&hid_cfg(&sim));
    sim.scan("SN0000000001");
    assert_eq!(next_code(&mut rig).await, "SN0000000001");

    // Unplugged in the middle of a code: the half code is reported, the loss counted.
    let mut events = Vec::new();
    sim.type_text("SN00", &mut events);
    sim.write(&events);
    let errors_before = rig.metrics.errors.load(Ordering::Relaxed);
    sim.unplug();
    let cut = next(&mut rig).await;
    assert_eq!(cut.raw, "SN00");
    assert!(cut.error.is_some());
    wait_for("the driver to notice the unplug and fail to reopen", || {
        rig.metrics.errors.load(Ordering::Relaxed) > errors_before + 1
    })
    .await;
    let last = rig.metrics.last_error.lock().unwrap().clone().unwrap();
    assert!(
        last.contains("usb-Threadline_Sim_HID-event-kbd") && last.contains("No such file"),
        "{last}"
    );

    // Back: read again (and re-grabbed; a FIFO has nothing to grab).
    sim.replug();
    sim.scan("SN0000000002");
    assert_eq!(next_code(&mut rig).await, "SN0000000002");
    stop(rig).await;
}

#[tokio::test]
async fn a_scanner_faster_than_one_ms_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::Fr);
    sim.step_us = 0; // every event of every code has the same timestamp
    let mut rig = start(&hid_cfg(&sim));
    let codes: Vec<String> = (0..300)
        .map(|i| format!("]d20109506000134352\u{1d}21SN{i:06}"))
        .collect();
    let bytes: Vec<u8> = codes
        .iter()
        .flat_map(|c| sim.scan_events(c))
        .flat_map(|e| e.encode())
        .collect();
    // Many codes per write, and writes that split records anywhere.
    let writer = sim.write_in_background(bytes, 1000);
    for code in &codes {
        assert_eq!(&next_code(&mut rig).await, code);
    }
    writer.join().unwrap();
    assert_eq!(rig.metrics.values.load(Ordering::Relaxed), 300);
    stop(rig).await;
}

#[tokio::test]
async fn duplicates_within_dedup_ms_are_one_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::Us);
    let cfg = ScannerConfig {
        dedup_ms: 60_000,
        ..hid_cfg(&sim)
    };
    let mut rig = start(&cfg);
    sim.scan("SN0000000001");
    sim.scan("SN0000000001");
    sim.scan("SN0000000002");
    assert_eq!(next_code(&mut rig).await, "SN0000000001");
    assert_eq!(next_code(&mut rig).await, "SN0000000002");
    stop(rig).await;
}

#[tokio::test]
async fn over_long_codes_and_missing_or_wrong_devices_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = HidSim::new(dir.path(), KeyboardLayout::Us);
    let cfg = ScannerConfig {
        max_line_len: 8,
        ..hid_cfg(&sim)
    };
    let mut rig = start(&cfg);
    sim.scan("0123456789ABCDEF");
    let long = next(&mut rig).await;
    assert!(long.error.unwrap().contains("longer than 8"));
    sim.scan("SN1");
    assert_eq!(next_code(&mut rig).await, "SN1");
    stop(rig).await;

    // A tty is what a scanner in CDC mode configured as `hid` looks like: it refuses the grab.
    let (_serial, pty) = SimScanner::new().unwrap();
    for (path, expect) in [
        (dir.path().join("absent-event-kbd"), "No such file"),
        (dir.path().to_path_buf(), "is not an input device node"),
        (
            pty,
            "is no evdev input device; a scanner in USB CDC / virtual COM mode is a serial port",
        ),
    ] {
        let cfg = ScannerConfig::hid("st10-scanner", &path.to_string_lossy(), "ST10");
        let rig = start(&cfg);
        wait_for("open failures to be counted", || {
            rig.metrics.errors.load(Ordering::Relaxed) >= 2
        })
        .await;
        let last = rig.metrics.last_error.lock().unwrap().clone().unwrap();
        assert!(last.contains(expect), "{last}");
        stop(rig).await;
    }
}

#[test]
fn bad_hid_settings_fail_at_their_line_with_the_valid_values() {
    let text = format!(
        "{STATION_CONFIG}
[[scanner]]
id = \"hid-1\"
interface = \"hid\"
device = \"/dev/input/by-id/usb-Scanner-event-kbd\"
layout = \"dk\"
terminator = \"newline\"
gs_substitute = \"A\"
port = \"/dev/ttyUSB0\"
station = \"ST10\"

[[scanner]]
id = \"hid-2\"
interface = \"hid\"
char_timeout_ms = 0
station = \"ST10\"

[[scanner]]
id = \"serial-1\"
port = \"/dev/ttyUSB0\"
layout = \"de\"
station = \"ST10\"
"
    );
    let line_of = |needle: &str, nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(needle))
            .nth(nth)
            .map(|(i, _)| i + 1)
            .unwrap()
    };
    let errs = GatewayConfig::parse("line-1.toml", &text)
        .expect_err("bad values")
        .0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let find = |field: &str| {
        errs.iter()
            .find(|e| e.field == field)
            .unwrap_or_else(|| panic!("no error at {field}: {shown:#?}"))
    };
    let layout = find("scanner[0].layout");
    assert_eq!(layout.line, line_of("layout", 0), "{layout}");
    assert!(
        layout
            .message
            .contains("unknown variant `dk`, expected one of `us`, `de`, `fr`"),
        "{layout}"
    );
    assert!(layout.to_string().starts_with("line-1.toml:"), "{layout}");
    let terminator = find("scanner[0].terminator");
    assert_eq!(terminator.line, line_of("terminator", 0));
    assert!(
        terminator.message.contains("expected `enter` or `tab`"),
        "{terminator}"
    );
    let gs = find("scanner[0].gs_substitute");
    assert_eq!(gs.line, line_of("gs_substitute", 0));
    assert!(gs.message.contains("\"ctrl+]\""), "{gs}");
    let port = find("scanner[0].port");
    assert_eq!(port.line, line_of("port", 0));
    assert!(port.message.contains("interface = \"serial\""), "{port}");
    let device = find("scanner[1].device");
    assert!(
        device.message.contains("missing field `device`"),
        "{device}"
    );
    let timeout = find("scanner[1].char_timeout_ms");
    assert_eq!(timeout.line, line_of("char_timeout_ms", 0));
    let layout_on_serial = find("scanner[2].layout");
    assert_eq!(layout_on_serial.line, line_of("layout", 1));
    assert!(layout_on_serial.message.contains("interface = \"hid\""));
    assert_eq!(errs.len(), 7, "{shown:#?}");
}
