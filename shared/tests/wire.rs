//! Golden wire fixtures: the JSON on the MQTT wire must not drift by accident.
//!
//! `tests/fixtures/<name>.json` holds, on one line, the canonical JSON of one value built in
//! `golden_*` below: every record type (what [`Record::canonical_json`] produces, the input of the
//! aggregator's hash chain), an envelope, an ack and a status message. A renamed field, a changed
//! default, a different field order or timestamp format breaks `fixtures_are_canonical_and_match_rust_values`.
//! After a deliberate contract change, regenerate with
//! `THREADLINE_BLESS_FIXTURES=1 cargo test -p threadline-shared --test wire fixtures_are_canonical`
//! and review the diff.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use threadline_shared::event::{
    Assembly, ContainerLevel, EnvironmentValue, LotReceived, MaterialLoaded, MaterialUse,
    OperationCompleted, Packing, Parameter, Quality, QualityCheck, Reading, ScanRejected, Shipped,
    UnitStarted, Verdict,
};
use threadline_shared::time::{self, Timestamp};
use threadline_shared::{
    Ack, DeviceHealth, Envelope, GatewayState, ItemKind, ItemRef, Record, RecordBody, Status,
    TagValue,
};
use uuid::Uuid;

fn ts(s: &str) -> Timestamp {
    time::parse(s).expect("test timestamp")
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

const EPOCH: &str = "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b";

fn epoch() -> Uuid {
    Uuid::parse_str(EPOCH).expect("test uuid")
}

fn rec(seq: u64, at: &str, body: RecordBody) -> Record {
    Record {
        seq,
        ts: ts(at),
        body,
    }
}

/// One record of every type, with every field set (optional ones included), so that each field
/// name is pinned by a fixture. Values mix the `TagValue` variants on purpose.
fn golden_records() -> Vec<Record> {
    vec![
        rec(
            1,
            "2026-11-25T01:18:08.123456Z",
            RecordBody::Reading(Reading {
                device: "press-1".into(),
                tag: "press.pressure".into(),
                value: Some(TagValue::Float(201.5)),
                unit: some("bar"),
                quality: Quality::Good,
                error: None,
            }),
        ),
        rec(
            2,
            "2026-11-25T01:18:09.000000Z",
            RecordBody::LotReceived(LotReceived {
                lot: "LOT-2026-000042".into(),
                part: some("P-6202"),
                supplier: some("SKF"),
                supplier_batch: some("B-77/12"),
                qty: Some(5000.0),
                station: some("GR-1"),
            }),
        ),
        rec(
            3,
            "2026-11-25T01:18:10.000001Z",
            RecordBody::MaterialLoaded(MaterialLoaded {
                station: "ST10".into(),
                lot: "LOT-2026-000042".into(),
                part: some("P-6202"),
                operator: some("OP0007"),
            }),
        ),
        rec(
            4,
            "2026-11-25T01:18:11.500000Z",
            RecordBody::UnitStarted(UnitStarted {
                unit: "SN0000000042".into(),
                part: some("HUB-A"),
                work_order: some("WO-1001"),
                station: "ST10".into(),
                operator: some("OP0007"),
            }),
        ),
        rec(
            5,
            "2026-11-25T01:18:20.250000Z",
            RecordBody::OperationCompleted(OperationCompleted {
                unit: "SN0000000042".into(),
                station: "ST10".into(),
                operation: "OP10 press-fit bearing".into(),
                equipment: some("PRESS-1"),
                operator: some("OP0007"),
                recipe: some("7"),
                started_at: Some(ts("2026-11-25T01:18:11.500000Z")),
                result: Verdict::Fail,
                defect_code: some("D12"),
                parameters: vec![
                    Parameter {
                        name: "press.pressure".into(),
                        value: TagValue::Float(231.25),
                        unit: some("bar"),
                        lsl: Some(180.0),
                        usl: Some(220.0),
                    },
                    Parameter {
                        name: "press.program_ok".into(),
                        value: TagValue::Bool(false),
                        unit: None,
                        lsl: None,
                        usl: None,
                    },
                    Parameter {
                        name: "press.cycles".into(),
                        value: TagValue::UInt(18_446_744_073_709_551_615),
                        unit: None,
                        lsl: None,
                        usl: None,
                    },
                ],
                environment: vec![
                    EnvironmentValue {
                        name: "hall.temp".into(),
                        value: TagValue::Float(21.5),
                        unit: some("°C"),
                    },
                    EnvironmentValue {
                        name: "hall.offset".into(),
                        value: TagValue::Int(-3),
                        unit: None,
                    },
                ],
                materials: vec![MaterialUse {
                    lot: "LOT-2026-000042".into(),
                    part: some("P-6202"),
                    qty: 2.0,
                }],
            }),
        ),
        rec(
            6,
            "2026-11-25T01:18:30.000000Z",
            RecordBody::Assembled(Assembly {
                parent: "SN0000000042".into(),
                child: ItemRef::new(ItemKind::Lot, "LOT-2026-000042"),
                qty: Some(2.0),
                station: some("ST20"),
                operator: some("OP0008"),
                reason: some("rework R-3"),
            }),
        ),
        rec(
            7,
            "2026-11-25T01:18:31.000000Z",
            RecordBody::Disassembled(Assembly {
                parent: "SN0000000042".into(),
                child: ItemRef::new(ItemKind::Unit, "SN0000000007"),
                qty: None,
                station: some("RW-1"),
                operator: some("OP0008"),
                reason: some("damaged \"seal\""),
            }),
        ),
        rec(
            8,
            "2026-11-25T01:19:00.000000Z",
            RecordBody::Packed(Packing {
                container: "106141411234567897".into(),
                level: ContainerLevel::Case,
                child: ItemRef::new(ItemKind::Unit, "SN0000000042"),
                station: some("PK-1"),
                operator: some("OP0009"),
            }),
        ),
        rec(
            9,
            "2026-11-25T01:19:01.000000Z",
            RecordBody::Unpacked(Packing {
                container: "PAL-0001".into(),
                level: ContainerLevel::Pallet,
                child: ItemRef::new(ItemKind::Container, "106141411234567897"),
                station: some("PK-2"),
                operator: None,
            }),
        ),
        rec(
            10,
            "2026-11-25T01:20:00.000000Z",
            RecordBody::Shipped(Shipped {
                container: some("PAL-0001"),
                unit: None,
                shipment: "SHP-555".into(),
                customer: some("ACME GmbH"),
                station: some("SHIP-1"),
            }),
        ),
        rec(
            11,
            "2026-11-25T01:21:00.000000Z",
            RecordBody::QualityCheck(QualityCheck {
                unit: "SN0000000042".into(),
                characteristic: "bore.diameter".into(),
                value: TagValue::Float(25.012),
                unit_of_measure: some("mm"),
                lsl: Some(24.99),
                usl: Some(25.01),
                result: Verdict::Fail,
                station: some("QC-1"),
                operator: some("OP0010"),
            }),
        ),
        rec(
            12,
            "2026-11-25T01:22:00.000000Z",
            RecordBody::ScanRejected(ScanRejected {
                station: some("ST10"),
                scanner: "st10-scanner".into(),
                raw: "]C10109506000134353\u{1d}10AB".into(),
                reason: "bad check digit: expected 2, got 3 in AI (01) GTIN 09506000134353".into(),
            }),
        ),
    ]
}

fn golden_envelope() -> Envelope {
    Envelope {
        v: threadline_shared::envelope::ENVELOPE_VERSION,
        gateway: "gw-line-1".into(),
        plant: "plant-a".into(),
        line: "line-1".into(),
        epoch: epoch(),
        records: vec![
            rec(
                41,
                "2026-11-25T01:18:08.123456Z",
                RecordBody::Reading(Reading {
                    device: "plc-1".into(),
                    tag: "line.running".into(),
                    value: Some(TagValue::Bool(true)),
                    unit: None,
                    quality: Quality::Good,
                    error: None,
                }),
            ),
            rec(
                42,
                "2026-11-25T01:18:08.200000Z",
                RecordBody::Reading(Reading {
                    device: "plc-1".into(),
                    tag: "line.counter".into(),
                    value: None,
                    unit: None,
                    quality: Quality::Bad,
                    error: some("timeout after 1000 ms"),
                }),
            ),
            rec(
                43,
                "2026-11-25T01:18:08.300000Z",
                RecordBody::Reading(Reading {
                    device: "opcua-1".into(),
                    tag: "oven.recipe".into(),
                    value: Some(TagValue::Text("R-12".into())),
                    unit: None,
                    quality: Quality::Uncertain,
                    error: some("UncertainLastUsableValue"),
                }),
            ),
        ],
    }
}

fn golden_ack() -> Ack {
    Ack {
        epoch: epoch(),
        ranges: vec![[1, 40], [42, 42]],
    }
}

fn golden_status() -> Status {
    Status {
        state: GatewayState::Online,
        since: ts("2026-11-25T01:00:00.000000Z"),
        buffer_depth: 17,
        devices: vec![
            DeviceHealth {
                id: "plc-1".into(),
                state: "ok".into(),
                last_ok: Some(ts("2026-11-25T01:18:08.123456Z")),
                error: None,
            },
            DeviceHealth {
                id: "press-1".into(),
                state: "down".into(),
                last_ok: None,
                error: some("connection refused"),
            },
        ],
        epoch: Some(epoch()),
        buffer_full: false,
        readings_dropped: 3,
    }
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"))
}

fn bless() -> bool {
    std::env::var_os("THREADLINE_BLESS_FIXTURES").is_some_and(|v| v == "1")
}

fn read_fixture(name: &str) -> String {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.trim().to_owned()
}

/// Parses the fixture, compares it with the Rust value, re-serializes it and compares bytes.
fn check<T>(name: &str, expected: &T, canonical: impl Fn(&T) -> String)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if bless() {
        std::fs::write(fixture_path(name), canonical(expected) + "\n").expect("write fixture");
    }
    let text = read_fixture(name);
    assert!(
        !text.contains('\n'),
        "{name}.json must hold one line of compact JSON"
    );
    let parsed: T =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json does not parse: {e}"));
    assert_eq!(&parsed, expected, "{name}.json parses to a different value");
    assert_eq!(
        canonical(&parsed),
        text,
        "{name}.json is not what the serializer produces"
    );
    assert_eq!(
        canonical(expected),
        text,
        "{name}: Rust value serializes differently"
    );
}

