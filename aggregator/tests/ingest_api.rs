//! The ingest-side HTTP routes through the real router (`oneshot`), on both backends, and the
//! `verify` / `check` subcommands of the real binary.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use store_support::*;
use threadline_aggregator::api::{AppState, router};
use threadline_aggregator::ingest::IngestStats;
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

async fn call(
    db: &Db,
    stats: &Arc<IngestStats>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let app = router(AppState::new(db.clone(), stats.clone(), Default::default()));
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

conformance!(master_data_health_metrics_events_verify);

async fn master_data_health_metrics_events_verify(db: &Db) {
    let stats = Arc::new(IngestStats::default());
    // An operation on an unknown lot makes a placeholder …
    let env = envelope(
        "gw-h",
        vec![rec(
            1,
            1,
            "operation_completed",
            json!({
        "unit":"SN1","station":"ST10","operation":"OP10","result":"pass",
        "materials":[{"lot":"LOT-7","qty":2.0}]}),
        )],
    );
    let out = db
        .write_batch(&batch(&[(topic("gw-h"), env)]))
        .await
        .unwrap();
    stats.committed(&out, 0.004);
    // … filled by POST /lots (single object) and idempotent (array, twice).
    let (s, b) = call(
        db,
        &stats,
        "POST",
        "/api/v1/lots",
        Some(json!({"lot":"LOT-7","part":"P-1","supplier":"SKF","supplier_batch":"B1","qty":100})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for _ in 0..2 {
        let (s, b) = call(
            db,
            &stats,
            "POST",
            "/api/v1/lots",
            Some(json!([{"lot":"LOT-7","supplier":"SKF"},{"lot":"LOT-8"}])),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["stored"], 2);
    }
    assert_eq!(db.count("items").await.unwrap(), 3);
    // 400 names the field.
    let (s, b) = call(
        db,
        &stats,
        "POST",
        "/api/v1/lots",
        Some(json!([{"lot":"L"},{"lot":"L2","qty":"many"}])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["detail"]["field"], "[1].qty", "{b}");
    let (s, b) = call(
        db,
        &stats,
        "POST",
        "/api/v1/work-orders",
        Some(json!({"part":"P-1"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.contains("missing field \\\"id\\\""), "{b}");
    let (s, b) = call(
        db,
        &stats,
        "POST",
        "/api/v1/shipments",
        Some(json!({"id":"S1","customr":"x"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.contains("unknown field"), "{b}");
    let (s, _) = call(
        db,
        &stats,
        "POST",
        "/api/v1/work-orders",
        Some(json!({"id":"WO-1","part":"P-1","qty":10,"line":"line-1"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        db,
        &stats,
        "POST",
        "/api/v1/shipments",
        Some(json!({"id":"S1","customer":"ACME","shipped_at":"2026-11-25T10:00:00Z"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Health: 503 with the reason while MQTT is down, 200 when connected.
    stats.ingest_enabled.store(true, Ordering::Relaxed);
    let (s, b) = call(db, &stats, "GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.contains("MQTT broker not connected"), "{b}");
    stats.mqtt_connected.store(true, Ordering::Relaxed);
    assert_eq!(
        call(db, &stats, "GET", "/healthz", None).await.0,
        StatusCode::OK
    );
    stats.write_failed("connection refused");
    let (s, b) = call(db, &stats, "GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.contains("database unavailable"), "{b}");
    // Metrics.
    let (s, m) = call(db, &stats, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    for want in [
        "threadline_ingest_records_total{type=\"operation_completed\"} 1",
        "threadline_ingest_batches_total 1",
        "threadline_ingest_dead_letters_total{reason=\"oversized\"} 0",
        "threadline_ingest_lag_seconds{gateway=\"gw-h\"}",
        "threadline_ingest_batch_seconds_bucket{le=\"0.005\"} 1",
        "threadline_ingest_duplicates_total 0",
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }
    // Events, gateways, verify.
    let (s, b) = call(
        db,
        &stats,
        "GET",
        "/api/v1/events?gateway=gw-h&limit=10",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["events"][0]["seq"], 1);
    assert_eq!(v["next_after"], Value::Null);
    assert_eq!(
        call(db, &stats, "GET", "/api/v1/events?limit=0", None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(db, &stats, "GET", "/api/v1/events?bogus=1", None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (_, b) = call(db, &stats, "GET", "/api/v1/gateways", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["gateways"][0]["id"],
        "gw-h"
    );
    let (_, b) = call(db, &stats, "GET", "/api/v1/audit/verify", None).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(1))
    );
}

#[tokio::test]
async fn verify_cli_exits_1_naming_the_tampered_row_and_check_refuses_bad_config() {
    let t = sqlite().await;
    let recs = (1..=3)
        .map(|s| {
            rec(
                s,
                s as u32,
                "scan_rejected",
                json!({"scanner":"s","raw":"r","reason":"x"}),
            )
        })
        .collect();
    t.db.write_batch(&batch(&[(topic("gw-v"), envelope("gw-v", recs))]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nembedded = true\nallow_anonymous = true\n\n[database]\nurl = \"{}\"\n",
            t.url
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_threadline-aggregator");
    let out = std::process::Command::new(bin)
        .args(["verify", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Db::Sqlite(p) = &t.db else { unreachable!() };
    let id: i64 = sqlx::query_scalar("SELECT id FROM events WHERE seq = 2")
        .fetch_one(p)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET body = replace(body, '\"r\"', '\"R\"') WHERE seq = 2")
        .execute(p)
        .await
        .unwrap();
    let out = std::process::Command::new(bin)
        .args(["verify", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "gateway gw-v event id {id} (epoch {EPOCH}, seq 2): hash mismatch"
        )),
        "{stdout}"
    );
    // check: every problem reported, exit 2.
    std::fs::write(
        &cfg,
        "[mqtt]\nurll = \"x\"\n\n[database]\nurl = \"mysql://x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("urll"), "{err}");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nembedded = true\nallow_anonymous = true\n\n[database]\nurl = \"{}\"\n",
            t.url
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sqlite") && stdout.contains("embedded rumqttd"),
        "{stdout}"
    );
}
