//! EPCIS capture through the real router on both backends: a supplier's EPCISDocument (valid
//! against GS1's official EPCIS 2.0 JSON schema, checked with the vendored schema) is captured,
//! linked to the lots we received, and shown in the backward trace (trace API, unit report, lot
//! and unit pages); a re-capture stores nothing new; malformed documents are 400s naming what is
//! wrong and store nothing; the route needs a write-scope token when tokens are configured.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use store_support::*;
use threadline_aggregator::api::auth::Tokens;
use threadline_aggregator::api::{AppState, router};
use threadline_aggregator::config::Scope;
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

const SUPPLIER_LOT: &str = "https://id.gs1.org/01/04012345000016/10/H123";
const GS1_LOT: &str = "(01)09506000134352(10)L42";

async fn call(
    db: &Db,
    tokens: Tokens,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let app = router(AppState::new(
        db.clone(),
        Arc::new(Default::default()),
        Arc::new(tokens),
    ))
    .layer(axum::Extension(
        threadline_aggregator::api::epcis::EpcisIds(Arc::new(
            threadline_aggregator::epcis::Ids::new("https://plant-a.example.com/tl"),
        )),
    ));
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if method == "POST" {
        req = req.header("content-type", "application/ld+json");
    }
    let res = app
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(db: &Db, uri: &str) -> (StatusCode, String) {
    call(db, Tokens::default(), "GET", uri, None, Vec::new()).await
}

async fn get_json(db: &Db, uri: &str) -> Value {
    let (st, body) = get(db, uri).await;
    assert_eq!(st, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn capture(db: &Db, doc: &Value) -> (StatusCode, Value) {
    let (st, body) = call(
        db,
        Tokens::default(),
        "POST",
        "/api/v1/epcis/capture",
        None,
        serde_json::to_vec(doc).unwrap(),
    )
    .await;
    (
        st,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Our plant: two received lots (a plain one with the supplier's batch number, a GS1 one), a
/// sub-assembly SN2 built with the GS1 lot and assembled into SN1, which consumed the plain lot.
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
            "lot_received",
            json!({"lot":GS1_LOT,"part":"P-BOLT","supplier":"Bolt Co","qty":1000.0,"station":"GOODS-IN"}),
        ),
        rec(
            3,
            3,
            "unit_started",
            json!({"unit":"SN2","part":"SUB","station":"ST10"}),
        ),
        rec(
            4,
            4,
            "assembled",
            json!({"parent":"SN2","child":{"kind":"lot","id":GS1_LOT},"qty":4.0,"station":"ST10"}),
        ),
        rec(
            5,
            5,
            "unit_started",
            json!({"unit":"SN1","part":"HOUSING","station":"ST20"}),
        ),
        rec(
            6,
            6,
            "operation_completed",
            json!({"unit":"SN1","station":"ST20","operation":"press","result":"pass",
                   "materials":[{"lot":"STEEL-7","qty":2.0}]}),
        ),
        rec(
            7,
            7,
            "assembled",
            json!({"parent":"SN1","child":{"kind":"unit","id":"SN2"},"station":"ST30"}),
        ),
    ];
    let b = batch(&[(topic("gw-1"), envelope("gw-1", recs))]);
    db.write_batch(&b).await.unwrap();
}

fn document(events: Vec<Value>) -> Value {
    json!({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-20T12:00:00.000+01:00",
        "sender": "urn:epc:id:pgln:4012345.00000",
        "epcisBody": {"eventList": events}
    })
}

/// The supplier's upstream history: Acme commissions and ships our lot STEEL-7 (their batch
/// H123, once as a Digital Link, once as an LGTIN URN), Bolt Co commissions bolts of our GS1 lot
/// L42 (instance EPCs of that lot), and Acme ships another lot we never received.
fn supplier_events() -> Vec<Value> {
    vec![
        json!({
            "type": "ObjectEvent",
            "eventID": "ni:///sha-256;1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809?ver=CBV2.0",
            "eventTime": "2026-11-18T07:30:00.000+01:00",
            "eventTimeZoneOffset": "+01:00",
            "quantityList": [{"epcClass": SUPPLIER_LOT, "quantity": 500, "uom": "KGM"}],
            "action": "ADD",
            "bizStep": "commissioning",
            "disposition": "active",
            "readPoint": {"id": "https://id.gs1.org/414/4012345000009"},
            "ilmd": {"cbvmda:lotNumber": "H123"}
        }),
        json!({
            "type": "ObjectEvent",
            "eventTime": "2026-11-19T15:00:00.000+01:00",
            "eventTimeZoneOffset": "+01:00",
            "quantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.000001.H123", "quantity": 500, "uom": "KGM"}],
            "action": "OBSERVE",
            "bizStep": "https://ref.gs1.org/cbv/BizStep-shipping",
            "disposition": "in_transit",
            "readPoint": {"id": "https://id.gs1.org/414/4012345000009"},
            "sourceList": [{"type": "owning_party", "source": "https://id.gs1.org/417/4012345000009"}],
            "destinationList": [{"type": "owning_party", "destination": "https://plant-a.example.com/tl/party/plant-a"}]
        }),
        json!({
            "type": "ObjectEvent",
            "eventTime": "2026-11-17T09:00:00.000Z",
            "eventTimeZoneOffset": "+00:00",
            "epcList": ["https://id.gs1.org/01/09506000134352/10/L42/21/1001",
                        "https://id.gs1.org/01/09506000134352/10/L42/21/1002"],
            "action": "ADD",
            "bizStep": "commissioning",
            "disposition": "active"
        }),
        json!({
            "type": "ObjectEvent",
            "eventTime": "2026-11-19T16:00:00.000+01:00",
            "eventTimeZoneOffset": "+01:00",
            "quantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.000001.Z999", "quantity": 10}],
            "action": "OBSERVE",
            "bizStep": "shipping"
        }),
    ]
}

