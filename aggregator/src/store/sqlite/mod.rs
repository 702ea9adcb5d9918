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
        let mut ids = Vec::with_capacity(rows.len());
        for (at, n) in chunks(rows.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO events (gateway, epoch, seq, ts, type, body, prev_hash, hash) VALUES ",
                8,
                n,
                " RETURNING id",
            ));
            for r in &rows[at..at + n] {
                q = q
                    .bind(&r.gateway)
                    .bind(r.epoch)
                    .bind(r.seq)
                    .bind(r.ts)
                    .bind(r.type_)
                    .bind(r.body.as_str())
                    .bind(Bind::Bytes(&r.prev_hash))
                    .bind(Bind::Bytes(&r.hash));
            }
            // RETURNING gives no order; the rows got ascending ids in VALUES order (one writer,
            // AUTOINCREMENT), so the sorted ids are the rows' ids in order.
            let mut got: Vec<Id> = sql::fetch_all(&mut *self.0, q).await?;
            got.sort_unstable_by_key(|r| r.id);
            ids.extend(got.into_iter().map(|r| r.id));
        }
        Ok(ids)
    }

    async fn insert_readings(&mut self, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
        let mut new = 0;
        for (at, n) in chunks(rows.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO readings (gateway, epoch, seq, ts, device, tag, value_num, value_text,
                                       unit, quality, error) VALUES ",
                11,
                n,
                " ON CONFLICT (gateway, epoch, seq) DO NOTHING",
            ));
            for r in &rows[at..at + n] {
                q = q
                    .bind(&r.gateway)
                    .bind(r.epoch)
                    .bind(r.seq)
                    .bind(r.ts)
                    .bind(&r.device)
                    .bind(&r.tag)
                    .bind(r.value_num)
                    .bind(&r.value_text)
                    .bind(&r.unit)
                    .bind(r.quality)
                    .bind(&r.error);
            }
            new += sql::execute(&mut *self.0, q).await?;
        }
        Ok(new)
    }

    async fn upsert_items(&mut self, items: &BTreeMap<ItemKey, ItemFill>) -> sqlx::Result<ItemIds> {
        let mut ids = ItemIds::default();
        // Items the batch says something about, then items it only references (inserted as
        // placeholders when missing, otherwise left alone), each in key order.
        let (fills, refs): (Vec<_>, Vec<_>) = items.iter().partition(|(_, f)| f.fills);
        for (at, n) in chunks(fills.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO items (kind, ext_id, part, supplier, supplier_batch, qty, work_order,
                                    line, level, customer, shipped_at, placeholder, first_seen_at)
                 VALUES ",
                13,
                n,
                concat!(
                    " ON CONFLICT (kind, ext_id) DO UPDATE SET ",
                    item_upsert_set!(),
                    " first_seen_at = CASE WHEN items.first_seen_at IS NULL
                                           OR excluded.first_seen_at < items.first_seen_at
                                         THEN excluded.first_seen_at ELSE items.first_seen_at END
                     RETURNING id, kind, ext_id",
                ),
            ));
            for ((kind, ext), f) in &fills[at..at + n] {
                q = q
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
                    .bind(f.shipped_at)
                    .bind(f.placeholder)
                    .bind(f.first_seen_at);
            }
            let got: Vec<ItemId> = sql::fetch_all(&mut *self.0, q).await?;
            for r in got {
                ids.insert(r.kind()?, r.ext_id, r.id);
            }
        }
        for (at, n) in chunks(refs.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO items (kind, ext_id, first_seen_at) VALUES ",
                3,
                n,
                " ON CONFLICT (kind, ext_id) DO NOTHING",
            ));
            for ((kind, ext), f) in &refs[at..at + n] {
                q = q.bind(kind.as_str()).bind(ext).bind(f.first_seen_at);
            }
            sql::execute(&mut *self.0, q).await?;
            let mut q = Sql::new(multi_row(
                "SELECT id, kind, ext_id FROM items WHERE (kind, ext_id) IN (VALUES ",
                2,
                n,
                ")",
            ));
            for ((kind, ext), _) in &refs[at..at + n] {
                q = q.bind(kind.as_str()).bind(ext);
            }
            let got: Vec<ItemId> = sql::fetch_all(&mut *self.0, q).await?;
            for r in got {
                ids.insert(r.kind()?, r.ext_id, r.id);
            }
        }
        Ok(ids)
    }

    async fn insert_edges(&mut self, rows: &[EdgeInsert], ids: &ItemIds) -> sqlx::Result<()> {
        for (at, n) in chunks(rows.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO edges (parent_id, child_id, relation, qty, station, valid_from,
                                    event_id) VALUES ",
                7,
                n,
                "",
            ));
            for e in &rows[at..at + n] {
                q = q
                    .bind(ids.of(&e.parent)?)
                    .bind(ids.of(&e.child)?)
                    .bind(e.relation)
                    .bind(e.qty)
                    .bind(&e.station)
                    .bind(e.valid_from)
                    .bind(e.event_id);
            }
            sql::execute(&mut *self.0, q).await?;
        }
        Ok(())
    }

    async fn insert_operations(&mut self, rows: &OperationRows, ids: &ItemIds) -> sqlx::Result<()> {
        let ops = &rows.operations;
        let mut op_of_event = OperationIds::with_capacity(ops.len());
        for (at, n) in chunks(ops.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO operations (unit_id, station, operation, equipment, operator, recipe,
                 started_at, completed_at, result, defect_code, out_of_spec, environment, gateway,
                 event_id) VALUES ",
                14,
                n,
                " RETURNING id, event_id",
            ));
            for o in &ops[at..at + n] {
                q = q
                    .bind(ids.get(ItemKind::Unit, &o.unit)?)
                    .bind(&o.station)
                    .bind(&o.operation)
                    .bind(&o.equipment)
                    .bind(&o.operator)
                    .bind(&o.recipe)
                    .bind(o.started_at)
                    .bind(o.completed_at)
                    .bind(o.result)
                    .bind(&o.defect_code)
                    .bind(o.out_of_spec)
                    .bind(&o.environment)
                    .bind(&o.gateway)
                    .bind(o.event_id);
            }
            let got: Vec<OperationId> = sql::fetch_all(&mut *self.0, q).await?;
            for r in got {
                op_of_event.insert(r.event_id, r.id);
            }
        }
        let params = &rows.parameters;
        for (at, n) in chunks(params.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO operation_parameters (operation_id, name, value_num, value_text, unit,
                                                   lsl, usl, in_spec) VALUES ",
                8,
                n,
                "",
            ));
            for x in &params[at..at + n] {
                q = q
                    .bind(op_of_event.of_event(x.event_id)?)
                    .bind(&x.name)
                    .bind(x.value_num)
                    .bind(&x.value_text)
                    .bind(&x.unit)
                    .bind(x.lsl)
                    .bind(x.usl)
                    .bind(x.in_spec);
            }
            sql::execute(&mut *self.0, q).await?;
        }
        let materials = &rows.materials;
        for (at, n) in chunks(materials.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO operation_materials (operation_id, lot_id, qty) VALUES ",
                3,
                n,
                "",
            ));
            for m in &materials[at..at + n] {
                q = q
                    .bind(op_of_event.of_event(m.event_id)?)
                    .bind(ids.get(ItemKind::Lot, &m.lot)?)
                    .bind(Some(m.qty));
            }
            sql::execute(&mut *self.0, q).await?;
        }
        Ok(())
    }

    async fn insert_quality(&mut self, rows: &[QualityInsert], ids: &ItemIds) -> sqlx::Result<()> {
        for (at, n) in chunks(rows.len()) {
            let mut q = Sql::new(multi_row(
                "INSERT INTO quality_checks (unit_id, characteristic, value_num, value_text,
                 unit_of_measure, lsl, usl, result, station, operator, checked_at, event_id)
                 VALUES ",
                12,
                n,
                "",
            ));
            for c in &rows[at..at + n] {
                q = q
                    .bind(ids.get(ItemKind::Unit, &c.unit)?)
                    .bind(&c.characteristic)
                    .bind(c.value_num)
                    .bind(&c.value_text)
                    .bind(&c.unit_of_measure)
                    .bind(c.lsl)
                    .bind(c.usl)
                    .bind(c.result)
                    .bind(&c.station)
                    .bind(&c.operator)
                    .bind(c.checked_at)
                    .bind(c.event_id);
            }
            sql::execute(&mut *self.0, q).await?;
        }
        Ok(())
    }
}

