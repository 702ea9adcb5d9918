//! Everything besides batch writes that touches the ingest-side tables: master data upserts,
//! the gateway list, the raw event log, chain verification, a health probe and row counts.
//! One SQL text per statement for both backends ([`Sql`]).

use super::Db;
use super::chain::{ChainRow, Verifier};
use super::model::*;
use super::sql::{self, Bind, Sql};

/// Rows per statement of [`Db::verify_chains`]: a page of bodies in memory (a few MB), and
/// milliseconds per statement.
pub const VERIFY_PAGE: usize = 2_000;

impl Db {
    /// True when a trivial query answers within 2 s (a health probe must not hang for the
    /// pool's acquire timeout).
    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.execute(Sql::new("SELECT 1"))
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Recomputes every gateway's chain, [`VERIFY_PAGE`] rows at a time.
    pub async fn verify_chains(&self) -> sqlx::Result<VerifyReport> {
        self.verify_chains_paged(VERIFY_PAGE).await
    }

    /// Recomputes every gateway's chain in pages of `page` rows: each page is one statement,
    /// keyset-paged on `(gateway, id)` (the `events_gateway_id` index), so memory is one page
    /// and no statement lasts longer than a page takes — the query pool's time limit applies
    /// to a page, not to the whole log, and no snapshot is held open while a large log is read.
    /// The rows arrive in the same order as one `ORDER BY gateway, id` scan: the same report.
    /// A page continues the current gateway (`gateway = $1 AND id > $2`), or, once that is
    /// done, starts the next ones (`gateway > $1`): both are index range scans on either
    /// backend (SQLite does not turn a row-value `(gateway, id) > (…)` into one).
    pub async fn verify_chains_paged(&self, page: usize) -> sqlx::Result<VerifyReport> {
        const COLS: &str = "SELECT id, gateway, CAST(epoch AS TEXT) AS epoch, seq, type, body, \
                            prev_hash, hash FROM events";
        let limit = i64::try_from(page.max(1)).unwrap_or(i64::MAX);
        let mut v = Verifier::new();
        let mut after: Option<(String, i64)> = None;
        loop {
            let mut rows: Vec<ChainRow> = match &after {
                None => Vec::new(),
                Some((gw, id)) => {
                    self.fetch_all(
                        Sql::new(format!(
                            "{COLS} WHERE gateway = $1 AND id > $2 ORDER BY id LIMIT $3"
                        ))
                        .bind(gw)
                        .bind(*id)
                        .bind(limit),
                    )
                    .await?
                }
            };
            if rows.is_empty() {
                let next = match &after {
                    None => Sql::new(format!("{COLS} ORDER BY gateway, id LIMIT $1")).bind(limit),
                    Some((gw, _)) => Sql::new(format!(
                        "{COLS} WHERE gateway > $1 ORDER BY gateway, id LIMIT $2"
                    ))
                    .bind(gw)
                    .bind(limit),
                };
                rows = self.fetch_all(next).await?;
            }
            for r in &rows {
                v.feed(r);
            }
            match rows.into_iter().last() {
                Some(last) => after = Some((last.gateway, last.id)),
                None => break,
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
        let qs = lots.iter().map(|l| {
            Sql::new(SQL)
                .bind(&l.lot)
                .bind(&l.part)
                .bind(&l.supplier)
                .bind(&l.supplier_batch)
                .bind(l.qty)
        });
        self.execute_all(qs.collect()).await
    }

    /// Upserts work orders.
    pub async fn upsert_work_orders(&self, wos: &[WorkOrderInput]) -> sqlx::Result<()> {
        const SQL: &str = "INSERT INTO work_orders (id, part, qty, line, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET part = COALESCE(excluded.part, work_orders.part),
               qty = COALESCE(excluded.qty, work_orders.qty),
               line = COALESCE(excluded.line, work_orders.line),
               updated_at = excluded.updated_at";
        let now = threadline_shared::time::now();
        let qs = wos.iter().map(|w| {
            Sql::new(SQL)
                .bind(&w.id)
                .bind(&w.part)
                .bind(w.qty)
                .bind(&w.line)
                .bind(now)
        });
        self.execute_all(qs.collect()).await
    }

    /// Upserts shipments (items of kind `shipment`).
    pub async fn upsert_shipments(&self, ships: &[ShipmentInput]) -> sqlx::Result<()> {
        const SQL: &str = "INSERT INTO items (kind, ext_id, customer, shipped_at, placeholder)
             VALUES ('shipment', $1, $2, $3, false)
             ON CONFLICT (kind, ext_id) DO UPDATE SET
               customer = COALESCE(excluded.customer, items.customer),
               shipped_at = COALESCE(excluded.shipped_at, items.shipped_at),
               placeholder = false";
        let qs = ships.iter().map(|s| {
            Sql::new(SQL)
                .bind(&s.id)
                .bind(&s.customer)
                .bind(s.shipped_at)
        });
        self.execute_all(qs.collect()).await
    }

    /// Every gateway known from records or status messages.
    pub async fn gateways(&self) -> sqlx::Result<Vec<GatewayInfo>> {
        #[derive(sqlx::FromRow)]
        struct Gateway {
            id: String,
            plant: String,
            line: String,
            state: String,
            #[sqlx(try_from = "sql::OptTime")]
            state_since: Option<String>,
            #[sqlx(try_from = "sql::OptTime")]
            last_record_at: Option<String>,
            #[sqlx(try_from = "sql::OptTime")]
            last_seen_at: Option<String>,
            buffer_depth: i64,
            status: Option<String>,
        }
        let rows: Vec<Gateway> = self
            .fetch_all(Sql::new(
                "SELECT id, plant, line, state, state_since, last_record_at, last_seen_at,
                        buffer_depth, CAST(status AS TEXT) AS status
                 FROM gateways ORDER BY id",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|g| GatewayInfo {
                id: g.id,
                plant: g.plant,
                line: g.line,
                state: g.state,
                since: g.state_since,
                last_record_at: g.last_record_at,
                last_seen_at: g.last_seen_at,
                buffer_depth: g.buffer_depth,
                devices: devices_of(g.status),
            })
            .collect())
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
        #[derive(sqlx::FromRow)]
        struct Event {
            id: i64,
            gateway: String,
            epoch: String,
            seq: i64,
            #[sqlx(try_from = "sql::Time")]
            ts: String,
            #[sqlx(rename = "type")]
            type_: String,
            body: String,
            hash: Vec<u8>,
        }
        // One more than asked tells whether another page exists.
        let rows: Vec<Event> = self
            .fetch_all(
                Sql::new(
                    "SELECT id, gateway, CAST(epoch AS TEXT) AS epoch, seq, ts, type, body, hash
                     FROM events WHERE id > $1 AND ($2 IS NULL OR gateway = $2)
                       AND ($3 IS NULL OR seq > $3)
                     ORDER BY id LIMIT $4",
                )
                .bind(after_id)
                .bind(Bind::Text(gateway))
                .bind(after_seq)
                .bind(limit + 1),
            )
            .await?;
        let mut events: Vec<EventRow> = rows
            .into_iter()
            .map(|r| EventRow {
                id: r.id,
                gateway: r.gateway,
                epoch: r.epoch,
                seq: r.seq,
                ts: r.ts,
                type_: r.type_,
                record: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body)),
                hash: hex::encode(r.hash),
            })
            .collect();
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
        const TABLES: [&str; 12] = [
            "pending_closes",
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
        #[derive(sqlx::FromRow)]
        struct Count {
            n: i64,
        }
        let c: Option<Count> = self
            .fetch_optional(Sql::new(format!("SELECT COUNT(*) AS n FROM {table}")))
            .await?;
        Ok(c.map_or(0, |c| c.n))
    }
}

fn devices_of(status: Option<String>) -> serde_json::Value {
    status
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("devices").cloned())
        .unwrap_or_else(|| serde_json::json!([]))
}
