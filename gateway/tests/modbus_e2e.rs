//! The Modbus driver end to end against the simulators, over real sockets and pseudo-terminals.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, Peer, conformance, device, spawn, value};
use threadline_gateway::drivers::config::Area;
use threadline_gateway::drivers::modbus::{interpret, plan_device};
use threadline_shared::event::{Quality, TagValue};
use threadline_simulators::modbus::{RtuSim, SimBank, TcpSim, WordOrder};

const SECS5: Duration = Duration::from_secs(5);

async fn tcp_sim() -> (TcpSim, SimBank) {
    let bank = SimBank::new();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let sim = TcpSim::start(addr, bank.clone()).await.expect("sim");
    (sim, bank)
}

fn order_name(o: WordOrder) -> &'static str {
    match o {
        WordOrder::ABCD => "ABCD",
        WordOrder::CDAB => "CDAB",
        WordOrder::BADC => "BADC",
        WordOrder::DCBA => "DCBA",
    }
}

#[tokio::test]
async fn every_type_and_order_reads_end_to_end() {
    let (sim, bank) = tcp_sim().await;
    let mut toml = format!(
        "id = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\ntimeout_ms = 1000\n",
        sim.local_addr()
    );
    let mut expected: Vec<(String, TagValue)> = Vec::new();
    let mut tag = |name: String,
                   area: &str,
                   addr: u16,
                   ty: &str,
                   order: &str,
                   extra: &str,
                   v: TagValue| {
        toml.push_str(&format!(
            "[[tag]]\nname = \"{name}\"\narea = \"{area}\"\naddress = {addr}\ntype = \"{ty}\"\norder = \"{order}\"\nscan_ms = 50\n{extra}\n"
        ));
        expected.push((name, v));
    };
    for (k, order) in WordOrder::ALL.into_iter().enumerate() {
        let o = order_name(order);
        let base = 1000 * k as u16;
        bank.set_u16(base, 0xBEEF, order);
        tag(
            format!("u16.{o}"),
            "holding",
            base,
            "u16",
            o,
            "",
            TagValue::UInt(0xBEEF),
        );
        bank.set_i16(base + 1, -300, order);
        tag(
            format!("i16.{o}"),
            "holding",
            base + 1,
            "i16",
            o,
            "",
            TagValue::Int(-300),
        );
        bank.set_u32(base + 2, 4_000_000_000, order);
        tag(
            format!("u32.{o}"),
            "holding",
            base + 2,
            "u32",
            o,
            "",
            TagValue::UInt(4_000_000_000),
        );
        bank.set_i32(base + 4, -2, order);
        tag(
            format!("i32.{o}"),
            "holding",
            base + 4,
            "i32",
            o,
            "",
            TagValue::Int(-2),
        );
        bank.set_f32(base + 6, 123.456, order);
        tag(
            format!("f32.{o}"),
            "holding",
            base + 6,
            "f32",
            o,
            "",
            TagValue::Float(123.456),
        );
        bank.set_u64(base + 8, 0x0102_0304_0506_0708, order);
        tag(
            format!("u64.{o}"),
            "holding",
            base + 8,
            "u64",
            o,
            "",
            TagValue::UInt(0x0102_0304_0506_0708),
        );
        bank.set_i64(base + 12, -9_000_000_000, order);
        tag(
            format!("i64.{o}"),
            "holding",
            base + 12,
            "i64",
            o,
            "",
            TagValue::Int(-9_000_000_000),
        );
        bank.set_f64(base + 16, -1234.5678, order);
        tag(
            format!("f64.{o}"),
            "holding",
            base + 16,
            "f64",
            o,
            "",
            TagValue::Float(-1234.5678),
        );
        bank.set_string(base + 20, "SN0000001234", 8, order);
        tag(
            format!("str.{o}"),
            "holding",
            base + 20,
            "string",
            o,
            "length = 8",
            TagValue::Text("SN0000001234".into()),
        );
        // Scaled: raw 650 * 0.1 - 40 = 25.0.
        bank.set_i32(base + 30, 650, order);
        tag(
            format!("scaled.{o}"),
            "holding",
            base + 30,
            "i32",
            o,
            "scale = 0.1\noffset = -40.0",
            TagValue::Float(650.0 * 0.1 - 40.0),
        );
    }
    bank.set_coil(5, true);
    tag(
        "coil5".into(),
        "coil",
        5,
        "bool",
        "ABCD",
        "",
        TagValue::Bool(true),
    );
    tag(
        "coil6".into(),
        "coil",
        6,
        "bool",
        "ABCD",
        "",
        TagValue::Bool(false),
    );
    bank.set_discrete(7, true);
    tag(
        "di7".into(),
        "discrete",
        7,
        "bool",
        "ABCD",
        "",
        TagValue::Bool(true),
    );
    bank.set_input(9, &[0xFFFF]);
    tag(
        "in9".into(),
        "input",
        9,
        "i16",
        "ABCD",
        "",
        TagValue::Int(-1),
    );

    let cfg = device(&toml);
    let mut h = spawn(&cfg);
    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    h.all_good(&names, SECS5).await;
    for (name, v) in &expected {
        assert_eq!(value(&h.latest[name]), Some(v), "{name}");
    }
    // Unchanged values are not emitted again: one update per tag so far.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Ok(u) = h.rx.try_recv() {
        panic!("unchanged value emitted again: {u:?}");
    }
    // A change is.
    bank.set_f32(6, -1.5, WordOrder::ABCD);
    h.wait_tag("f32.ABCD", SECS5, |u| {
        value(u) == Some(&TagValue::Float(-1.5))
    })
    .await;
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn merged_reads_match_the_plan() {
    let (sim, bank) = tcp_sim().await;
    let mut toml = format!(
        "id = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\nmax_gap = 4\nmax_registers_per_read = 60\n",
        sim.local_addr()
    );
    // 200 tags every third register, mixed u16 / f32 → 600 registers → reads of ≤ 60.
    for i in 0..200u16 {
        let ty = if i % 2 == 0 { "u16" } else { "f32" };
        toml.push_str(&format!(
            "[[tag]]\nname = \"t{i}\"\narea = \"holding\"\naddress = {}\ntype = \"{ty}\"\nscan_ms = 60000\n",
            i * 3
        ));
        if i % 2 == 0 {
            bank.set_u16(i * 3, i, WordOrder::ABCD);
        } else {
            bank.set_f32(i * 3, f32::from(i) + 0.5, WordOrder::ABCD);
        }
    }
    let cfg = device(&toml);
    let plan = plan_device(&cfg).expect("plan");
    let reads: usize = plan.groups.iter().map(|g| g.reads.len()).sum();
    assert_eq!(reads, 10, "{plan}");
    let mut h = spawn(&cfg);
    let names: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    h.all_good(&names, SECS5).await;
    for i in 0..200u16 {
        let want = if i % 2 == 0 {
            TagValue::UInt(u64::from(i))
        } else {
            TagValue::Float(f64::from(i) + 0.5)
        };
        assert_eq!(value(&h.latest[&format!("t{i}")]), Some(&want));
    }
    // One scan (period 60 s) = exactly the planned number of requests.
    assert_eq!(bank.requests(), reads as u64);
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn illegal_address_inside_a_merged_read_spares_the_neighbours() {
    let (sim, bank) = tcp_sim().await;
    bank.set_holding(100, &[11, 0, 0x42F6, 0xE979]);
    bank.set_holding(110, &[33]);
    bank.add_illegal(threadline_simulators::modbus::SimArea::Holding, 101..102);
    let toml = format!(
        r#"id = "plc"
protocol = "modbus-tcp"
address = "{}"
[[tag]]
name = "a"
area = "holding"
address = 100
scan_ms = 50
[[tag]]
name = "hole"
area = "holding"
address = 101
scan_ms = 50
[[tag]]
name = "f"
area = "holding"
address = 102
type = "f32"
scan_ms = 50
[[tag]]
name = "z"
area = "holding"
address = 110
scan_ms = 50
"#,
        sim.local_addr()
    );
    let cfg = device(&toml);
    let plan = plan_device(&cfg).expect("plan");
    assert_eq!(
        plan.groups[0].reads.len(),
        1,
        "merged into one read: {plan}"
    );
    let mut h = spawn(&cfg);
    h.wait_until("split settled", SECS5, |l| {
        ["a", "f", "z", "hole"].iter().all(|t| l.contains_key(*t))
    })
    .await;
    assert_eq!(h.latest["a"].quality, Quality::Good);
    assert_eq!(value(&h.latest["a"]), Some(&TagValue::UInt(11)));
    assert_eq!(value(&h.latest["f"]), Some(&TagValue::Float(123.456)));
    assert_eq!(value(&h.latest["z"]), Some(&TagValue::UInt(33)));
    let hole = &h.latest["hole"];
    assert_eq!(hole.quality, Quality::Bad);
    assert_eq!(hole.value, None);
    assert_eq!(
        hole.error.as_deref(),
        Some("modbus exception: illegal data address (0x02)")
    );
    // The split is remembered: neighbours keep updating, the bad tag is not re-emitted.
    let n0 = bank.requests();
    bank.set_holding(110, &[34]);
    h.wait_tag("z", SECS5, |u| value(u) == Some(&TagValue::UInt(34)))
        .await;
    assert!(bank.requests() > n0);
    assert_eq!(h.all.iter().filter(|u| u.tag == "hole").count(), 1);
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn timeout_goes_bad_then_recovers_without_corruption() {
    let (sim, bank) = tcp_sim().await;
    bank.set_holding(0, &[1111]);
    bank.set_holding(1000, &[2222]);
    let toml = format!(
        r#"id = "plc"
protocol = "modbus-tcp"
address = "{}"
timeout_ms = 200
[[tag]]
name = "a"
area = "holding"
address = 0
scan_ms = 50
[[tag]]
name = "b"
area = "holding"
address = 1000
scan_ms = 50
"#,
        sim.local_addr()
    );
    let mut h = spawn(&device(&toml));
    h.all_good(&["a", "b"], SECS5).await;
    bank.set_delay(Duration::from_millis(450));
    let errors = h.all_bad(&["a", "b"], SECS5).await;
    assert_eq!(errors[0], "timed out after 200 ms (no answer)");
    // New values while the device is slow; late replies of the old requests are still on
    // their way when the driver reconnects.
    bank.set_holding(0, &[3333]);
    bank.set_holding(1000, &[4444]);
    bank.set_delay(Duration::ZERO);
    h.wait_until("recovered with new values", SECS5, |l| {
        l.get("a").and_then(value) == Some(&TagValue::UInt(3333))
            && l.get("b").and_then(value) == Some(&TagValue::UInt(4444))
    })
    .await;
    for u in &h.all {
        if let Some(v) = value(u) {
            let ok = match u.tag.as_str() {
                "a" => [1111, 3333].contains(&(v.as_f64().unwrap_or(0.0).round() as i64)),
                _ => [2222, 4444].contains(&(v.as_f64().unwrap_or(0.0).round() as i64)),
            };
            assert!(ok, "corrupted value: {u:?}");
        }
    }
    h.stop(Duration::from_secs(1)).await;
}

struct TcpPeer(TcpSim);

impl Peer for TcpPeer {
    async fn kill(&mut self) {
        self.0.stop().await;
    }
    async fn restart(&mut self) {
        self.0.restart().await.expect("restart on the same port");
    }
}

#[tokio::test]
async fn conformance_device_killed_and_restarted() {
    let (sim, bank) = tcp_sim().await;
    bank.set_f32(10, 21.5, WordOrder::CDAB);
    bank.set_coil(3, true);
    let toml = format!(
        r#"id = "plc"
protocol = "modbus-tcp"
address = "{}"
timeout_ms = 300
[[tag]]
name = "temp"
area = "holding"
address = 10
type = "f32"
order = "CDAB"
scan_ms = 50
[[tag]]
name = "run"
area = "coil"
address = 3
scan_ms = 50
"#,
        sim.local_addr()
    );
    conformance(&device(&toml), &mut TcpPeer(sim)).await;
}

#[tokio::test]
async fn an_f32_register_holding_21_7_arrives_in_the_record_as_21_7() {
    use threadline_shared::event::{Reading, Record, RecordBody};
    let (sim, bank) = tcp_sim().await;
    bank.set_f32(0, 21.7, WordOrder::ABCD);
    bank.set_f32(2, 5.147_486, WordOrder::CDAB);
    let toml = format!(
        "id = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\n\
         [[tag]]\nname = \"hall.temp\"\narea = \"holding\"\naddress = 0\ntype = \"f32\"\nscan_ms = 50\n\
         [[tag]]\nname = \"torque\"\narea = \"holding\"\naddress = 2\ntype = \"f32\"\n\
         order = \"CDAB\"\nscan_ms = 50\n",
        sim.local_addr()
    );
    let mut h = spawn(&device(&toml));
    h.all_good(&["hall.temp", "torque"], SECS5).await;
    for (tag, json) in [("hall.temp", "21.7"), ("torque", "5.147486")] {
        let u = &h.latest[tag];
        // The record as the outbox stores and publishes it.
        let rec = Record {
            seq: 1,
            ts: u.ts,
            body: RecordBody::Reading(Reading {
                device: u.device.clone(),
                tag: u.tag.clone(),
                value: u.value.clone(),
                unit: None,
                quality: u.quality,
                error: None,
            }),
        };
        let text = String::from_utf8(rec.canonical_json()).expect("utf-8");
        assert!(text.contains(&format!("\"value\":{json},")), "{text}");
    }
    h.stop(Duration::from_secs(1)).await;
}

/// A device that accepts requests and never answers (as a PLC whose CPU halted).
fn one_tag_device(addr: std::net::SocketAddr, timeout_ms: u64, scan_ms: u64) -> String {
    format!(
        "id = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{addr}\"\ntimeout_ms = {timeout_ms}\n\
         [[tag]]\nname = \"x\"\narea = \"holding\"\naddress = 0\nscan_ms = {scan_ms}\n"
    )
}

#[tokio::test]
async fn a_killed_plc_names_the_real_cause_within_timeout_plus_one_scan() {
    let (mut sim, bank) = tcp_sim().await;
    bank.set_holding(0, &[7]);
    let (timeout_ms, scan_ms) = (500, 100);
    let mut h = spawn(&device(&one_tag_device(
        sim.local_addr(),
        timeout_ms,
        scan_ms,
    )));
    h.all_good(&["x"], SECS5).await;
    let killed = tokio::time::Instant::now();
    sim.stop().await; // the PLC goes away: its connections close
    let errors = h.all_bad(&["x"], SECS5).await;
    let took = killed.elapsed();
    // The read on the closed connection: the peer's close, not a stale errno.
    assert!(
        ["unexpected eof", "reset by peer", "broken pipe"]
            .iter()
            .any(|c| errors[0].contains(c)),
        "{errors:?}"
    );
    for stale in ["os error 0", "os error 2", "os error 115", "Success"] {
        assert!(!errors[0].contains(stale), "{errors:?}");
    }
    assert!(
        took <= Duration::from_millis(timeout_ms + scan_ms),
        "bad after {took:?}, contract: timeout_ms + one scan"
    );
    // The reconnects find nobody listening.
    let deadline = tokio::time::Instant::now() + SECS5;
    loop {
        let last = h.metrics.last_error.lock().unwrap().clone();
        if last.as_deref() == Some("connection refused") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last error {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_plc_that_never_answers_is_timed_out_within_timeout_plus_one_scan() {
    let (sim, bank) = tcp_sim().await;
    bank.set_holding(0, &[7]);
    let (timeout_ms, scan_ms) = (300, 100);
    let mut h = spawn(&device(&one_tag_device(
        sim.local_addr(),
        timeout_ms,
        scan_ms,
    )));
    h.all_good(&["x"], SECS5).await;
    let silent = tokio::time::Instant::now();
    bank.set_silent(true);
    let errors = h.all_bad(&["x"], SECS5).await;
    let took = silent.elapsed();
    assert_eq!(
        errors,
        [format!("timed out after {timeout_ms} ms (no answer)")]
    );
    assert!(
        took <= Duration::from_millis(timeout_ms + scan_ms + 100),
        "bad after {took:?}, contract: timeout_ms + one scan"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unreachable_from_start_says_connection_refused_and_comes_up_later() {
    // A port nobody listens on (taken and released).
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let toml = format!(
        "id = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{addr}\"\n[[tag]]\nname = \"x\"\narea = \"holding\"\naddress = 0\nscan_ms = 50\n"
    );
    let mut h = spawn(&device(&toml));
    let errors = h.all_bad(&["x"], SECS5).await;
    assert_eq!(errors, vec!["connection refused".to_owned()]);
    let bank = SimBank::new();
    bank.set_holding(0, &[7]);
    let _sim = TcpSim::start(addr, bank)
        .await
        .expect("sim on the same port");
    h.wait_tag("x", Duration::from_secs(10), |u| {
        value(u) == Some(&TagValue::UInt(7))
    })
    .await;
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_is_prompt_even_with_a_request_in_flight() {
    let (sim, bank) = tcp_sim().await;
    let toml = format!(
        "id = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\ntimeout_ms = 10000\n[[tag]]\nname = \"x\"\narea = \"holding\"\naddress = 0\nscan_ms = 50\n",
        sim.local_addr()
    );
    let mut h = spawn(&device(&toml));
    h.all_good(&["x"], SECS5).await;
    bank.set_delay(Duration::from_secs(5));
    let n = bank.requests();
    // Wait until a slow request is surely on the wire.
    let deadline = tokio::time::Instant::now() + SECS5;
    while bank.requests() <= n {
        assert!(tokio::time::Instant::now() < deadline, "no request sent");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.stop(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn rtu_two_units_on_one_port_a_silent_one_does_not_stall_the_other() {
    let live = SimBank::new();
    let units = HashMap::from([(1u8, live.clone())]); // unit 2 never answers
    let rtu = RtuSim::start(units).expect("pty sim");
    let dev = |id: &str, unit: u8, tag: &str| {
        device(&format!(
            "id = \"{id}\"\nprotocol = \"modbus-rtu\"\nport = \"{}\"\nbaud = 19200\nparity = \"even\"\nunit_id = {unit}\ntimeout_ms = 150\n[[tag]]\nname = \"{tag}\"\narea = \"holding\"\naddress = 0\nscan_ms = 100\n",
            rtu.path()
        ))
    };
    let mut good = spawn(&dev("rtu-1", 1, "live.counter"));
    let mut dead = spawn(&dev("rtu-2", 2, "dead.counter"));
    let errors = dead.all_bad(&["dead.counter"], SECS5).await;
    assert_eq!(
        errors,
        vec!["timed out after 150 ms (no answer)".to_owned()]
    );
    // The live unit follows a counter that changes every 100 ms, for 2 s.
    let updater = {
        let live = live.clone();
        tokio::spawn(async move {
            for i in 1..=20u16 {
                live.set_holding(0, &[i]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    good.wait_tag("live.counter", Duration::from_secs(4), |u| {
        value(u) == Some(&TagValue::UInt(20))
    })
    .await;
    updater.await.expect("updater");
    let seen = good
        .all
        .iter()
        .filter(|u| u.quality == Quality::Good)
        .count();
    assert!(seen >= 12, "live unit updated only {seen} times in 2 s");
    assert!(good.all.iter().all(|u| u.quality == Quality::Good));
    dead.stop(Duration::from_secs(1)).await;
    good.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn probe_prints_interpretations_and_fails_cleanly() {
    let (sim, bank) = tcp_sim().await;
    bank.set_f32(100, 123.456, WordOrder::ABCD);
    bank.add_illegal(threadline_simulators::modbus::SimArea::Holding, 200..201);
    let target = format!("modbus-tcp://{}", sim.local_addr());
    let t = Duration::from_secs(1);
    let report = interpret::probe(&target, 1, Area::Holding, 100, 2, t)
        .await
        .expect("probe");
    assert!(
        report.contains("0x42F6") && report.contains("123.456"),
        "{report}"
    );
    let err = interpret::probe(&target, 1, Area::Holding, 200, 2, t)
        .await
        .expect_err("exception");
    assert!(
        err.to_string()
            .contains("refused the read: modbus exception: illegal data address (0x02)"),
        "{err}"
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("modbus-tcp://{}", l.local_addr().expect("addr"));
    drop(l);
    let err = interpret::probe(&closed, 1, Area::Holding, 0, 2, t)
        .await
        .expect_err("unreachable");
    assert!(
        err.to_string().contains("could not reach")
            && err.to_string().contains("connection refused"),
        "{err}"
    );
}

#[tokio::test]
async fn rtu_probe_reads_over_a_pty() {
    let bank = SimBank::new();
    bank.set_holding(0, &[0x1234, 0x5678]);
    let rtu = RtuSim::start(HashMap::from([(7u8, bank)])).expect("pty sim");
    let target = format!("modbus-rtu://{}?baud=19200&parity=even", rtu.path());
    let report = interpret::probe(&target, 7, Area::Holding, 0, 2, Duration::from_secs(1))
        .await
        .expect("probe");
    assert!(report.contains("0x12345678"), "{report}");
}

#[allow(dead_code)]
fn _harness_is_used(_: Harness) {}
