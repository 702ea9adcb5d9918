//! Everything besides ingest writes that touches the ingest-side tables: batch commits, master
//! data upserts, the gateway list, the raw event log, chain verification and a health probe.

use futures::TryStreamExt as _;
use sqlx::Row;

use super::Db;
use super::chain::{ChainRow, Verifier};
use super::model::*;
use super::write::{self, Tx};

impl Db {
    /// Writes one batch in one transaction and commits it. Nothing is visible (and nothing may
    /// be acked) unless this returns `Ok`.
    pub async fn write_batch(&self, batch: &Batch) -> sqlx::Result<BatchOutcome> {
        let mut tx = match self {
            Db::Postgres(p) => {
                // Outside the batch's transaction: creating a partition locks `readings`.
                let days = super::postgres::partitions::days_of(batch.reading_times());
                super::postgres::partitions::ensure(p, &days).await?;
                Tx::Postgres(p.begin().await?)
            }
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        };
        let out = write::write_batch(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// True when a trivial query answers within 2 s (a health probe must not hang for the
    /// pool's acquire timeout).
    pub async fn ping(&self) -> bool {
        let q = async {
            match self {
                Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
                Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            }
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), q).await,
            Ok(Ok(()))
        )
    }

    /// Recomputes every gateway's chain (streaming, constant memory).
    pub async fn verify_chains(&self) -> sqlx::Result<VerifyReport> {
        let mut v = Verifier::new();
        match self {
            Db::Postgres(p) => {
                let mut rows = sqlx::query_as::<_, ChainRow>(
                    "SELECT id, gateway, epoch::text AS epoch, seq, type, body, prev_hash, hash
                     FROM events ORDER BY gateway, id",
                )
                .fetch(p);
                while let Some(r) = rows.try_next().await? {
                    v.feed(&r);
                }
            }
            Db::Sqlite(p) => {
                let mut rows = sqlx::query_as::<_, ChainRow>(
                    "SELECT id, gateway, epoch, seq, type, body, prev_hash, hash
                     FROM events ORDER BY gateway, id",
                )
                .fetch(p);
                while let Some(r) = rows.try_next().await? {
                    v.feed(&r);
                }
            }
        }
        Ok(v.finish())
    }

