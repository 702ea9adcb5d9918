//! Station engine driven the way the floor drives it: synthetic tag edges and scans in, the
//! exact trace events out.

#![allow(clippy::unwrap_used)] // helpers of tests panic on purpose

use std::path::Path;

use serde_json::{Value, json};
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::drivers::{RawScan, TagUpdate};
use threadline_gateway::outbox::{Outbox, OutboxOptions};
use threadline_gateway::stations::{
    SavedState, StationEngine, StationEvent, load_committed, reason,
};
use threadline_shared::event::{Quality, TagValue};
use threadline_shared::time::{Timestamp, format, parse};

const SSCC1: &str = "006141410000000104";
const SSCC2: &str = "006141410000000203";
const SSCC3: &str = "006141410000000302";
const PALLET: &str = "106141410000000903";

const CONFIG: &str = r#"
[gateway]
id = "gw-line-1"
plant = "plant-a"
line = "line-1"
data_dir = "/nonexistent"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
  [[device.tag]]
  name = "press.cycle_done"
  area = "coil"
  address = 0
  [[device.tag]]
  name = "press.start"
  area = "coil"
  address = 1
  [[device.tag]]
  name = "press.ok"
  area = "coil"
  address = 2
  [[device.tag]]
  name = "press.pressure"
  area = "holding"
  address = 100
  type = "f32"
  unit = "bar"
  [[device.tag]]
  name = "press.program_no"
  area = "holding"
  address = 110
  [[device.tag]]
  name = "press.defect"
  area = "holding"
  address = 111
  [[device.tag]]
  name = "hall.temp"
  area = "holding"
  address = 120
  unit = "°C"
  [[device.tag]]
  name = "cam.serial"
  area = "holding"
  address = 200
  type = "string"
  length = 8
  [[device.tag]]
  name = "st20.busy"
  area = "coil"
  address = 3
  [[device.tag]]
  name = "insp.done"
  area = "coil"
  address = 4
  [[device.tag]]
  name = "insp.diameter"
  area = "holding"
  address = 300
  type = "f32"
  unit = "mm"

[[pattern]]
kind = "unit"
regex = '^SN\d{10}$'
[[pattern]]
kind = "unit"
gs1_ai = "21"
[[pattern]]
kind = "lot"
regex = '^LOT-(?P<part>P-\d{4})-\d{6}$'
[[pattern]]
kind = "lot"
gs1_ai = "10"
[[pattern]]
kind = "container"
gs1_ai = "00"
[[pattern]]
kind = "operator"
regex = '^OP\d{4}$'
[[pattern]]
kind = "work_order"
regex = '^WO-\d+$'
[[pattern]]
kind = "shipment"
regex = '^SHP-(?:(?P<customer>[A-Z]+)-)?\d+$'

[[station]]
id = "ST10"
operation = "OP10 press-fit bearing"
kind = "process"
equipment = "PRESS-1"
starts_units = true
part = "P-100"
work_order_parts = { "WO-7" = "P-777" }
logout_code = "LOGOUT"
complete_on = { tag = "press.cycle_done", edge = "rising" }
start_on = { tag = "press.start", edge = "rising" }
result = { tag = "press.ok", pass = 1 }
defect_code = "press.defect"
recipe = "press.program_no"
capture = [{ tag = "press.pressure", lsl = 180.0, usl = 220.0 }]
environment = ["hall.temp"]
  [[station.feeder]]
  part = "P-6202"
  qty_per_unit = 1
  [[station.feeder]]
  part = "P-7001"
  qty_per_unit = 2

[[station]]
id = "ST20"
kind = "process"
unit_tag = "cam.serial"
complete_on = { tag = "st20.busy", edge = "falling" }
rework = "allow"
  [[station.feeder]]
  part = "P-8000"

[[station]]
id = "ST30"
operation = "OP30 final assembly"
kind = "assembly"
complete_code = "DONE"
disassemble_code = "DIS"

[[station]]
id = "ST40"
kind = "inspect"
complete_on = { tag = "insp.done", edge = "rising" }
characteristics = [{ tag = "insp.diameter", name = "bore diameter", lsl = 9.95, usl = 10.05 }]

[[station]]
id = "PK1"
kind = "pack"
level = "case"
pack_size = 2
unpack_code = "UNPACK"

[[station]]
id = "PK2"
kind = "pack"
level = "pallet"
close_code = "CLOSE"

[[station]]
id = "SH1"
kind = "ship"
customer = "DEFAULT-CUST"
shipment_customers = { "SHP-9" = "BETA" }
close_code = "SHIPPED"

[[station]]
id = "RC1"
kind = "receive"
supplier = "SUP-1"
gtin_parts = { "09506000134352" = "P-6202" }
"#;

