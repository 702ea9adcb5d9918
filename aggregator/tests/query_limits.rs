//! Bounded queries (issue 20, "Queries starve ingest"): the query pool's time limit
//! (`[http] query_timeout_ms`) on both backends — SQLite included, where it is a progress
//! handler — `audit/verify` in pages (same report, each page its own statement, so a log larger
//! than the limit still verifies), and the recall answered as a stream (the same JSON and CSV,
//! several body frames, a timeout before the first row still the JSON error).

#![allow(clippy::unwrap_used)]

mod store_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use futures::StreamExt as _;
use serde_json::{Value, json};
use store_support::*;
use threadline_aggregator::api::{ApiError, AppState, auth::Tokens, router};
use threadline_aggregator::store::Db;
use tower::ServiceExt as _;

fn app(db: Db) -> Router {
    router(AppState::new(
        db,
        Arc::new(Default::default()),
        Arc::new(Tokens::default()),
    ))
}

/// `GET uri` → (status, content type, body frames).
async fn get_frames(app: &Router, uri: &str) -> (u16, String, Vec<bytes::Bytes>) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = resp.into_body().into_data_stream();
    let mut frames = Vec::new();
    while let Some(f) = body.next().await {
        frames.push(f.unwrap());
    }
    (status, ctype, frames)
}

fn joined(frames: &[bytes::Bytes]) -> String {
    String::from_utf8(frames.concat()).unwrap()
}

/// Runs `sql` on the database behind `db` (fixtures only).
async fn exec(db: &Db, sql: &str) {
    let r = match db {
        Db::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(p)
            .await
            .map(|_| ()),
        Db::Sqlite(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(p)
            .await
            .map(|_| ()),
    };
    r.unwrap_or_else(|e| panic!("fixture statement failed: {e}\n{sql}"));
}

/// `prefix` followed by the integer `expr` zero-padded to `width`, in this backend's SQL.
fn padded(db: &Db, prefix: &str, expr: &str, width: usize) -> String {
    match db {
        Db::Postgres(_) => format!("'{prefix}' || lpad(CAST({expr} AS TEXT), {width}, '0')"),
        Db::Sqlite(_) => format!("printf('{prefix}%0{width}d', {expr})"),
    }
}

/// Integers 1..=n as a row source `n(i)`.
fn numbers(db: &Db, n: usize) -> String {
    match db {
        Db::Postgres(_) => format!("(SELECT generate_series(1, {n}) AS i) n"),
        Db::Sqlite(_) => format!(
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
             SELECT i FROM s) n"
        ),
    }
}

fn floor_time(db: &Db) -> &'static str {
    match db {
        Db::Postgres(_) => "TIMESTAMPTZ '2026-11-25T08:00:00Z'",
        Db::Sqlite(_) => "'2026-11-25T08:00:00.000000Z'",
    }
}

/// A lot `L-BIG` consumed by `units` units, packed 100 to a case, 10 cases to a shipment, the
/// shipments to 7 customers (one of them named like a spreadsheet formula).
async fn big_recall(db: &Db, units: usize) {
    let cases = units.div_ceil(100);
    let shipments = cases.div_ceil(10);
    let ts = floor_time(db);
    let f = if matches!(db, Db::Postgres(_)) {
        "false"
    } else {
        "0"
    };
    exec(
        db,
        &format!("INSERT INTO items (kind, ext_id, placeholder) VALUES ('lot', 'L-BIG', {f})"),
    )
    .await;
    for (kind, prefix, n) in [
        ("unit", "U-", units),
        ("container", "C-", cases),
        ("shipment", "S-", shipments),
    ] {
        let customer = if kind == "shipment" {
            "CASE WHEN i = 1 THEN '=HYPERLINK(\"http://x\")' ELSE 'Customer ' || CAST(i % 7 AS TEXT) END"
        } else {
            "NULL"
        };
        exec(
            db,
            &format!(
                "INSERT INTO items (kind, ext_id, placeholder, customer) \
                 SELECT '{kind}', {}, {f}, {customer} FROM {}",
                padded(db, prefix, "i", 7),
                numbers(db, n)
            ),
        )
        .await;
    }
    let num = "CAST(substr(x.ext_id, 3) AS BIGINT)";
    exec(
        db,
        &format!(
            "INSERT INTO edges (parent_id, child_id, relation, valid_from) \
             SELECT x.id, l.id, 'consumed', {ts} FROM items x JOIN items l \
               ON l.kind = 'lot' AND l.ext_id = 'L-BIG' WHERE x.kind = 'unit'"
        ),
    )
    .await;
    for (child, parent, relation, per) in [
        ("unit", "container", "packed", 100),
        ("container", "shipment", "shipped", 10),
    ] {
        exec(
            db,
            &format!(
                "INSERT INTO edges (parent_id, child_id, relation, valid_from) \
                 SELECT p.id, x.id, '{relation}', {ts} FROM items x JOIN items p \
                   ON p.kind = '{parent}' AND p.ext_id = {} WHERE x.kind = '{child}'",
                padded(
                    db,
                    if parent == "container" { "C-" } else { "S-" },
                    &format!("(({num} - 1) / {per} + 1)"),
                    7
                )
            ),
        )
        .await;
    }
    // As autovacuum would soon: without statistics PostgreSQL plans the walk as a nested loop
    // over a sequential scan (minutes instead of a second for this lot).
    if matches!(db, Db::Postgres(_)) {
        exec(db, "ANALYZE").await;
    }
}

