//! EPCIS 2.0 export through the real router on both backends: a plant with every record type,
//! written through the real write path; both documents validated against GS1's official EPCIS
//! 2.0 JSON schema (vendored in `tests/fixtures/epcis/`, validated with Python `jsonschema`);
//! `eventID`s stable across exports and equal to the GS1 reference implementation's hashes when
//! `epcis-event-hash-generator` (PyPI) is installed.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use store_support::*;
use threadline_aggregator::api::{AppState, router};
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

async fn get(db: &Db, uri: &str) -> (StatusCode, String, String) {
    let app = router(AppState::new(
        db.clone(),
        Arc::new(Default::default()),
        Default::default(),
    ))
    .layer(axum::Extension(
        threadline_aggregator::api::epcis::EpcisIds(Arc::new(
            threadline_aggregator::epcis::Ids::new("https://plant-a.example.com/tl"),
        )),
    ));
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, ct, String::from_utf8_lossy(&bytes).into_owned())
}

/// One plant day: every record type, GS1 ids (an SSCC pallet, a GTIN+serial unit) and plain ones.
async fn plant(db: &Db) {
    let recs = vec![
        rec(
            1,
            1,
            "lot_received",
            json!({"lot":"STEEL-7","part":"P-STEEL","supplier":"Acme Steel","supplier_batch":"H123","qty":500.0,"station":"GOODS-IN"}),
        ),
        rec(
            2,
            2,
            "material_loaded",
            json!({"station":"ST10","lot":"STEEL-7","operator":"OP0010"}),
        ),
        rec(
            3,
            3,
            "unit_started",
            json!({"unit":"SN1","part":"HOUSING","work_order":"WO-1","station":"ST10"}),
        ),
        rec(
            4,
            4,
            "operation_completed",
            json!({
            "unit":"SN1","station":"ST10","operation":"press","equipment":"PRESS-1","operator":"OP0010",
            "recipe":"R7","started_at":ts(3),"result":"pass",
            "parameters":[{"name":"force","value":12.5,"unit":"kN","lsl":10.0,"usl":15.0},
                          {"name":"ok","value":true},{"name":"note","value":"fine"}],
            "environment":[{"name":"hall.temp","value":21.0,"unit":"°C"}],
            "materials":[{"lot":"STEEL-7","qty":2.0}]}),
        ),
        rec(
            5,
            5,
            "unit_started",
            json!({"unit":"(01)09506000134352(21)A1","station":"ST20"}),
        ),
        rec(
            6,
            6,
            "operation_completed",
            json!({"unit":"(01)09506000134352(21)A1","station":"ST20","operation":"weld","result":"fail","defect_code":"D7"}),
        ),
        rec(
            7,
            7,
            "assembled",
            json!({"parent":"SN1","child":{"kind":"unit","id":"(01)09506000134352(21)A1"},"station":"ST30"}),
        ),
        rec(
            8,
            8,
            "assembled",
            json!({"parent":"SN1","child":{"kind":"lot","id":"STEEL-7"},"qty":1.0,"station":"ST30"}),
        ),
        rec(
            9,
            9,
            "disassembled",
            json!({"parent":"SN1","child":{"kind":"unit","id":"(01)09506000134352(21)A1"},"station":"ST30","reason":"rework"}),
        ),
        rec(
            10,
            10,
            "quality_check",
            json!({"unit":"SN1","characteristic":"bore","value":12.01,"unit_of_measure":"mm","lsl":11.99,"usl":12.02,"result":"pass","station":"QC1"}),
        ),
        rec(
            11,
            11,
            "packed",
            json!({"container":"106141411234567897","level":"pallet","child":{"kind":"unit","id":"SN1"},"station":"PACK"}),
        ),
        rec(
            12,
            12,
            "unpacked",
            json!({"container":"106141411234567897","level":"pallet","child":{"kind":"unit","id":"SN1"},"station":"PACK"}),
        ),
        rec(
            13,
            13,
            "packed",
            json!({"container":"CASE-9","level":"case","child":{"kind":"unit","id":"SN1"},"station":"PACK"}),
        ),
        rec(
            14,
            14,
            "shipped",
            json!({"container":"CASE-9","shipment":"SHP-1","customer":"Big Auto","station":"DOCK"}),
        ),
        rec(
            15,
            15,
            "scan_rejected",
            json!({"scanner":"s1","raw":"xx","reason":"bad check digit"}),
        ),
        reading(16, 16, 1.5),
    ];
    let b = batch(&[(topic("gw-1"), envelope("gw-1", recs))]);
    db.write_batch(&b).await.unwrap();
}

