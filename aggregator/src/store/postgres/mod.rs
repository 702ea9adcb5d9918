//! PostgreSQL statements of the write path: one statement per table per batch, whatever the
//! batch size — binary COPY or `UNNEST` for the appended rows ([`copy`]), `UNNEST` with
//! `ON CONFLICT` for the item upsert.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Postgres, Row, Transaction};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::model::{DeadLetter, StatusUpdate};
use super::write::{
    EdgeClose, EdgeInsert, EventInsert, ItemFill, ItemKey, Projection, QualityInsert, ReadingInsert,
};

mod copy;
pub(crate) mod partitions;

use copy::BulkRows;

type Tx<'c> = Transaction<'c, Postgres>;

pub(crate) async fn lock_gateway(
    t: &mut Tx<'_>,
    gw: &str,
    plant: &str,
    line: &str,
) -> sqlx::Result<()> {
    // The upsert takes the row lock until commit: chain appends of one gateway are serialized
    // even between aggregator replicas.
    sqlx::query(
        "INSERT INTO gateways (id, plant, line, last_seen_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (id) DO UPDATE SET plant = excluded.plant, line = excluded.line,
           last_seen_at = excluded.last_seen_at",
    )
    .bind(gw)
    .bind(plant)
    .bind(line)
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
    // A range scan of the unique index, filtered here: `seq = ANY(array)` made PostgreSQL test
    // every stored seq of the epoch against the whole array (quadratic as the log grows).
    let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(HashSet::new());
    };
    let want: HashSet<i64> = seqs.iter().copied().collect();
    let rows: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM events WHERE gateway = $1 AND epoch = $2 AND seq BETWEEN $3 AND $4",
    )
    .bind(gw)
    .bind(epoch)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut **t)
    .await?;
    Ok(rows.into_iter().filter(|s| want.contains(s)).collect())
}

pub(crate) async fn insert_events(t: &mut Tx<'_>, rows: &[EventInsert]) -> sqlx::Result<Vec<i64>> {
    // Ids are drawn first and assigned in chain order (ascending), then the rows are copied:
    // a gateway's chain is its rows in id order. The caller filtered stored seqs under the
    // gateway's row lock, so the copy cannot conflict (if it ever did, the batch fails whole
    // and its retry filters again).
    let ids = next_ids(t, "events_id_seq", rows.len()).await?;
    let mut c = BulkRows::new();
    for (r, id) in rows.iter().zip(&ids) {
        c.row()
            .i64(*id)
            .text(&r.gateway)
            .uuid(r.epoch)
            .i64(r.seq)
            .ts(r.ts)
            .text(r.type_)
            .text(&r.body)
            .bytea(&r.prev_hash)
            .bytea(&r.hash);
    }
    c.insert(
        t,
        "events (id, gateway, epoch, seq, ts, type, body, prev_hash, hash)",
    )
    .await?;
    Ok(ids)
}

/// `n` fresh values of `sequence`, ascending.
async fn next_ids(t: &mut Tx<'_>, sequence: &str, n: usize) -> sqlx::Result<Vec<i64>> {
    let mut ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT nextval('{sequence}') FROM generate_series(1, $1)"
    )))
    .bind(n as i64)
    .fetch_all(&mut **t)
    .await?;
    ids.sort_unstable();
    if ids.len() != n {
        return Err(sqlx::Error::Protocol(format!(
            "{sequence}: asked for {n} ids, got {}",
            ids.len()
        )));
    }
    Ok(ids)
}

