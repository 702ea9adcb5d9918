//! PostgreSQL: the [`WriteTx`] of the write path — one statement per table per batch, whatever
//! the batch size: binary COPY or `UNNEST` for the appended rows ([`copy`]), `UNNEST` with
//! `ON CONFLICT` for the item upsert — and how the shared statements' binds are encoded.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgPool, PgQueryResult};
use sqlx::{Arguments as _, Postgres, Transaction};
use threadline_shared::event::ItemKind;
use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::backend::{WriteTx, item_upsert_set};
use super::model::Batch;
use super::rows::{
    EdgeInsert, EventInsert, ItemFill, ItemIds, ItemKey, OperationIds, OperationRows,
    QualityInsert, ReadingInsert,
};
use super::sql::{self, Bind, Driver, Rows, Sql};

mod copy;
pub(crate) mod partitions;

use copy::BulkRows;

impl Driver for Postgres {
    fn arguments(binds: &[Bind<'_>]) -> Result<PgArguments, BoxDynError> {
        let mut a = PgArguments::default();
        for b in binds {
            match *b {
                Bind::Text(v) => a.add(v)?,
                Bind::I64(v) => a.add(v)?,
                Bind::F64(v) => a.add(v)?,
                Bind::Bool(v) => a.add(v)?,
                Bind::Time(v) => a.add(v)?,
                Bind::Uuid(v) => a.add(v)?,
                Bind::Bytes(v) => a.add(v)?,
                Bind::Json(v) => a.add(sqlx::types::Json(v))?,
                Bind::I64s(v) => a.add(v)?,
            }
        }
        Ok(a)
    }

    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }
}

/// A batch's write transaction on PostgreSQL.
pub(crate) struct PgWrite<'c>(Transaction<'c, Postgres>);

impl PgWrite<'static> {
    /// Makes the day partitions of the batch's readings, then begins the transaction.
    pub(crate) async fn begin(pool: &PgPool, batch: &Batch) -> sqlx::Result<Self> {
        // Outside the batch's transaction: creating a partition locks `readings`.
        partitions::ensure(pool, &partitions::days_of(batch.reading_times())).await?;
        Ok(PgWrite(pool.begin().await?))
    }
}

impl WriteTx for PgWrite<'_> {
    async fn execute(&mut self, q: Sql<'_>) -> sqlx::Result<u64> {
        sql::execute(&mut *self.0, q).await
    }

    async fn fetch_all<T: Rows>(&mut self, q: Sql<'_>) -> sqlx::Result<Vec<T>> {
        sql::fetch_all(&mut *self.0, q).await
    }

    async fn commit(self) -> sqlx::Result<()> {
        self.0.commit().await
    }

    async fn insert_events(&mut self, rows: &[EventInsert]) -> sqlx::Result<Vec<i64>> {
        let t = &mut self.0;
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
                .text(r.body.as_str())
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

    async fn insert_readings(&mut self, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
        let t = &mut self.0;
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

    async fn upsert_items(&mut self, items: &BTreeMap<ItemKey, ItemFill>) -> sqlx::Result<ItemIds> {
        let t = &mut self.0;
        if items.is_empty() {
            return Ok(ItemIds::default());
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
        sqlx::query(concat!(
            "INSERT INTO items (kind, ext_id, part, supplier, supplier_batch, qty, work_order, line,
                                level, customer, shipped_at, placeholder, first_seen_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::float8[], $7::text[], $8::text[], $9::text[], $10::text[],
                                  $11::timestamptz[], $12::bool[], $13::timestamptz[])
             ON CONFLICT (kind, ext_id) DO UPDATE SET ",
            item_upsert_set!(),
            " first_seen_at = LEAST(items.first_seen_at, excluded.first_seen_at)
             WHERE NOT excluded.placeholder OR excluded.part IS NOT NULL
               OR excluded.supplier IS NOT NULL OR excluded.supplier_batch IS NOT NULL
               OR excluded.qty IS NOT NULL OR excluded.work_order IS NOT NULL
               OR excluded.line IS NOT NULL OR excluded.level IS NOT NULL
               OR excluded.customer IS NOT NULL OR excluded.shipped_at IS NOT NULL",
        ))
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
        #[derive(sqlx::FromRow)]
        struct Id {
            id: i64,
            kind: String,
            ext_id: String,
        }
        let rows: Vec<Id> = sqlx::query_as(
            "SELECT i.id, i.kind, i.ext_id FROM items i
         JOIN UNNEST($1::text[], $2::text[]) AS u(kind, ext_id)
           ON i.kind = u.kind AND i.ext_id = u.ext_id",
        )
        .bind(&kind)
        .bind(&ext)
        .fetch_all(&mut **t)
        .await?;
        let mut ids = ItemIds::default();
        for r in rows {
            let kind = r
                .kind
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
            ids.insert(kind, r.ext_id, r.id);
        }
        Ok(ids)
    }

    async fn insert_edges(&mut self, rows: &[EdgeInsert], ids: &ItemIds) -> sqlx::Result<()> {
        let t = &mut self.0;
        // Copied in event order, so edge ids follow it (closing picks the oldest open edge).
        let mut c = BulkRows::new();
        for e in rows {
            c.row()
                .i64(ids.of(&e.parent)?)
                .i64(ids.of(&e.child)?)
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

    async fn insert_operations(&mut self, rows: &OperationRows, ids: &ItemIds) -> sqlx::Result<()> {
        let t = &mut self.0;
        let ops = &rows.operations;
        let op_ids = next_ids(t, "operations_id_seq", ops.len()).await?;
        let mut op_of_event = OperationIds::with_capacity(ops.len());
        let mut c = BulkRows::new();
        for (o, id) in ops.iter().zip(&op_ids) {
            op_of_event.insert(o.event_id, *id);
            c.row()
                .i64(*id)
                .i64(ids.get(ItemKind::Unit, &o.unit)?)
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
        if !rows.parameters.is_empty() {
            let mut c = BulkRows::new();
            for x in &rows.parameters {
                c.row()
                    .i64(op_of_event.of_event(x.event_id)?)
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
        if !rows.materials.is_empty() {
            let mut c = BulkRows::new();
            for m in &rows.materials {
                c.row()
                    .i64(op_of_event.of_event(m.event_id)?)
                    .i64(ids.get(ItemKind::Lot, &m.lot)?)
                    .f64(m.qty);
            }
            c.insert(t, "operation_materials (operation_id, lot_id, qty)")
                .await?;
        }
        Ok(())
    }

    async fn insert_quality(&mut self, rows: &[QualityInsert], ids: &ItemIds) -> sqlx::Result<()> {
        let t = &mut self.0;
        let mut c = BulkRows::new();
        for q in rows {
            c.row()
                .i64(ids.get(ItemKind::Unit, &q.unit)?)
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
}

/// `n` fresh values of `sequence`, ascending.
async fn next_ids(
    t: &mut Transaction<'_, Postgres>,
    sequence: &str,
    n: usize,
) -> sqlx::Result<Vec<i64>> {
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