fn config() -> GatewayConfig {
    match GatewayConfig::parse("stations-test.toml", CONFIG) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn t(s: i64) -> Timestamp {
    parse("2026-11-25T08:00:00Z").unwrap() + chrono::Duration::seconds(s)
}

fn ts(s: i64) -> String {
    format(&t(s))
}

/// Feeds the engine and collects events as JSON (with `ts`), and the context the runtime would
/// commit with them.
struct Floor {
    engine: StationEngine,
    events: Vec<Value>,
    /// The last context handed out for committing.
    committed: Option<String>,
    /// Inputs after which the context changed.
    state_changes: usize,
}

impl Floor {
    fn new() -> Floor {
        Floor::restart(None)
    }

    /// A new gateway process starting from `committed`.
    fn restart(committed: Option<String>) -> Floor {
        let saved = committed.as_deref().map(|s| SavedState::parse(s).unwrap());
        Floor {
            engine: StationEngine::new(&config(), saved),
            events: Vec::new(),
            committed,
            state_changes: 0,
        }
    }

    fn take(&mut self, evs: Vec<StationEvent>) {
        if let Some(s) = self.engine.take_state() {
            self.committed = Some(s);
            self.state_changes += 1;
        }
        for e in evs {
            let mut v = serde_json::to_value(&e.body).unwrap();
            v["ts"] = json!(format(&e.ts));
            self.events.push(v);
        }
    }

    fn tag(&mut self, s: i64, tag: &str, value: impl Into<TagValue>) {
        let u = TagUpdate {
            device: "plc".into(),
            tag: tag.into(),
            value: Some(value.into()),
            quality: Quality::Good,
            error: None,
            ts: t(s),
        };
        let evs = self.engine.on_tag(&u);
        self.take(evs);
    }

    fn scan_at(&mut self, s: i64, station: &str, raw: &str) {
        let scan = RawScan {
            scanner: format!("{station}-scanner"),
            station: station.into(),
            raw: raw.into(),
            rfid: false,
            ts: t(s),
            error: None,
        };
        let evs = self.engine.on_scan(&scan);
        self.take(evs);
    }

    /// One press cycle at ST10: start edge at `s`, values, done edge at `s + 10`.
    fn press_cycle(&mut self, s: i64, pressure: f64, ok: bool) {
        self.tag(s, "press.start", true);
        self.tag(s + 5, "press.pressure", pressure);
        self.tag(s + 5, "press.ok", ok);
        self.tag(s + 10, "press.cycle_done", true);
        self.tag(s + 11, "press.cycle_done", false);
        self.tag(s + 11, "press.start", false);
    }

    fn drain(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    fn of_type(&self, ty: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == ty)
            .cloned()
            .collect()
    }
}

/// Sets the level of ST10's trigger tags so the first cycle's edges are edges.
fn prime(f: &mut Floor) {
    f.tag(0, "press.cycle_done", false);
    f.tag(0, "press.start", false);
    f.tag(0, "press.program_no", 12i64);
    f.tag(0, "press.defect", 0i64);
    f.tag(0, "hall.temp", 21.5);
}

#[test]
fn full_operation_record_with_start_edge_parameters_and_materials() {
    let mut f = Floor::new();
    prime(&mut f);
    f.scan_at(1, "ST10", "OP0001");
    f.scan_at(2, "ST10", "WO-7");
    f.scan_at(3, "ST10", "LOT-P-6202-000001");
    f.scan_at(4, "ST10", "LOT-P-7001-000009");
    f.scan_at(5, "ST10", "SN0000000001");
    f.press_cycle(20, 201.5, true);
    assert_eq!(
        f.drain(),
        vec![
            json!({"type":"material_loaded","ts":ts(3),"station":"ST10","lot":"LOT-P-6202-000001","part":"P-6202","operator":"OP0001"}),
            json!({"type":"material_loaded","ts":ts(4),"station":"ST10","lot":"LOT-P-7001-000009","part":"P-7001","operator":"OP0001"}),
            json!({"type":"unit_started","ts":ts(5),"unit":"SN0000000001","part":"P-777","work_order":"WO-7","station":"ST10","operator":"OP0001"}),
            json!({"type":"operation_completed","ts":ts(30),"unit":"SN0000000001","station":"ST10",
                "operation":"OP10 press-fit bearing","equipment":"PRESS-1","operator":"OP0001","recipe":"12",
                "started_at":ts(20),"result":"pass",
                "parameters":[{"name":"press.pressure","value":201.5,"unit":"bar","lsl":180.0,"usl":220.0}],
                "environment":[{"name":"hall.temp","value":21.5,"unit":"°C"}],
                "materials":[{"lot":"LOT-P-6202-000001","part":"P-6202","qty":1.0},{"lot":"LOT-P-7001-000009","part":"P-7001","qty":2.0}]}),
        ]
    );
    // A failing cycle with a defect code; without a start edge started_at is the scan time.
    f.scan_at(40, "ST10", "SN0000000002");
    f.tag(45, "press.ok", false);
    f.tag(45, "press.defect", 17i64);
    f.tag(50, "press.cycle_done", true);
    let ev = f.drain();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1]["result"], "fail");
    assert_eq!(ev[1]["defect_code"], "17");
    assert_eq!(ev[1]["started_at"], ts(40));
}