pub(crate) async fn insert_readings(t: &mut Tx<'_>, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
    // Deduplicate against what is stored: a range scan of the primary key per (gateway, epoch)
    // over the batch's seq and time span (the time span prunes the partitions). The writer
    // already dropped duplicates within the batch, and holds the gateways' row locks.
    let mut spans: HashMap<(&str, Uuid), (i64, i64, Timestamp, Timestamp)> = HashMap::new();
    for r in rows {
        let e = spans
            .entry((r.gateway.as_str(), r.epoch))
            .or_insert((r.seq, r.seq, r.ts, r.ts));
        e.0 = e.0.min(r.seq);
        e.1 = e.1.max(r.seq);
        e.2 = e.2.min(r.ts);
        e.3 = e.3.max(r.ts);
    }
    let mut stored: HashSet<(&str, Uuid, i64)> = HashSet::new();
    for ((gw, epoch), (lo, hi, from, to)) in &spans {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM readings WHERE gateway = $1 AND epoch = $2 AND seq BETWEEN $3 AND $4
               AND ts BETWEEN $5 AND $6",
        )
        .bind(*gw)
        .bind(epoch)
        .bind(lo)
        .bind(hi)
        .bind(from)
        .bind(to)
        .fetch_all(&mut **t)
        .await?;
        stored.extend(seqs.into_iter().map(|s| (*gw, *epoch, s)));
    }
    let mut c = BulkRows::new();
    for r in rows {
        if stored.contains(&(r.gateway.as_str(), r.epoch, r.seq)) {
            continue;
        }
        c.row()
            .text(&r.gateway)
            .uuid(r.epoch)
            .i64(r.seq)
            .ts(r.ts)
            .text(&r.device)
            .text(&r.tag)
            .opt_f64(r.value_num)
            .opt_text(r.value_text.as_deref())
            .opt_text(r.unit.as_deref())
            .text(r.quality)
            .opt_text(r.error.as_deref());
    }
    c.insert(
        t,
        "readings (gateway, epoch, seq, ts, device, tag, value_num, value_text, unit, quality, \
         error)",
    )
    .await
}

pub(crate) async fn upsert_items(
    t: &mut Tx<'_>,
    items: &BTreeMap<ItemKey, ItemFill>,
) -> sqlx::Result<HashMap<ItemKey, i64>> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    // One statement for every item, in key order (the map's): concurrent writers then lock
    // shared items in the same order and cannot deadlock each other. An item that is only
    // referenced (no field, still a placeholder) inserts a placeholder when missing and leaves
    // an existing row alone (the `WHERE`: no new row version); one with data fills it in.
    macro_rules! col {
        ($f:ident) => {
            items.values().map(|f| f.$f.clone()).collect::<Vec<_>>()
        };
    }
    let kind: Vec<&str> = items.keys().map(|(k, _)| k.as_str()).collect();
    let ext: Vec<&str> = items.keys().map(|(_, id)| id.as_str()).collect();
    sqlx::query(
        "INSERT INTO items (kind, ext_id, part, supplier, supplier_batch, qty, work_order, line,
                            level, customer, shipped_at, placeholder, first_seen_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::float8[], $7::text[], $8::text[], $9::text[], $10::text[],
                              $11::timestamptz[], $12::bool[], $13::timestamptz[])
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
           first_seen_at = LEAST(items.first_seen_at, excluded.first_seen_at)
         WHERE NOT excluded.placeholder OR excluded.part IS NOT NULL
           OR excluded.supplier IS NOT NULL OR excluded.supplier_batch IS NOT NULL
           OR excluded.qty IS NOT NULL OR excluded.work_order IS NOT NULL
           OR excluded.line IS NOT NULL OR excluded.level IS NOT NULL
           OR excluded.customer IS NOT NULL OR excluded.shipped_at IS NOT NULL",
    )
    .bind(&kind)
    .bind(&ext)
    .bind(col!(part))
    .bind(col!(supplier))
    .bind(col!(supplier_batch))
    .bind(col!(qty))
    .bind(col!(work_order))
    .bind(col!(line))
    .bind(col!(level))
    .bind(col!(customer))
    .bind(col!(shipped_at))
    .bind(col!(placeholder))
    .bind(col!(first_seen_at))
    .execute(&mut **t)
    .await?;
    let kind: Vec<&str> = items.keys().map(|(k, _)| k.as_str()).collect();
    let ext: Vec<&str> = items.keys().map(|(_, id)| id.as_str()).collect();
    let rows = sqlx::query(
        "SELECT i.id, i.kind, i.ext_id FROM items i
         JOIN UNNEST($1::text[], $2::text[]) AS u(kind, ext_id)
           ON i.kind = u.kind AND i.ext_id = u.ext_id",
    )
    .bind(&kind)
    .bind(&ext)
    .fetch_all(&mut **t)
    .await?;
    let mut map = HashMap::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get(1)?;
        let kind = kind
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
        map.insert((kind, r.try_get::<String, _>(2)?), r.try_get::<i64, _>(0)?);
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
    // Copied in event order, so edge ids follow it (closing picks the oldest open edge).
    let mut c = BulkRows::new();
    for e in rows {
        c.row()
            .i64(id_of(ids, &e.parent)?)
            .i64(id_of(ids, &e.child)?)
            .text(e.relation)
            .opt_f64(e.qty)
            .opt_text(e.station.as_deref())
            .ts(e.valid_from)
            .i64(e.event_id);
    }
    c.insert(
        t,
        "edges (parent_id, child_id, relation, qty, station, valid_from, event_id)",
    )
    .await?;
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
    .bind(c.at)
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
    use threadline_shared::event::ItemKind;
    let ops = &p.operations;
    let op_ids = next_ids(t, "operations_id_seq", ops.len()).await?;
    let mut op_of_event: HashMap<i64, i64> = HashMap::with_capacity(ops.len());
    let mut c = BulkRows::new();
    for (o, id) in ops.iter().zip(&op_ids) {
        op_of_event.insert(o.event_id, *id);
        c.row()
            .i64(*id)
            .i64(id_of(ids, &(ItemKind::Unit, o.unit.clone()))?)
            .text(&o.station)
            .text(&o.operation)
            .opt_text(o.equipment.as_deref())
            .opt_text(o.operator.as_deref())
            .opt_text(o.recipe.as_deref())
            .opt_ts(o.started_at)
            .ts(o.completed_at)
            .text(o.result)
            .opt_text(o.defect_code.as_deref())
            .bool(o.out_of_spec)
            .jsonb(&o.environment)
            .text(&o.gateway)
            .i64(o.event_id);
    }
    c.insert(
        t,
        "operations (id, unit_id, station, operation, equipment, operator, recipe, started_at, \
         completed_at, result, defect_code, out_of_spec, environment, gateway, event_id)",
    )
    .await?;
    let op_id = |ev: i64| {
        op_of_event
            .get(&ev)
            .copied()
            .ok_or_else(|| sqlx::Error::Protocol(format!("operation of event {ev} missing")))
    };
    if !p.parameters.is_empty() {
        let mut c = BulkRows::new();
        for x in &p.parameters {
            c.row()
                .i64(op_id(x.event_id)?)
                .text(&x.name)
                .opt_f64(x.value_num)
                .opt_text(x.value_text.as_deref())
                .opt_text(x.unit.as_deref())
                .opt_f64(x.lsl)
                .opt_f64(x.usl)
                .bool(x.in_spec);
        }
        c.insert(
            t,
            "operation_parameters (operation_id, name, value_num, value_text, unit, lsl, usl, \
             in_spec)",
        )
        .await?;
    }
    if !p.materials.is_empty() {
        let mut c = BulkRows::new();
        for m in &p.materials {
            c.row()
                .i64(op_id(m.event_id)?)
                .i64(id_of(ids, &(ItemKind::Lot, m.lot.clone()))?)
                .f64(m.qty);
        }
        c.insert(t, "operation_materials (operation_id, lot_id, qty)")
            .await?;
    }
    Ok(())
}