    /// Upserts lots (master data from ERP / WMS): fills a placeholder, clears its flag.
    pub async fn upsert_lots(&self, lots: &[LotInput]) -> sqlx::Result<()> {
        const SQL: &str = "INSERT INTO items (kind, ext_id, part, supplier, supplier_batch, qty,
                                              placeholder)
             VALUES ('lot', $1, $2, $3, $4, $5, false)
             ON CONFLICT (kind, ext_id) DO UPDATE SET
               part = COALESCE(excluded.part, items.part),
               supplier = COALESCE(excluded.supplier, items.supplier),
               supplier_batch = COALESCE(excluded.supplier_batch, items.supplier_batch),
               qty = COALESCE(excluded.qty, items.qty),
               placeholder = false";
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                for l in lots {
                    sqlx::query(SQL)
                        .bind(&l.lot)
                        .bind(&l.part)
                        .bind(&l.supplier)
                        .bind(&l.supplier_batch)
                        .bind(l.qty)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }};
        }
        match self {
            Db::Postgres(p) => run!(p),
            Db::Sqlite(p) => run!(p),
        }
    }

    /// Upserts work orders.
    pub async fn upsert_work_orders(&self, wos: &[WorkOrderInput]) -> sqlx::Result<()> {
        const SQL: &str = "INSERT INTO work_orders (id, part, qty, line, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET part = COALESCE(excluded.part, work_orders.part),
               qty = COALESCE(excluded.qty, work_orders.qty),
               line = COALESCE(excluded.line, work_orders.line),
               updated_at = excluded.updated_at";
        macro_rules! run {
            ($pool:expr, $t:expr) => {{
                let mut tx = $pool.begin().await?;
                for w in wos {
                    sqlx::query(SQL)
                        .bind(&w.id)
                        .bind(&w.part)
                        .bind(w.qty)
                        .bind(&w.line)
                        .bind($t(threadline_shared::time::now()))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }};
        }
        match self {
            Db::Postgres(p) => run!(p, std::convert::identity),
            Db::Sqlite(p) => run!(p, crate::store::sqlite_time),
        }
    }

    /// Upserts shipments (items of kind `shipment`).
    pub async fn upsert_shipments(&self, ships: &[ShipmentInput]) -> sqlx::Result<()> {
        const SQL: &str = "INSERT INTO items (kind, ext_id, customer, shipped_at, placeholder)
             VALUES ('shipment', $1, $2, $3, false)
             ON CONFLICT (kind, ext_id) DO UPDATE SET
               customer = COALESCE(excluded.customer, items.customer),
               shipped_at = COALESCE(excluded.shipped_at, items.shipped_at),
               placeholder = false";
        macro_rules! run {
            ($pool:expr, $t:expr) => {{
                let mut tx = $pool.begin().await?;
                for s in ships {
                    sqlx::query(SQL)
                        .bind(&s.id)
                        .bind(&s.customer)
                        .bind(s.shipped_at.map($t))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }};
        }
        match self {
            Db::Postgres(p) => run!(p, std::convert::identity),
            Db::Sqlite(p) => run!(p, crate::store::sqlite_time),
        }
    }

    /// Every gateway known from records or status messages.
    pub async fn gateways(&self) -> sqlx::Result<Vec<GatewayInfo>> {
        let sql_pg = "SELECT id, plant, line, state,
                to_char(state_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS since,
                to_char(last_record_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS last_record_at,
                to_char(last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS last_seen_at,
                buffer_depth, status::text AS status FROM gateways ORDER BY id";
        let sql_lite = "SELECT id, plant, line, state, state_since AS since, last_record_at,
                last_seen_at, buffer_depth, status FROM gateways ORDER BY id";
        match self {
            Db::Postgres(p) => sqlx::query(sql_pg)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(gw_pg)
                .collect(),
            Db::Sqlite(p) => sqlx::query(sql_lite)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(gw_lite)
                .collect(),
        }
    }

    /// A page of the raw event log in `id` order: events with `id > after_id`, optionally of
    /// one gateway and (`after_seq`, useful for a single-epoch gateway) with `seq > after_seq`.
    pub async fn events_page(
        &self,
        gateway: Option<&str>,
        after_id: i64,
        after_seq: Option<i64>,
        limit: i64,
    ) -> sqlx::Result<EventsPage> {
        let sql_pg = "SELECT id, gateway, epoch::text AS epoch, seq,
                to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ts, type, body, hash
             FROM events WHERE id > $1 AND ($2::text IS NULL OR gateway = $2)
               AND ($3::int8 IS NULL OR seq > $3)
             ORDER BY id LIMIT $4";
        let sql_lite = "SELECT id, gateway, epoch, seq, ts, type, body, hash
             FROM events WHERE id > $1 AND ($2 IS NULL OR gateway = $2)
               AND ($3 IS NULL OR seq > $3)
             ORDER BY id LIMIT $4";
        // One more than asked tells whether another page exists.
        let rows = match self {
            Db::Postgres(p) => {
                let rows = sqlx::query(sql_pg)
                    .bind(after_id)
                    .bind(gateway)
                    .bind(after_seq)
                    .bind(limit + 1)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(event_pg)
                    .collect::<sqlx::Result<Vec<_>>>()?
            }
            Db::Sqlite(p) => {
                let rows = sqlx::query(sql_lite)
                    .bind(after_id)
                    .bind(gateway)
                    .bind(after_seq)
                    .bind(limit + 1)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(event_lite)
                    .collect::<sqlx::Result<Vec<_>>>()?
            }
        };
        let mut events = rows;
        let more = events.len() as i64 > limit;
        events.truncate(limit.max(0) as usize);
        let next_after = if more {
            events.last().map(|e| e.id)
        } else {
            None
        };
        Ok(EventsPage { events, next_after })
    }

    /// Counts rows of a table (tests and `check`).
    pub async fn count(&self, table: &str) -> sqlx::Result<i64> {
        // Table names cannot be bound; only identifiers we know are accepted.
        const TABLES: [&str; 11] = [
            "events",
            "readings",
            "items",
            "edges",
            "operations",
            "operation_parameters",
            "operation_materials",
            "quality_checks",
            "dead_letters",
            "gateways",
            "work_orders",
        ];
        if !TABLES.contains(&table) {
            return Err(sqlx::Error::Protocol(format!("unknown table {table}")));
        }
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self {
            Db::Postgres(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                    .fetch_one(p)
                    .await
            }
            Db::Sqlite(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                    .fetch_one(p)
                    .await
            }
        }
    }
}

fn devices_of(status: Option<String>) -> serde_json::Value {
    status
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("devices").cloned())
        .unwrap_or_else(|| serde_json::json!([]))
}

fn gw_pg(r: sqlx::postgres::PgRow) -> sqlx::Result<GatewayInfo> {
    Ok(GatewayInfo {
        id: r.try_get("id")?,
        plant: r.try_get("plant")?,
        line: r.try_get("line")?,
        state: r.try_get("state")?,
        since: r.try_get("since")?,
        last_record_at: r.try_get("last_record_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        buffer_depth: r.try_get("buffer_depth")?,
        devices: devices_of(r.try_get("status")?),
    })
}

fn gw_lite(r: sqlx::sqlite::SqliteRow) -> sqlx::Result<GatewayInfo> {
    let ts = |s: Option<String>| {
        s.map(|s| {
            threadline_shared::time::parse(&s)
                .map(|t| threadline_shared::time::format(&t))
                .unwrap_or(s)
        })
    };
    Ok(GatewayInfo {
        id: r.try_get("id")?,
        plant: r.try_get("plant")?,
        line: r.try_get("line")?,
        state: r.try_get("state")?,
        since: ts(r.try_get("since")?),
        last_record_at: ts(r.try_get("last_record_at")?),
        last_seen_at: ts(r.try_get("last_seen_at")?),
        buffer_depth: r.try_get("buffer_depth")?,
        devices: devices_of(r.try_get("status")?),
    })
}

fn event_pg(r: &sqlx::postgres::PgRow) -> sqlx::Result<EventRow> {
    let body: String = r.try_get("body")?;
    Ok(EventRow {
        id: r.try_get("id")?,
        gateway: r.try_get("gateway")?,
        epoch: r.try_get("epoch")?,
        seq: r.try_get("seq")?,
        ts: r.try_get("ts")?,
        type_: r.try_get("type")?,
        record: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        hash: hex::encode(r.try_get::<Vec<u8>, _>("hash")?),
    })
}

fn event_lite(r: &sqlx::sqlite::SqliteRow) -> sqlx::Result<EventRow> {
    let body: String = r.try_get("body")?;
    let ts: String = r.try_get("ts")?;
    Ok(EventRow {
        id: r.try_get("id")?,
        gateway: r.try_get("gateway")?,
        epoch: r.try_get("epoch")?,
        seq: r.try_get("seq")?,
        ts: threadline_shared::time::parse(&ts)
            .map(|t| threadline_shared::time::format(&t))
            .unwrap_or(ts),
        type_: r.try_get("type")?,
        record: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        hash: hex::encode(r.try_get::<Vec<u8>, _>("hash")?),
    })
}