/// Rows of one multi-row `INSERT`, at most. One prepared statement per row costs a round trip
/// to the connection's worker thread each (and one statement per item upserted, two); a
/// statement of 256 rows pays it once for all of them. 256 × 14 columns (operations, the
/// widest) stays far below SQLite's limit of 32,766 parameters.
const CHUNK_ROWS: usize = 256;

/// The (first row, row count) of the statements that write `n` rows: chunks of [`CHUNK_ROWS`],
/// the rest in powers of two, so that a table needs at most nine distinct statement texts and
/// all of them stay in the connection's statement cache.
fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let left = n - at;
        if left == 0 {
            return None;
        }
        let len = if left >= CHUNK_ROWS {
            CHUNK_ROWS
        } else {
            1 << left.ilog2()
        };
        at += len;
        Some((at - len, len))
    })
}

/// `head` (`INSERT INTO t (…) VALUES `), then `rows` rows of `cols` placeholders, then `tail`.
///
/// The placeholders are anonymous `?` (bound in order, row by row), not `$n`: sqlx asks SQLite
/// for every parameter's name, and `sqlite3_bind_parameter_name` walks the list of named
/// parameters — quadratic in a statement of thousands (measured: two thirds of the writer's
/// CPU, and no faster than one statement per row).
fn multi_row(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let mut s = String::with_capacity(head.len() + tail.len() + rows * (cols * 3 + 2));
    s.push_str(head);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            s.push_str(if c == 0 { "?" } else { ", ?" });
        }
        s.push(')');
    }
    s.push_str(tail);
    s
}

#[derive(sqlx::FromRow)]
struct Id {
    id: i64,
}

#[derive(sqlx::FromRow)]
struct ItemId {
    id: i64,
    kind: String,
    ext_id: String,
}

impl ItemId {
    fn kind(&self) -> sqlx::Result<ItemKind> {
        self.kind
            .parse()
            .map_err(|e: String| sqlx::Error::Protocol(format!("items row {}: {e}", self.id)))
    }
}

#[derive(sqlx::FromRow)]
struct OperationId {
    id: i64,
    event_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_in_few_sizes() {
        for n in [0, 1, 2, 3, 255, 256, 257, 5000] {
            let c: Vec<(usize, usize)> = chunks(n).collect();
            let mut next = 0;
            for &(at, len) in &c {
                assert_eq!(at, next);
                assert!(len.is_power_of_two() && len <= CHUNK_ROWS);
                next += len;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn multi_row_writes_anonymous_placeholders_row_by_row() {
        assert_eq!(
            multi_row("INSERT INTO t (a, b) VALUES ", 2, 2, " RETURNING id"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) RETURNING id"
        );
    }
}
