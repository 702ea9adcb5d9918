//! Sparkplug B end to end against an independent implementation: the real `threadline-gateway`
//! binary polls a simulated Modbus TCP PLC (the simulators crate) and publishes Sparkplug to a
//! real Mosquitto; `tests/sparkplug_host.py`, a Sparkplug host written with paho-mqtt and the
//! `sparkplug_b_pb2` of the PyPI package `mqtt-spb-wrapper` (Tahu's `.proto` compiled by
//! protoc), decodes every message and checks it against what the simulator holds.
//!
//! Python 3 with `mqtt-spb-wrapper` (which pins `paho-mqtt` 1.6) is needed: `scripts/test`
//! installs it; without it the tests skip loudly, or fail under `CI=true`.

#![allow(clippy::unwrap_used)]

mod delivery_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use delivery_support::*;
use serde_json::{Value, json};
use threadline_shared::event::{RecordBody, TagValue};
use threadline_shared::testing::skip_or_fail;
use threadline_simulators::modbus::{SimBank, TcpSim, WordOrder};

const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");
const HOST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sparkplug_host.py");
const GROUP: &str = "plant-a";
/// Each test its own edge node id, so that the two never read each other's messages.
const EDGE: &str = "line-1-gw";
const EDGE_STATE: &str = "line-2-gw";
/// How long one step of the host may take (the gateway is a debug build on a loaded machine).
const STEP: Duration = Duration::from_secs(60);

/// True when python3 can import the host's packages; otherwise skips loudly (fails under CI).
fn have_python_host() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import paho.mqtt.client, mqtt_spb_wrapper.spb_protobuf.sparkplug_b_pb2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail(
            "python3 with the PyPI packages mqtt-spb-wrapper and paho-mqtt is needed for the \
             Sparkplug host (pip install mqtt-spb-wrapper; scripts/test does)",
        );
    }
    ok
}

/// The Python host, driven one JSON line per step.
struct PyHost {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The gateway's log, shown when a step fails.
    gw_log: Option<std::path::PathBuf>,
}

impl PyHost {
    fn start(port: u16, host_id: &str, edge: &str) -> PyHost {
        let mut child = Command::new("python3")
            .arg(HOST)
            .args([
                "--port",
                &port.to_string(),
                "--group",
                GROUP,
                "--edge",
                edge,
            ])
            .args([
                "--host-id",
                host_id,
                "--timeout",
                &STEP.as_secs().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the Sparkplug host");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut h = PyHost {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            gw_log: None,
        };
        h.expect("READY");
        h
    }

    /// Waits for the host's next line; it must start with `prefix` (else the test fails with
    /// the host's reason).
    fn expect(&mut self, prefix: &str) -> String {
        let line = match self.lines.recv_timeout(STEP + Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "the Sparkplug host said nothing (exit {status:?}); so far: {:?}",
                    self.seen
                )
            }
        };
        self.seen.push(line.clone());
        assert!(
            line.starts_with(prefix),
            "the Sparkplug host, waiting for {prefix:?}: {line}\ngateway log:\n{}",
            self.gw_log
                .as_ref()
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .unwrap_or_default()
        );
        line
    }

    fn step(&mut self, cmd: Value) -> String {
        let step = cmd["step"].as_str().unwrap().to_owned();
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.expect(&format!("OK {step}"))
    }
}

