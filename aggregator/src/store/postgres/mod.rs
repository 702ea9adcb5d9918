//! PostgreSQL statements of the write path. Multi-row inserts bind one array per column and
//! `UNNEST` them: one round trip per table per batch, whatever the batch size.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Postgres, Row, Transaction};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::model::{DeadLetter, StatusUpdate};
use super::write::{
    EdgeClose, EdgeInsert, EventInsert, ItemFill, ItemKey, Projection, QualityInsert, ReadingInsert,
};

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
    let mut gw = Vec::with_capacity(rows.len());
    let mut epoch = Vec::with_capacity(rows.len());
    let mut seq = Vec::with_capacity(rows.len());
    let mut ts = Vec::with_capacity(rows.len());
    let mut ty = Vec::with_capacity(rows.len());
    let mut body = Vec::with_capacity(rows.len());
    let mut prev = Vec::with_capacity(rows.len());
    let mut hash = Vec::with_capacity(rows.len());
    for r in rows {
        gw.push(r.gateway.as_str());
        epoch.push(r.epoch);
        seq.push(r.seq);
        ts.push(r.ts);
        ty.push(r.type_);
        body.push(r.body.as_str());
        prev.push(r.prev_hash.as_slice());
        hash.push(r.hash.as_slice());
    }
    // ORDER BY ord: ids are drawn in array order, which is chain order.
    let got = sqlx::query(
        "INSERT INTO events (gateway, epoch, seq, ts, type, body, prev_hash, hash)
         SELECT gw, ep, sq, t, ty, b, ph, h
         FROM UNNEST($1::text[], $2::uuid[], $3::int8[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::bytea[], $8::bytea[])
              WITH ORDINALITY AS u(gw, ep, sq, t, ty, b, ph, h, ord)
         ORDER BY ord
         ON CONFLICT (gateway, epoch, seq) DO NOTHING
         RETURNING id, gateway, epoch, seq",
    )
    .bind(&gw)
    .bind(&epoch)
    .bind(&seq)
    .bind(&ts)
    .bind(&ty)
    .bind(&body)
    .bind(&prev)
    .bind(&hash)
    .fetch_all(&mut **t)
    .await?;
    let mut map: HashMap<(String, Uuid, i64), i64> = HashMap::with_capacity(got.len());
    for r in got {
        map.insert((r.try_get(1)?, r.try_get(2)?, r.try_get(3)?), r.try_get(0)?);
    }
    rows.iter()
        .map(|r| {
            map.get(&(r.gateway.clone(), r.epoch, r.seq))
                .copied()
                .ok_or_else(|| {
                    // Cannot happen while appends are serialized (the gateway row is locked
                    // and stored seqs were filtered out); refuse the batch rather than break
                    // the chain.
                    sqlx::Error::Protocol(format!(
                        "event ({}, {}, {}) was stored concurrently",
                        r.gateway, r.epoch, r.seq
                    ))
                })
        })
        .collect()
}

pub(crate) async fn insert_readings(t: &mut Tx<'_>, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
    let mut gw = Vec::with_capacity(rows.len());
    let mut epoch = Vec::with_capacity(rows.len());
    let mut seq = Vec::with_capacity(rows.len());
    let mut ts = Vec::with_capacity(rows.len());
    let mut device = Vec::with_capacity(rows.len());
    let mut tag = Vec::with_capacity(rows.len());
    let mut num = Vec::with_capacity(rows.len());
    let mut text = Vec::with_capacity(rows.len());
    let mut unit = Vec::with_capacity(rows.len());
    let mut quality = Vec::with_capacity(rows.len());
    let mut error = Vec::with_capacity(rows.len());
    for r in rows {
        gw.push(r.gateway.as_str());
        epoch.push(r.epoch);
        seq.push(r.seq);
        ts.push(r.ts);
        device.push(r.device.as_str());
        tag.push(r.tag.as_str());
        num.push(r.value_num);
        text.push(r.value_text.as_deref());
        unit.push(r.unit.as_deref());
        quality.push(r.quality);
        error.push(r.error.as_deref());
    }
    let res = sqlx::query(
        "INSERT INTO readings (gateway, epoch, seq, ts, device, tag, value_num, value_text, unit,
                               quality, error)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::int8[], $4::timestamptz[], $5::text[],
                              $6::text[], $7::float8[], $8::text[], $9::text[], $10::text[],
                              $11::text[])
         ON CONFLICT (gateway, epoch, seq) DO NOTHING",
    )
    .bind(&gw)
    .bind(&epoch)
    .bind(&seq)
    .bind(&ts)
    .bind(&device)
    .bind(&tag)
    .bind(&num)
    .bind(&text)
    .bind(&unit)
    .bind(&quality)
    .bind(&error)
    .execute(&mut **t)
    .await?;
    Ok(res.rows_affected())
}

