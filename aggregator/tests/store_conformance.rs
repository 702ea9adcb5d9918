//! One conformance suite for the write path, run against SQLite and a fresh PostgreSQL database
//! per test (same bodies).

#![allow(clippy::unwrap_used)]

mod store_support;

use serde_json::json;
use store_support::*;
use threadline_aggregator::store::{Db, LotInput, ShipmentInput};

async fn scalar_i64(db: &Db, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("query"),
        Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("query"),
    }
}

async fn scalar_opt_str(db: &Db, sql: &str) -> Option<String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("query"),
        Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("query"),
    }
}

async fn exec(db: &Db, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    }
    .expect("exec");
}

fn op(seq: u64, t: u32, unit: &str, lot: &str, pressure: f64) -> serde_json::Value {
    rec(
        seq,
        t,
        "operation_completed",
        json!({
            "unit": unit, "station": "ST10", "operation": "OP10 press-fit", "equipment": "PRESS-1",
            "operator": "OP0001", "recipe": "7", "result": "pass",
            "parameters": [{"name":"press.pressure","value":pressure,"unit":"bar","lsl":180.0,"usl":220.0}],
            "environment": [{"name":"hall.temp","value":21.5,"unit":"°C"}],
            "materials": [{"lot": lot, "part": "P-6202", "qty": 1.0}],
        }),
    )
}

conformance!(
    duplicates_and_out_of_order_are_absorbed,
    placeholders_are_filled_later,
    tampered_row_is_named_by_verify,
    every_dead_letter_reason_is_stored,
    genealogy_projections,
    event_log_pages_by_id,
    projections_have_no_dangling_ids,
    big_batches_store_every_value,
    readings_retention_removes_only_old_readings,
);

/// `readings_retention_days`: old readings go (whole day partitions on PostgreSQL), recent ones
/// and every trace event stay.
async fn readings_retention_removes_only_old_readings(db: &Db) {
    let now = chrono::Utc::now();
    let ago = |days: i64| {
        threadline_shared::time::format(&threadline_shared::time::canonical(
            now - chrono::Duration::days(days),
        ))
    };
    let r = |seq: u64, ts: &str| json!({"seq":seq,"ts":ts,"type":"reading","device":"plc","tag":"t","value":1.0,"quality":"good"});
    let gw = "gw-ret";
    let recs = vec![
        r(1, &ago(0)),
        r(2, &ago(10)),
        r(3, &ago(40)),
        r(4, &ago(41)),
        r(5, "2001-02-03T04:05:06Z"),
        json!({"seq":6,"ts":ago(40),"type":"unit_started","unit":"SN-OLD","station":"ST10"}),
    ];
    db.write_batch(&batch(&[(topic(gw), envelope(gw, recs))]))
        .await
        .unwrap();
    assert_eq!(db.count("readings").await.unwrap(), 5);
    let report = db.apply_readings_retention(30).await.unwrap();
    assert_eq!(db.count("readings").await.unwrap(), 2);
    assert_eq!(
        scalar_i64(db, "SELECT COUNT(*) FROM readings WHERE seq IN (1, 2)").await,
        2
    );
    assert_eq!(
        db.count("events").await.unwrap(),
        1,
        "trace events are never removed"
    );
    match db {
        Db::Postgres(_) => {
            let day = |d: i64| {
                format!(
                    "readings_{}",
                    (now - chrono::Duration::days(d)).format("%Y%m%d")
                )
            };
            assert_eq!(report.partitions_dropped, vec![day(41), day(40)]);
            assert_eq!(
                report.rows_deleted, 1,
                "the 2001 reading in readings_default"
            );
        }
        Db::Sqlite(_) => assert_eq!(report.rows_deleted, 3),
    }
    let again = db.apply_readings_retention(30).await.unwrap();
    assert_eq!(again, Default::default());
    assert_eq!(db.count("readings").await.unwrap(), 2);
}