#[test]
fn operator_change_mid_shift_and_logout() {
    let mut f = Floor::new();
    prime(&mut f);
    f.scan_at(1, "ST10", "OP0001");
    f.scan_at(2, "ST10", "SN0000000001");
    f.press_cycle(10, 200.0, true);
    f.scan_at(30, "ST10", "OP0002");
    assert_eq!(f.engine.operator("ST10"), Some("OP0002"));
    f.scan_at(31, "ST10", "SN0000000002");
    f.press_cycle(40, 200.0, true);
    f.scan_at(60, "ST10", "LOGOUT");
    f.scan_at(61, "ST10", "SN0000000003");
    f.press_cycle(70, 200.0, true);
    let ops: Vec<(Value, Value)> = f
        .of_type("operation_completed")
        .iter()
        .map(|e| {
            (
                e["unit"].clone(),
                e.get("operator").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (json!("SN0000000001"), json!("OP0001")),
            (json!("SN0000000002"), json!("OP0002")),
            (json!("SN0000000003"), Value::Null),
        ]
    );
    let started: Vec<Value> = f
        .of_type("unit_started")
        .iter()
        .map(|e| e.get("operator").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(started, vec![json!("OP0001"), json!("OP0002"), Value::Null]);
    // Without a work order the station's part is used.
    assert_eq!(f.of_type("unit_started")[0]["part"], "P-100");
    assert!(f.of_type("scan_rejected").is_empty());
}

#[test]
fn feeder_lot_change_between_units() {
    let mut f = Floor::new();
    prime(&mut f);
    f.scan_at(1, "ST10", "LOT-P-6202-000001");
    f.scan_at(2, "ST10", "LOT-P-7001-000001");
    f.scan_at(3, "ST10", "SN0000000001");
    f.press_cycle(10, 200.0, true);
    // The bearing feeder is refilled with a new lot; the other feeder keeps its lot.
    f.scan_at(30, "ST10", "LOT-P-6202-000002");
    f.scan_at(31, "ST10", "SN0000000002");
    f.press_cycle(40, 200.0, true);
    let mats: Vec<Value> = f
        .of_type("operation_completed")
        .iter()
        .map(|e| e["materials"].clone())
        .collect();
    assert_eq!(
        mats,
        vec![
            json!([{"lot":"LOT-P-6202-000001","part":"P-6202","qty":1.0},{"lot":"LOT-P-7001-000001","part":"P-7001","qty":2.0}]),
            json!([{"lot":"LOT-P-6202-000002","part":"P-6202","qty":1.0},{"lot":"LOT-P-7001-000001","part":"P-7001","qty":2.0}]),
        ]
    );
    // A GS1 label's GTIN maps to the part (gtin_parts), and loads that feeder.
    f.drain();
    f.scan_at(50, "ST10", "(01)09506000134352(10)L777");
    assert_eq!(
        f.drain(),
        vec![
            json!({"type":"material_loaded","ts":ts(50),"station":"ST10","lot":"L777","part":"P-6202"})
        ]
    );
    // A single-feeder station loads a lot whose label names no part.
    f.scan_at(51, "ST20", "(10)L888");
    assert_eq!(f.drain()[0]["part"], "P-8000");
    assert_eq!(f.engine.feeder_lot("ST20", "P-8000"), Some("L888"));
}

#[test]
fn two_level_pack_case_pallet_ship_and_unpack() {
    let mut f = Floor::new();
    let p = |c: &str, l: &str, kind: &str, id: &str, s: i64, st: &str| json!({"type":"packed","ts":ts(s),"container":c,"level":l,"child":{"kind":kind,"id":id},"station":st});
    f.scan_at(1, "PK1", &format!("(00){SSCC1}"));
    f.scan_at(2, "PK1", "SN0000000001");
    f.scan_at(3, "PK1", "SN0000000002"); // pack_size 2 closes the case
    f.scan_at(4, "PK1", "SN0000000003"); // → rejected: no open container
    f.scan_at(5, "PK1", &format!("]C100{SSCC2}"));
    f.scan_at(6, "PK1", "SN0000000003");
    f.scan_at(7, "PK1", "SN0000000004");
    f.scan_at(10, "PK2", &format!("(00){PALLET}")); // opens the pallet
    f.scan_at(11, "PK2", &format!("(00){SSCC1}")); // cases go into it
    f.scan_at(12, "PK2", &format!("(00){SSCC2}"));
    f.scan_at(13, "PK2", "CLOSE");
    f.scan_at(20, "SH1", "SHP-ACME-1");
    f.scan_at(21, "SH1", &format!("(00){PALLET}"));
    f.scan_at(22, "SH1", "SHIPPED");
    f.scan_at(23, "SH1", "SN0000000099"); // → rejected: no open shipment
    f.scan_at(24, "SH1", "SHP-9"); // customer from shipment_customers
    f.scan_at(25, "SH1", "SN0000000099");
    f.scan_at(30, "PK1", &format!("(00){SSCC3}"));
    f.scan_at(31, "PK1", "SN0000000005");
    f.scan_at(32, "PK1", "UNPACK");
    f.scan_at(33, "PK1", "SN0000000005");
    let rej = |s: i64, st: &str, raw: &str, r: &str| json!({"type":"scan_rejected","ts":ts(s),"station":st,"scanner":format!("{st}-scanner"),"raw":raw,"reason":r});
    assert_eq!(
        f.drain(),
        vec![
            p(SSCC1, "case", "unit", "SN0000000001", 2, "PK1"),
            p(SSCC1, "case", "unit", "SN0000000002", 3, "PK1"),
            rej(4, "PK1", "SN0000000003", reason::NO_OPEN_CONTAINER),
            p(SSCC2, "case", "unit", "SN0000000003", 6, "PK1"),
            p(SSCC2, "case", "unit", "SN0000000004", 7, "PK1"),
            p(PALLET, "pallet", "container", SSCC1, 11, "PK2"),
            p(PALLET, "pallet", "container", SSCC2, 12, "PK2"),
            json!({"type":"shipped","ts":ts(21),"container":PALLET,"shipment":"SHP-ACME-1","customer":"ACME","station":"SH1"}),
            rej(23, "SH1", "SN0000000099", reason::NO_OPEN_SHIPMENT),
            json!({"type":"shipped","ts":ts(25),"unit":"SN0000000099","shipment":"SHP-9","customer":"BETA","station":"SH1"}),
            p(SSCC3, "case", "unit", "SN0000000005", 31, "PK1"),
            json!({"type":"unpacked","ts":ts(33),"container":SSCC3,"level":"case","child":{"kind":"unit","id":"SN0000000005"},"station":"PK1"}),
        ]
    );
}

#[test]
fn rework_rejected_by_default_allowed_when_configured() {
    let mut f = Floor::new();
    prime(&mut f);
    f.scan_at(1, "ST10", "SN0000000001");
    f.press_cycle(10, 200.0, true);
    f.drain();
    f.scan_at(30, "ST10", "SN0000000001");
    assert_eq!(
        f.drain(),
        vec![
            json!({"type":"scan_rejected","ts":ts(30),"station":"ST10","scanner":"ST10-scanner","raw":"SN0000000001","reason":reason::ALREADY_COMPLETED})
        ]
    );
    assert_eq!(f.engine.current_unit("ST10"), None);

    // ST20 allows rework; its unit comes from a camera's string tag, completion on a falling edge.
    f.tag(0, "st20.busy", false);
    let cycle = |f: &mut Floor, s: i64, serial: &str| {
        f.tag(s, "cam.serial", serial);
        f.tag(s + 1, "st20.busy", true);
        f.tag(s + 5, "st20.busy", false);
    };
    cycle(&mut f, 40, "SN0000000001");
    cycle(&mut f, 50, "SN0000000002");
    cycle(&mut f, 60, "SN0000000001"); // back for rework
    let ops: Vec<(Value, Value, Value)> = f
        .of_type("operation_completed")
        .iter()
        .map(|e| (e["unit"].clone(), e["ts"].clone(), e["started_at"].clone()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (json!("SN0000000001"), json!(ts(45)), json!(ts(40))),
            (json!("SN0000000002"), json!(ts(55)), json!(ts(50))),
            (json!("SN0000000001"), json!(ts(65)), json!(ts(60))),
        ]
    );
    assert!(f.of_type("scan_rejected").is_empty());
}

#[test]
fn assembly_binds_children_and_disassembles_with_reason() {
    let mut f = Floor::new();
    f.scan_at(1, "ST30", "OP0042");
    f.scan_at(2, "ST30", "SN0000000100"); // parent
    f.scan_at(3, "ST30", "SN0000000201"); // child unit
    f.scan_at(4, "ST30", "(01)09506000134352(10)L5(37)4"); // child lot, qty from the label
    f.scan_at(5, "ST30", "DIS:scratched");
    f.scan_at(6, "ST30", "SN0000000201");
    f.scan_at(7, "ST30", "SN0000000202"); // replacement
    f.scan_at(8, "ST30", "DONE");
    let asm = |ty: &str, s: i64, kind: &str, id: &str, qty: f64| json!({"type":ty,"ts":ts(s),"parent":"SN0000000100","child":{"kind":kind,"id":id},"qty":qty,"station":"ST30","operator":"OP0042"});
    let mut dis = asm("disassembled", 6, "unit", "SN0000000201", 1.0);
    dis["reason"] = json!("scratched");
    assert_eq!(
        f.drain(),
        vec![
            asm("assembled", 3, "unit", "SN0000000201", 1.0),
            asm("assembled", 4, "lot", "L5", 4.0),
            dis,
            asm("assembled", 7, "unit", "SN0000000202", 1.0),
            json!({"type":"operation_completed","ts":ts(8),"unit":"SN0000000100","station":"ST30",
                "operation":"OP30 final assembly","operator":"OP0042","started_at":ts(2),"result":"pass",
                "parameters":[],"environment":[],"materials":[]}),
        ]
    );
    // After completion the next unit is a new parent.
    f.scan_at(9, "ST30", "SN0000000101");
    assert_eq!(f.engine.current_unit("ST30"), Some("SN0000000101"));
}

#[test]
fn inspection_records_quality_checks() {
    let mut f = Floor::new();
    f.tag(0, "insp.done", false);
    f.scan_at(1, "ST40", "SN0000000001");
    f.tag(2, "insp.diameter", 10.01);
    f.tag(3, "insp.done", true);
    f.tag(4, "insp.done", false);
    f.scan_at(5, "ST40", "SN0000000002");
    f.tag(6, "insp.diameter", 10.2);
    f.tag(7, "insp.done", true);
    let qc = f.of_type("quality_check");
    assert_eq!(
        qc,
        vec![
            json!({"type":"quality_check","ts":ts(3),"unit":"SN0000000001","characteristic":"bore diameter","value":10.01,"unit_of_measure":"mm","lsl":9.95,"usl":10.05,"result":"pass","station":"ST40"}),
            json!({"type":"quality_check","ts":ts(7),"unit":"SN0000000002","characteristic":"bore diameter","value":10.2,"unit_of_measure":"mm","lsl":9.95,"usl":10.05,"result":"fail","station":"ST40"}),
        ]
    );
    let results: Vec<Value> = f
        .of_type("operation_completed")
        .iter()
        .map(|e| e["result"].clone())
        .collect();
    assert_eq!(results, vec![json!("pass"), json!("fail")]);
}

#[test]
fn receiving_turns_supplier_labels_into_lots() {
    let mut f = Floor::new();
    f.scan_at(1, "RC1", "]C10109506000134352\u{1d}10B-2026-11\u{1d}37250");
    f.scan_at(
        2,
        "RC1",
        "https://id.gs1.org/01/09506000134352/10/B-2026-12?37=10",
    );
    f.scan_at(3, "RC1", "(01)00000000000017(10)X1(412)0614141000418");
    assert_eq!(
        f.drain(),
        vec![
            json!({"type":"lot_received","ts":ts(1),"lot":"B-2026-11","part":"P-6202","supplier":"SUP-1","supplier_batch":"B-2026-11","qty":250.0,"station":"RC1"}),
            json!({"type":"lot_received","ts":ts(2),"lot":"B-2026-12","part":"P-6202","supplier":"SUP-1","supplier_batch":"B-2026-12","qty":10.0,"station":"RC1"}),
            json!({"type":"lot_received","ts":ts(3),"lot":"X1","part":"00000000000017","supplier":"0614141000418","supplier_batch":"X1","station":"RC1"}),
        ]
    );
}

#[test]
fn every_rejection_reason() {
    let mut f = Floor::new();
    prime(&mut f);
    let rejected = |f: &mut Floor| -> String {
        let ev = f.drain();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0]["type"], "scan_rejected", "{ev:?}");
        ev[0]["reason"].as_str().unwrap().to_owned()
    };
    f.scan_at(1, "ST10", "HELLO WORLD");
    assert_eq!(rejected(&mut f), reason::NO_PATTERN);
    let garbled = RawScan {
        scanner: "ST10-scanner".into(),
        station: "ST10".into(),
        raw: "\u{fffd}\u{fffd}?".into(),
        rfid: false,
        ts: t(2),
        error: Some("not valid UTF-8".into()),
    };
    let evs = f.engine.on_scan(&garbled);
    f.take(evs);
    assert_eq!(
        rejected(&mut f),
        format!("{}: not valid UTF-8", reason::UNREADABLE)
    );
    f.scan_at(3, "PK1", "SN0000000001");
    assert_eq!(rejected(&mut f), reason::NO_OPEN_CONTAINER);
    f.scan_at(4, "ST10", "LOT-P-9999-000001");
    assert_eq!(rejected(&mut f), format!("{} (P-9999)", reason::NO_FEEDER));
    f.scan_at(5, "ST10", "(10)NOPART");
    assert_eq!(rejected(&mut f), reason::LOT_PART_UNKNOWN);
    f.tag(6, "press.cycle_done", true);
    let ev = f.drain();
    assert_eq!(
        ev,
        vec![
            json!({"type":"scan_rejected","ts":ts(6),"station":"ST10","scanner":"tag:press.cycle_done","raw":"press.cycle_done=true","reason":reason::COMPLETION_WITHOUT_UNIT})
        ]
    );
    f.tag(7, "press.cycle_done", false);
    f.scan_at(8, "ST10", "SN0000000001");
    f.press_cycle(10, 200.0, true);
    f.drain();
    f.scan_at(30, "ST10", "SN0000000001");
    assert_eq!(rejected(&mut f), reason::ALREADY_COMPLETED);
    f.scan_at(31, "SH1", "SN0000000001");
    assert_eq!(rejected(&mut f), reason::NO_OPEN_SHIPMENT);
    f.scan_at(32, "ST10", &format!("(00){SSCC1}"));
    assert_eq!(
        rejected(&mut f),
        format!(
            "{}: a container code at a process station",
            reason::NOT_USED_HERE
        )
    );
    f.scan_at(33, "ST30", "DONE");
    assert_eq!(rejected(&mut f), reason::NO_CURRENT_UNIT);
    f.scan_at(34, "ST30", "DIS");
    assert_eq!(rejected(&mut f), reason::NO_CURRENT_UNIT);
    f.scan_at(35, "NOPE", "SN0000000001");
    assert_eq!(rejected(&mut f), reason::UNKNOWN_STATION);
    f.scan_at(36, "PK2", "CLOSE");
    assert_eq!(rejected(&mut f), reason::NO_OPEN_CONTAINER);
    assert_eq!(f.engine.counters().rejected, 13);
    assert_eq!(f.engine.counters().orphan_completions, 1);
}

