//! Analytics API against a small generated plant, on SQLite and on PostgreSQL (fresh database
//! per test; PostgreSQL from THREADLINE_TEST_DATABASE_URL, skipped loudly when unreachable,
//! failing with CI=true).
//!
//! The plant: 40 units U00..U39 of part FG-1, first seen 20 minutes apart from 2026-03-01T06:00Z.
//! U00–U19 consumed bearing lot BRG-1 (SKF batch B-1), U20–U39 BRG-2 (SKF batch B-2). Every unit
//! has a sub-assembly S00..S39 (part SA-1) that consumed grease GRS-1 (even units) or GRS-2
//! (odd). One press operation each at ST10: PRESS-1 for U00–U29, PRESS-2 for U30–U39;
//! operators OP-A (even) / OP-B (odd); work orders WO-1 (U00–U19) / WO-2 (U20–U39).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use threadline_aggregator::api::{AppState, auth::Tokens, router};
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

fn ts(i: usize, extra_s: usize) -> String {
    let m = i * 20;
    format!(
        "2026-03-01T{:02}:{:02}:{:02}.000000Z",
        6 + m / 60,
        m % 60,
        extra_s
    )
}

fn plant() -> Vec<String> {
    let mut s = vec![
        "INSERT INTO items (id, kind, ext_id, part, placeholder, supplier, supplier_batch, qty) VALUES \
         (1, 'lot', 'BRG-1', 'P-6202', FALSE, 'SKF', 'B-1', 1000), \
         (2, 'lot', 'BRG-2', 'P-6202', FALSE, 'SKF', 'B-2', 1000), \
         (3, 'lot', 'GRS-1', 'GREASE', FALSE, 'Klueber', 'K-1', 20), \
         (4, 'lot', 'GRS-2', 'GREASE', FALSE, 'Klueber', 'K-2', 20)"
            .to_owned(),
    ];
    let mut edge = 1;
    for i in 0..40 {
        let (u, sub) = (100 + i, 200 + i);
        s.push(format!(
            "INSERT INTO items (id, kind, ext_id, part, placeholder, work_order, line, first_seen_at) VALUES \
             ({u}, 'unit', 'U{i:02}', 'FG-1', FALSE, '{}', 'line-1', '{}'), \
             ({sub}, 'unit', 'S{i:02}', 'SA-1', FALSE, 'WO-S', 'line-1', '{}')",
            if i < 20 { "WO-1" } else { "WO-2" },
            ts(i, 0),
            ts(i, 1)
        ));
        let brg = if i < 20 { 1 } else { 2 };
        let grs = if i % 2 == 0 { 3 } else { 4 };
        s.push(format!(
            "INSERT INTO edges (id, parent_id, child_id, relation, qty, station, valid_from) VALUES \
             ({}, {u}, {brg}, 'consumed', 1, 'ST10', '{}'), \
             ({}, {sub}, {grs}, 'consumed', 1, 'ST05', '{}'), \
             ({}, {u}, {sub}, 'assembled', 1, 'ST20', '{}')",
            edge,
            ts(i, 10),
            edge + 1,
            ts(i, 2),
            edge + 2,
            ts(i, 20)
        ));
        edge += 3;
        s.push(format!(
            "INSERT INTO operations (id, unit_id, station, operation, equipment, operator, recipe, completed_at, result, out_of_spec, environment, gateway) VALUES \
             ({}, {u}, 'ST10', 'press-fit', '{}', '{}', '3', '{}', 'pass', FALSE, '[]', 'gw-1')",
            1000 + i,
            if i < 30 { "PRESS-1" } else { "PRESS-2" },
            if i % 2 == 0 { "OP-A" } else { "OP-B" },
            ts(i, 30)
        ));
    }
    s
}