fn record_json(r: &Record) -> String {
    String::from_utf8(r.canonical_json()).expect("canonical JSON is UTF-8")
}

fn compact<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialize")
}

#[test]
fn fixtures_are_canonical_and_match_rust_values() {
    let records = golden_records();
    let names: Vec<&str> = records.iter().map(Record::type_name).collect();
    assert_eq!(
        names,
        RecordBody::TYPE_NAMES,
        "one fixture per record type, in contract order"
    );
    for r in &records {
        check(r.type_name(), r, record_json);
        // The file's `type` is the file's name, and seq, ts, type lead the object.
        let text = read_fixture(r.type_name());
        let prefix = format!(
            "{{\"seq\":{},\"ts\":\"{}\",\"type\":\"{}\",",
            r.seq,
            time::format(&r.ts),
            r.type_name()
        );
        assert!(
            text.starts_with(&prefix),
            "{text} should start with {prefix}"
        );
    }
    check("envelope", &golden_envelope(), compact);
    check("ack", &golden_ack(), compact);
    check("status", &golden_status(), compact);
}

#[test]
fn envelope_records_are_canonical_records() {
    // The records inside an envelope are byte-for-byte their canonical form, so the aggregator can
    // hash what it received without re-encoding surprises.
    let env = golden_envelope();
    let text = read_fixture("envelope");
    for r in &env.records {
        assert!(text.contains(&record_json(r)), "{text}");
    }
}

