//! SQLite statements of the write path. SQLite runs in-process, so one prepared statement per
//! row inside the batch's transaction is as fast as multi-row VALUES and far simpler. Epochs
//! are stored as hyphenated text; timestamps as sqlx writes chrono values (RFC 3339).

use crate::store::sqlite_time;
use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Sqlite, Transaction};
use threadline_shared::event::ItemKind;
use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::model::{DeadLetter, StatusUpdate};
use super::write::{
    EdgeClose, EdgeInsert, EventInsert, ItemFill, ItemKey, Projection, QualityInsert, ReadingInsert,
};

type Tx<'c> = Transaction<'c, Sqlite>;

pub(crate) async fn lock_gateway(
    t: &mut Tx<'_>,
    gw: &str,
    plant: &str,
    line: &str,
) -> sqlx::Result<()> {
    // SQLite has one writer at a time: the transaction itself serializes appends.
    sqlx::query(
        "INSERT INTO gateways (id, plant, line, last_seen_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET plant = excluded.plant, line = excluded.line,
           last_seen_at = excluded.last_seen_at",
    )
    .bind(gw)
    .bind(plant)
    .bind(line)
    .bind(sqlite_time(threadline_shared::time::now()))
    .execute(&mut **t)
    .await?;
    Ok(())
}

pub(crate) async fn chain_head(t: &mut Tx<'_>, gw: &str) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT hash FROM events WHERE gateway = $1 ORDER BY id DESC LIMIT 1")
        .bind(gw)
        .fetch_optional(&mut **t)
        .await
}

pub(crate) async fn existing_seqs(
    t: &mut Tx<'_>,
    gw: &str,
    epoch: Uuid,
    seqs: &[i64],
) -> sqlx::Result<HashSet<i64>> {
    let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(HashSet::new());
    };
    let want: HashSet<i64> = seqs.iter().copied().collect();
    let rows: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM events WHERE gateway = $1 AND epoch = $2 AND seq BETWEEN $3 AND $4",
    )
    .bind(gw)
    .bind(epoch.to_string())
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut **t)
    .await?;
    Ok(rows.into_iter().filter(|s| want.contains(s)).collect())
}

pub(crate) async fn insert_events(t: &mut Tx<'_>, rows: &[EventInsert]) -> sqlx::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (gateway, epoch, seq, ts, type, body, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&r.gateway)
        .bind(r.epoch.to_string())
        .bind(r.seq)
        .bind(sqlite_time(r.ts))
        .bind(r.type_)
        .bind(&r.body)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .fetch_one(&mut **t)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

pub(crate) async fn insert_readings(t: &mut Tx<'_>, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
    let mut new = 0;
    for r in rows {
        new += sqlx::query(
            "INSERT INTO readings (gateway, epoch, seq, ts, device, tag, value_num, value_text,
                                   unit, quality, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (gateway, epoch, seq) DO NOTHING",
        )
        .bind(&r.gateway)
        .bind(r.epoch.to_string())
        .bind(r.seq)
        .bind(sqlite_time(r.ts))
        .bind(&r.device)
        .bind(&r.tag)
        .bind(r.value_num)
        .bind(&r.value_text)
        .bind(&r.unit)
        .bind(r.quality)
        .bind(&r.error)
        .execute(&mut **t)
        .await?
        .rows_affected();
    }
    Ok(new)
}

pub(crate) async fn upsert_items(
    t: &mut Tx<'_>,
    items: &BTreeMap<ItemKey, ItemFill>,
) -> sqlx::Result<HashMap<ItemKey, i64>> {
    let mut map = HashMap::with_capacity(items.len());
    for ((kind, ext), f) in items {
        if f.fills {
            sqlx::query(
                "INSERT INTO items (kind, ext_id, part, supplier, supplier_batch, qty, work_order,
                                    line, level, customer, shipped_at, placeholder, first_seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (kind, ext_id) DO UPDATE SET
                   part = COALESCE(excluded.part, items.part),
                   supplier = COALESCE(excluded.supplier, items.supplier),
                   supplier_batch = COALESCE(excluded.supplier_batch, items.supplier_batch),
                   qty = COALESCE(excluded.qty, items.qty),
                   work_order = COALESCE(excluded.work_order, items.work_order),
                   line = COALESCE(excluded.line, items.line),
                   level = COALESCE(excluded.level, items.level),
                   customer = COALESCE(excluded.customer, items.customer),
                   shipped_at = COALESCE(items.shipped_at, excluded.shipped_at),
                   placeholder = items.placeholder AND excluded.placeholder,
                   first_seen_at = CASE WHEN items.first_seen_at IS NULL
                                          OR excluded.first_seen_at < items.first_seen_at
                                        THEN excluded.first_seen_at ELSE items.first_seen_at END",
            )
            .bind(kind.as_str())
            .bind(ext)
            .bind(&f.part)
            .bind(&f.supplier)
            .bind(&f.supplier_batch)
            .bind(f.qty)
            .bind(&f.work_order)
            .bind(&f.line)
            .bind(&f.level)
            .bind(&f.customer)
            .bind(f.shipped_at.map(sqlite_time))
            .bind(f.placeholder)
            .bind(f.first_seen_at.map(sqlite_time))
            .execute(&mut **t)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO items (kind, ext_id, first_seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, ext_id) DO NOTHING",
            )
            .bind(kind.as_str())
            .bind(ext)
            .bind(f.first_seen_at.map(sqlite_time))
            .execute(&mut **t)
            .await?;
        }
        let id: i64 = sqlx::query_scalar("SELECT id FROM items WHERE kind = $1 AND ext_id = $2")
            .bind(kind.as_str())
            .bind(ext)
            .fetch_one(&mut **t)
            .await?;
        map.insert((*kind, ext.clone()), id);
    }
    Ok(map)
}