/// Quality data on top of the plant, for SPC, scorecard and yield (kept apart so the
/// common-cause tests above see the plant alone):
/// - every ST10 press operation measured `st10.pressure` = the first 40 piston-ring diameters of
///   Montgomery's Table 6.3 (U00 gets the first), spec 73.95–74.05;
/// - an end-of-line test at ST30 for every unit (EOL-1 for U00–U29, EOL-2 for U30–U39) at
///   minute 40 of its slot: U05 and U20–U27 fail it first and pass the retest at second 50;
/// - sub-assembly S03 has a failed quality check.
fn quality() -> Vec<String> {
    let mut s = Vec::new();
    let first_fail = |i: usize| i == 5 || (20..28).contains(&i);
    for (i, value) in PISTON_40.iter().enumerate() {
        s.push(format!(
            "INSERT INTO operation_parameters (operation_id, name, value_num, unit, lsl, usl, in_spec) VALUES \
             ({}, 'st10.pressure', {value}, 'mm', 73.95, 74.05, TRUE)",
            1000 + i,
        ));
        let eq = if i < 30 { "EOL-1" } else { "EOL-2" };
        let result = if first_fail(i) { "fail" } else { "pass" };
        s.push(format!(
            "INSERT INTO operations (id, unit_id, station, operation, equipment, completed_at, result, out_of_spec, environment, gateway) VALUES \
             ({}, {}, 'ST30', 'eol-test', '{eq}', '{}', '{result}', FALSE, '[]', 'gw-1')",
            2000 + i,
            100 + i,
            ts(i, 40)
        ));
        if first_fail(i) {
            s.push(format!(
                "INSERT INTO operations (id, unit_id, station, operation, equipment, completed_at, result, out_of_spec, environment, gateway) VALUES \
                 ({}, {}, 'ST30', 'eol-test', '{eq}', '{}', 'pass', FALSE, '[]', 'gw-1')",
                3000 + i,
                100 + i,
                ts(i, 50)
            ));
        }
    }
    s.push(format!(
        "INSERT INTO quality_checks (unit_id, characteristic, value_num, result, checked_at) VALUES \
         (203, 'runout', 0.09, 'fail', '{}')",
        ts(3, 5)
    ));
    s
}

/// Montgomery, Introduction to Statistical Quality Control, Table 6.3, samples 1–8.
const PISTON_40: [f64; 40] = [
    74.030, 74.002, 74.019, 73.992, 74.008, 73.995, 73.992, 74.001, 74.011, 74.004, 73.998, 74.024,
    74.021, 74.005, 74.002, 74.002, 73.996, 73.993, 74.015, 74.009, 73.992, 74.007, 74.015, 73.989,
    74.014, 74.009, 73.994, 73.997, 73.985, 73.993, 73.995, 74.006, 73.994, 74.000, 74.005, 73.985,
    74.003, 73.993, 74.015, 73.988,
];

async fn load(db: &Db) {
    run_all(db, plant()).await;
}

async fn run_all(db: &Db, stmts: Vec<String>) {
    for sql in stmts {
        match db {
            Db::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(|_| ()),
            Db::Sqlite(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("plant statement failed: {e}\n{sql}"));
    }
}

fn app(db: Db) -> Router {
    router(AppState::new(
        db,
        Arc::new(Default::default()),
        Arc::new(Tokens::default()),
    ))
}

async fn postgres_db() -> Option<(Db, String, String)> {
    use sqlx::Connection as _;
    let admin = std::env::var("THREADLINE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL at {admin} unreachable ({e}) and CI=true");
            }
            eprintln!("SKIPPING the PostgreSQL half: {admin} unreachable ({e})");
            return None;
        }
    };
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("bad THREADLINE_TEST_DATABASE_URL {admin}"),
    };
    let db = Db::connect(&url, 4).await.expect("connect test database");
    Some((db, admin, name))
}

async fn each_backend<F, Fut>(body: F)
where
    F: Fn(Router, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    each_backend_with(false, body).await;
}

async fn each_backend_with<F, Fut>(with_quality: bool, body: F)
where
    F: Fn(Router, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    let fill = |db: Db| async move {
        load(&db).await;
        if with_quality {
            run_all(&db, quality()).await;
        }
        db
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = fill(Db::connect(&url, 2).await.expect("sqlite")).await;
    body(app(db), "sqlite").await;
    if let Some((db, admin, name)) = postgres_db().await {
        use sqlx::Connection as _;
        let db = fill(db).await;
        body(app(db.clone()), "postgres").await;
        if let Db::Postgres(p) = db {
            p.close().await;
        }
        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let req = Request::get(uri).body(Body::empty()).expect("request");
    let resp = app.clone().oneshot(req).await.expect("router");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("router");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

fn factor<'a>(v: &'a Value, kind: &str, id: &str) -> &'a Value {
    v["factors"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["kind"] == kind && f["id"] == id))
        .unwrap_or_else(|| panic!("no factor {kind} {id} in {v}"))
}