fn fixture_value(name: &str) -> Value {
    serde_json::from_str(&read_fixture(name)).expect("fixture is JSON")
}

fn parse<T: DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v} should parse: {e}"))
}

#[test]
fn unknown_fields_are_ignored() {
    for r in golden_records() {
        let mut v = fixture_value(r.type_name());
        v["added_in_v2"] = json!({"nested": [1, 2, 3]});
        v["another"] = json!(null);
        if let Some(params) = v.get_mut("parameters").and_then(Value::as_array_mut) {
            for p in params {
                p["cpk"] = json!(1.67);
            }
        }
        if let Some(child) = v.get_mut("child") {
            child["gtin"] = json!("09506000134352");
        }
        let parsed: Record = parse(&v);
        assert_eq!(parsed, r, "{}", r.type_name());
        // Unknown fields are dropped, so the canonical form (and the hash) is unaffected.
        assert_eq!(record_json(&parsed), read_fixture(r.type_name()));
    }
    let mut env = fixture_value("envelope");
    env["compression"] = json!("none");
    env["records"][0]["extra"] = json!(true);
    assert_eq!(parse::<Envelope>(&env), golden_envelope());
    let mut ack = fixture_value("ack");
    ack["committed_at"] = json!("2026-11-25T01:00:00Z");
    assert_eq!(parse::<Ack>(&ack), golden_ack());
    let mut status = fixture_value("status");
    status["version"] = json!("0.2.0");
    status["devices"][0]["latency_ms"] = json!(4);
    assert_eq!(parse::<Status>(&status), golden_status());
}