#[test]
fn rfid_epc_is_decoded_and_classified() {
    let mut engine = StationEngine::new(&config(), None);
    let scan = RawScan {
        scanner: "ST10-rfid".into(),
        station: "ST10".into(),
        raw: "3074257BF7194E4000001A85".into(),
        rfid: true,
        ts: t(1),
        error: None,
    };
    let evs = engine.on_scan(&scan);
    assert_eq!(engine.current_unit("ST10"), Some("6789"));
    assert_eq!(evs.len(), 1); // unit_started
}

#[test]
fn state_survives_restart() {
    let committed = {
        let mut f = Floor::new();
        prime(&mut f);
        f.scan_at(1, "ST10", "OP0001");
        f.scan_at(2, "ST10", "LOT-P-6202-000001");
        f.scan_at(3, "ST10", "LOT-P-7001-000001");
        f.scan_at(4, "ST10", "SN0000000001");
        f.tag(5, "press.start", true);
        f.scan_at(6, "PK1", &format!("(00){SSCC1}"));
        f.scan_at(7, "PK1", "SN0000000000");
        f.scan_at(8, "SH1", "SHP-1");
        f.committed
    };
    // A new gateway process from the committed context: the PLC values arrive again, then
    // the cycle ends.
    let mut f = Floor::restart(committed);
    assert_eq!(f.engine.current_unit("ST10"), Some("SN0000000001"));
    assert_eq!(f.engine.operator("ST10"), Some("OP0001"));
    f.tag(9, "press.pressure", 199.0);
    f.tag(9, "press.ok", true);
    f.tag(10, "press.cycle_done", true); // committed previous value false → a rising edge
    f.scan_at(11, "PK1", "SN0000000002"); // the open case continues: 2nd unit closes it
    f.scan_at(12, "PK1", "SN0000000003");
    f.scan_at(13, "SH1", "SN0000000002");
    f.scan_at(14, "ST10", "SN0000000001"); // completed before the restart… and after
    let ev = f.drain();
    assert_eq!(ev[0]["type"], "operation_completed");
    assert_eq!(ev[0]["unit"], "SN0000000001");
    assert_eq!(ev[0]["operator"], "OP0001");
    assert_eq!(ev[0]["started_at"], ts(5));
    assert_eq!(
        ev[0]["materials"],
        json!([{"lot":"LOT-P-6202-000001","part":"P-6202","qty":1.0},{"lot":"LOT-P-7001-000001","part":"P-7001","qty":2.0}])
    );
    assert_eq!(ev[1]["type"], "packed");
    assert_eq!(ev[1]["container"], SSCC1);
    assert_eq!(ev[2]["reason"], reason::NO_OPEN_CONTAINER);
    assert_eq!(ev[3]["type"], "shipped");
    assert_eq!(ev[3]["shipment"], "SHP-1");
    assert_eq!(ev[4]["reason"], reason::ALREADY_COMPLETED);
    assert_eq!(ev.len(), 5);
}