impl Drop for PyHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway process, killed when dropped: a failing test must not leave it running (it
/// would reconnect to whichever broker later takes its port and talk into another test).
struct Gateway(Child);

impl std::ops::Deref for Gateway {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_gateway(config: &std::path::Path, log: &std::path::Path) -> Gateway {
    Gateway(
        Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(
                "RUST_LOG",
                "info,threadline_gateway::publish::sparkplug=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Every tag type the Modbus driver has, at its own address (`[[device.tag]]` tables); the
/// values are written by [`set_values`].
fn tags() -> Vec<String> {
    let t = |name: &str, area: &str, addr: u16, ty: Option<&str>, extra: &str| {
        let ty = ty
            .map(|t| format!("  type = \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            "  [[device.tag]]\n  name = \"{name}\"\n  area = \"{area}\"\n  address = {addr}\n{ty}  scan_ms = 50\n{extra}"
        )
    };
    vec![
        t("u16", "holding", 0, Some("u16"), ""),
        t("i16", "holding", 1, Some("i16"), ""),
        t("u32", "holding", 2, Some("u32"), ""),
        t("i32", "holding", 4, Some("i32"), ""),
        t("u64", "holding", 6, Some("u64"), ""),
        t("i64", "holding", 10, Some("i64"), ""),
        t("f32", "holding", 14, Some("f32"), ""),
        t("f64", "holding", 16, Some("f64"), ""),
        t("text", "holding", 20, Some("string"), "  length = 8\n"),
        // The default register type (u16) with scale/offset: a Double.
        t(
            "scaled",
            "input",
            0,
            None,
            "  scale = 0.1\n  offset = -5.0\n",
        ),
        // Coils and discrete inputs default to bool.
        t("door", "coil", 3, None, ""),
        t("estop", "discrete", 5, None, ""),
    ]
}

/// Writes value set `k` into the simulator; returns what each tag now holds.
fn set_values(bank: &SimBank, k: i64) -> serde_json::Map<String, Value> {
    let o = WordOrder::ABCD;
    let u16v = 0xBEEF - k as u16;
    let i16v = -300 - k as i16;
    let u32v = 4_000_000_000u32 - k as u32;
    let i32v = -2 - k as i32;
    let u64v = 0x0102_0304_0506_0708u64 + k as u64;
    let i64v = -9_000_000_000i64 - k;
    let f32v = 123.456f32 + k as f32;
    let f64v = -1234.5678f64 - k as f64;
    let text = format!("SN{:010}", 1234 + k);
    let raw = 1234 + k as u16;
    let (door, estop) = (k % 2 == 0, k % 2 == 1);
    bank.set_u16(0, u16v, o);
    bank.set_i16(1, i16v, o);
    bank.set_u32(2, u32v, o);
    bank.set_i32(4, i32v, o);
    bank.set_u64(6, u64v, o);
    bank.set_i64(10, i64v, o);
    bank.set_f32(14, f32v, o);
    bank.set_f64(16, f64v, o);
    bank.set_string(20, &text, 8, o);
    bank.set_input(0, &[raw]);
    bank.set_coil(3, door);
    bank.set_discrete(5, estop);
    let mut m = serde_json::Map::new();
    let mut put = |name: &str, ty: &str, v: Value| {
        m.insert(name.into(), json!({"type": ty, "value": v}));
    };
    put("u16", "u16", json!(u16v));
    put("i16", "i16", json!(i16v));
    put("u32", "u32", json!(u32v));
    put("i32", "i32", json!(i32v));
    put("u64", "u64", json!(u64v));
    put("i64", "i64", json!(i64v));
    put("f32", "f32", json!(f32v));
    put("f64", "f64", json!(f64v));
    put("text", "string", json!(text));
    put("scaled", "scaled", json!(f64::from(raw) * 0.1 - 5.0));
    put("door", "bool", json!(door));
    put("estop", "bool", json!(estop));
    m
}

async fn tcp_sim() -> (TcpSim, SimBank) {
    let bank = SimBank::new();
    let sim = TcpSim::start("127.0.0.1:0".parse().unwrap(), bank.clone())
        .await
        .unwrap();
    (sim, bank)
}

fn device_toml(id: &str, sim: &TcpSim, tags: &str) -> String {
    format!(
        "[[device]]\nid = \"{id}\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\ntimeout_ms = 1000\n{tags}",
        sim.local_addr()
    )
}

fn gateway_log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("gw.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_sparkplug_host_decodes_births_data_rebirth_and_death() {
    if !have_mosquitto() || !have_python_host() {
        return;
    }
    let broker = Mosquitto::start().await;
    // Two PLCs: every tag type on the first, a second device to check aliases across devices.
    let (sim1, bank1) = tcp_sim().await;
    let (sim2, bank2) = tcp_sim().await;
    let all = tags();
    let tags1: String = all.concat();
    let line_speed = "  [[device.tag]]\n  name = \"line_speed\"\n  area = \"holding\"\n  address = 7\n  type = \"i32\"\n  scan_ms = 50\n  [[device.tag]]\n  name = \"not_recorded\"\n  area = \"holding\"\n  address = 0\n  record = false\n  scan_ms = 50\n";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[sparkplug]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"{EDGE}\"\n\n{}\n{}",
            gateway_toml(
                &dir.path().join("data"),
                &broker.url(),
                "client_id = \"gw-spb-e2e\"",
                64
            ),
            device_toml("plc", &sim1, &tags1),
            device_toml("conveyor", &sim2, line_speed),
        ),
    )
    .unwrap();
    let expect = |k: i64| {
        bank2.set_i32(7, -70_000 - k as i32, WordOrder::ABCD);
        let mut conveyor = serde_json::Map::new();
        conveyor.insert(
            "line_speed".into(),
            json!({"type": "i32", "value": -70_000 - k}),
        );
        json!({"plc": set_values(&bank1, k), "conveyor": conveyor})
    };
    assert_eq!(all.len(), expect(0)["plc"].as_object().unwrap().len());

    let mut host = PyHost::start(broker.port, "unused", EDGE);
    let mut gw = spawn_gateway(&config, &dir.path().join("gw.log"));
    host.gw_log = Some(dir.path().join("gw.log"));

    // Births: NBIRTH (bdSeq, Node Control/Rebirth), a DBIRTH per device with every recorded tag
    // (name, alias, datatype), then the values the simulator holds.
    let ok = host.step(json!({"step": "births", "expect": expect(0)}));
    let bd_seq = ok.strip_prefix("OK births bdSeq=").unwrap().to_owned();
    assert_eq!(bd_seq, "0", "the first session of a fresh data_dir");
    // Every value changes: DDATA by alias with the new values, seq following.
    host.step(json!({"step": "data", "expect": expect(1)}));
    host.step(json!({"step": "data", "expect": expect(2)}));
    // Rebirth on NCMD: same bdSeq, seq from 0, births with the latest values.
    let ok = host.step(json!({"step": "rebirth"}));
    assert_eq!(ok, format!("OK rebirth bdSeq={bd_seq}"));
    host.step(json!({"step": "data", "expect": expect(3)}));
    // SIGKILL: the broker publishes the will, NDEATH with the session's bdSeq.
    gw.kill().unwrap();
    gw.wait().unwrap();
    let ok = host.step(json!({"step": "death"}));
    assert_eq!(ok, format!("OK death bdSeq={bd_seq}"));

    let log = gateway_log(dir.path());
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("sparkplug edge node"), "{log}");
}

/// The values the acker (the Threadline records) saw for `tag`, in seq order (a JSON number
/// comes back as `Int` when it fits).
fn recorded(acker: &Acker, tag: &str) -> Vec<u64> {
    let c = acker.seen.lock().unwrap();
    c.records
        .values()
        .flat_map(|m| m.values())
        .filter_map(|r| match &r.body {
            RecordBody::Reading(rd) if rd.tag == tag => match rd.value {
                Some(TagValue::UInt(u)) => Some(u),
                Some(TagValue::Int(i)) => u64::try_from(i).ok(),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Waits until the Threadline records carry `counter = v` (the gateway has read it).
async fn wait_recorded(acker: &Acker, v: u32, dir: &std::path::Path) {
    let want = u64::from(v);
    let deadline = std::time::Instant::now() + STEP;
    while !recorded(acker, "counter").contains(&want) {
        assert!(
            std::time::Instant::now() < deadline,
            "counter {v} not recorded; seen {:?}; gateway log:\n{}",
            recorded(acker, "counter"),
            gateway_log(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_primary_host_is_offline_values_are_held_then_sent_historical_before_live() {
    if !have_mosquitto() || !have_python_host() {
        return;
    }
    let broker = Mosquitto::start().await;
    let acker = Acker::start(broker.port, "threadline/v1").await;
    let (sim, bank) = tcp_sim().await;
    let counter = "  [[device.tag]]\n  name = \"counter\"\n  area = \"holding\"\n  address = 0\n  type = \"u32\"\n  scan_ms = 50\n";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[sparkplug]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"{EDGE_STATE}\"\nprimary_host_id = \"scada\"\n\n{}",
            gateway_toml(&dir.path().join("data"), &broker.url(), "client_id = \"gw-spb-state\"", 64),
            device_toml("plc", &sim, counter),
        ),
    )
    .unwrap();
    let expect = |v: u32| json!({"plc": {"counter": {"type": "u32", "value": v}}});

    let mut host = PyHost::start(broker.port, "scada", EDGE_STATE);
    // The host is offline (retained STATE) before the gateway starts.
    host.step(json!({"step": "state_offline"}));
    bank.set_u32(0, 1, WordOrder::ABCD);
    let mut gw = spawn_gateway(&config, &dir.path().join("gw.log"));
    host.gw_log = Some(dir.path().join("gw.log"));
    // Three values, each read and recorded (the Threadline records go on as usual) while the
    // Sparkplug host is away.
    for v in 1..=3u32 {
        bank.set_u32(0, v, WordOrder::ABCD);
        wait_recorded(&acker, v, dir.path()).await;
    }
    assert_eq!(recorded(&acker, "counter"), vec![1, 2, 3]);
    // Nothing on spBv1.0 for our node while the host is offline.
    host.step(json!({"step": "quiet"}));
    // Online: births (latest value 3), then 1, 2, 3 as historical DDATA, before any live data.
    let ok = host.step(json!({
        "step": "state_online",
        "expect": expect(3),
        "historical": [["plc", "counter", 1], ["plc", "counter", 2], ["plc", "counter", 3]],
    }));
    assert_eq!(ok, "OK state_online historical=3 bdSeq=0");
    bank.set_u32(0, 4, WordOrder::ABCD);
    host.step(json!({"step": "live", "expect": expect(4)}));
    // The host goes offline again: the node dies (NDEATH, bdSeq 0), reconnects and holds.
    let ok = host.step(json!({"step": "state_offline", "expect_death": true}));
    assert_eq!(ok, "OK state_offline bdSeq=0");
    for v in [5, 6] {
        bank.set_u32(0, v, WordOrder::ABCD);
        wait_recorded(&acker, v, dir.path()).await;
    }
    // Back: a new session (bdSeq 1), the held 5 and 6 historical, then live 7.
    let ok = host.step(json!({
        "step": "state_online",
        "expect": expect(6),
        "historical": [["plc", "counter", 5], ["plc", "counter", 6]],
    }));
    assert_eq!(ok, "OK state_online historical=2 bdSeq=1");
    bank.set_u32(0, 7, WordOrder::ABCD);
    host.step(json!({"step": "live", "expect": expect(7)}));
    // SIGTERM: a clean stop publishes NDEATH itself (a clean disconnect suppresses the will).
    let pid = gw.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let ok = host.step(json!({"step": "death"}));
    assert_eq!(ok, "OK death bdSeq=1");
    let status = gw.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", gateway_log(dir.path()));
    acker.stop().await;
}