/// The optional fields of each record type (those that may be absent or `null`).
fn optional_fields(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "reading" => &["value", "unit", "error"],
        "lot_received" => &["part", "supplier", "supplier_batch", "qty", "station"],
        "material_loaded" => &["part", "operator"],
        "unit_started" => &["part", "work_order", "operator"],
        "operation_completed" => &[
            "equipment",
            "operator",
            "recipe",
            "started_at",
            "defect_code",
        ],
        "assembled" | "disassembled" => &["qty", "station", "operator", "reason"],
        "packed" | "unpacked" => &["station", "operator"],
        "shipped" => &["container", "unit", "customer", "station"],
        "quality_check" => &["unit_of_measure", "lsl", "usl", "station", "operator"],
        "scan_rejected" => &["station"],
        other => panic!("no optional field list for {other}"),
    }
}

#[test]
fn null_and_absent_optionals_are_accepted_and_omitted() {
    for r in golden_records() {
        let name = r.type_name();
        for field in optional_fields(name) {
            for replacement in [Some(Value::Null), None] {
                let mut v = fixture_value(name);
                let obj = v.as_object_mut().expect("record is an object");
                match &replacement {
                    Some(null) => obj.insert((*field).to_owned(), null.clone()),
                    None => obj.remove(*field),
                };
                let parsed: Record = parse(&v);
                let out: Value =
                    serde_json::from_slice(&parsed.canonical_json()).expect("canonical is JSON");
                assert!(
                    out.get(*field).is_none(),
                    "{name}.{field}: an absent optional must be omitted, got {out}"
                );
            }
        }
    }
    // Defaulted lists may be left out.
    let mut v = fixture_value("operation_completed");
    let obj = v.as_object_mut().expect("object");
    for list in ["parameters", "environment", "materials"] {
        obj.remove(list);
    }
    let Record {
        body: RecordBody::OperationCompleted(op),
        ..
    } = parse::<Record>(&v)
    else {
        panic!("not an operation_completed")
    };
    assert!(op.parameters.is_empty() && op.environment.is_empty() && op.materials.is_empty());
    // Status: every defaulted or optional field may be absent or null where optional.
    let status: Status = parse(&json!({
        "state": "offline",
        "since": "2026-11-25T01:00:00Z",
        "epoch": null,
        "devices": [{"id": "plc-1", "state": "down", "last_ok": null, "error": null}],
    }));
    assert_eq!(status.state, GatewayState::Offline);
    assert_eq!(status.epoch, None);
    assert_eq!(status.buffer_depth, 0);
    assert!(!status.buffer_full);
    assert_eq!(status.devices[0].last_ok, None);
}

#[test]
fn timestamps_with_offsets_normalize_to_utc_micros() {
    let mut v = fixture_value("operation_completed");
    v["ts"] = json!("2026-11-25T02:18:20.2500009+01:00");
    v["started_at"] = json!("2026-11-24T20:18:11.5-05:00");
    let parsed: Record = parse(&v);
    let expected = golden_records().remove(4);
    assert_eq!(parsed, expected);
    assert_eq!(record_json(&parsed), read_fixture("operation_completed"));

    let mut s = fixture_value("status");
    s["since"] = json!("2026-11-25T01:00:00+00:00");
    s["devices"][0]["last_ok"] = json!("2026-11-25T10:48:08.123456789+09:30");
    assert_eq!(parse::<Status>(&s), golden_status());

    // Not a timestamp: the error names the bad value.
    let mut v = fixture_value("reading");
    v["ts"] = json!("yesterday");
    let e = serde_json::from_value::<Record>(v).expect_err("bad ts must fail");
    assert!(e.to_string().contains("yesterday"), "{e}");
}