#[test]
fn context_is_handed_out_only_when_it_changed() {
    let mut f = Floor::new();
    prime(&mut f);
    let after_prime = f.state_changes;
    assert!(after_prime > 0, "the first trigger values are context");
    // Process values and trigger tags polled again unchanged change nothing.
    for i in 0..10 {
        f.tag(1, "press.pressure", 200.0 + f64::from(i));
        f.tag(1, "press.cycle_done", false);
    }
    assert_eq!(f.state_changes, after_prime);
    // A rejected scan changes no context either; a login does.
    f.scan_at(2, "ST10", "HELLO");
    assert_eq!(f.state_changes, after_prime);
    f.scan_at(3, "ST10", "OP0001");
    assert_eq!(f.state_changes, after_prime + 1);
    assert!(f.committed.as_deref().unwrap().contains("OP0001"));
    // Unchanged context: nothing to commit.
    assert_eq!(f.engine.take_state(), None);
}

#[test]
fn an_unreadable_context_is_refused_by_parse() {
    assert!(SavedState::parse("{not json").is_err());
    let e =
        SavedState::parse(r#"{"version":7,"work_order":null,"work_order_part":null}"#).unwrap_err();
    assert!(e.contains("unsupported version 7"), "{e}");
}

async fn open_outbox(dir: &Path) -> Outbox {
    Outbox::open(OutboxOptions::new(dir, 16)).await.unwrap()
}

fn files_starting_with(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn a_legacy_state_file_moves_into_the_outbox_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Floor::new();
    prime(&mut f);
    f.scan_at(1, "ST10", "OP0001");
    f.scan_at(2, "ST10", "SN0000000001");
    // What an older gateway left behind (it wrote the same JSON, pretty-printed).
    let legacy: Value = serde_json::from_str(f.committed.as_deref().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("stations.json"),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();

    let outbox = open_outbox(dir.path()).await;
    let saved = load_committed(&outbox, dir.path()).await.unwrap();
    let engine = StationEngine::new(&config(), saved);
    assert_eq!(engine.current_unit("ST10"), Some("SN0000000001"));
    assert_eq!(engine.operator("ST10"), Some("OP0001"));
    assert!(!dir.path().join("stations.json").exists());
    assert!(dir.path().join("stations.json.migrated").exists());
    let in_outbox: Value =
        serde_json::from_str(&outbox.station_state().await.unwrap().unwrap()).unwrap();
    assert_eq!(in_outbox, legacy);
    outbox.close().await.unwrap();

    // Later starts read the outbox; a stale stations.json (a downgrade and back) is ignored.
    std::fs::write(dir.path().join("stations.json"), b"{\"stale\": true}").unwrap();
    let outbox = open_outbox(dir.path()).await;
    let saved = load_committed(&outbox, dir.path()).await.unwrap();
    assert_eq!(
        StationEngine::new(&config(), saved).current_unit("ST10"),
        Some("SN0000000001")
    );
    assert!(!dir.path().join("stations.json").exists());
}

#[tokio::test]
async fn unreadable_contexts_are_kept_aside_and_the_stations_start_empty() {
    // A corrupt legacy file: moved aside, an empty context committed instead.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stations.json"), b"{not json").unwrap();
    let outbox = open_outbox(dir.path()).await;
    let saved = load_committed(&outbox, dir.path()).await.unwrap();
    assert_eq!(
        StationEngine::new(&config(), saved).current_unit("ST10"),
        None
    );
    assert_eq!(
        files_starting_with(dir.path(), "stations.json.corrupt-").len(),
        1
    );
    assert!(outbox.station_state().await.unwrap().is_some());

    // A committed context that cannot be parsed: copied aside, stations empty.
    outbox.append_step(&[], Some("{not json")).await.unwrap();
    assert_eq!(load_committed(&outbox, dir.path()).await.unwrap(), None);
    let aside = files_starting_with(dir.path(), "station_state.corrupt-");
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(),
        "{not json"
    );
}

#[test]
fn config_cross_field_checks() {
    let bad = CONFIG.replace("level = \"pallet\"\n", "")
        + r#"
[[station]]
id = "BAD"
kind = "process"
complete_on = { tag = "no.such.tag" }
level = "case"
  [[station.feeder]]
  part = "X"
  [[station.feeder]]
  part = "X"
"#;
    let err = GatewayConfig::parse("bad.toml", &bad)
        .unwrap_err()
        .to_string();
    for want in [
        "station[5].level: a pack station needs",
        "unknown tag \"no.such.tag\"",
        "duplicate feeder part \"X\"",
        "`level` is for pack stations",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let typo = CONFIG.replace("rework = \"allow\"", "rework = \"maybe\"");
    let err = GatewayConfig::parse("typo.toml", &typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `maybe`"), "{err}");
}

/// Throughput of the hot path and of full cycles (scan + edges + the context to commit).
/// `cargo test -p threadline-gateway --test stations -- --ignored --nocapture throughput`
#[test]
#[ignore = "measurement, run explicitly"]
fn throughput() {
    let mut f = Floor::new();
    prime(&mut f);
    let n = 1_000_000;
    let start = std::time::Instant::now();
    for i in 0..n {
        let u = TagUpdate {
            device: "plc".into(),
            tag: "press.pressure".into(),
            value: Some(TagValue::Float(f64::from(i % 1000))),
            quality: Quality::Good,
            error: None,
            ts: t(1),
        };
        assert!(f.engine.on_tag(&u).is_empty());
    }
    let el = start.elapsed();
    println!(
        "non-trigger tag updates: {n} in {el:?} = {:.0}/s",
        f64::from(n) / el.as_secs_f64()
    );
    let cycles = 500;
    let start = std::time::Instant::now();
    for i in 0..cycles {
        f.scan_at(10 * i, "ST10", &format!("SN{:010}", 1000 + i));
        f.press_cycle(10 * i + 1, 200.0, true);
    }
    let el = start.elapsed();
    assert_eq!(f.of_type("operation_completed").len(), cycles as usize);
    println!(
        "press cycles (1 scan + 6 tag updates, 2-4 contexts to commit each): {cycles} in {el:?} = {:.0}/s",
        cycles as f64 / el.as_secs_f64()
    );
}

#[test]
fn change_and_equals_triggers_work_order_tag_and_disassemble_on() {
    let text = r#"
[gateway]
id = "gw"
plant = "p"
line = "l"
data_dir = "/nonexistent"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[device]]
id = "plc"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
  [[device.tag]]
  name = "cell.counter"
  node_id = "ns=2;s=Counter"
  [[device.tag]]
  name = "cell.state"
  node_id = "ns=2;s=State"
  [[device.tag]]
  name = "cell.serial"
  node_id = "ns=2;s=Serial"
  [[device.tag]]
  name = "line.wo"
  node_id = "ns=2;s=WorkOrder"
  [[device.tag]]
  name = "asm.strip"
  node_id = "ns=2;s=Strip"
[[pattern]]
kind = "unit"
regex = '^SN\d{10}$'
[[station]]
id = "CELL"
kind = "process"
starts_units = true
work_order_tag = "line.wo"
work_order_parts = { "WO-1" = "P-1" }
unit_tag = "cell.serial"
start_on = { tag = "cell.state", equals = "RUNNING" }
complete_on = { tag = "cell.counter", edge = "change" }
[[station]]
id = "ASM"
kind = "assembly"
complete_code = "OK"
disassemble_on = { tag = "asm.strip", equals = true }
disassemble_reason = "stripped for rework"
"#;
    let cfg = GatewayConfig::parse("t.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let mut f = Floor {
        engine: StationEngine::new(&cfg, None),
        events: Vec::new(),
        committed: None,
        state_changes: 0,
    };
    f.tag(0, "cell.counter", 41i64);
    f.tag(0, "cell.state", "IDLE");
    f.tag(0, "asm.strip", false);
    f.tag(1, "line.wo", "WO-1");
    assert_eq!(f.engine.work_order(), Some("WO-1"));
    f.tag(2, "cell.serial", "SN0000000001\0\0");
    f.tag(3, "cell.state", "RUNNING");
    f.tag(4, "cell.counter", 41i64); // unchanged: no completion
    f.tag(9, "cell.counter", 42i64);
    let ev = f.drain();
    assert_eq!(
        ev[0],
        json!({"type":"unit_started","ts":ts(2),"unit":"SN0000000001","part":"P-1","work_order":"WO-1","station":"CELL"})
    );
    assert_eq!(ev[1]["type"], "operation_completed");
    assert_eq!(ev[1]["started_at"], ts(3));
    assert_eq!(ev[1]["ts"], ts(9));
    assert_eq!(ev.len(), 2);

    f.scan_at(10, "ASM", "SN0000000100");
    f.scan_at(11, "ASM", "SN0000000201");
    f.scan_at(12, "ASM", "SN0000000202");
    f.tag(13, "asm.strip", true);
    let ev = f.drain();
    let dis: Vec<(Value, Value)> = ev
        .iter()
        .filter(|e| e["type"] == "disassembled")
        .map(|e| (e["child"]["id"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(
        dis,
        vec![
            (json!("SN0000000201"), json!("stripped for rework")),
            (json!("SN0000000202"), json!("stripped for rework")),
        ]
    );
}
