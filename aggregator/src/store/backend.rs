//! The contract between the write path ([`super::write`]) and a backend: one open write
//! transaction and the statements the write path runs in it. `store::postgres` and
//! `store::sqlite` implement it; the write path is written once against it (static dispatch).
//!
//! Invariants every implementation keeps:
//!
//! - **One transaction.** Every method runs inside the transaction the value was begun with;
//!   nothing is visible to others before [`WriteTx::commit`], and dropping the value without it
//!   rolls everything back (the writer then retries the whole batch).
//! - **Append order is id order.** Rows of a slice are written in slice order and get ascending
//!   ids in that order: a gateway's hash chain is its `events` rows in id order, and a close
//!   picks the oldest open edge by id.
//! - **No conflicts by construction.** Callers pass only events and readings they found not to
//!   be stored (under the gateway's row lock, [`WriteTx::lock_gateway`]); a backend may still
//!   skip a stored reading, but must never store one twice.
//! - **Ids from the same transaction.** The projection tables reference items, events and
//!   operations by the ids this transaction returned (there are no foreign keys, see migration
//!   0020): an item an edge names is in the [`ItemIds`] given with it.
//!
//! The provided methods are statements both backends run as they are ([`Sql`]: one text, binds
//! encoded per backend); the required ones are where the backends differ (PostgreSQL writes a
//! table's rows of a batch with one bulk statement, SQLite with one prepared statement per row).

use std::collections::{BTreeMap, HashSet};

use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::model::{DeadLetter, StatusUpdate};
use super::rows::{
    EdgeClose, EdgeInsert, EventInsert, ItemFill, ItemIds, ItemKey, OperationRows, QualityInsert,
    ReadingInsert,
};
use super::sql::{Rows, Sql};

/// The `ON CONFLICT (kind, ext_id) DO UPDATE SET` assignments of an item upsert, as
/// [`WriteTx::upsert_items`] promises them (the backend adds `first_seen_at`, the earliest): a
/// field given overwrites, a field absent keeps the stored value, `shipped_at` keeps the first,
/// `placeholder` clears for good. A macro so that the statements stay `&'static str`.
macro_rules! item_upsert_set {
    () => {
        "part = COALESCE(excluded.part, items.part),
         supplier = COALESCE(excluded.supplier, items.supplier),
         supplier_batch = COALESCE(excluded.supplier_batch, items.supplier_batch),
         qty = COALESCE(excluded.qty, items.qty),
         work_order = COALESCE(excluded.work_order, items.work_order),
         line = COALESCE(excluded.line, items.line),
         level = COALESCE(excluded.level, items.level),
         customer = COALESCE(excluded.customer, items.customer),
         shipped_at = COALESCE(items.shipped_at, excluded.shipped_at),
         placeholder = items.placeholder AND excluded.placeholder,"
    };
}
pub(crate) use item_upsert_set;

/// Longest text (in bytes) of a dead letter's topic, gateway or reason as stored.
pub(crate) const DEAD_LETTER_TEXT_MAX: usize = 2048;