/// A batch big enough for PostgreSQL's binary COPY path (thousands of rows per table) stores
/// exactly what a small one does: every row, every value (nulls, floats, times, JSON).
async fn big_batches_store_every_value(db: &Db) {
    let gw = "gw-big";
    let n: u64 = 2500;
    let mut recs = Vec::new();
    for i in 0..n {
        recs.push(op(
            2 * i + 1,
            (i % 3000) as u32,
            &format!("SN{i:05}"),
            "LOT-B",
            180.0 + (i % 50) as f64,
        ));
        let mut r = reading(2 * i + 2, (i % 3000) as u32, i as f64 * 0.25);
        if i % 7 == 0 {
            r["value"] = json!("text value");
            r["unit"] = serde_json::Value::Null;
        }
        recs.push(r);
    }
    // Envelopes of 200 records (the test decoder refuses payloads over 64 KiB), one batch.
    let msgs: Vec<(String, Vec<u8>)> = recs
        .chunks(200)
        .map(|c| (topic(gw), envelope(gw, c.to_vec())))
        .collect();
    let out = db.write_batch(&batch(&msgs)).await.unwrap();
    assert_eq!(out.new_by_type.get("reading"), Some(&n));
    assert_eq!(out.new_by_type.get("operation_completed"), Some(&n));
    assert_eq!(db.count("readings").await.unwrap(), n as i64);
    assert_eq!(db.count("operations").await.unwrap(), n as i64);
    assert_eq!(db.count("operation_parameters").await.unwrap(), n as i64);
    assert_eq!(db.count("operation_materials").await.unwrap(), n as i64);
    // Values survive the trip.
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM readings WHERE value_text = 'text value' AND unit IS NULL AND value_num IS NULL").await, 358);
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM readings WHERE seq = 2000 AND value_num = 249.75 AND unit = 'bar'"
        )
        .await,
        1
    );
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM operation_parameters WHERE in_spec AND value_num BETWEEN 180 AND 220 AND lsl = 180 AND usl = 220").await, 2050);
    // 180 + i % 50 exceeds 220 for 9 of every 50 operations.
    assert_eq!(
        scalar_i64(db, "SELECT COUNT(*) FROM operations WHERE out_of_spec").await,
        450
    );
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM operations o JOIN items u ON u.id = o.unit_id WHERE u.ext_id = 'SN00042' AND o.recipe = '7' AND o.started_at IS NULL").await, 1);
    let env = scalar_opt_str(
        db,
        "SELECT CAST(environment AS TEXT) FROM operations ORDER BY id LIMIT 1",
    )
    .await
    .unwrap();
    assert!(env.contains("hall.temp") && env.contains("21.5"), "{env}");
    let when = scalar_opt_str(db, "SELECT CAST(ts AS TEXT) FROM readings WHERE seq = 2")
        .await
        .unwrap();
    assert!(
        when.starts_with("2026-11-25") && when.contains("08:00:00.000001"),
        "{when}"
    );
    // Operation ids follow event order, so unit SN00000's operation is the first.
    assert_eq!(scalar_opt_str(db, "SELECT u.ext_id FROM operations o JOIN items u ON u.id = o.unit_id ORDER BY o.id LIMIT 1").await.as_deref(), Some("SN00000"));
    // And again: all duplicates.
    let again = db.write_batch(&batch(&msgs)).await.unwrap();
    assert_eq!(again.duplicates, 2 * n);
    assert_eq!(db.count("readings").await.unwrap(), n as i64);
    assert!(db.verify_chains().await.unwrap().ok);
}