/// `n` events of 4 gateways with a fake chain (verification reads them all; the first link of
/// each chain is reported broken).
async fn many_events(db: &Db, n: usize) {
    let (epoch, hash) = match db {
        Db::Postgres(_) => (format!("CAST('{EPOCH}' AS UUID)"), "'\\x00'::bytea"),
        Db::Sqlite(_) => (format!("'{EPOCH}'"), "zeroblob(32)"),
    };
    exec(
        db,
        &format!(
            "INSERT INTO events (gateway, epoch, seq, ts, type, body, prev_hash, hash) \
             SELECT 'gw-' || CAST(i % 4 AS TEXT), {epoch}, i, {ts}, 'reading', \
                    '{{\"seq\":' || CAST(i AS TEXT) || ',\"type\":\"reading\",\"device\":\"plc-1\",\"tag\":\"hall-temperature\",\"value\":21.7}}', \
                    {hash}, {hash} FROM {}",
            numbers(db, n),
            ts = floor_time(db),
        ),
    )
    .await;
    if matches!(db, Db::Postgres(_)) {
        exec(db, "ANALYZE events").await;
    }
}

/// Pages of any size give the report of one scan, also across a broken link.
async fn verify_pages_give_one_report(db: &Db) {
    let mut msgs = Vec::new();
    for g in ["gw-a", "gw-b", "gw-c"] {
        let recs = (1..=25)
            .map(|s| {
                rec(
                    s,
                    s as u32,
                    "scan_rejected",
                    json!({"station": "ST10", "scanner": "s1", "raw": "x", "reason": "r"}),
                )
            })
            .collect();
        msgs.push((topic(g), envelope(g, recs)));
    }
    db.write_batch(&batch(&msgs)).await.unwrap();
    let report = |r: &threadline_aggregator::store::VerifyReport| serde_json::to_value(r).unwrap();
    let whole = report(&db.verify_chains_paged(usize::MAX).await.unwrap());
    assert_eq!(whole["ok"], json!(true), "{whole}");
    assert_eq!(whole["events"], json!(75), "{whole}");
    assert_eq!(whole["gateways"], json!(3), "{whole}");
    for page in [1, 2, 7, 25, 26, 1000] {
        assert_eq!(
            report(&db.verify_chains_paged(page).await.unwrap()),
            whole,
            "page {page}"
        );
    }
    // Tamper with gw-b's 13th event: every page size names that link.
    exec(
        db,
        "UPDATE events SET body = replace(body, '\"raw\":\"x\"', '\"raw\":\"y\"') \
         WHERE gateway = 'gw-b' AND seq = 13",
    )
    .await;
    let broken = report(&db.verify_chains_paged(usize::MAX).await.unwrap());
    assert_eq!(broken["ok"], json!(false), "{broken}");
    assert_eq!(broken["broken"][0]["gateway"], json!("gw-b"), "{broken}");
    assert_eq!(broken["broken"][0]["seq"], json!(13), "{broken}");
    for page in [1, 3, 12, 13, 14, 1000] {
        assert_eq!(
            report(&db.verify_chains_paged(page).await.unwrap()),
            broken,
            "page {page}"
        );
    }
    assert_eq!(report(&db.verify_chains().await.unwrap()), broken);
}

conformance!(verify_pages_give_one_report);

/// A query pool with `timeout_ms` on the database of `t`.
async fn query_pool(t: &TestDb, max: u32, timeout_ms: u64) -> Db {
    Db::connect_queries(&t.url, max, timeout_ms).await.unwrap()
}

fn is_timeout_answer(e: sqlx::Error) -> bool {
    use axum::response::IntoResponse as _;
    ApiError::from(e).into_response().status().as_u16() == 503
}