fn events_of(doc: &Value) -> Vec<Value> {
    let body = &doc["epcisBody"];
    body.get("eventList")
        .or_else(|| body["queryResults"]["resultsBody"].get("eventList"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Validates `docs` with the vendored schema; returns the reference hashes if available.
fn validate(docs: &[&str]) -> Option<Vec<Vec<String>>> {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let p = dir.path().join(format!("doc{i}.json"));
        std::fs::write(&p, d).unwrap();
        paths.push(p);
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/epcis/validate.py"
    );
    let run = |extra: &[&str]| {
        std::process::Command::new("python3")
            .arg(script)
            .args(extra)
            .args(&paths)
            .output()
            .expect("python3 with jsonschema (PyPI) is needed to validate against GS1's schema")
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "GS1 EPCIS 2.0 schema validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--hashes"]);
    if out.status.code() == Some(3) {
        eprintln!(
            "SKIPPED the reference hash cross-check: pip install epcis-event-hash-generator to run it"
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("HASHES "))
        .unwrap_or_else(|| panic!("no hashes: {text}{}", String::from_utf8_lossy(&out.stderr)));
    Some(serde_json::from_str(line).unwrap())
}

conformance!(every_record_type_exports_valid_epcis_with_reference_hashes);

async fn every_record_type_exports_valid_epcis_with_reference_hashes(db: &Db) {
    plant(db).await;
    let (st, ct, all) = get(db, "/api/v1/epcis/events").await;
    assert_eq!(st, StatusCode::OK, "{all}");
    assert_eq!(ct, "application/ld+json");
    let doc: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(doc["type"], "EPCISQueryDocument");
    assert_eq!(
        doc["@context"][0],
        "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
    );
    let evs = events_of(&doc);
    // 14 trace records → 15 events (the operation that consumed material adds a
    // TransformationEvent); the reading and the rejected scan are not EPCIS events.
    assert_eq!(evs.len(), 15, "{all}");
    let step = |i: usize| evs[i]["bizStep"].as_str().unwrap_or("").to_owned();
    assert_eq!(evs[0]["type"], "ObjectEvent");
    assert_eq!(step(0), "receiving");
    assert_eq!(
        evs[0]["sourceList"][0]["source"],
        "https://plant-a.example.com/tl/party/Acme%20Steel"
    );
    assert_eq!(evs[0]["quantityList"][0]["quantity"], 500.0);
    let op = &evs[3];
    assert_eq!(
        op["readPoint"]["id"],
        "https://plant-a.example.com/tl/station/ST10"
    );
    let reports = op["sensorElementList"][0]["sensorReport"]
        .as_array()
        .unwrap();
    assert_eq!(reports.len(), 4, "{op}");
    assert_eq!(
        reports[0]["type"],
        "https://plant-a.example.com/tl/parameter/force"
    );
    assert_eq!(reports[0]["value"], 12.5);
    assert_eq!(reports[0]["uom"], "B47");
    assert_eq!(reports[1]["booleanValue"], true);
    assert_eq!(reports[2]["stringValue"], "fine");
    assert_eq!(evs[4]["type"], "TransformationEvent");
    assert_eq!(evs[4]["inputQuantityList"][0]["quantity"], 2.0);
    assert_eq!(
        evs[5]["epcList"][0],
        "https://id.gs1.org/01/09506000134352/21/A1"
    );
    assert_eq!(evs[6]["disposition"], "non_conformant");
    assert_eq!(
        (evs[7]["type"].as_str(), evs[7]["action"].as_str()),
        (Some("AggregationEvent"), Some("ADD"))
    );
    assert_eq!(
        evs[8]["childQuantityList"][0]["epcClass"],
        "https://plant-a.example.com/tl/lot/STEEL-7"
    );
    assert_eq!(evs[9]["action"], "DELETE");
    assert_eq!(step(10), "inspecting");
    assert_eq!(
        (evs[11]["parentID"].as_str(), step(11).as_str()),
        (Some("https://id.gs1.org/00/106141411234567897"), "packing")
    );
    assert_eq!(
        (evs[12]["action"].as_str(), step(12).as_str()),
        (Some("DELETE"), "unpacking")
    );
    assert_eq!(step(14), "shipping");
    assert_eq!(
        evs[14]["destinationList"][0]["destination"],
        "https://plant-a.example.com/tl/party/Big%20Auto"
    );
    for e in &evs {
        assert!(
            e["eventID"].as_str().unwrap().starts_with("ni:///sha-256;"),
            "{e}"
        );
    }

    // The unit's own document.
    let (st, _, unit) = get(db, "/api/v1/units/SN1/epcis").await;
    assert_eq!(st, StatusCode::OK, "{unit}");
    let udoc: Value = serde_json::from_str(&unit).unwrap();
    assert_eq!(udoc["type"], "EPCISDocument");
    let uevs = events_of(&udoc);
    let steps: Vec<&str> = uevs
        .iter()
        .map(|e| e["bizStep"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "commissioning",
            "inspecting",
            "assembling",
            "assembling",
            "assembling",
            "disassembling",
            "inspecting",
            "packing",
            "unpacking",
            "packing"
        ],
        "{unit}"
    );
    // The closes are AggregationEvent DELETEs naming the unit (as parent / as child), and the
    // document with them validates against GS1's schema below.
    let deletes: Vec<(&str, &str)> = uevs
        .iter()
        .filter(|e| e["action"] == "DELETE")
        .map(|e| (e["type"].as_str().unwrap(), e["parentID"].as_str().unwrap()))
        .collect();
    assert_eq!(
        deletes,
        [
            (
                "AggregationEvent",
                "https://plant-a.example.com/tl/unit/SN1"
            ),
            (
                "AggregationEvent",
                "https://id.gs1.org/00/106141411234567897"
            )
        ]
    );
    // The component's own document has its removal too.
    let (st, _, comp) = get(db, "/api/v1/units/(01)09506000134352(21)A1/epcis").await;
    assert_eq!(st, StatusCode::OK, "{comp}");
    let csteps: Vec<String> = events_of(&serde_json::from_str(&comp).unwrap())
        .iter()
        .map(|e| e["bizStep"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        csteps,
        ["commissioning", "inspecting", "assembling", "disassembling"],
        "{comp}"
    );
    // Same events, same ids, in both documents and in a second export.
    let (_, _, again) = get(db, "/api/v1/epcis/events").await;
    let ids = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .map(|e| e["eventID"].as_str().unwrap().to_owned())
            .collect()
    };
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(ids(&events_of(&again)), ids(&evs));
    for u in &uevs {
        assert!(ids(&evs).contains(&u["eventID"].as_str().unwrap().to_owned()));
    }

    // GS1's schema, and the reference implementation's hashes.
    if let Some(reference) = validate(&[&all, &unit, &comp]) {
        assert_eq!(
            reference[0],
            ids(&evs),
            "query document hashes differ from the GS1 reference implementation"
        );
        assert_eq!(reference[1], ids(&uevs));
    }

    // Filters.
    let q = |s: &str| {
        let db = db.clone();
        let s = s.to_owned();
        async move {
            let (st, _, body) = get(&db, &s).await;
            assert_eq!(st, StatusCode::OK, "{s}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            events_of(&v)
        }
    };
    let ship = q("/api/v1/epcis/events?EQ_bizStep=shipping").await;
    assert_eq!(ship.len(), 1);
    let ship2 = q("/api/v1/epcis/events?EQ_bizStep=https://ref.gs1.org/cbv/BizStep-shipping").await;
    assert_eq!(ids(&ship2), ids(&ship));
    let agg = q("/api/v1/epcis/events?eventType=AggregationEvent").await;
    assert_eq!(agg.len(), 6);
    let both = q("/api/v1/epcis/events?eventType=AggregationEvent|TransformationEvent").await;
    assert_eq!(both.len(), 7);
    let epc = q("/api/v1/epcis/events?MATCH_epc=https://id.gs1.org/01/09506000134352/21/A1").await;
    assert_eq!(
        epc.len(),
        4,
        "start, weld, assembled and disassembled as a child"
    );
    let any = q("/api/v1/epcis/events?MATCH_anyEPC=https://plant-a.example.com/tl/unit/SN1").await;
    assert_eq!(
        ids(&any),
        ids(&uevs),
        "the unit document has every event naming the unit"
    );
    let win = q(&format!(
        "/api/v1/epcis/events?GE_eventTime={}&LT_eventTime={}",
        ts(4),
        ts(6)
    ))
    .await;
    assert_eq!(win.len(), 3, "operation (2 events) and the second start");
    let none = q("/api/v1/epcis/events?eventType=ObjectEvent&EQ_bizStep=packing").await;
    assert!(none.is_empty());

    // Bad input: clear 400s, unknown unit 404.
    for bad in [
        "/api/v1/epcis/events?eventType=TransactionEvent",
        "/api/v1/epcis/events?GE_eventTime=yesterday",
        "/api/v1/epcis/events?MATCH_epcs=x",
        "/api/v1/epcis/events?GE_eventTime=2026-11-25T09:00:00Z&LT_eventTime=2026-11-25T08:00:00Z",
    ] {
        let (st, _, body) = get(db, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().is_some(), "{body}");
    }
    let (st, _, _) = get(db, "/api/v1/units/NOPE/epcis").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// More events than one page of the log: the streamed document is whole and valid.
#[tokio::test]
async fn a_multi_page_export_streams_a_whole_document() {
    let t = sqlite().await;
    let n = 5000u64;
    let recs: Vec<Value> = (1..=n)
        .map(|i| {
            rec(
                i,
                (i % 3000) as u32,
                "unit_started",
                json!({"unit": format!("SN{i}"), "station":"ST10"}),
            )
        })
        .collect();
    for part in recs.chunks(200) {
        let b = batch(&[(topic("gw-1"), envelope("gw-1", part.to_vec()))]);
        t.db.write_batch(&b).await.unwrap();
    }
    let (st, _, body) = get(&t.db, "/api/v1/epcis/events").await;
    assert_eq!(st, StatusCode::OK);
    // Streamed, not buffered: the body comes as many frames, none near the whole.
    let app = router(AppState::new(
        t.db.clone(),
        Arc::new(Default::default()),
        Default::default(),
    ));
    let res = app
        .oneshot(
            Request::builder()
                .uri("/api/v1/epcis/events")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut frames = res.into_body().into_data_stream();
    let (mut frames_n, mut largest, mut total) = (0usize, 0usize, 0usize);
    while let Some(f) = futures::StreamExt::next(&mut frames).await {
        let f = f.unwrap();
        frames_n += 1;
        largest = largest.max(f.len());
        total += f.len();
    }
    assert!(total > 1 << 20, "{total} bytes");
    assert!(
        frames_n >= 5 && largest <= total / 4,
        "{frames_n} frames, largest {largest} of {total} bytes"
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    let evs = events_of(&doc);
    assert_eq!(evs.len() as u64, n);
    let mut seen = std::collections::HashSet::new();
    for e in &evs {
        assert!(
            seen.insert(e["eventID"].as_str().unwrap().to_owned()),
            "duplicate eventID"
        );
    }
    validate(&[&body]);
}