/// Every id a projection row holds points at a stored row. PostgreSQL has no foreign keys on
/// the projection tables (migration 0020: the write path keeps them by construction), so this
/// is what would catch a write path that broke them.
async fn projections_have_no_dangling_ids(db: &Db) {
    let gw = "gw-fk";
    let recs = [
        rec(
            1,
            1,
            "unit_started",
            json!({"unit":"SN9","part":"P-1","work_order":"WO-9","station":"ST10"}),
        ),
        op(2, 2, "SN9", "LOT-9", 230.0),
        rec(
            3,
            3,
            "assembled",
            json!({"parent":"SN9","child":{"kind":"lot","id":"LOT-8"},"qty":2.0}),
        ),
        rec(
            4,
            4,
            "assembled",
            json!({"parent":"SN9","child":{"kind":"unit","id":"SN8"}}),
        ),
        rec(
            5,
            5,
            "packed",
            json!({"container":"CASE-9","level":"case","child":{"kind":"unit","id":"SN9"}}),
        ),
        rec(
            6,
            6,
            "shipped",
            json!({"container":"CASE-9","shipment":"SHP-9","customer":"ACME"}),
        ),
        rec(
            7,
            7,
            "quality_check",
            json!({"unit":"SN9","characteristic":"d","value":1.0,"result":"pass"}),
        ),
        rec(
            8,
            8,
            "disassembled",
            json!({"parent":"SN9","child":{"kind":"unit","id":"SN8"}}),
        ),
    ];
    // Two batches, so that ids of the second refer to rows of the first.
    let (a, b) = recs.split_at(4);
    for part in [a, b] {
        db.write_batch(&batch(&[(topic(gw), envelope(gw, part.to_vec()))]))
            .await
            .unwrap();
    }
    assert_eq!(db.count("operation_parameters").await.unwrap(), 1);
    assert_eq!(db.count("operation_materials").await.unwrap(), 1);
    assert_eq!(db.count("edges").await.unwrap(), 5);
    for (what, sql) in [
        (
            "edge parent",
            "SELECT COUNT(*) FROM edges e WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = e.parent_id)",
        ),
        (
            "edge child",
            "SELECT COUNT(*) FROM edges e WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = e.child_id)",
        ),
        (
            "edge event",
            "SELECT COUNT(*) FROM edges e WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.id = e.event_id)",
        ),
        (
            "operation unit",
            "SELECT COUNT(*) FROM operations o WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = o.unit_id AND i.kind = 'unit')",
        ),
        (
            "operation event",
            "SELECT COUNT(*) FROM operations o WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.id = o.event_id AND v.type = 'operation_completed')",
        ),
        (
            "parameter operation",
            "SELECT COUNT(*) FROM operation_parameters p WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = p.operation_id)",
        ),
        (
            "material operation",
            "SELECT COUNT(*) FROM operation_materials m WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = m.operation_id)",
        ),
        (
            "material lot",
            "SELECT COUNT(*) FROM operation_materials m WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = m.lot_id AND i.kind = 'lot')",
        ),
        (
            "quality unit",
            "SELECT COUNT(*) FROM quality_checks q WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = q.unit_id AND i.kind = 'unit')",
        ),
        (
            "quality event",
            "SELECT COUNT(*) FROM quality_checks q WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.id = q.event_id)",
        ),
    ] {
        assert_eq!(scalar_i64(db, sql).await, 0, "dangling {what}");
    }
    // The closed edge is the assembly of SN8, and only that one.
    assert_eq!(
        scalar_i64(db, "SELECT COUNT(*) FROM edges e JOIN items c ON c.id = e.child_id WHERE e.valid_to IS NOT NULL AND c.ext_id = 'SN8'").await,
        1
    );
    assert!(db.verify_chains().await.unwrap().ok);
}

/// PostgreSQL keeps readings in one partition per UTC day; a reading far outside the window
/// (a PLC with a wrong clock) goes to the default partition instead of making a table, and a
/// re-sent batch is still absorbed whatever partition its rows went to.
#[tokio::test]
async fn postgres_readings_are_partitioned_by_day() {
    let Some(t) = store_support::postgres().await else {
        return;
    };
    let db = &t.db;
    let now = chrono::Utc::now();
    let today = threadline_shared::time::format(&threadline_shared::time::canonical(now));
    let gw = "gw-part";
    let r = |seq: u64, ts: &str| json!({"seq":seq,"ts":ts,"type":"reading","device":"plc","tag":"t","value":1.5,"unit":"bar","quality":"good"});
    let msg = (
        topic(gw),
        envelope(
            gw,
            vec![r(1, &today), r(2, "2001-02-03T04:05:06Z"), r(3, &today)],
        ),
    );
    let first = db
        .write_batch(&batch(std::slice::from_ref(&msg)))
        .await
        .unwrap();
    assert_eq!(first.new_by_type.get("reading"), Some(&3));
    let again = db.write_batch(&batch(&[msg])).await.unwrap();
    assert_eq!(again.duplicates, 3);
    assert_eq!(db.count("readings").await.unwrap(), 3);
    let in_today = format!(
        "SELECT COUNT(*) FROM readings WHERE tableoid::regclass::text = 'readings_{}'",
        now.format("%Y%m%d")
    );
    assert_eq!(scalar_i64(db, &in_today).await, 2);
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM readings WHERE tableoid::regclass::text = 'readings_default'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass"
        )
        .await,
        2,
        "today's partition and the default one, nothing for 2001"
    );
}