#[test]
fn unknown_record_type_is_rejected_by_name() {
    let mut v = fixture_value("reading");
    v["type"] = json!("teleported");
    let e = serde_json::from_value::<Record>(v).expect_err("unknown type must fail");
    assert!(e.to_string().contains("teleported"), "{e}");

    let mut v = fixture_value("reading");
    v.as_object_mut().expect("object").remove("type");
    let e = serde_json::from_value::<Record>(v).expect_err("missing type must fail");
    assert!(e.to_string().contains("type"), "{e}");

    // A missing required field is named too.
    let mut v = fixture_value("packed");
    v.as_object_mut().expect("object").remove("container");
    let e = serde_json::from_value::<Record>(v).expect_err("missing container must fail");
    assert!(e.to_string().contains("container"), "{e}");

    // Same through the text parser (what the aggregator runs on an MQTT payload).
    let text = read_fixture("envelope").replace("\"type\":\"reading\"", "\"type\":\"warp\"");
    let e = serde_json::from_str::<Envelope>(&text).expect_err("unknown type must fail");
    assert!(e.to_string().contains("warp"), "{e}");
}

#[test]
fn whole_number_quantities_normalize_to_floats() {
    // `qty` is a float in the contract: a producer writing `5000` is accepted and the canonical
    // form (the hashed one) says `5000.0`. Tag values keep integers as integers.
    let mut v = fixture_value("lot_received");
    v["qty"] = json!(5000);
    let parsed: Record = parse(&v);
    assert_eq!(record_json(&parsed), read_fixture("lot_received"));
    let mut v = fixture_value("reading");
    v["value"] = json!(7);
    let parsed: Record = parse(&v);
    assert!(record_json(&parsed).contains("\"value\":7,"));
}

#[test]
fn non_finite_floats_stay_parseable() {
    // JSON has no NaN or infinity. A NaN from a float register captured as an operation
    // parameter must not make the record (and with it the whole envelope) unparseable.
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut r = golden_records().remove(4);
        let RecordBody::OperationCompleted(op) = &mut r.body else {
            panic!("not an operation_completed")
        };
        op.parameters[0].value = TagValue::Float(f);
        let back: Record = serde_json::from_slice(&r.canonical_json())
            .unwrap_or_else(|e| panic!("{f}: canonical JSON does not parse back: {e}"));
        let RecordBody::OperationCompleted(op) = &back.body else {
            panic!("not an operation_completed")
        };
        assert!(!op.parameters[0].in_spec(), "{f} is never in spec");
    }
}

#[test]
fn fast_record_parser_agrees_with_the_derive() {
    // `Record::from_json` (what the aggregator's ingest runs) must give exactly what the derived
    // `Deserialize` gives, for every record type, with unknown and null fields, and the same
    // error message when the record is bad.
    for r in golden_records() {
        let text = read_fixture(r.type_name());
        assert_eq!(
            Record::from_json(&text).expect("parses"),
            r,
            "{}",
            r.type_name()
        );
        let mut v = fixture_value(r.type_name());
        v["added_in_v2"] = json!({"nested": [1, 2, 3]});
        for f in optional_fields(r.type_name()) {
            v[*f] = Value::Null;
        }
        let text = v.to_string();
        let derived: Record = serde_json::from_str(&text).expect("derive parses");
        assert_eq!(Record::from_json(&text).expect("fast parses"), derived);
    }
    for value in [
        json!(7),
        json!(-7),
        json!(u64::MAX),
        json!(2.5),
        json!(true),
        json!("NaN"),
    ] {
        let mut v = fixture_value("reading");
        v["value"] = value.clone();
        let text = v.to_string();
        let derived: Record = serde_json::from_str(&text).expect("derive parses");
        let fast = Record::from_json(&text).expect("fast parses");
        assert_eq!(fast, derived, "{value}");
        assert_eq!(record_json(&fast), record_json(&derived), "{value}");
    }
    let RecordBody::Reading(r) = Record::from_json(
        &read_fixture("reading").replace("\"value\":", "\"value\":18446744073709551615,\"x\":"),
    )
    .expect("parses")
    .body
    else {
        panic!("not a reading")
    };
    assert_eq!(r.value, Some(TagValue::UInt(u64::MAX)));
    for (what, edit) in [
        (
            "unknown type",
            ("\"type\":\"reading\"", "\"type\":\"warp\""),
        ),
        ("bad ts", ("\"ts\":\"", "\"ts\":\"yesterday")),
        ("missing field", ("\"tag\":", "\"tog\":")),
        (
            "value of the wrong type",
            ("\"quality\":\"good\"", "\"quality\":17"),
        ),
    ] {
        let text = read_fixture("reading").replacen(edit.0, edit.1, 1);
        let derived = serde_json::from_str::<Record>(&text).expect_err(what);
        let fast = Record::from_json(&text).expect_err(what);
        assert_eq!(fast.to_string(), derived.to_string(), "{what}");
    }
}
