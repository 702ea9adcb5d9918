//! SQLite: the [`WriteTx`] of the write path, and how the shared statements' binds are encoded.
//!
//! SQLite runs in-process, so one prepared statement per row inside the batch's transaction is
//! as fast as multi-row `VALUES` and far simpler. Epochs are stored as hyphenated text, timestamps
//! as canonical RFC 3339 text ([`time_text`]): text order is then time order, which the queries'
//! range conditions rely on. A batch's transaction begins `IMMEDIATE` (it takes the write lock
//! at once instead of failing to upgrade a read lock later).

use std::collections::BTreeMap;

use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteQueryResult};
use sqlx::{Arguments as _, Sqlite, Transaction};
use threadline_shared::event::ItemKind;
use threadline_shared::time::Timestamp;

use super::backend::{WriteTx, item_upsert_set};
use super::rows::{
    EdgeInsert, EventInsert, ItemFill, ItemIds, ItemKey, OperationIds, OperationRows,
    QualityInsert, ReadingInsert,
};
use super::sql::{self, Bind, Driver, Rows, Sql};

/// A timestamp as SQLite stores it: canonical RFC 3339 UTC text with microseconds
/// (`2026-11-25T01:18:08.123456Z`), so that text order is time order and every writer and reader
/// agrees (sqlx's own chrono encoding would write `+00:00` with a varying number of digits).
pub(crate) fn time_text(ts: Timestamp) -> String {
    sql::time_text(&ts)
}

impl Driver for Sqlite {
    fn arguments(binds: &[Bind<'_>]) -> Result<SqliteArguments, BoxDynError> {
        let mut a = SqliteArguments::default();
        for b in binds {
            match *b {
                Bind::Text(v) => a.add(v)?,
                Bind::I64(v) => a.add(v)?,
                Bind::F64(v) => a.add(v)?,
                Bind::Bool(v) => a.add(v)?,
                Bind::Time(v) => a.add(v.map(time_text))?,
                Bind::Uuid(v) => a.add(v.to_string())?,
                Bind::Bytes(v) => a.add(v)?,
                Bind::Json(v) => a.add(v.to_string())?,
                Bind::I64s(_) => {
                    return Err(
                        "SQLite has no arrays: the id list goes inline (Dialect::id_in)".into(),
                    );
                }
            }
        }
        Ok(a)
    }

    fn rows_affected(r: &SqliteQueryResult) -> u64 {
        r.rows_affected()
    }
}

/// A batch's write transaction on SQLite.
pub(crate) struct SqliteWrite<'c>(Transaction<'c, Sqlite>);

impl<'c> SqliteWrite<'c> {
    /// Begins the batch's transaction on `conn` with the durability it needs:
    /// `synchronous = FULL` when `full` (trace events: acked only once a power cut cannot roll
    /// them back), `NORMAL` otherwise. Set before every batch (SQLite refuses to change it inside
    /// a transaction), since pooled connections keep the last setting.
    pub(crate) async fn begin(conn: &'c mut SqliteConnection, full: bool) -> sqlx::Result<Self> {
        sqlx::query(if full {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        })
        .execute(&mut *conn)
        .await?;
        Ok(SqliteWrite(
            sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?,
        ))
    }
}