fn close(got: &Value, want: f64) {
    let g = got.as_f64().unwrap_or(f64::NAN);
    assert!(
        ((g - want) / want).abs() < 1e-9,
        "p_value {g:e}, want {want:e}"
    );
}

const ROUTE: &str = "/api/v1/analysis/common-cause";

#[tokio::test]
async fn common_cause_ranks_the_shared_batch_first() {
    each_backend(|app, be| async move {
        // 7 of 8 complaint units carry BRG-2; U01 carries BRG-1; NOPE does not exist.
        let units = [
            "U01", "U21", "U22", "U23", "U25", "U27", "U29", "U38", "NOPE", "U21",
        ];
        let (st, v) = post(&app, ROUTE, json!({"units": units, "limit": 100})).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!(v["units"], 8, "[{be}] duplicates count once");
        assert_eq!(v["missing"], json!(["NOPE"]), "[{be}]");
        // Default population: FG-1 units first seen from U01 to U38 (sub-assemblies are SA-1).
        assert_eq!(v["population"], 38, "[{be}] {v}");
        assert_eq!(v["population_parts"], json!(["FG-1"]), "[{be}]");

        // Top: the hour U21–U23 were pressed in (3 of 3: the strongest evidence here), then
        // the bearing lot, its batch and the work order (the same 7 units: tied, by kind).
        let top: Vec<(&str, &str)> = v["factors"].as_array().unwrap()[..4]
            .iter()
            .map(|f| (f["kind"].as_str().unwrap(), f["id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            top,
            [
                ("station_hour", "ST10@2026-03-01T13"),
                ("lot", "BRG-2"),
                ("supplier_batch", "B-2"),
                ("work_order", "WO-2")
            ],
            "[{be}] {v}"
        );
        for (kind, id) in [("lot", "BRG-2"), ("supplier_batch", "B-2")] {
            let f = factor(&v, kind, id);
            assert_eq!(
                (f["affected"].as_u64(), f["population_with"].as_u64()),
                (Some(7), Some(19)),
                "[{be}] {f}"
            );
            // scipy: hypergeom.sf(6, 38, 19, 8) = 0.021122295315843705; table [[7,1],[12,18]].
            close(&f["p_value"], 0.021122295315843705);
            let lift = f["lift"].as_f64().unwrap();
            assert!(
                (lift - (7.0 / 8.0) / (19.0 / 38.0)).abs() < 1e-12,
                "[{be}] {lift}"
            );
        }
        // Grease of the sub-assembly: a component lot (U22, U38 are even).
        let g = factor(&v, "component_lot", "GRS-1");
        assert_eq!(
            (g["affected"].as_u64(), g["population_with"].as_u64()),
            (Some(2), Some(19)),
            "[{be}] {g}"
        );
        // scipy: hypergeom.sf(1, 38, 19, 8) = 0.9788777046841562.
        close(&g["p_value"], 0.9788777046841562);
        assert!(
            v["factors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| !(f["kind"] == "lot" && f["id"] == "GRS-1")),
            "[{be}] grease is not a direct lot"
        );
        // A factor every unit has: p = 1, lift 1.
        let skf = factor(&v, "supplier", "SKF");
        assert_eq!(
            (skf["affected"].as_u64(), skf["population_with"].as_u64()),
            (Some(8), Some(38)),
            "[{be}]"
        );
        close(&skf["p_value"], 1.0);
        // Process factors: PRESS-2 has U30..U38 in the span, one complaint unit.
        let p2 = factor(&v, "equipment", "PRESS-2");
        assert_eq!(
            (p2["affected"].as_u64(), p2["population_with"].as_u64()),
            (Some(1), Some(9)),
            "[{be}]"
        );
        // scipy: hypergeom.sf(0, 38, 9, 8) = 0.9122323411996837.
        close(&p2["p_value"], 0.9122323411996837);
        let wo = factor(&v, "work_order", "WO-2");
        assert_eq!(
            (wo["affected"].as_u64(), wo["population_with"].as_u64()),
            (Some(7), Some(19)),
            "[{be}]"
        );
        let sh = factor(&v, "station_hour", "ST10@2026-03-01T13");
        // U21 (13:00), U22 (13:20), U23 (13:40) are all in that hour and so is nobody else.
        assert_eq!(
            (sh["affected"].as_u64(), sh["population_with"].as_u64()),
            (Some(3), Some(3)),
            "[{be}] {sh}"
        );
        // scipy: hypergeom.sf(2, 38, 3, 8) = 0.006638217164532954.
        close(&sh["p_value"], 0.006638217164532954);
        let ps: Vec<f64> = v["factors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["p_value"].as_f64().unwrap())
            .collect();
        assert!(
            ps.windows(2).all(|w| w[0] <= w[1]),
            "[{be}] ranked by p_value: {ps:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn common_cause_explicit_population_single_unit_and_bad_input() {
    each_backend(|app, be| async move {
        // Explicit population: every FG-1 unit; complaint = all of BRG-2's first 8.
        let units: Vec<String> = (20..28).map(|i| format!("U{i}")).collect();
        let (st, v) = post(
            &app,
            ROUTE,
            json!({"units": units, "population": {"part": "FG-1", "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!(v["population"], 40, "[{be}]");
        let f = factor(&v, "supplier_batch", "B-2");
        assert_eq!((f["affected"].as_u64(), f["population_with"].as_u64()), (Some(8), Some(20)), "[{be}]");
        // scipy: hypergeom.sf(7, 40, 20, 8) = 0.001638001638001638 (fisher_exact
        // [[8,0],[12,20]], alternative='greater' agrees).
        close(&f["p_value"], 0.001638001638001638);

        // One unit: its span is one instant; the population is itself; every p is 1.
        let (st, v) = post(&app, ROUTE, json!({"units": ["U05"]})).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!((v["units"].as_u64(), v["population"].as_u64()), (Some(1), Some(1)), "[{be}]");
        assert!(v["factors"].as_array().unwrap().iter().all(|f| f["p_value"] == 1.0), "[{be}] {v}");

        // Bad input is refused with the reason.
        let (st, v) = post(&app, ROUTE, json!({"units": []})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {v}");
        let (st, v) = post(&app, ROUTE, json!({"unit": ["U01"]})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {v}");
        assert!(v["error"].as_str().unwrap().contains("unknown field"), "[{be}] {v}");
        // Only unknown serials: nothing to analyse, but an answer.
        let (st, v) = post(&app, ROUTE, json!({"units": ["X1", "X2"]})).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!((v["units"].as_u64(), v["population"].as_u64()), (Some(0), Some(0)), "[{be}]");
        assert_eq!(v["missing"], json!(["X1", "X2"]), "[{be}]");
    })
    .await;
}

#[track_caller]
fn near(v: &Value, want: f64, tol: f64) {
    let g = v.as_f64().unwrap_or(f64::NAN);
    assert!((g - want).abs() <= tol, "{v}: want {want} ± {tol}");
}

#[tokio::test]
async fn spc_charts_the_press_parameter_with_its_units() {
    each_backend_with(true, |app, be| async move {
        let (st, v) = get(&app, "/api/v1/spc?station=ST10&parameter=st10.pressure").await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!((v["chart"].as_str(), v["n"].as_u64()), (Some("imr"), Some(40)), "[{be}]");
        // numpy, scripts/spc_reference.py "imr_40".
        near(&v["mean"], 74.00245, 1e-9);
        near(&v["center"], 74.00245, 1e-9);
        near(&v["sigma_within"], 0.011092925986542351, 1e-9);
        near(&v["sigma_overall"], 0.010900364613991066, 1e-12);
        near(&v["ucl"], 74.03572877795962, 1e-9);
        near(&v["lcl"], 73.96917122204037, 1e-9);
        near(&v["cp"], 1.5024590163934461, 1e-6);
        near(&v["cpk"], 1.4288385245902813, 1e-6);
        near(&v["pp"], 1.5290008414281269, 1e-9);
        near(&v["ppk"], 1.4540798001982647, 1e-9);
        assert_eq!((v["lsl"].as_f64(), v["usl"].as_f64()), (Some(73.95), Some(74.05)), "[{be}]");
        let pts = v["points"].as_array().unwrap();
        assert_eq!(pts.len(), 40, "[{be}]");
        // Time order, each point with its unit and its value.
        for (i, p) in pts.iter().enumerate() {
            assert_eq!(p["unit"], format!("U{i:02}"), "[{be}] {p}");
            assert_eq!(p["completed_at"], ts(i, 30), "[{be}] {p}");
            near(&p["value"], PISTON_40[i], 1e-12);
            assert!(p["violations"].is_array(), "[{be}] {p}");
        }

        // X̄-R in subgroups of 5: numpy "xbar_r_40"; the point names its units.
        let (st, v) = get(&app, "/api/v1/spc?station=ST10&parameter=st10.pressure&chart=xbar-r&subgroup=5").await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!((v["n"].as_u64(), v["subgroup"].as_u64()), (Some(40), Some(5)), "[{be}]");
        near(&v["center"], 74.00245, 1e-9);
        near(&v["range_center"], 0.024625, 1e-9);
        near(&v["ucl"], 74.016658625, 1e-9);
        near(&v["lcl"], 73.988241375, 1e-9);
        near(&v["sigma_within"], 0.01058684436801314, 1e-9);
        near(&v["cpk"], 1.4971411167513906, 1e-6);
        let p = &v["points"][1];
        assert_eq!(p["units"], json!(["U05", "U06", "U07", "U08", "U09"]), "[{be}] {p}");
        assert_eq!(p["unit"], "U09", "[{be}]");

        // A window: only U10..U19 (completed at minute 30 of their slots).
        let (st, v) = get(&app, &format!("/api/v1/spc?station=ST10&parameter=st10.pressure&from={}&to={}", ts(10, 0), ts(20, 0))).await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        assert_eq!(v["n"], 10, "[{be}] {v}");
        assert_eq!(v["points"][0]["unit"], "U10", "[{be}]");

        // Nothing measured: an answer with n = 0, not an error.
        let (st, v) = get(&app, "/api/v1/spc?station=ST99&parameter=st10.pressure").await;
        assert_eq!((st, v["n"].as_u64()), (StatusCode::OK, Some(0)), "[{be}] {v}");
        assert_eq!(v["ucl"], Value::Null, "[{be}]");

        // Bad input: 400 with the reason.
        for (uri, says) in [
            ("/api/v1/spc?station=ST10", "parameter parameter is required"),
            ("/api/v1/spc?parameter=st10.pressure", "parameter station is required"),
            ("/api/v1/spc?station=ST10&parameter=p&chart=pareto", "bad parameter chart"),
            ("/api/v1/spc?station=ST10&parameter=p&chart=xbar-r&subgroup=11", "subgroup must be from 2 to 10"),
            ("/api/v1/spc?station=ST10&parameter=p&subgroup=5", "subgroup applies to chart=xbar-r only"),
            ("/api/v1/spc?station=ST10&parameter=p&stations=x", "unknown parameter stations"),
            ("/api/v1/spc?station=ST10&parameter=p&from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "from must be before to"),
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {uri}: {v}");
            assert!(v["error"].as_str().unwrap_or("").contains(says), "[{be}] {uri}: {v}");
        }
    })
    .await;
}

#[tokio::test]
async fn scorecard_counts_failures_at_every_bom_level() {
    each_backend_with(true, |app, be| async move {
        let (st, v) = get(&app, "/api/v1/suppliers/scorecard").await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        let sup: Vec<(&str, u64, u64, u64)> = v["suppliers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["n"], s["units"], "[{be}] {s}");
                (
                    s["supplier"].as_str().unwrap(),
                    s["lots"].as_u64().unwrap(),
                    s["n"].as_u64().unwrap(),
                    s["failed_units"].as_u64().unwrap(),
                )
            })
            .collect();
        // SKF's bearings: U00–U39, failed U05 and U20–U27 (9 of 40). Klueber's grease reaches
        // the sub-assemblies and their units (80): U05, U20–U27 and S03 (its check failed).
        assert_eq!(
            sup,
            [("SKF", 2, 40, 9), ("Klueber", 2, 80, 10)],
            "[{be}] {v}"
        );
        near(&v["suppliers"][0]["ppm"], 225_000.0, 1e-6);
        near(&v["suppliers"][1]["ppm"], 125_000.0, 1e-6);
        let worst: Vec<(&str, u64, u64)> = v["suppliers"][0]["worst_lots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["lot"].as_str().unwrap(),
                    l["n"].as_u64().unwrap(),
                    l["failed_units"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(worst, [("BRG-2", 20, 8), ("BRG-1", 20, 1)], "[{be}]");
        assert_eq!(
            v["suppliers"][0]["worst_lots"][0]["supplier_batch"], "B-2",
            "[{be}]"
        );
        let grease: Vec<(&str, u64, u64)> = v["suppliers"][1]["worst_lots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["lot"].as_str().unwrap(),
                    l["n"].as_u64().unwrap(),
                    l["failed_units"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(grease, [("GRS-2", 40, 6), ("GRS-1", 40, 4)], "[{be}]");

        // A window on first sighting: U20–U29 and S20–S29 only.
        let (st, v) = get(
            &app,
            &format!(
                "/api/v1/suppliers/scorecard?from={}&to={}",
                ts(20, 0),
                ts(30, 0)
            ),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        let skf = &v["suppliers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["supplier"] == "SKF")
            .unwrap();
        assert_eq!(
            (
                skf["n"].as_u64(),
                skf["failed_units"].as_u64(),
                skf["lots"].as_u64()
            ),
            (Some(10), Some(8), Some(1)),
            "[{be}] {v}"
        );
        let (st, v) = get(&app, "/api/v1/suppliers/scorecard?from=yesterday").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {v}");
    })
    .await;
}

#[tokio::test]
async fn first_pass_yield_by_lot_equipment_and_work_order() {
    each_backend_with(true, |app, be| async move {
        let groups = |v: &Value| -> Vec<(String, u64, u64)> {
            v["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    let (n, p) = (g["n"].as_u64().unwrap(), g["first_pass"].as_u64().unwrap());
                    near(&g["fpy"], p as f64 / n as f64, 1e-12);
                    (g["group"].as_str().unwrap_or("-").to_owned(), n, p)
                })
                .collect()
        };
        let (st, v) = get(&app, "/api/v1/analysis/yield?station=ST30&by=lot").await;
        assert_eq!(st, StatusCode::OK, "[{be}] {v}");
        // Retests are not first passes: 40 units, 9 failed their first test.
        assert_eq!(
            (v["n"].as_u64(), v["first_pass"].as_u64()),
            (Some(40), Some(31)),
            "[{be}]"
        );
        near(&v["fpy"], 31.0 / 40.0, 1e-12);
        // Lots at every BOM level (grease through the sub-assembly), worst first.
        let want = [
            ("BRG-2", 20, 12),
            ("GRS-2", 20, 15),
            ("GRS-1", 20, 16),
            ("BRG-1", 20, 19),
        ]
        .map(|(g, n, p)| (g.to_owned(), n, p));
        assert_eq!(groups(&v), want, "[{be}] {v}");
        assert_eq!(
            (
                v["groups"][0]["supplier"].as_str(),
                v["groups"][0]["supplier_batch"].as_str()
            ),
            (Some("SKF"), Some("B-2")),
            "[{be}]"
        );

        let (_, v) = get(&app, "/api/v1/analysis/yield?station=ST30&by=equipment").await;
        assert_eq!(
            groups(&v),
            [("EOL-1".to_owned(), 30, 21), ("EOL-2".to_owned(), 10, 10)],
            "[{be}] {v}"
        );
        let (_, v) = get(&app, "/api/v1/analysis/yield?station=ST30&by=work_order").await;
        assert_eq!(
            groups(&v),
            [("WO-2".to_owned(), 20, 12), ("WO-1".to_owned(), 20, 19)],
            "[{be}] {v}"
        );
        let (_, v) = get(&app, "/api/v1/analysis/yield?station=ST30&by=hour").await;
        let total: u64 = groups(&v).iter().map(|g| g.1).sum();
        assert_eq!(total, 40, "[{be}] {v}");
        // Slots 20 minutes apart from 06:00: U18–U20 are tested in hour 12.
        let h12 = groups(&v)
            .into_iter()
            .find(|g| g.0 == "2026-03-01T12")
            .unwrap();
        assert_eq!((h12.1, h12.2), (3, 2), "[{be}] {v}");

        // A window starting between U20's first test and its retest: the retest is not a
        // first operation, so U20 is not counted at all.
        let (_, v) = get(
            &app,
            &format!(
                "/api/v1/analysis/yield?station=ST30&by=equipment&from={}",
                ts(20, 45)
            ),
        )
        .await;
        assert_eq!(
            (v["n"].as_u64(), v["first_pass"].as_u64()),
            (Some(19), Some(12)),
            "[{be}] {v}"
        );

        for (uri, says) in [
            (
                "/api/v1/analysis/yield?by=lot",
                "parameter station is required",
            ),
            (
                "/api/v1/analysis/yield?station=ST30",
                "parameter by is required",
            ),
            (
                "/api/v1/analysis/yield?station=ST30&by=shift",
                "bad parameter by",
            ),
        ] {
            let (st, v) = get(&app, uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "[{be}] {uri}: {v}");
            assert!(
                v["error"].as_str().unwrap_or("").contains(says),
                "[{be}] {uri}: {v}"
            );
        }
    })
    .await;
}

/// The two ways of counting the population (from each unit's own factors, for populations up
/// to `SMALL_POPULATION`; from the factors' side, for larger ones) give the same answer.
#[tokio::test]
async fn common_cause_counts_the_same_from_the_units_and_from_the_factors_side() {
    use threadline_aggregator::analytics::CommonCauseRequest;
    use threadline_aggregator::analytics::common_cause::common_cause_counted;
    let requests = [
        json!({"units": ["U01", "U21", "U22", "U23", "U25", "U27", "U29", "U38", "NOPE"], "limit": 1000}),
        json!({"units": (20..28).map(|i| format!("U{i}")).collect::<Vec<_>>(),
               "population": {"part": "FG-1", "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"},
               "limit": 1000}),
        json!({"units": ["U05"]}),
        // A sub-assembly with a finished unit: two parts, components on both levels.
        json!({"units": ["U03", "U30", "S30"], "limit": 1000}),
    ];
    let check = |db: Db, be: &'static str| {
        let requests = requests.clone();
        async move {
            load(&db).await;
            for r in requests {
                let req: CommonCauseRequest = serde_json::from_value(r.clone()).unwrap();
                let units_side = common_cause_counted(&db, &req, usize::MAX, false)
                    .await
                    .unwrap();
                let factors_side = common_cause_counted(&db, &req, 0, false).await.unwrap();
                assert!(
                    units_side.factors_tested > 0 || units_side.units == 0,
                    "[{be}] {r}"
                );
                assert_eq!(units_side, factors_side, "[{be}] {r}");
            }
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    check(Db::connect(&url, 2).await.expect("sqlite"), "sqlite").await;
    if let Some((db, admin, name)) = postgres_db().await {
        check(db.clone(), "postgres").await;
        drop_postgres_db(db, &admin, &name).await;
    }
}

/// The factor index counts what the units' side counts: after it is built, with changes it has
/// not drained yet (a later consumption, a lot's supplier corrected, a new operation, a late
/// unit in an hour already built), and after the index loop has drained and rebuilt them.
#[tokio::test]
async fn common_cause_counts_the_same_with_the_factor_index() {
    use threadline_aggregator::analytics::CommonCauseRequest;
    use threadline_aggregator::analytics::common_cause::common_cause_counted;
    use threadline_aggregator::analytics::factor_index;
    let requests = [
        json!({"units": (0..40).map(|i| format!("U{i:02}")).collect::<Vec<_>>(), "limit": 1000}),
        json!({"units": ["U01", "U05", "U10", "U22", "U38"], "limit": 1000}),
        json!({"units": ["U03", "U30", "S30"], "limit": 1000}),
        json!({"units": (20..28).map(|i| format!("U{i}")).collect::<Vec<_>>(),
               "population": {"part": "FG-1", "from": "2026-03-01T06:30:00Z", "to": "2026-03-01T18:00:00Z"},
               "limit": 1000}),
    ];
    let check = |db: Db, be: &'static str| {
        let requests = requests.clone();
        async move {
            load(&db).await;
            let same = |stage: &'static str| {
                let (db, requests) = (db.clone(), requests.clone());
                async move {
                    for r in &requests {
                        let req: CommonCauseRequest = serde_json::from_value(r.clone()).unwrap();
                        let want = common_cause_counted(&db, &req, usize::MAX, false)
                            .await
                            .unwrap();
                        assert!(want.population > 0, "[{be}] {stage} {r}");
                        for small in [usize::MAX, 0] {
                            let got = common_cause_counted(&db, &req, small, true).await.unwrap();
                            assert_eq!(got, want, "[{be}] {stage}, small {small}: {r}");
                        }
                    }
                }
            };
            let counted = |sql: &'static str| {
                let db = db.clone();
                async move {
                    let n: i64 = match &db {
                        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
                        Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
                    };
                    n
                }
            };

            let now = chrono::Utc::now();
            let built = factor_index::build_all(&db, now, |_| {}).await.unwrap();
            // 40 finished units and their 40 sub-assemblies, 20 minutes apart from 06:00.
            assert_eq!(built.built, 14, "[{be}] {built:?}");
            assert_eq!(
                counted("SELECT CAST(SUM(n) AS BIGINT) FROM factor_index_units").await,
                80,
                "[{be}]"
            );
            same("built").await;

            // Changes after the build: the triggers record them, queries see them at once.
            run_all(
                &db,
                vec![
                    "INSERT INTO items (id, kind, ext_id, part, placeholder, supplier, supplier_batch) \
                     VALUES (5, 'lot', 'BRG-3', 'P-6202', FALSE, 'FAG', 'F-1')"
                        .to_owned(),
                    "INSERT INTO edges (id, parent_id, child_id, relation, qty, station, valid_from) \
                     VALUES (500, 105, 5, 'consumed', 1, 'ST10', '2026-03-02T08:00:00.000000Z')"
                        .to_owned(),
                    "UPDATE items SET supplier = 'Fuchs' WHERE id = 3".to_owned(),
                    "INSERT INTO operations (id, unit_id, station, operation, equipment, operator, recipe, completed_at, result, out_of_spec, environment, gateway) \
                     VALUES (5000, 110, 'ST10', 'press-fit', 'PRESS-9', 'OP-C', '3', '2026-03-02T09:00:00.000000Z', 'pass', FALSE, '[]', 'gw-1')"
                        .to_owned(),
                    "INSERT INTO items (id, kind, ext_id, part, placeholder, work_order, line, first_seen_at) \
                     VALUES (140, 'unit', 'U40', 'FG-1', FALSE, 'WO-2', 'line-1', '2026-03-01T06:45:00.000000Z')"
                        .to_owned(),
                    "INSERT INTO edges (id, parent_id, child_id, relation, qty, station, valid_from) \
                     VALUES (501, 140, 2, 'consumed', 1, 'ST10', '2026-03-01T06:46:00.000000Z')"
                        .to_owned(),
                ],
            )
            .await;
            assert!(
                counted("SELECT COUNT(*) FROM factor_changes").await >= 5,
                "[{be}]"
            );
            same("changes waiting").await;

            let mut cursor = factor_index::Cursor::default();
            let round =
                factor_index::catch_up(&db, &mut cursor, now, std::time::Duration::from_secs(60))
                    .await
                    .unwrap();
            assert!(round.drained >= 5 && round.marked >= 3, "[{be}] {round:?}");
            assert_eq!(round.built, round.marked, "[{be}] {round:?}");
            assert_eq!(
                counted("SELECT COUNT(*) FROM factor_changes").await,
                0,
                "[{be}]"
            );
            assert_eq!(
                counted("SELECT COUNT(*) FROM factor_index_hours WHERE dirty > 0").await,
                0,
                "[{be}]"
            );
            assert_eq!(
                counted("SELECT CAST(SUM(n) AS BIGINT) FROM factor_index_units").await,
                81,
                "[{be}]"
            );
            same("drained and rebuilt").await;

            factor_index::clear(&db).await.unwrap();
            run_all(
                &db,
                vec!["UPDATE items SET supplier = 'SKF-2' WHERE id = 1".to_owned()],
            )
            .await;
            assert_eq!(
                counted("SELECT COUNT(*) FROM factor_changes").await,
                0,
                "[{be}] an empty index records nothing"
            );
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    check(Db::connect(&url, 2).await.expect("sqlite"), "sqlite").await;
    if let Some((db, admin, name)) = postgres_db().await {
        check(db.clone(), "postgres").await;
        drop_postgres_db(db, &admin, &name).await;
    }
}

/// Closes `db` and drops its database (made by [`postgres_db`]).
async fn drop_postgres_db(db: Db, admin: &str, name: &str) {
    use sqlx::Connection as _;
    if let Db::Postgres(p) = db {
        p.close().await;
    }
    if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}