/// The whole log in one statement takes longer than the limit (the limit is real on this
/// backend), yet `GET /api/v1/audit/verify` answers: each page is a statement of its own.
async fn verify_outlasts_the_query_timeout(t: &TestDb, events: usize, limit_ms: u64) {
    many_events(&t.db, events).await;
    let q = query_pool(t, 2, limit_ms).await;
    let one = q.verify_chains_paged(usize::MAX).await;
    assert!(
        one.is_err_and(is_timeout_answer),
        "one statement over {events} events should exceed {limit_ms} ms"
    );
    let started = Instant::now();
    let (status, _, frames) = get_frames(&app(q.clone()), "/api/v1/audit/verify").await;
    let body = joined(&frames);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["events"], json!(events), "{v}");
    assert_eq!(v["gateways"], json!(4), "{v}");
    eprintln!(
        "[{}] verify of {events} events in pages: {:?}",
        t.db.backend(),
        started.elapsed()
    );
}

#[tokio::test]
async fn verify_outlasts_the_query_timeout_sqlite() {
    // SQLite reads a 2,000-row page in tens of ms on a loaded machine (debug build).
    verify_outlasts_the_query_timeout(&sqlite().await, 200_000, 250).await;
}

#[tokio::test]
async fn verify_outlasts_the_query_timeout_postgres() {
    let Some(t) = postgres().await else { return };
    verify_outlasts_the_query_timeout(&t, 100_000, 150).await;
}

/// The streamed recall is the recall: the JSON of `trace::recall` and the CSV of
/// `trace::csv::recall`, byte for byte, sent in several frames (not built whole in memory).
async fn recall_is_streamed(t: &TestDb) {
    const UNITS: usize = 20_000;
    big_recall(&t.db, UNITS).await;
    let want = threadline_aggregator::trace::recall(&t.db, "L-BIG", false)
        .await
        .unwrap();
    assert_eq!(want.counts.units, UNITS);
    assert_eq!(want.counts.containers, 200);
    assert_eq!(want.counts.shipments, 20);
    assert_eq!(want.counts.customers, 8);
    let mut sorted = want.units.clone();
    sorted.sort();
    assert_eq!(sorted, want.units);
    let app = app(query_pool(t, 2, 30_000).await);
    let (status, ctype, frames) = get_frames(&app, "/api/v1/lots/L-BIG/recall").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert_eq!(joined(&frames), serde_json::to_string(&want).unwrap());
    assert!(
        frames.len() > 3,
        "a {} kB answer in {} frame(s): not streamed",
        joined(&frames).len() / 1024,
        frames.len()
    );
    let (status, ctype, frames) = get_frames(&app, "/api/v1/lots/L-BIG/recall?format=csv").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let csv = joined(&frames);
    assert_eq!(csv, threadline_aggregator::trace::csv::recall(&want));
    assert!(csv.contains("'=HYPERLINK"), "formula neutralised");
    assert!(frames.len() > 3, "{} frame(s): not streamed", frames.len());
    // A lot in nothing: every section present and empty, like the serialized struct.
    exec(
        &t.db,
        &format!(
            "INSERT INTO items (kind, ext_id, placeholder) VALUES ('lot', 'L-EMPTY', {})",
            if matches!(t.db, Db::Postgres(_)) {
                "false"
            } else {
                "0"
            }
        ),
    )
    .await;
    let (status, _, frames) = get_frames(&app, "/api/v1/lots/L-EMPTY/recall").await;
    assert_eq!(status, 200);
    let empty = threadline_aggregator::trace::recall(&t.db, "L-EMPTY", false)
        .await
        .unwrap();
    assert_eq!(joined(&frames), serde_json::to_string(&empty).unwrap());
    let (status, _, frames) = get_frames(&app, "/api/v1/lots/L-NONE/recall").await;
    assert_eq!(status, 404, "{}", joined(&frames));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_is_streamed_sqlite() {
    recall_is_streamed(&sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_is_streamed_postgres() {
    let Some(t) = postgres().await else { return };
    recall_is_streamed(&t).await;
}

/// SQLite has a statement timeout too: a recall walk longer than the limit is stopped and
/// answered 503 in the JSON shape with the reason, soon; the interrupted connection (the only
/// one of the pool) answers the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_query_timeout_answers_503_and_the_pool_recovers() {
    let t = sqlite().await;
    big_recall(&t.db, 20_000).await;
    let app = app(query_pool(&t, 1, 5).await);
    let started = Instant::now();
    let (status, ctype, frames) = get_frames(&app, "/api/v1/lots/L-BIG/recall").await;
    let took = started.elapsed();
    let body = joined(&frames);
    assert_eq!(status, 503, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("query_timeout_ms"),
        "{v}"
    );
    assert!(
        took < Duration::from_secs(5),
        "stopped at the limit, took {took:?}"
    );
    let (status, _, frames) = get_frames(&app, "/api/v1/audit/verify").await;
    assert_eq!(status, 200, "{}", joined(&frames));
    let (status, _, frames) =
        get_frames(&app, "/api/v1/trace/unit/U-0000001?direction=backward").await;
    assert_eq!(status, 200, "{}", joined(&frames));
}