impl WriteTx for SqliteWrite<'_> {
    async fn execute(&mut self, q: Sql<'_>) -> sqlx::Result<u64> {
        sql::execute(&mut *self.0, q).await
    }

    async fn fetch_all<T: Rows>(&mut self, q: Sql<'_>) -> sqlx::Result<Vec<T>> {
        sql::fetch_all(&mut *self.0, q).await
    }

    async fn commit(self) -> sqlx::Result<()> {
        self.0.commit().await
    }

    async fn synchronous(&mut self) -> sqlx::Result<Option<i64>> {
        let v: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *self.0)
            .await?;
        Ok(Some(v))
    }

    async fn insert_events(&mut self, rows: &[EventInsert]) -> sqlx::Result<Vec<i64>> {
        let t = &mut self.0;
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO events (gateway, epoch, seq, ts, type, body, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(&r.gateway)
            .bind(r.epoch.to_string())
            .bind(r.seq)
            .bind(time_text(r.ts))
            .bind(r.type_)
            .bind(r.body.as_str())
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .fetch_one(&mut **t)
            .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn insert_readings(&mut self, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
        let t = &mut self.0;
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
            .bind(time_text(r.ts))
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

    async fn upsert_items(&mut self, items: &BTreeMap<ItemKey, ItemFill>) -> sqlx::Result<ItemIds> {
        let t = &mut self.0;
        let mut ids = ItemIds::default();
        for ((kind, ext), f) in items {
            if f.fills {
                sqlx::query(concat!(
                    "INSERT INTO items (kind, ext_id, part, supplier, supplier_batch, qty,
                                        work_order, line, level, customer, shipped_at,
                                        placeholder, first_seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (kind, ext_id) DO UPDATE SET ",
                    item_upsert_set!(),
                    " first_seen_at = CASE WHEN items.first_seen_at IS NULL
                                           OR excluded.first_seen_at < items.first_seen_at
                                         THEN excluded.first_seen_at ELSE items.first_seen_at END",
                ))
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
                .bind(f.shipped_at.map(time_text))
                .bind(f.placeholder)
                .bind(f.first_seen_at.map(time_text))
                .execute(&mut **t)
                .await?;
            } else {
                sqlx::query(
                    "INSERT INTO items (kind, ext_id, first_seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, ext_id) DO NOTHING",
                )
                .bind(kind.as_str())
                .bind(ext)
                .bind(f.first_seen_at.map(time_text))
                .execute(&mut **t)
                .await?;
            }
            let id: i64 =
                sqlx::query_scalar("SELECT id FROM items WHERE kind = $1 AND ext_id = $2")
                    .bind(kind.as_str())
                    .bind(ext)
                    .fetch_one(&mut **t)
                    .await?;
            ids.insert(*kind, ext.clone(), id);
        }
        Ok(ids)
    }

    async fn insert_edges(&mut self, rows: &[EdgeInsert], ids: &ItemIds) -> sqlx::Result<()> {
        let t = &mut self.0;
        for e in rows {
            sqlx::query(
            "INSERT INTO edges (parent_id, child_id, relation, qty, station, valid_from, event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(ids.of(&e.parent)?)
        .bind(ids.of(&e.child)?)
        .bind(e.relation)
        .bind(e.qty)
        .bind(&e.station)
        .bind(time_text(e.valid_from))
        .bind(e.event_id)
        .execute(&mut **t)
        .await?;
        }
        Ok(())
    }

    async fn insert_operations(&mut self, rows: &OperationRows, ids: &ItemIds) -> sqlx::Result<()> {
        let t = &mut self.0;
        let ops = &rows.operations;
        let mut op_of_event = OperationIds::with_capacity(ops.len());
        for o in ops {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO operations (unit_id, station, operation, equipment, operator, recipe,
                 started_at, completed_at, result, defect_code, out_of_spec, environment, gateway,
                 event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
            )
            .bind(ids.get(ItemKind::Unit, &o.unit)?)
            .bind(&o.station)
            .bind(&o.operation)
            .bind(&o.equipment)
            .bind(&o.operator)
            .bind(&o.recipe)
            .bind(o.started_at.map(time_text))
            .bind(time_text(o.completed_at))
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
        for x in &rows.parameters {
            sqlx::query(
            "INSERT INTO operation_parameters (operation_id, name, value_num, value_text, unit, lsl,
                                               usl, in_spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(op_of_event.of_event(x.event_id)?)
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
        for m in &rows.materials {
            sqlx::query(
                "INSERT INTO operation_materials (operation_id, lot_id, qty) VALUES ($1, $2, $3)",
            )
            .bind(op_of_event.of_event(m.event_id)?)
            .bind(ids.get(ItemKind::Lot, &m.lot)?)
            .bind(m.qty)
            .execute(&mut **t)
            .await?;
        }
        Ok(())
    }

    async fn insert_quality(&mut self, rows: &[QualityInsert], ids: &ItemIds) -> sqlx::Result<()> {
        let t = &mut self.0;
        for q in rows {
            sqlx::query(
                "INSERT INTO quality_checks (unit_id, characteristic, value_num, value_text,
                 unit_of_measure, lsl, usl, result, station, operator, checked_at, event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(ids.get(ItemKind::Unit, &q.unit)?)
            .bind(&q.characteristic)
            .bind(q.value_num)
            .bind(&q.value_text)
            .bind(&q.unit_of_measure)
            .bind(q.lsl)
            .bind(q.usl)
            .bind(q.result)
            .bind(&q.station)
            .bind(&q.operator)
            .bind(time_text(q.checked_at))
            .bind(q.event_id)
            .execute(&mut **t)
            .await?;
        }
        Ok(())
    }
}
