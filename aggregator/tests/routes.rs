//! Routes, route status, WIP and work-order progress through the HTTP API, on SQLite and
//! PostgreSQL, with the plant's history written by the real batch writer (records decoded as
//! ingest decodes them).
//!
//! Route FG-1: ST10 assemble → ST20 test → PK1 pack (all required).
//! SN1: assembled, failed test, re-tested pass → may be packed; SN2: assembled only → refused at
//! PK1 ("missing operation test at ST20"); SN3: all three and packed → finished.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use store_support::*;
use threadline_aggregator::api::{AppState, auth::Tokens, router};
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

fn app(db: Db) -> Router {
    router(AppState::new(
        db,
        Arc::new(Default::default()),
        Arc::new(Tokens::default()),
    ))
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

fn route(version: &str, ops: &[(&str, &str)]) -> Value {
    json!({
        "part": "FG-1",
        "version": version,
        "operations": ops.iter().map(|(s, o)| json!({"station": s, "operation": o})).collect::<Vec<_>>(),
    })
}

const ROUTE: &[(&str, &str)] = &[("ST10", "assemble"), ("ST20", "test"), ("PK1", "pack")];

/// Records stamped `n` steps after `base`.
struct Clock {
    base: chrono::DateTime<chrono::Utc>,
    step: chrono::Duration,
    seq: u64,
    records: Vec<Value>,
}

impl Clock {
    fn new(base: chrono::DateTime<chrono::Utc>, step: chrono::Duration) -> Clock {
        Clock {
            base,
            step,
            seq: 0,
            records: Vec::new(),
        }
    }

    fn at(&self, n: i32) -> String {
        threadline_shared::time::format(&(self.base + self.step * n))
    }

    fn push(&mut self, n: i32, ty: &str, mut fields: Value) {
        self.seq += 1;
        let ts = self.at(n);
        let o = fields.as_object_mut().unwrap();
        o.insert("seq".into(), json!(self.seq));
        o.insert("ts".into(), json!(ts));
        o.insert("type".into(), json!(ty));
        self.records.push(fields);
    }

    fn start(&mut self, n: i32, unit: &str) {
        self.push(
            n,
            "unit_started",
            json!({"unit": unit, "part": "FG-1", "work_order": "WO-1", "station": "ST10"}),
        );
    }

    fn op(&mut self, n: i32, unit: &str, station: &str, operation: &str, result: &str) {
        let started = self.at(n - 5);
        self.push(
            n,
            "operation_completed",
            json!({"unit": unit, "station": station, "operation": operation, "result": result,
                   "started_at": started}),
        );
    }

    async fn write(&mut self, db: &Db) {
        let recs = std::mem::take(&mut self.records);
        db.write_batch(&batch(&[(topic("gw-r"), envelope("gw-r", recs))]))
            .await
            .unwrap();
    }
}

async fn routes_and_route_status(db: &Db) {
    let app = app(db.clone());
    // A draft, replaced before any unit ran on it; the same body again changes nothing.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/routes",
        Some(route("1", &ROUTE[..2])),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["result"], "created");
    let (s, v) = call(&app, "POST", "/api/v1/routes", Some(route("1", ROUTE))).await;
    assert_eq!(
        (s, v["result"].as_str()),
        (StatusCode::OK, Some("replaced")),
        "{v}"
    );
    // The history below happens microseconds after version 1 (as stored) and before version 2
    // is posted: every step in between takes at least a database round trip.
    let v1_at = threadline_shared::time::parse(v["created_at"].as_str().unwrap()).unwrap();
    let (s, v) = call(&app, "POST", "/api/v1/routes", Some(route("1", ROUTE))).await;
    assert_eq!(
        (s, v["result"].as_str()),
        (StatusCode::OK, Some("unchanged")),
        "{v}"
    );
    assert_eq!(v["operations"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["operations"][0]["required"], true,
        "required defaults to true"
    );

    // Bad routes name the field.
    let (s, v) = call(&app, "POST", "/api/v1/routes", Some(route("2", &[]))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["detail"]["field"], "operations", "{v}");
    let dup = route("2", &[("ST10", "assemble"), ("ST10", "assemble")]);
    let (s, v) = call(&app, "POST", "/api/v1/routes", Some(dup)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["detail"]["field"], "operations[1]", "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/routes",
        Some(json!({"part": "FG-1", "version": "9", "operations": [], "oops": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown field refused: {v}");

    let mut c = Clock::new(v1_at, chrono::Duration::microseconds(1));
    c.start(6, "SN1");
    c.op(10, "SN1", "ST10", "assemble", "pass");
    c.op(20, "SN1", "ST20", "test", "fail");
    c.start(7, "SN2");
    c.op(12, "SN2", "ST10", "assemble", "pass");
    c.write(db).await;

    // In use now: a change of version 1 is refused, version 2 is a new route.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/routes",
        Some(route("1", &ROUTE[..2])),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("in use"), "{v}");
    let v2 = route(
        "2",
        &[
            ("ST10", "assemble"),
            ("ST15", "inspect"),
            ("ST20", "test"),
            ("PK1", "pack"),
        ],
    );
    let (s, _) = call(&app, "POST", "/api/v1/routes", Some(v2)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&app, "GET", "/api/v1/routes/FG-1", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["current"]["version"], "2");
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    let (s, v) = call(&app, "GET", "/api/v1/routes/FG-1/1", None).await;
    assert_eq!(
        (s, v["operations"][2]["station"].as_str()),
        (StatusCode::OK, Some("PK1"))
    );
    let (s, v) = call(&app, "GET", "/api/v1/routes/NOPE", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // SN1 started under version 1 and stays on it; its test failed.
    let (s, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN1/route-status?station=PK1",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["route_version"], "1", "{v}");
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(v["reason"], "failed operation test at ST20", "{v}");
    assert_eq!(v["next"]["station"], "ST20", "{v}");
    let st: Vec<&str> = v["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, ["passed", "failed", "missing"], "{v}");

    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN2/route-status?station=PK1",
        None,
    )
    .await;
    assert_eq!(v["reason"], "missing operation test at ST20", "{v}");
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN2/route-status?station=ST20",
        None,
    )
    .await;
    assert_eq!(v["allowed"], true, "{v}");

    // A serial not seen yet: its part names the route (the newest version).
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/NEW-1/route-status?part=FG-1&station=ST15",
        None,
    )
    .await;
    assert_eq!(v["known"], false, "{v}");
    assert_eq!(v["route_version"], "2", "{v}");
    assert_eq!(v["reason"], "missing operation assemble at ST10", "{v}");

    // The re-test passes: SN1 may be packed, until a hold on it stops it.
    c.op(30, "SN1", "ST20", "test", "pass");
    c.write(db).await;
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN1/route-status?station=PK1",
        None,
    )
    .await;
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(v["operations"][1]["attempts"], 2, "{v}");
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/holds",
        Some(json!({"kind": "unit", "id": "SN1", "reason": "noise", "by": "qe"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN1/route-status?station=PK1",
        None,
    )
    .await;
    assert_eq!(v["allowed"], false, "{v}");
    assert!(
        v["reason"].as_str().unwrap().starts_with("on hold: noise"),
        "{v}"
    );
}

async fn wip_and_work_order_progress(db: &Db) {
    let app = app(db.clone());
    let (s, _) = call(&app, "POST", "/api/v1/routes", Some(route("1", ROUTE))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/work-orders",
        Some(json!([{"id": "WO-1", "part": "FG-1", "qty": 10, "line": "line-1"}])),
    )
    .await;
    assert!(s.is_success(), "{v}");
    // Stamped in the past: before the route, which then applies as the newest.
    let mut c = Clock::new(
        threadline_shared::time::now() - chrono::Duration::seconds(200),
        chrono::Duration::seconds(1),
    );
    // SN1: assembled, test failed (open failure, in progress).
    c.start(5, "SN1");
    c.op(10, "SN1", "ST10", "assemble", "pass");
    c.op(40, "SN1", "ST20", "test", "fail");
    // SN2: assembled only.
    c.start(6, "SN2");
    c.op(15, "SN2", "ST10", "assemble", "pass");
    // SN3: every operation passed, then packed (finished).
    c.start(2, "SN3");
    c.op(20, "SN3", "ST10", "assemble", "pass");
    c.op(80, "SN3", "ST20", "test", "pass");
    c.op(90, "SN3", "PK1", "pack", "pass");
    c.push(
        91,
        "packed",
        json!({"container": "CASE-1", "level": "case", "child": {"kind": "unit", "id": "SN3"}}),
    );
    // SN4: scrapped after its assembly.
    c.start(3, "SN4");
    c.op(25, "SN4", "ST10", "assemble", "pass");
    c.write(db).await;
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/units/SN4/disposition",
        Some(json!({"disposition": "scrap", "reason": "dropped", "by": "sup"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, v) = call(&app, "GET", "/api/v1/wip?line=line-1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let serials: Vec<&str> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["serial"].as_str().unwrap())
        .collect();
    assert_eq!(serials, ["SN2", "SN1"], "oldest last operation first: {v}");
    assert_eq!(v["units"][1]["last_station"], "ST20", "{v}");
    assert_eq!(v["units"][1]["last_result"], "fail", "{v}");
    assert_eq!(v["units"][0]["next_station"], "ST20", "{v}");
    let age = v["units"][0]["age_s"].as_f64().unwrap();
    assert!(
        (185.0..3600.0).contains(&age),
        "SN2's last operation was 185 s ago: {v}"
    );
    let (_, v) = call(&app, "GET", "/api/v1/wip?line=line-9", None).await;
    assert_eq!(v["n"], 0, "{v}");
    let (_, v) = call(&app, "GET", "/api/v1/wip?limit=1", None).await;
    assert_eq!(
        (v["n"].as_u64(), v["truncated"].as_bool()),
        (Some(1), Some(true)),
        "{v}"
    );
    let (s, v) = call(&app, "GET", "/api/v1/wip?limit=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (s, v) = call(&app, "GET", "/api/v1/work-orders/WO-1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["planned"], 10.0, "{v}");
    assert_eq!(v["part"], "FG-1", "{v}");
    assert_eq!(
        [
            &v["units"],
            &v["started"],
            &v["completed"],
            &v["passed"],
            &v["failed"],
            &v["scrapped"],
            &v["in_progress"],
            &v["first_pass"]
        ],
        [
            &json!(4),
            &json!(4),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(2),
            &json!(3)
        ],
        "{v}"
    );
    // ST10 → ST20: SN1 40-5-10 = 25 s, SN3 80-5-20 = 55 s; ST20 → PK1: SN3 90-5-80 = 5 s.
    let q = v["queue_times"].as_array().unwrap();
    let st10 = q.iter().find(|q| q["from_station"] == "ST10").unwrap();
    assert_eq!(st10["to_station"], "ST20");
    assert_eq!(
        (
            st10["n"].as_u64(),
            st10["p50_s"].as_f64(),
            st10["p95_s"].as_f64()
        ),
        (Some(2), Some(25.0), Some(55.0)),
        "{v}"
    );
    let st20 = q.iter().find(|q| q["from_station"] == "ST20").unwrap();
    assert_eq!(
        (st20["n"].as_u64(), st20["p50_s"].as_f64()),
        (Some(1), Some(5.0)),
        "{v}"
    );
    let (s, v) = call(&app, "GET", "/api/v1/work-orders/WO-NONE", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

/// A route operation with `equipment`: a pass on other equipment is `wrong_equipment` and
/// refuses the unit downstream (naming what it ran on); a retest on allowed equipment clears it.
async fn route_equipment_is_checked(db: &Db) {
    let app = app(db.clone());
    let body = json!({
    "part": "FG-1", "version": "1",
    "operations": [
        {"station": "ST10", "operation": "assemble"},
        {"station": "ST20", "operation": "test", "equipment": ["EOL-1", "EOL-2"]},
        {"station": "PK1", "operation": "pack"},
    ]});
    let (s, v) = call(&app, "POST", "/api/v1/routes", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut c = Clock::new(chrono::Utc::now(), chrono::Duration::milliseconds(10));
    let on = |c: &mut Clock, n: i32, eq: &str| {
        let started = c.at(n - 5);
        c.push(
            n,
            "operation_completed",
            json!({"unit": "SN-E", "station": "ST20", "operation": "test", "result": "pass",
                   "started_at": started, "equipment": eq}),
        );
    };
    c.start(10, "SN-E");
    c.op(20, "SN-E", "ST10", "assemble", "pass");
    on(&mut c, 30, "EOL-9");
    c.write(db).await;
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN-E/route-status?station=PK1",
        None,
    )
    .await;
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(
        v["reason"],
        "operation test at ST20 ran on EOL-9, not on equipment of route FG-1 version 1 (EOL-1, EOL-2)",
        "{v}"
    );
    assert_eq!(v["operations"][1]["status"], "wrong_equipment", "{v}");
    assert_eq!(v["operations"][1]["equipment"], "EOL-9", "{v}");
    assert_eq!(v["complete"], false, "{v}");
    on(&mut c, 40, "EOL-2");
    c.write(db).await;
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/units/SN-E/route-status?station=PK1",
        None,
    )
    .await;
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(v["operations"][1]["status"], "passed", "{v}");
}

conformance!(
    routes_and_route_status,
    wip_and_work_order_progress,
    route_equipment_is_checked
);

/// The real binary: the routes file is stored at start (a bad one refuses the start with the
/// file named), and the active holds are published retained to `{root}/{plant}/holds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_file_at_start_and_holds_retained_on_the_broker() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    const BIN: &str = env!("CARGO_BIN_EXE_threadline-aggregator");

    let t = sqlite().await;
    let m = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        "[[route]]\npart = \"FG-1\"\nversion = \"1\"\n\
         [[route.operation]]\nstation = \"ST10\"\noperation = \"assemble\"\n\
         [[route.operation]]\nstation = \"ST20\"\noperation = \"test\"\n",
    )
    .unwrap();
    let http = free_port();
    let cfg = dir.path().join("agg.toml");
    let write_cfg = |routes_file: &std::path::Path| {
        std::fs::write(
            &cfg,
            format!(
                "[aggregator]\nbatch_max_wait_ms = 20\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n\n[database]\nurl = \"{}\"\n\n\
                 [routing]\nroutes_file = \"{}\"\n",
                m.port,
                t.url,
                routes_file.display()
            ),
        )
        .unwrap();
    };

    // A broken routes file: the start is refused and names the file.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[route]]\npart = \"FG-1\"\nversoin = \"1\"\n").unwrap();
    write_cfg(&bad);
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("versoin"), "{err}");

    write_cfg(&routes);
    let _agg = Kill(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A gateway of plant-a delivers: the aggregator now knows the plant.
    let mut gw = gateway_client(m.port).await;
    let env = envelope(
        "gw-h",
        vec![rec(
            1,
            1,
            "unit_started",
            json!({"unit":"SN1","part":"FG-1","station":"ST10"}),
        )],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        gw.publish(topic("gw-h"), env.clone()).await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), gw.acks.recv()).await
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "aggregator never acked"
        );
    }
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}");
    let r: Value = client
        .get(format!("{base}/api/v1/routes/FG-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["current"]["operations"][1]["station"], "ST20", "{r}");

    let hold: Value = client
        .post(format!("{base}/api/v1/holds"))
        .json(&json!({"kind": "unit", "id": "SN1", "reason": "noise", "by": "qe"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hold_id = hold["hold_id"].as_str().unwrap().to_owned();

    // A late subscriber gets the retained set at once.
    let holds_topic = format!("{ROOT}/plant-a/holds");
    let latest = |want: usize| {
        let holds_topic = holds_topic.clone();
        let port = m.port;
        async move {
            let mut o = rumqttc::MqttOptions::new(
                format!("sub-{}", uuid::Uuid::new_v4().simple()),
                "127.0.0.1",
                port,
            );
            o.set_clean_session(true);
            let (c, mut ev) = rumqttc::AsyncClient::new(o, 10);
            c.subscribe(&holds_topic, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < until {
                let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await
                else {
                    continue;
                };
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap();
                    if p.retain && v["holds"].as_array().unwrap().len() == want {
                        return Some(v);
                    }
                }
            }
            None
        }
    };
    let v = eventually(
        "the hold published retained",
        Duration::from_secs(20),
        || latest(1),
    )
    .await;
    assert_eq!(v["holds"][0]["hold_id"], hold_id.as_str(), "{v}");
    assert_eq!(v["holds"][0]["id"], "SN1", "{v}");
    let status = client
        .post(format!("{base}/api/v1/holds/{hold_id}/release"))
        .json(&json!({"reason": "ok after sort", "by": "qe"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let v = eventually("the release published", Duration::from_secs(20), || {
        latest(0)
    })
    .await;
    assert!(v["chain_seq"].as_i64().unwrap() >= 2, "{v}");
}