pub(crate) async fn insert_quality(
    t: &mut Tx<'_>,
    rows: &[QualityInsert],
    ids: &HashMap<ItemKey, i64>,
) -> sqlx::Result<()> {
    use threadline_shared::event::ItemKind;
    let mut c = BulkRows::new();
    for q in rows {
        c.row()
            .i64(id_of(ids, &(ItemKind::Unit, q.unit.clone()))?)
            .text(&q.characteristic)
            .opt_f64(q.value_num)
            .opt_text(q.value_text.as_deref())
            .opt_text(q.unit_of_measure.as_deref())
            .opt_f64(q.lsl)
            .opt_f64(q.usl)
            .text(q.result)
            .opt_text(q.station.as_deref())
            .opt_text(q.operator.as_deref())
            .ts(q.checked_at)
            .i64(q.event_id);
    }
    c.insert(
        t,
        "quality_checks (unit_id, characteristic, value_num, value_text, unit_of_measure, lsl, \
         usl, result, station, operator, checked_at, event_id)",
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_dead_letters(t: &mut Tx<'_>, rows: &[DeadLetter]) -> sqlx::Result<()> {
    for d in rows {
        sqlx::query(
            "INSERT INTO dead_letters (topic, gateway, reason, kind, payload)
             VALUES ($1, $2, $3, $4, $5)",
        )
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
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, now())
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
    .execute(&mut **t)
    .await?;
    Ok(())
}

pub(crate) async fn touch_gateway(t: &mut Tx<'_>, gw: &str, newest: Timestamp) -> sqlx::Result<()> {
    sqlx::query("UPDATE gateways SET last_record_at = GREATEST(last_record_at, $2) WHERE id = $1")
        .bind(gw)
        .bind(newest)
        .execute(&mut **t)
        .await?;
    Ok(())
}