pub(crate) async fn upsert_items(
    t: &mut Tx<'_>,
    items: &BTreeMap<ItemKey, ItemFill>,
) -> sqlx::Result<HashMap<ItemKey, i64>> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    // Only referenced: insert a placeholder if missing (no write when it exists).
    let (fills, refs): (Vec<_>, Vec<_>) = items.iter().partition(|(_, f)| f.fills);
    if !refs.is_empty() {
        let kind: Vec<&str> = refs.iter().map(|((k, _), _)| k.as_str()).collect();
        let ext: Vec<&str> = refs.iter().map(|((_, id), _)| id.as_str()).collect();
        let seen: Vec<Option<Timestamp>> = refs.iter().map(|(_, f)| f.first_seen_at).collect();
        sqlx::query(
            "INSERT INTO items (kind, ext_id, first_seen_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])
             ON CONFLICT (kind, ext_id) DO NOTHING",
        )
        .bind(&kind)
        .bind(&ext)
        .bind(&seen)
        .execute(&mut **t)
        .await?;
    }
    if !fills.is_empty() {
        macro_rules! col {
            ($f:ident) => {
                fills.iter().map(|(_, f)| f.$f.clone()).collect::<Vec<_>>()
            };
        }
        let kind: Vec<&str> = fills.iter().map(|((k, _), _)| k.as_str()).collect();
        let ext: Vec<&str> = fills.iter().map(|((_, id), _)| id.as_str()).collect();
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
               first_seen_at = LEAST(items.first_seen_at, excluded.first_seen_at)",
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
    }
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
    let parent = rows
        .iter()
        .map(|e| id_of(ids, &e.parent))
        .collect::<sqlx::Result<Vec<_>>>()?;
    let child = rows
        .iter()
        .map(|e| id_of(ids, &e.child))
        .collect::<sqlx::Result<Vec<_>>>()?;
    let rel: Vec<&str> = rows.iter().map(|e| e.relation).collect();
    let qty: Vec<Option<f64>> = rows.iter().map(|e| e.qty).collect();
    let station: Vec<Option<&str>> = rows.iter().map(|e| e.station.as_deref()).collect();
    let from: Vec<Timestamp> = rows.iter().map(|e| e.valid_from).collect();
    let ev: Vec<i64> = rows.iter().map(|e| e.event_id).collect();
    sqlx::query(
        "INSERT INTO edges (parent_id, child_id, relation, qty, station, valid_from, event_id)
         SELECT p, c, r, q, s, f, e FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::float8[],
                 $5::text[], $6::timestamptz[], $7::int8[]) WITH ORDINALITY AS u(p, c, r, q, s, f, e, ord)
         ORDER BY ord",
    )
    .bind(&parent)
    .bind(&child)
    .bind(&rel)
    .bind(&qty)
    .bind(&station)
    .bind(&from)
    .bind(&ev)
    .execute(&mut **t)
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
    let unit = ops
        .iter()
        .map(|o| id_of(ids, &(ItemKind::Unit, o.unit.clone())))
        .collect::<sqlx::Result<Vec<_>>>()?;
    macro_rules! col {
        ($f:ident) => {
            ops.iter().map(|o| o.$f.clone()).collect::<Vec<_>>()
        };
    }
    let rows = sqlx::query(
        "INSERT INTO operations (unit_id, station, operation, equipment, operator, recipe,
             started_at, completed_at, result, defect_code, out_of_spec, environment, gateway,
             event_id)
         SELECT u, st, op, eq, opr, rc, sa, ca, r, dc, oos, env::jsonb, gw, ev
         FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::bool[],
                     $12::text[], $13::text[], $14::int8[])
              AS x(u, st, op, eq, opr, rc, sa, ca, r, dc, oos, env, gw, ev)
         RETURNING id, event_id",
    )
    .bind(&unit)
    .bind(col!(station))
    .bind(col!(operation))
    .bind(col!(equipment))
    .bind(col!(operator))
    .bind(col!(recipe))
    .bind(col!(started_at))
    .bind(col!(completed_at))
    .bind(col!(result))
    .bind(col!(defect_code))
    .bind(col!(out_of_spec))
    .bind(col!(environment))
    .bind(col!(gateway))
    .bind(col!(event_id))
    .fetch_all(&mut **t)
    .await?;
    let mut op_of_event: HashMap<i64, i64> = HashMap::with_capacity(rows.len());
    for r in rows {
        op_of_event.insert(r.try_get(1)?, r.try_get(0)?);
    }
    let op_id = |ev: i64| {
        op_of_event
            .get(&ev)
            .copied()
            .ok_or_else(|| sqlx::Error::Protocol(format!("operation of event {ev} missing")))
    };
    if !p.parameters.is_empty() {
        let ps = &p.parameters;
        let op = ps
            .iter()
            .map(|x| op_id(x.event_id))
            .collect::<sqlx::Result<Vec<_>>>()?;
        macro_rules! pcol {
            ($f:ident) => {
                ps.iter().map(|o| o.$f.clone()).collect::<Vec<_>>()
            };
        }
        sqlx::query(
            "INSERT INTO operation_parameters (operation_id, name, value_num, value_text, unit, lsl,
                                               usl, in_spec)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::float8[], $4::text[], $5::text[],
                                  $6::float8[], $7::float8[], $8::bool[])",
        )
        .bind(&op)
        .bind(pcol!(name))
        .bind(pcol!(value_num))
        .bind(pcol!(value_text))
        .bind(pcol!(unit))
        .bind(pcol!(lsl))
        .bind(pcol!(usl))
        .bind(pcol!(in_spec))
        .execute(&mut **t)
        .await?;
    }
    if !p.materials.is_empty() {
        let ms = &p.materials;
        let op = ms
            .iter()
            .map(|x| op_id(x.event_id))
            .collect::<sqlx::Result<Vec<_>>>()?;
        let lot = ms
            .iter()
            .map(|m| id_of(ids, &(ItemKind::Lot, m.lot.clone())))
            .collect::<sqlx::Result<Vec<_>>>()?;
        let qty: Vec<f64> = ms.iter().map(|m| m.qty).collect();
        sqlx::query(
            "INSERT INTO operation_materials (operation_id, lot_id, qty)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[])",
        )
        .bind(&op)
        .bind(&lot)
        .bind(&qty)
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
    use threadline_shared::event::ItemKind;
    let unit = rows
        .iter()
        .map(|q| id_of(ids, &(ItemKind::Unit, q.unit.clone())))
        .collect::<sqlx::Result<Vec<_>>>()?;
    macro_rules! col {
        ($f:ident) => {
            rows.iter().map(|o| o.$f.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO quality_checks (unit_id, characteristic, value_num, value_text,
             unit_of_measure, lsl, usl, result, station, operator, checked_at, event_id)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::float8[], $4::text[], $5::text[],
                              $6::float8[], $7::float8[], $8::text[], $9::text[], $10::text[],
                              $11::timestamptz[], $12::int8[])",
    )
    .bind(&unit)
    .bind(col!(characteristic))
    .bind(col!(value_num))
    .bind(col!(value_text))
    .bind(col!(unit_of_measure))
    .bind(col!(lsl))
    .bind(col!(usl))
    .bind(col!(result))
    .bind(col!(station))
    .bind(col!(operator))
    .bind(col!(checked_at))
    .bind(col!(event_id))
    .execute(&mut **t)
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