/// Validates documents with GS1's EPCIS 2.0 JSON schema (the vendored copy and checker that
/// `epcis_export.rs` uses).
fn gs1_valid(doc: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("capture.json");
    std::fs::write(&p, serde_json::to_vec(doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/epcis/validate.py"
        ))
        .arg(&p)
        .output()
        .expect("python3 with jsonschema (PyPI) is needed to validate against GS1's schema");
    assert!(
        out.status.success(),
        "the test document is not valid against GS1's EPCIS 2.0 schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn event_ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_owned())
        .collect()
}

conformance!(a_suppliers_document_shows_in_the_backward_trace_once);

async fn a_suppliers_document_shows_in_the_backward_trace_once(db: &Db) {
    plant(db).await;
    let doc = document(supplier_events());
    gs1_valid(&doc);

    let (st, rep) = capture(db, &doc).await;
    assert_eq!(st, StatusCode::OK, "{rep}");
    assert_eq!(
        (&rep["events"], &rep["captured"], &rep["duplicates"]),
        (&json!(4), &json!(4), &json!(0)),
        "{rep}"
    );
    let lots: Vec<Value> = rep["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lots"].clone())
        .collect();
    assert_eq!(
        lots,
        [
            json!(["STEEL-7"]),
            json!(["STEEL-7"]),
            json!([GS1_LOT]),
            json!([])
        ],
        "{rep}"
    );

    // The unit's backward trace: both lots' supplier history, oldest first.
    let g = get_json(db, "/api/v1/trace/unit/SN1?direction=backward").await;
    let sup = &g["supplier_events"];
    let rows: Vec<(String, String, String, String)> = sup
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["lot"].as_str().unwrap().to_owned(),
                e["biz_step"].as_str().unwrap().to_owned(),
                e["matched_by"].as_str().unwrap().to_owned(),
                e["event_time"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                GS1_LOT.to_owned(),
                "commissioning".to_owned(),
                "uri".to_owned(),
                "2026-11-17T09:00:00.000000Z".to_owned()
            ),
            (
                "STEEL-7".to_owned(),
                "commissioning".to_owned(),
                "supplier_batch".to_owned(),
                "2026-11-18T06:30:00.000000Z".to_owned()
            ),
            (
                "STEEL-7".to_owned(),
                "shipping".to_owned(),
                "supplier_batch".to_owned(),
                "2026-11-19T14:00:00.000000Z".to_owned()
            ),
        ],
        "{g}"
    );
    assert_eq!(
        sup[2]["source"], "https://id.gs1.org/417/4012345000009",
        "the shipping event's owning party"
    );
    assert_eq!(
        sup[1]["source"], "urn:epc:id:pgln:4012345.00000",
        "no sourceList: the document's sender"
    );
    assert_eq!(
        sup[1]["eventID"],
        doc["epcisBody"]["eventList"][0]["eventID"]
    );
    assert_eq!(sup[0]["event_type"], "ObjectEvent");
    // A forward trace has no supplier history.
    let fwd = get_json(db, "/api/v1/trace/lot/STEEL-7?direction=forward").await;
    assert_eq!(fwd["supplier_events"], json!([]));

    // The lot's own backward trace.
    let lot = get_json(db, "/api/v1/trace/lot/STEEL-7").await;
    assert_eq!(
        event_ids(&lot["supplier_events"]),
        event_ids(&json!([sup[1], sup[2]]))
    );

    // The unit report: its lot and its sub-assembly's lot.
    let report = get_json(db, "/api/v1/units/SN1").await;
    assert_eq!(event_ids(&report["supplier_history"]), event_ids(sup));
    let sub = get_json(db, "/api/v1/units/SN2").await;
    assert_eq!(
        event_ids(&sub["supplier_history"]),
        event_ids(&json!([sup[0]]))
    );

    // The pages: the lot page and the unit page show the supplier's events.
    let (st, page) = get(db, "/ui/lots/STEEL-7").await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("Supplier history (EPCIS)"), "{page}");
    assert!(
        page.contains(sup[1]["eventID"].as_str().unwrap()),
        "lot page lacks the commissioning event"
    );
    let (_, upage) = get(db, "/ui/units/SN1").await;
    assert!(upage.contains("Supplier history (EPCIS)"), "{upage}");
    assert_eq!(
        (
            upage.matches("(supplier_batch)").count(),
            upage.matches("(uri)").count()
        ),
        (2, 1),
        "unit page: one row per supplier event"
    );

    // Re-capture: nothing new, nothing doubled.
    let (st, again) = capture(db, &doc).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(
        (&again["captured"], &again["duplicates"]),
        (&json!(0), &json!(4))
    );
    assert!(
        again["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["new"] == false)
    );
    let g2 = get_json(db, "/api/v1/trace/unit/SN1?direction=backward").await;
    assert_eq!(g2["supplier_events"], g["supplier_events"]);
    // The same events in another document (keys reordered, new creationDate) are the same.
    let mut evs = supplier_events();
    evs.reverse();
    let mut doc2 = document(evs);
    doc2["creationDate"] = json!("2026-11-21T08:00:00Z");
    let (_, third) = capture(db, &doc2).await;
    assert_eq!(third["captured"], 0, "{third}");

    // A document for a lot not received yet links when the lot arrives.
    let late = document(vec![json!({
        "type": "ObjectEvent",
        "eventTime": "2026-11-22T10:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "quantityList": [{"epcClass": "https://id.gs1.org/01/04012345000016/10/LATE-1"}],
        "action": "OBSERVE",
        "bizStep": "shipping"
    })]);
    gs1_valid(&late);
    let (_, rep) = capture(db, &late).await;
    assert_eq!(rep["links"][0]["lots"], json!([]), "{rep}");
    let b = batch(&[(
        topic("gw-1"),
        envelope(
            "gw-1",
            vec![rec(
                8,
                8,
                "lot_received",
                json!({"lot":"LATE-1","supplier":"Acme Steel","qty":5.0}),
            )],
        ),
    )]);
    db.write_batch(&b).await.unwrap();
    let g = get_json(db, "/api/v1/trace/lot/LATE-1").await;
    assert_eq!(g["supplier_events"][0]["matched_by"], "lot_number", "{g}");
    assert_eq!(
        g["supplier_events"][0]["matched"],
        "https://id.gs1.org/01/04012345000016/10/LATE-1"
    );
}