/// A dead letter's text as any database stores it: NUL escaped as `\u0000`, cut to
/// [`DEAD_LETTER_TEXT_MAX`] bytes (on a char boundary, marked `…`). The payload is stored as
/// bytes, unchanged: the dead letter of a refused record must never be refused itself.
pub(crate) fn storable(s: &str) -> String {
    let mut out = if s.contains('\0') {
        s.replace('\0', "\\u0000")
    } else {
        s.to_owned()
    };
    if out.len() > DEAD_LETTER_TEXT_MAX {
        let mut cut = DEAD_LETTER_TEXT_MAX - '…'.len_utf8();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A dead letter's identity: SHA-256 of its (stored) topic, a 0 byte, its payload.
pub(crate) fn dead_letter_hash(topic: &str, payload: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(topic.as_bytes());
    h.update([0]);
    h.update(payload);
    h.finalize().to_vec()
}

/// An open write transaction of one backend.
pub(crate) trait WriteTx: Sized {
    /// SQLite: the connection's `PRAGMA synchronous` (what the commit will use); `None`
    /// elsewhere.
    async fn synchronous(&mut self) -> sqlx::Result<Option<i64>> {
        Ok(None)
    }

    /// Runs one shared statement; rows affected.
    async fn execute(&mut self, q: Sql<'_>) -> sqlx::Result<u64>;

    /// Every row of one shared statement.
    async fn fetch_all<T: Rows>(&mut self, q: Sql<'_>) -> sqlx::Result<Vec<T>>;

    /// Appends the events in order; returns their ids, ascending, one per row.
    async fn insert_events(&mut self, rows: &[EventInsert]) -> sqlx::Result<Vec<i64>>;

    /// Stores the readings not stored yet (same gateway, epoch and seq); returns how many were
    /// new. The rows have no duplicates among themselves.
    async fn insert_readings(&mut self, rows: &[ReadingInsert]) -> sqlx::Result<u64>;

    /// Upserts every item, in key order (concurrent writers lock shared items in the same order
    /// and cannot deadlock): a field given overwrites, a field absent keeps the stored value,
    /// `shipped_at` keeps the first, `first_seen_at` the earliest, `placeholder` clears for
    /// good. An item only referenced (`!fills`) is inserted as a placeholder when missing and
    /// otherwise left alone. Returns the id of every item.
    async fn upsert_items(&mut self, items: &BTreeMap<ItemKey, ItemFill>) -> sqlx::Result<ItemIds>;

    /// Appends the edges in order.
    async fn insert_edges(&mut self, rows: &[EdgeInsert], ids: &ItemIds) -> sqlx::Result<()>;

    /// Appends the operations, then their parameters and materials.
    async fn insert_operations(&mut self, rows: &OperationRows, ids: &ItemIds) -> sqlx::Result<()>;

    /// Appends the quality checks.
    async fn insert_quality(&mut self, rows: &[QualityInsert], ids: &ItemIds) -> sqlx::Result<()>;

    /// Makes everything durable and visible at once.
    async fn commit(self) -> sqlx::Result<()>;

    /// Upserts the gateway's row, which locks it until commit: chain appends of one gateway are
    /// serialized even between aggregator replicas (SQLite has one writer at a time anyway).
    async fn lock_gateway(&mut self, gw: &str, plant: &str, line: &str) -> sqlx::Result<()> {
        self.execute(
            Sql::new(
                "INSERT INTO gateways (id, plant, line, last_seen_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET plant = excluded.plant, line = excluded.line,
                   last_seen_at = excluded.last_seen_at",
            )
            .bind(gw)
            .bind(plant)
            .bind(line)
            .bind(threadline_shared::time::now()),
        )
        .await?;
        Ok(())
    }

    /// The hash of the gateway's newest event (its chain head), if it has one.
    async fn chain_head(&mut self, gw: &str) -> sqlx::Result<Option<Vec<u8>>> {
        #[derive(sqlx::FromRow)]
        struct Head {
            hash: Vec<u8>,
        }
        let rows: Vec<Head> = self
            .fetch_all(
                Sql::new("SELECT hash FROM events WHERE gateway = $1 ORDER BY id DESC LIMIT 1")
                    .bind(gw),
            )
            .await?;
        Ok(rows.into_iter().next().map(|h| h.hash))
    }

    /// Which of `seqs` the gateway's epoch already stored as events.
    async fn existing_seqs(
        &mut self,
        gw: &str,
        epoch: Uuid,
        seqs: &[i64],
    ) -> sqlx::Result<HashSet<i64>> {
        #[derive(sqlx::FromRow)]
        struct Seq {
            seq: i64,
        }
        // A range scan of the unique index, filtered here: `seq = ANY(array)` made PostgreSQL
        // test every stored seq of the epoch against the whole array (quadratic as the log
        // grows).
        let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
            return Ok(HashSet::new());
        };
        let want: HashSet<i64> = seqs.iter().copied().collect();
        let rows: Vec<Seq> = self
            .fetch_all(
                Sql::new(
                    "SELECT seq FROM events WHERE gateway = $1 AND epoch = $2
                       AND seq BETWEEN $3 AND $4",
                )
                .bind(gw)
                .bind(epoch)
                .bind(*lo)
                .bind(*hi),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.seq)
            .filter(|s| want.contains(s))
            .collect())
    }

    /// Closes the oldest edge matching the close that was open at its time (`valid_from <=
    /// at`, still open); false when there is none — the close is then kept pending
    /// ([`WriteTx::insert_pending_close`]).
    async fn close_edge(&mut self, c: &EdgeClose, ids: &ItemIds) -> sqlx::Result<bool> {
        let (p, ch) = (ids.of(&c.parent)?, ids.of(&c.child)?);
        self.close_open_edge(p, ch, c.relation, c.at, &c.reason)
            .await
    }

    /// Closes the oldest open `relation` edge `parent → child` with `valid_from <= at`.
    async fn close_open_edge(
        &mut self,
        parent: i64,
        child: i64,
        relation: &str,
        at: Timestamp,
        reason: &str,
    ) -> sqlx::Result<bool> {
        let n = self
            .execute(
                Sql::new(
                    "UPDATE edges SET valid_to = $4, closed_reason = $5
                     WHERE id = (SELECT id FROM edges WHERE parent_id = $1 AND child_id = $2
                                   AND relation = $3 AND valid_to IS NULL AND valid_from <= $4
                                 ORDER BY id LIMIT 1)",
                )
                .bind(parent)
                .bind(child)
                .bind(relation)
                .bind(at)
                .bind(reason),
            )
            .await?;
        Ok(n > 0)
    }

    /// Keeps a close that found nothing to close, until its edge arrives.
    async fn insert_pending_close(&mut self, c: &EdgeClose, ids: &ItemIds) -> sqlx::Result<()> {
        self.execute(
            Sql::new(
                "INSERT INTO pending_closes (parent_id, child_id, relation, at, reason, event_id,
                                             gateway)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(ids.of(&c.parent)?)
            .bind(ids.of(&c.child)?)
            .bind(c.relation)
            .bind(c.at)
            .bind(&c.reason)
            .bind(c.event_id)
            .bind(&c.gateway),
        )
        .await?;
        Ok(())
    }

    /// Whether any close is pending (the common answer, no, spares a look per new edge).
    async fn has_pending_closes(&mut self) -> sqlx::Result<bool> {
        #[derive(sqlx::FromRow)]
        struct One {
            #[allow(dead_code)]
            id: i64,
        }
        Ok(!self
            .fetch_all::<One>(Sql::new("SELECT id FROM pending_closes LIMIT 1"))
            .await?
            .is_empty())
    }

    /// Applies to a newly inserted edge the oldest pending close of its parent, child and
    /// relation at or after its `valid_from`, and forgets that close.
    async fn apply_pending_close(&mut self, e: &EdgeInsert, ids: &ItemIds) -> sqlx::Result<()> {
        #[derive(sqlx::FromRow)]
        struct Pending {
            id: i64,
            #[sqlx(try_from = "super::sql::Time")]
            at: String,
            reason: String,
        }
        let (p, ch) = (ids.of(&e.parent)?, ids.of(&e.child)?);
        let found: Vec<Pending> = self
            .fetch_all(
                Sql::new(
                    "SELECT id, at, reason FROM pending_closes
                     WHERE parent_id = $1 AND child_id = $2 AND relation = $3 AND at >= $4
                     ORDER BY at, id LIMIT 1",
                )
                .bind(p)
                .bind(ch)
                .bind(e.relation)
                .bind(e.valid_from),
            )
            .await?;
        let Some(pc) = found.into_iter().next() else {
            return Ok(());
        };
        let at = threadline_shared::time::parse(&pc.at)
            .map_err(|err| sqlx::Error::Decode(err.to_string().into()))?;
        if self
            .close_open_edge(p, ch, e.relation, at, &pc.reason)
            .await?
        {
            self.execute(Sql::new("DELETE FROM pending_closes WHERE id = $1").bind(pc.id))
                .await?;
        }
        Ok(())
    }

    /// Stores the dead letters, received now.
    async fn insert_dead_letters(&mut self, rows: &[DeadLetter]) -> sqlx::Result<()> {
        let now = threadline_shared::time::now();
        for d in rows {
            let (topic, gateway, reason) = (
                storable(&d.topic),
                d.gateway.as_deref().map(storable),
                storable(&d.reason),
            );
            let hash = dead_letter_hash(&topic, &d.payload);
            // Once per payload: a gateway re-sending the same unusable message bumps `count`.
            self.execute(
                Sql::new(
                    "INSERT INTO dead_letters (received_at, last_received_at, topic, gateway,
                                               reason, kind, payload, payload_hash)
                     VALUES ($1, $1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (payload_hash) DO UPDATE SET
                         count = dead_letters.count + 1,
                         last_received_at = excluded.last_received_at,
                         reason = excluded.reason, kind = excluded.kind",
                )
                .bind(now)
                .bind(&topic)
                .bind(&gateway)
                .bind(&reason)
                .bind(d.kind.as_str())
                .bind(super::sql::Bind::Bytes(&d.payload))
                .bind(super::sql::Bind::Bytes(&hash)),
            )
            .await?;
        }
        Ok(())
    }

    /// Upserts the gateway's state from its retained status message.
    async fn upsert_status(&mut self, s: &StatusUpdate) -> sqlx::Result<()> {
        let state = match s.status.state {
            threadline_shared::GatewayState::Online => "online",
            threadline_shared::GatewayState::Offline => "offline",
        };
        self.execute(
            Sql::new(
                "INSERT INTO gateways (id, plant, line, state, state_since, status, buffer_depth,
                                       last_seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET plant = excluded.plant, line = excluded.line,
                   state = excluded.state, state_since = excluded.state_since,
                   status = excluded.status, buffer_depth = excluded.buffer_depth,
                   last_seen_at = excluded.last_seen_at",
            )
            .bind(&s.gateway)
            .bind(&s.plant)
            .bind(&s.line)
            .bind(state)
            .bind(s.status.since)
            .bind(&s.raw)
            .bind(s.status.buffer_depth as i64)
            .bind(threadline_shared::time::now()),
        )
        .await?;
        Ok(())
    }

    /// Moves the gateway's `last_record_at` forward to `newest` (never back).
    async fn touch_gateway(&mut self, gw: &str, newest: Timestamp) -> sqlx::Result<()> {
        self.execute(
            Sql::new(
                "UPDATE gateways SET last_record_at = CASE
                   WHEN last_record_at IS NULL OR last_record_at < $2 THEN $2
                   ELSE last_record_at END
                 WHERE id = $1",
            )
            .bind(gw)
            .bind(newest),
        )
        .await?;
        Ok(())
    }
}