fn id_of(ids: &HashMap<ItemKey, i64>, key: &ItemKey) -> sqlx::Result<i64> {
    ids.get(key).copied().ok_or_else(|| {
        sqlx::Error::Protocol(format!("item {} {} missing after upsert", key.0, key.1))
    })
}

pub(crate) async fn insert_edges(
    t: &mut Tx<'_>,
    rows: &[EdgeInsert],
    ids: &HashMap<ItemKey, i64>,
) -> sqlx::Result<()> {
    for e in rows {
        sqlx::query(
            "INSERT INTO edges (parent_id, child_id, relation, qty, station, valid_from, event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id_of(ids, &e.parent)?)
        .bind(id_of(ids, &e.child)?)
        .bind(e.relation)
        .bind(e.qty)
        .bind(&e.station)
        .bind(sqlite_time(e.valid_from))
        .bind(e.event_id)
        .execute(&mut **t)
        .await?;
    }
    Ok(())
}

pub(crate) async fn close_edge(
    t: &mut Tx<'_>,
    c: &EdgeClose,
    ids: &HashMap<ItemKey, i64>,
) -> sqlx::Result<bool> {
    let res = sqlx::query(
        "UPDATE edges SET valid_to = $4, closed_reason = $5
         WHERE id = (SELECT id FROM edges WHERE parent_id = $1 AND child_id = $2
                       AND relation = $3 AND valid_to IS NULL ORDER BY id LIMIT 1)",
    )
    .bind(id_of(ids, &c.parent)?)
    .bind(id_of(ids, &c.child)?)
    .bind(c.relation)
    .bind(sqlite_time(c.at))
    .bind(&c.reason)
    .execute(&mut **t)
    .await?;
    Ok(res.rows_affected() > 0)
}

pub(crate) async fn insert_operations(
    t: &mut Tx<'_>,
    p: &Projection,
    ids: &HashMap<ItemKey, i64>,
) -> sqlx::Result<()> {
    let mut op_of_event: HashMap<i64, i64> = HashMap::with_capacity(p.operations.len());
    for o in &p.operations {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO operations (unit_id, station, operation, equipment, operator, recipe,
                 started_at, completed_at, result, defect_code, out_of_spec, environment, gateway,
                 event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(id_of(ids, &(ItemKind::Unit, o.unit.clone()))?)
        .bind(&o.station)
        .bind(&o.operation)
        .bind(&o.equipment)
        .bind(&o.operator)
        .bind(&o.recipe)
        .bind(o.started_at.map(sqlite_time))
        .bind(sqlite_time(o.completed_at))
        .bind(o.result)
        .bind(&o.defect_code)
        .bind(o.out_of_spec)
        .bind(&o.environment)
        .bind(&o.gateway)
        .bind(o.event_id)
        .fetch_one(&mut **t)
        .await?;
        op_of_event.insert(o.event_id, id);
    }
    let op_id = |ev: i64| {
        op_of_event
            .get(&ev)
            .copied()
            .ok_or_else(|| sqlx::Error::Protocol(format!("operation of event {ev} missing")))
    };
    for x in &p.parameters {
        sqlx::query(
            "INSERT INTO operation_parameters (operation_id, name, value_num, value_text, unit, lsl,
                                               usl, in_spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(op_id(x.event_id)?)
        .bind(&x.name)
        .bind(x.value_num)
        .bind(&x.value_text)
        .bind(&x.unit)
        .bind(x.lsl)
        .bind(x.usl)
        .bind(x.in_spec)
        .execute(&mut **t)
        .await?;
    }
    for m in &p.materials {
        sqlx::query(
            "INSERT INTO operation_materials (operation_id, lot_id, qty) VALUES ($1, $2, $3)",
        )
        .bind(op_id(m.event_id)?)
        .bind(id_of(ids, &(ItemKind::Lot, m.lot.clone()))?)
        .bind(m.qty)
        .execute(&mut **t)
        .await?;
    }
    Ok(())
}

pub(crate) async fn insert_quality(
    t: &mut Tx<'_>,
    rows: &[QualityInsert],
    ids: &HashMap<ItemKey, i64>,
) -> sqlx::Result<()> {
    for q in rows {
        sqlx::query(
            "INSERT INTO quality_checks (unit_id, characteristic, value_num, value_text,
                 unit_of_measure, lsl, usl, result, station, operator, checked_at, event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(id_of(ids, &(ItemKind::Unit, q.unit.clone()))?)
        .bind(&q.characteristic)
        .bind(q.value_num)
        .bind(&q.value_text)
        .bind(&q.unit_of_measure)
        .bind(q.lsl)
        .bind(q.usl)
        .bind(q.result)
        .bind(&q.station)
        .bind(&q.operator)
        .bind(sqlite_time(q.checked_at))
        .bind(q.event_id)
        .execute(&mut **t)
        .await?;
    }
    Ok(())
}

pub(crate) async fn insert_dead_letters(t: &mut Tx<'_>, rows: &[DeadLetter]) -> sqlx::Result<()> {
    for d in rows {
        sqlx::query(
            "INSERT INTO dead_letters (received_at, topic, gateway, reason, kind, payload)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(sqlite_time(threadline_shared::time::now()))
        .bind(&d.topic)
        .bind(&d.gateway)
        .bind(&d.reason)
        .bind(d.kind.as_str())
        .bind(&d.payload)
        .execute(&mut **t)
        .await?;
    }
    Ok(())
}

pub(crate) async fn upsert_status(t: &mut Tx<'_>, s: &StatusUpdate) -> sqlx::Result<()> {
    let state = match s.status.state {
        threadline_shared::GatewayState::Online => "online",
        threadline_shared::GatewayState::Offline => "offline",
    };
    sqlx::query(
        "INSERT INTO gateways (id, plant, line, state, state_since, status, buffer_depth,
                               last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET plant = excluded.plant, line = excluded.line,
           state = excluded.state, state_since = excluded.state_since, status = excluded.status,
           buffer_depth = excluded.buffer_depth, last_seen_at = excluded.last_seen_at",
    )
    .bind(&s.gateway)
    .bind(&s.plant)
    .bind(&s.line)
    .bind(state)
    .bind(s.status.since)
    .bind(s.raw.to_string())
    .bind(s.status.buffer_depth as i64)
    .bind(sqlite_time(threadline_shared::time::now()))
    .execute(&mut **t)
    .await?;
    Ok(())
}

pub(crate) async fn touch_gateway(t: &mut Tx<'_>, gw: &str, newest: Timestamp) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE gateways SET last_record_at = CASE
           WHEN last_record_at IS NULL OR last_record_at < $2 THEN $2 ELSE last_record_at END
         WHERE id = $1",
    )
    .bind(gw)
    .bind(newest)
    .execute(&mut **t)
    .await?;
    Ok(())
}