#[tokio::test]
async fn sqlite_stores_timestamps_as_canonical_text() {
    // Text order must be time order in SQLite, and every writer must agree with the readers
    // (the query side compares and returns this text as it is).
    let t = sqlite().await;
    let gw = "gw-ts";
    let b = batch(&[(
        topic(gw),
        envelope(
            gw,
            vec![
                op(1, 1, "SN1", "LOT-0001-000009", 200.0),
                reading(2, 2, 1.5),
            ],
        ),
    )]);
    t.db.write_batch(&b).await.unwrap();
    let canonical = regex_like_canonical;
    for sql in [
        "SELECT ts FROM events",
        "SELECT ts FROM readings",
        "SELECT completed_at FROM operations",
        "SELECT valid_from FROM edges",
        "SELECT first_seen_at FROM items WHERE ext_id = 'SN1'",
    ] {
        let v = scalar_opt_str(&t.db, sql).await.unwrap_or_default();
        assert!(
            canonical(&v),
            "{sql}: {v:?} is not canonical RFC 3339 UTC with microseconds"
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`
fn regex_like_canonical(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 26) || c.is_ascii_digit())
}

async fn duplicates_and_out_of_order_are_absorbed(db: &Db) {
    let gw = "gw-1";
    // Out of order within the envelope and a unit seen before its unit_started.
    let msg = (
        topic(gw),
        envelope(
            gw,
            vec![
                op(3, 3, "SN1", "LOT-1", 200.0),
                rec(
                    1,
                    1,
                    "unit_started",
                    json!({"unit":"SN1","part":"P-1","work_order":"WO-1","station":"ST10"}),
                ),
                reading(2, 2, 199.5),
                reading(4, 4, 201.0),
            ],
        ),
    );
    let b = batch(std::slice::from_ref(&msg));
    let first = db.write_batch(&b).await.expect("first write");
    assert_eq!(first.duplicates, 0);
    let seqs: Vec<u64> = first.committed.values().flatten().copied().collect();
    assert_eq!(seqs.len(), 4);
    // Crash between commit and ack: the same batch again → nothing new, everything acked again.
    let again = db.write_batch(&b).await.expect("second write");
    assert_eq!(again.duplicates, 4);
    assert_eq!(again.committed, first.committed);
    assert!(again.new_by_type.is_empty());
    // A later batch overlapping the first (out of order across batches).
    let msg2 = (
        topic(gw),
        envelope(
            gw,
            vec![
                reading(4, 4, 201.0),
                reading(5, 5, 202.0),
                op(3, 3, "SN1", "LOT-1", 200.0),
            ],
        ),
    );
    let third = db.write_batch(&batch(&[msg2])).await.expect("third write");
    assert_eq!(third.duplicates, 2);
    assert_eq!(db.count("events").await.unwrap(), 2);
    assert_eq!(db.count("readings").await.unwrap(), 3);
    assert_eq!(db.count("operations").await.unwrap(), 1);
    assert_eq!(db.count("operation_parameters").await.unwrap(), 1);
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM items WHERE kind = 'unit' AND placeholder = false AND work_order = 'WO-1'").await, 1);
    assert!(db.verify_chains().await.unwrap().ok);
}

async fn placeholders_are_filled_later(db: &Db) {
    let gw = "gw-2";
    let b = batch(&[(
        topic(gw),
        envelope(gw, vec![op(1, 1, "SN9", "LOT-0001-000001", 250.0)]),
    )]);
    let out = db.write_batch(&b).await.unwrap();
    assert_eq!(out.new_by_type.get("operation_completed"), Some(&1));
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM items WHERE kind = 'lot' AND ext_id = 'LOT-0001-000001' AND placeholder = true").await, 1);
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM items WHERE kind = 'unit' AND ext_id = 'SN9' AND placeholder = true").await, 1);
    // out of spec (250 > 220) is flagged
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM operations WHERE out_of_spec = true"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM operation_parameters WHERE in_spec = false"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(db, "SELECT COUNT(*) FROM edges WHERE relation = 'consumed'").await,
        1
    );
    db.upsert_lots(&[LotInput {
        lot: "LOT-0001-000001".into(),
        part: Some("P-6202".into()),
        supplier: Some("SKF".into()),
        supplier_batch: Some("B7".into()),
        qty: Some(500.0),
    }])
    .await
    .unwrap();
    assert_eq!(scalar_opt_str(db, "SELECT supplier FROM items WHERE kind = 'lot' AND ext_id = 'LOT-0001-000001' AND placeholder = false").await.as_deref(), Some("SKF"));
    // idempotent
    db.upsert_lots(&[LotInput {
        lot: "LOT-0001-000001".into(),
        part: None,
        supplier: None,
        supplier_batch: None,
        qty: None,
    }])
    .await
    .unwrap();
    assert_eq!(
        scalar_opt_str(
            db,
            "SELECT supplier FROM items WHERE kind = 'lot' AND ext_id = 'LOT-0001-000001'"
        )
        .await
        .as_deref(),
        Some("SKF")
    );
    assert_eq!(db.count("items").await.unwrap(), 2);
    // unit_started later fills the unit placeholder
    let b = batch(&[(
        topic(gw),
        envelope(
            gw,
            vec![rec(
                2,
                0,
                "unit_started",
                json!({"unit":"SN9","part":"P-1","work_order":"WO-9","station":"ST10"}),
            )],
        ),
    )]);
    db.write_batch(&b).await.unwrap();
    assert_eq!(
        scalar_opt_str(
            db,
            "SELECT line FROM items WHERE kind = 'unit' AND ext_id = 'SN9' AND placeholder = false"
        )
        .await
        .as_deref(),
        Some("line-1")
    );
    db.upsert_shipments(&[ShipmentInput {
        id: "SHP-1".into(),
        customer: Some("ACME".into()),
        shipped_at: None,
    }])
    .await
    .unwrap();
    assert_eq!(
        scalar_opt_str(db, "SELECT customer FROM items WHERE kind = 'shipment'")
            .await
            .as_deref(),
        Some("ACME")
    );
}

async fn tampered_row_is_named_by_verify(db: &Db) {
    for gw in ["gw-a", "gw-b"] {
        let recs = (1..=5)
            .map(|s| {
                rec(
                    s,
                    s as u32,
                    "scan_rejected",
                    json!({"scanner":"sc1","raw":format!("X{s}"),"reason":"no pattern"}),
                )
            })
            .collect();
        db.write_batch(&batch(&[(topic(gw), envelope(gw, recs))]))
            .await
            .unwrap();
    }
    let r = db.verify_chains().await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.gateways, r.events), (2, 10));
    let id = scalar_i64(
        db,
        "SELECT id FROM events WHERE gateway = 'gw-b' AND seq = 3",
    )
    .await;
    exec(
        db,
        &format!("UPDATE events SET body = replace(body, 'X3', 'X9') WHERE id = {id}"),
    )
    .await;
    let r = db.verify_chains().await.unwrap();
    assert!(!r.ok);
    assert_eq!(r.broken.len(), 1, "{r:?}");
    let b = &r.broken[0];
    assert_eq!(
        (b.gateway.as_str(), b.event_id, b.seq, b.problem.as_str()),
        ("gw-b", id, 3, "hash")
    );
    assert_eq!(b.epoch, EPOCH);
    assert_ne!(b.expected, b.stored);
    // A deleted row breaks the next link.
    let id4 = scalar_i64(
        db,
        "SELECT id FROM events WHERE gateway = 'gw-a' AND seq = 4",
    )
    .await;
    exec(db, &format!("DELETE FROM events WHERE id = {id4}")).await;
    let r = db.verify_chains().await.unwrap();
    let a = r
        .broken
        .iter()
        .find(|b| b.gateway == "gw-a")
        .expect("gw-a broken");
    assert_eq!((a.seq, a.problem.as_str()), (5, "prev_hash"));
}

async fn every_dead_letter_reason_is_stored(db: &Db) {
    let gw = "gw-d";
    let t = topic(gw);
    let msgs = vec![
        (t.clone(), b"{not json".to_vec()),
        (t.clone(), serde_json::to_vec(&json!({"v":2,"gateway":gw,"plant":"plant-a","line":"line-1","epoch":EPOCH,"records":[]})).unwrap()),
        (t.clone(), serde_json::to_vec(&json!({"v":1,"gateway":"other","plant":"plant-a","line":"line-1","epoch":EPOCH,"records":[]})).unwrap()),
        (t.clone(), serde_json::to_vec(&json!({"v":1,"gateway":gw,"plant":"plant-a"})).unwrap()),
        (t.clone(), envelope(gw, vec![
            rec(1, 1, "teleported", json!({"unit":"SN1"})),
            rec(2, 2, "quality_check", json!({"unit":"SN1","characteristic":"d","value":{"no":1},"result":"pass"})),
            rec(3, 3, "quality_check", json!({"unit":"SN1","characteristic":"d","value":1.5,"result":"pass"})),
        ])),
        (format!("{ROOT}/plant-a/line-1/{gw}/status"), b"[]".to_vec()),
        (format!("{ROOT}/plant-a/{gw}/records"), b"{}".to_vec()),
        (t.clone(), envelope(gw, vec![rec(4, 4, "disassembled", json!({"parent":"SN1","child":{"kind":"unit","id":"SN2"}}))])),
    ];
    let mut b = batch(&msgs);
    // Oversized, as the MQTT loop sees it.
    match threadline_aggregator::ingest::decode(ROOT, &t, &vec![b'x'; 70 * 1024], 64 * 1024) {
        threadline_aggregator::ingest::Incoming::Dead(d) => {
            assert!(d.payload.len() <= 4096);
            b.dead_letters.push(d);
        }
        other => panic!("oversized not refused: {other:?}"),
    }
    let out = db.write_batch(&b).await.unwrap();
    let kinds: Vec<&str> = out.dead_letters.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "oversized",
            "malformed_envelope",
            "unsupported_version",
            "topic_mismatch",
            "bad_topic",
            "unknown_record_type",
            "invalid_record",
            "malformed_status",
        ]
    );
    assert_eq!(out.dead_letters.values().sum::<u64>(), 9);
    assert_eq!(db.count("dead_letters").await.unwrap(), 9);
    // A disassembly with nothing to close is no dead letter: it waits for its assembly.
    assert_eq!(db.count("pending_closes").await.unwrap(), 1);
    // Dead-lettered records are acked with the valid ones (their dead letter is committed).
    let seqs: Vec<u64> = out.committed.values().flatten().copied().collect();
    assert_eq!(seqs.len(), 4, "{seqs:?}");
    assert_eq!(db.count("quality_checks").await.unwrap(), 1);
    let reason = scalar_opt_str(
        db,
        "SELECT reason FROM dead_letters WHERE kind = 'topic_mismatch'",
    )
    .await
    .unwrap();
    assert!(reason.contains("\"other\""), "{reason}");
    let reason = scalar_opt_str(
        db,
        "SELECT reason FROM dead_letters WHERE kind = 'invalid_record'",
    )
    .await
    .unwrap();
    assert!(reason.contains("seq 2"), "{reason}");
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM dead_letters WHERE kind = 'malformed_envelope'"
        )
        .await,
        2
    );
    // The disassembly itself is still in the chained log.
    assert_eq!(db.count("events").await.unwrap(), 2);
    assert!(db.verify_chains().await.unwrap().ok);
}

async fn genealogy_projections(db: &Db) {
    let gw = "gw-g";
    let recs = vec![
        rec(
            1,
            1,
            "assembled",
            json!({"parent":"SN1","child":{"kind":"unit","id":"SN2"},"qty":1.0,"station":"ST20"}),
        ),
        rec(
            2,
            2,
            "packed",
            json!({"container":"CASE-1","level":"case","child":{"kind":"unit","id":"SN1"}}),
        ),
        rec(
            3,
            3,
            "packed",
            json!({"container":"PAL-1","level":"pallet","child":{"kind":"container","id":"CASE-1"}}),
        ),
        rec(
            4,
            4,
            "shipped",
            json!({"container":"PAL-1","shipment":"SHP-7","customer":"ACME"}),
        ),
        rec(
            5,
            5,
            "disassembled",
            json!({"parent":"SN1","child":{"kind":"unit","id":"SN2"},"reason":"rework"}),
        ),
        rec(
            6,
            6,
            "assembled",
            json!({"parent":"SN1","child":{"kind":"unit","id":"SN3"}}),
        ),
        rec(
            7,
            7,
            "quality_check",
            json!({"unit":"SN1","characteristic":"torque","value":4.2,"lsl":4.0,"usl":5.0,"result":"pass"}),
        ),
        rec(
            8,
            8,
            "material_loaded",
            json!({"station":"ST10","lot":"LOT-9"}),
        ),
    ];
    let out = db
        .write_batch(&batch(&[(topic(gw), envelope(gw, recs))]))
        .await
        .unwrap();
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(db.count("edges").await.unwrap(), 5);
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM edges WHERE valid_to IS NOT NULL AND closed_reason = 'rework'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_opt_str(db, "SELECT level FROM items WHERE ext_id = 'PAL-1'")
            .await
            .as_deref(),
        Some("pallet")
    );
    assert_eq!(scalar_opt_str(db, "SELECT customer FROM items WHERE kind = 'shipment' AND ext_id = 'SHP-7' AND shipped_at IS NOT NULL").await.as_deref(), Some("ACME"));
    assert_eq!(scalar_i64(db, "SELECT COUNT(*) FROM edges e JOIN items p ON p.id = e.parent_id JOIN items c ON c.id = e.child_id WHERE e.relation = 'shipped' AND p.kind = 'shipment' AND c.ext_id = 'PAL-1'").await, 1);
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM items WHERE kind = 'lot' AND ext_id = 'LOT-9'"
        )
        .await,
        1
    );
    // Unpack in a later batch closes, never deletes.
    db.write_batch(&batch(&[(
        topic(gw),
        envelope(
            gw,
            vec![rec(
                9,
                9,
                "unpacked",
                json!({"container":"CASE-1","level":"case","child":{"kind":"unit","id":"SN1"}}),
            )],
        ),
    )]))
    .await
    .unwrap();
    assert_eq!(db.count("edges").await.unwrap(), 5);
    assert_eq!(
        scalar_i64(
            db,
            "SELECT COUNT(*) FROM edges WHERE relation = 'packed' AND valid_to IS NOT NULL"
        )
        .await,
        1
    );
}

async fn event_log_pages_by_id(db: &Db) {
    for gw in ["gw-p", "gw-q"] {
        let recs = (1..=5)
            .map(|s| {
                rec(
                    s,
                    s as u32,
                    "scan_rejected",
                    json!({"scanner":"sc","raw":"?","reason":"r"}),
                )
            })
            .collect();
        db.write_batch(&batch(&[(topic(gw), envelope(gw, recs))]))
            .await
            .unwrap();
    }
    let p1 = db.events_page(Some("gw-q"), 0, None, 3).await.unwrap();
    assert_eq!(
        p1.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let p2 = db
        .events_page(Some("gw-q"), p1.next_after.unwrap(), None, 3)
        .await
        .unwrap();
    assert_eq!(p2.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(p2.next_after, None);
    let by_seq = db.events_page(Some("gw-p"), 0, Some(3), 10).await.unwrap();
    assert_eq!(
        by_seq.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(by_seq.events[0].ts, "2026-11-25T08:00:04.000001Z");
    assert_eq!(by_seq.events[0].record["type"], "scan_rejected");
    let all = db.events_page(None, 0, None, 100).await.unwrap();
    assert_eq!(all.events.len(), 10);
}