conformance!(malformed_documents_are_400s_that_store_nothing);

async fn malformed_documents_are_400s_that_store_nothing(db: &Db) {
    plant(db).await;
    let good = supplier_events().remove(0);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut e = good.clone();
        f(&mut e);
        // A valid event first: a bad one later refuses the whole document.
        document(vec![supplier_events().remove(1), e])
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"type\": \"EPCISDocument\",".to_vec(), ""),
        (
            serde_json::to_vec(&json!({"type":"EPCISQueryDocument"})).unwrap(),
            "type",
        ),
        (
            serde_json::to_vec(&json!({"type":"EPCISDocument","schemaVersion":"2.0",
                "creationDate":"2026-11-20T12:00:00Z","epcisBody":{"eventList":[]}}))
            .unwrap(),
            "@context",
        ),
        (
            serde_json::to_vec(&with(&|e| e["eventTime"] = json!("yesterday"))).unwrap(),
            "epcisBody.eventList[1].eventTime",
        ),
        (
            serde_json::to_vec(&with(&|e| {
                e.as_object_mut().unwrap().remove("action");
            }))
            .unwrap(),
            "epcisBody.eventList[1].action",
        ),
        (
            serde_json::to_vec(&with(&|e| e["type"] = json!("ReadingEvent"))).unwrap(),
            "epcisBody.eventList[1].type",
        ),
        (
            serde_json::to_vec(&with(&|e| e["quantityList"][0]["quantity"] = json!("many")))
                .unwrap(),
            "epcisBody.eventList[1].quantityList[0].quantity",
        ),
        (
            serde_json::to_vec(&with(&|e| e["epcList"] = json!(["not a uri"]))).unwrap(),
            "epcisBody.eventList[1].epcList[0]",
        ),
        (
            serde_json::to_vec(&with(&|e| e["eventTimeZoneOffset"] = json!("CET"))).unwrap(),
            "epcisBody.eventList[1].eventTimeZoneOffset",
        ),
        (
            serde_json::to_vec(&with(&|e| e["readPoint"] = json!("site-1"))).unwrap(),
            "epcisBody.eventList[1].readPoint",
        ),
        (
            serde_json::to_vec(&with(&|e| e["bizStep"] = json!("ship\u{0}ping"))).unwrap(),
            "epcisBody.eventList[1].bizStep",
        ),
    ];
    for (body, path) in cases {
        let (st, text) = call(
            db,
            Tokens::default(),
            "POST",
            "/api/v1/epcis/capture",
            None,
            body.clone(),
        )
        .await;
        assert_eq!(
            st,
            StatusCode::BAD_REQUEST,
            "{}: {text}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("not an EPCIS 2.0 document"),
            "{text}"
        );
        assert_eq!(v["detail"]["path"], path, "{text}");
        assert!(v["detail"]["expected"].as_str().is_some(), "{text}");
    }
    // Nothing of any refused document was stored.
    let g = get_json(db, "/api/v1/trace/lot/STEEL-7").await;
    assert_eq!(g["supplier_events"], json!([]), "{g}");
}

conformance!(capture_needs_a_write_token_when_tokens_are_configured);

async fn capture_needs_a_write_token_when_tokens_are_configured(db: &Db) {
    plant(db).await;
    let tokens = || {
        Tokens::from_pairs(&[
            ("auditor", "read-secret", Scope::Read),
            ("supplier-portal", "write-secret", Scope::Write),
        ])
    };
    let body = serde_json::to_vec(&document(supplier_events())).unwrap();
    for (auth, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("read-secret"), StatusCode::FORBIDDEN),
        (Some("write-secret"), StatusCode::OK),
    ] {
        let (st, text) = call(
            db,
            tokens(),
            "POST",
            "/api/v1/epcis/capture",
            auth,
            body.clone(),
        )
        .await;
        assert_eq!(st, want, "{auth:?}: {text}");
    }
    let (st, text) = call(
        db,
        tokens(),
        "GET",
        "/api/v1/trace/lot/STEEL-7",
        Some("read-secret"),
        Vec::new(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let g: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(g["supplier_events"].as_array().unwrap().len(), 2, "{g}");
}
