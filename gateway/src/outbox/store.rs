//! The outbox's writer: open (with corruption recovery), append, read, ack. The file's
//! format and the invariants every operation keeps are in the `outbox` module's header.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use threadline_shared::event::{Record, RecordBody};
use threadline_shared::time::Timestamp;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

use crate::failpoint;

/// Bytes counted per stored row on top of its payload (rowid, kind, ts, record header).
pub const ROW_OVERHEAD: u64 = 16;

/// Rows per multi-row INSERT statement (4 binds each; well below SQLite's 32766 limit).
const INSERT_CHUNK: usize = 500;

const KIND_READING: i64 = 0;
const KIND_EVENT: i64 = 1;

/// Why an outbox operation failed. Every variant leaves the outbox as it was.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("outbox {path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("outbox {path}: cannot move the corrupt database aside: {source}")]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the outbox lives and how big it may grow.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// `data_dir/outbox.db`.
    pub path: PathBuf,
    /// `buffer_max_mb` in bytes: above it readings are dropped / refused.
    pub max_bytes: u64,
}

impl OutboxOptions {
    /// `data_dir/outbox.db` with a limit of `buffer_max_mb` MiB.
    pub fn new(data_dir: &Path, buffer_max_mb: u64) -> OutboxOptions {
        OutboxOptions {
            path: data_dir.join("outbox.db"),
            max_bytes: buffer_max_mb.saturating_mul(1024 * 1024),
        }
    }
}

/// A record to append: the outbox gives it its seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub ts: Timestamp,
    pub body: RecordBody,
}

/// A stored record, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub seq: u64,
    /// Canonical JSON of the record (with `seq`).
    pub payload: String,
}

/// What one [`Outbox::append`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Seqs given to the appended records, in input order (refused readings get none).
    pub seqs: Vec<u64>,
    /// New readings refused because only trace events fill the outbox.
    pub refused: u64,
    /// Stored readings deleted (oldest first) to make room.
    pub dropped: u64,
}

/// A snapshot of the outbox's counters (cheap; no database access).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub epoch: Uuid,
    pub readings: u64,
    pub events: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub last_seq: u64,
    /// Since this process opened the outbox.
    pub appended: u64,
    pub acked: u64,
    pub dropped: u64,
    pub refused: u64,
    pub buffer_full: bool,
}

impl OutboxStats {
    pub fn depth(&self) -> u64 {
        self.readings + self.events
    }
}

/// Counters readable without the lock (metrics, status, health).
#[derive(Debug, Default)]
struct Counters {
    readings: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    last_seq: AtomicU64,
    appended: AtomicU64,
    acked: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    buffer_full: AtomicBool,
}

/// The connection and the state that must change together with it.
struct Inner {
    conn: SqliteConnection,
    last_seq: u64,
    readings: u64,
    events: u64,
    bytes: u64,
}

/// One record as a row of `records`, serialised before the transaction so that the size
/// check sees the real bytes.
struct RecordRow {
    seq: u64,
    /// [`KIND_READING`] or [`KIND_EVENT`].
    kind: i64,
    ts_us: i64,
    /// The record's canonical JSON, `seq` included.
    payload: String,
}

impl RecordRow {
    /// The row's share of the outbox size.
    fn bytes(&self) -> u64 {
        self.payload.len() as u64 + ROW_OVERHEAD
    }
}

/// What one append transaction changed; applied to [`Inner`] only after its commit.
struct Committed {
    report: AppendReport,
    stored_readings: u64,
    stored_events: u64,
    stored_bytes: u64,
    /// Bytes of the stored readings dropped to make room.
    dropped_bytes: u64,
}

/// The gateway's outbox (one per process; see the module docs for its invariants).
pub struct Outbox {
    path: PathBuf,
    epoch: Uuid,
    max_bytes: u64,
    inner: Mutex<Inner>,
    counters: Counters,
    /// Woken after every append that stored something, so the publisher need not poll.
    appended: Arc<Notify>,
}

fn db_err(path: &Path) -> impl FnOnce(sqlx::Error) -> OutboxError + '_ {
    move |source| OutboxError::Db {
        path: path.to_owned(),
        source,
    }
}

/// True when SQLite says the file is not a (healthy) database: SQLITE_CORRUPT or SQLITE_NOTADB.
fn is_corruption(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 11 | 26)),
        _ => false,
    }
}

fn ts_us(ts: &Timestamp) -> i64 {
    ts.timestamp_micros()
}

impl Outbox {
    /// Opens (or creates) the outbox. A corrupt file is moved aside and a new epoch started.
    pub async fn open(opts: OutboxOptions) -> Result<Outbox, OutboxError> {
        match Self::open_checked(&opts).await {
            Ok(outbox) => Ok(outbox),
            Err(Opened::Corrupt(why)) => {
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", opts.path.display()));
                tracing::error!(
                    path = %opts.path.display(),
                    moved_to = %aside.display(),
                    reason = %why,
                    "OUTBOX CORRUPT: moving it aside and starting a new epoch; records in the old \
                     file that were not yet acknowledged are NOT delivered (recover them from the \
                     moved file if needed)"
                );
                std::fs::rename(&opts.path, &aside).map_err(|source| OutboxError::MoveAside {
                    path: opts.path.clone(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{suffix}", opts.path.display()));
                    if side.exists() {
                        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                        if let Err(e) = std::fs::rename(&side, &to) {
                            tracing::warn!(path = %side.display(), error = %e, "cannot move aside");
                        }
                    }
                }
                match Self::open_checked(&opts).await {
                    Ok(outbox) => Ok(outbox),
                    Err(Opened::Corrupt(why)) => Err(OutboxError::Invalid {
                        path: opts.path.clone(),
                        what: format!("a fresh outbox is corrupt right after creation: {why}"),
                    }),
                    Err(Opened::Failed(e)) => Err(e),
                }
            }
            Err(Opened::Failed(e)) => Err(e),
        }
    }

    async fn open_checked(opts: &OutboxOptions) -> Result<Outbox, Opened> {
        let path = &opts.path;
        let classify = |e: sqlx::Error| {
            if is_corruption(&e) {
                Opened::Corrupt(e.to_string())
            } else {
                Opened::Failed(db_err(path)(e))
            }
        };
        let existed = path.exists();
        let connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(classify)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let mut conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(classify)?;
        if existed {
            let check: String = sqlx::query_scalar("PRAGMA quick_check")
                .fetch_one(&mut conn)
                .await
                .map_err(classify)?;
            if check != "ok" {
                let _ = conn.close().await;
                return Err(Opened::Corrupt(format!("quick_check: {check}")));
            }
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        )
        .execute(&mut conn)
        .await
        .map_err(classify)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, \
             ts_us INTEGER NOT NULL, payload TEXT NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .map_err(classify)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS station_state (id INTEGER PRIMARY KEY CHECK (id = 1), \
             state TEXT NOT NULL, updated_us INTEGER NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .map_err(classify)?;
        let meta: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM meta")
            .fetch_all(&mut conn)
            .await
            .map_err(classify)?;
        let get = |k: &str| {
            meta.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let (epoch, mut last_seq) = match get("epoch") {
            Some(e) => {
                let epoch = Uuid::parse_str(&e)
                    .map_err(|err| Opened::Corrupt(format!("meta.epoch {e:?}: {err}")))?;
                let last: u64 = get("last_seq")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Opened::Corrupt("meta.last_seq missing".into()))?;
                (epoch, last)
            }
            None => {
                let epoch = Uuid::new_v4();
                let created = threadline_shared::time::format(&threadline_shared::time::now());
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('format', '1'), ('epoch', ?), \
                     ('created', ?), ('last_seq', '0')",
                )
                .bind(epoch.to_string())
                .bind(created)
                .execute(&mut conn)
                .await
                .map_err(classify)?;
                tracing::info!(path = %path.display(), %epoch, "created a new outbox (new epoch)");
                (epoch, 0)
            }
        };
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS max_seq, \
             COALESCE(SUM(kind = 0), 0) AS readings, COALESCE(SUM(kind = 1), 0) AS events, \
             COALESCE(SUM(length(payload)), 0) AS bytes, COUNT(*) AS n FROM records",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(classify)?;
        let max_seq: i64 = row.get("max_seq");
        let readings: i64 = row.get("readings");
        let events: i64 = row.get("events");
        let payload_bytes: i64 = row.get("bytes");
        let n: i64 = row.get("n");
        let max_seq = u64::try_from(max_seq).unwrap_or(0);
        if max_seq > last_seq {
            // Cannot happen with this code (both change in one transaction); trust the rows.
            tracing::warn!(
                max_seq,
                last_seq,
                "outbox meta.last_seq behind the rows; fixing"
            );
            last_seq = max_seq;
        }
        let bytes = u64::try_from(payload_bytes).unwrap_or(0)
            + u64::try_from(n).unwrap_or(0) * ROW_OVERHEAD;
        let inner = Inner {
            conn,
            last_seq,
            readings: u64::try_from(readings).unwrap_or(0),
            events: u64::try_from(events).unwrap_or(0),
            bytes,
        };
        let outbox = Outbox {
            path: path.clone(),
            epoch,
            max_bytes: opts.max_bytes,
            counters: Counters::default(),
            appended: Arc::new(Notify::new()),
            inner: Mutex::new(inner),
        };
        {
            let inner = outbox.inner.lock().await;
            outbox.publish_counters(&inner);
        }
        tracing::info!(
            path = %path.display(), %epoch, last_seq, depth = n, bytes,
            "outbox open"
        );
        Ok(outbox)
    }

    fn publish_counters(&self, inner: &Inner) {
        let c = &self.counters;
        c.readings.store(inner.readings, Ordering::Relaxed);
        c.events.store(inner.events, Ordering::Relaxed);
        c.bytes.store(inner.bytes, Ordering::Relaxed);
        c.last_seq.store(inner.last_seq, Ordering::Relaxed);
    }

    /// The epoch of this outbox file.
    pub fn epoch(&self) -> Uuid {
        self.epoch
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notified after every append that stored at least one record.
    pub fn appended_notify(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// The last seq given out (0 = none yet).
    pub fn last_seq(&self) -> u64 {
        self.counters.last_seq.load(Ordering::Relaxed)
    }

    /// Counters, without touching the database.
    pub fn stats(&self) -> OutboxStats {
        let c = &self.counters;
        OutboxStats {
            epoch: self.epoch,
            readings: c.readings.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            last_seq: c.last_seq.load(Ordering::Relaxed),
            appended: c.appended.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            buffer_full: c.buffer_full.load(Ordering::Relaxed),
        }
    }

    /// Appends records in one transaction, giving them consecutive seqs. Makes room by dropping
    /// the oldest stored readings; refuses new readings when only trace events are left.
    /// On error nothing was stored: retry with the same records.
    pub async fn append(&self, records: &[NewRecord]) -> Result<AppendReport, OutboxError> {
        self.append_step(records, None).await
    }

    /// [`Outbox::append`] of one station step: the events and, when given, the stations' new
    /// context (replacing the committed one) in the same transaction — both are committed or
    /// neither is. Committed with `synchronous = FULL` when it holds a trace event or a context.
    pub async fn append_step(
        &self,
        records: &[NewRecord],
        station_state: Option<&str>,
    ) -> Result<AppendReport, OutboxError> {
        if records.is_empty() && station_state.is_none() {
            return Ok(AppendReport::default());
        }
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;

        // Serialize first (with their future seqs) so the size check sees the real bytes.
        let mut rows: Vec<RecordRow> = Vec::with_capacity(records.len());
        let mut incoming_bytes = 0u64;
        for (seq, r) in (inner.last_seq + 1..).zip(records) {
            let rec = Record {
                seq,
                ts: r.ts,
                body: r.body.clone(),
            };
            let row = RecordRow {
                seq,
                kind: if r.body.is_reading() {
                    KIND_READING
                } else {
                    KIND_EVENT
                },
                ts_us: ts_us(&r.ts),
                payload: String::from_utf8(rec.canonical_json()).unwrap_or_default(),
            };
            incoming_bytes += row.bytes();
            rows.push(row);
        }

        let over = (inner.bytes + incoming_bytes).saturating_sub(self.max_bytes);
        let durable = station_state.is_some() || rows.iter().any(|r| r.kind == KIND_EVENT);
        let err = db_err(&self.path);
        if durable {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut inner.conn)
                .await
                .map_err(err)?;
        }
        let result = self
            .append_tx(inner, rows, over, records, station_state)
            .await;
        if durable
            && let Err(e) = sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut inner.conn)
                .await
        {
            tracing::warn!(error = %e, "outbox: cannot reset synchronous = NORMAL");
        }
        let Committed {
            report,
            stored_readings,
            stored_events,
            stored_bytes,
            dropped_bytes,
        } = result?;

        // Committed: now the in-memory state follows.
        inner.readings = inner.readings - report.dropped + stored_readings;
        inner.events += stored_events;
        inner.bytes = inner.bytes - dropped_bytes + stored_bytes;
        if let Some(last) = report.seqs.last() {
            inner.last_seq = *last;
        }
        self.publish_counters(inner);
        let c = &self.counters;
        c.appended
            .fetch_add(report.seqs.len() as u64, Ordering::Relaxed);
        c.dropped.fetch_add(report.dropped, Ordering::Relaxed);
        c.refused.fetch_add(report.refused, Ordering::Relaxed);
        let full = report.dropped > 0 || report.refused > 0;
        let was_full = c
            .buffer_full
            .swap(full || inner.bytes >= self.max_bytes, Ordering::Relaxed);
        if report.refused > 0 && (!was_full || report.refused == records.len() as u64) {
            tracing::error!(
                refused = report.refused,
                events = inner.events,
                bytes = inner.bytes,
                max_bytes = self.max_bytes,
                "ALARM outbox full of trace events: new readings are refused until the aggregator \
                 acknowledges (is it reachable?)"
            );
        } else if report.dropped > 0 && !was_full {
            tracing::warn!(
                dropped = report.dropped,
                max_bytes = self.max_bytes,
                "outbox full: dropping the oldest readings (trace events are kept)"
            );
        }
        drop(guard);
        if !report.seqs.is_empty() {
            self.appended.notify_waiters();
            self.appended.notify_one();
        }
        Ok(report)
    }

    /// The transaction of [`Outbox::append_step`]: makes room for `over` bytes (oldest readings
    /// dropped, then new readings refused), inserts the rows, moves `meta.last_seq` and
    /// replaces the station context of a station step. `records` are what `rows` were made of.
    async fn append_tx(
        &self,
        inner: &mut Inner,
        mut rows: Vec<RecordRow>,
        over: u64,
        records: &[NewRecord],
        station_state: Option<&str>,
    ) -> Result<Committed, OutboxError> {
        let err = || db_err(&self.path);
        let mut tx = inner.conn.begin().await.map_err(err())?;
        let mut report = AppendReport::default();
        let mut dropped_bytes = 0u64;
        if over > 0 {
            (report.dropped, dropped_bytes) = self
                .drop_oldest_readings(&mut tx, over, inner.readings)
                .await?;
            if dropped_bytes < over {
                // Only trace events left: refuse new readings until it fits. Trace events are
                // accepted even above the limit.
                report.refused = refuse_readings(&mut rows, over - dropped_bytes);
            }
        }
        let (mut stored_readings, mut stored_events, mut stored_bytes) = (0u64, 0u64, 0u64);
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO records (seq, kind, ts_us, payload) ",
            );
            qb.push_values(chunk, |mut b, row| {
                b.push_bind(i64::try_from(row.seq).unwrap_or(i64::MAX))
                    .push_bind(row.kind)
                    .push_bind(row.ts_us)
                    .push_bind(row.payload.as_str());
            });
            qb.build().execute(&mut *tx).await.map_err(err())?;
            for row in chunk {
                stored_bytes += row.bytes();
                if row.kind == KIND_READING {
                    stored_readings += 1;
                } else {
                    stored_events += 1;
                }
            }
        }
        if let Some(last) = rows.last() {
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'last_seq'")
                .bind(last.seq.to_string())
                .execute(&mut *tx)
                .await
                .map_err(err())?;
        }
        if let Some(state) = station_state {
            sqlx::query(
                "INSERT INTO station_state (id, state, updated_us) VALUES (1, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_us = excluded.updated_us",
            )
            .bind(state)
            .bind(ts_us(&threadline_shared::time::now()))
            .execute(&mut *tx)
            .await
            .map_err(err())?;
        }
        failpoint::hit(
            failpoint::INSIDE_STATION_COMMIT,
            records.iter().map(|r| r.body.type_name()),
        );
        tx.commit().await.map_err(err())?;
        report.seqs = rows.iter().map(|r| r.seq).collect();
        Ok(Committed {
            report,
            stored_readings,
            stored_events,
            stored_bytes,
            dropped_bytes,
        })
    }

    /// Deletes the oldest stored readings until `over` bytes are free or none of the
    /// `readings` is left; returns (readings dropped, their bytes).
    async fn drop_oldest_readings(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        over: u64,
        readings: u64,
    ) -> Result<(u64, u64), OutboxError> {
        let err = || db_err(&self.path);
        let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
        let mut cut: Option<i64> = None;
        let mut after: i64 = 0;
        'scan: while dropped_bytes < over && dropped < readings {
            let chunk: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT seq, length(payload) FROM records WHERE kind = 0 AND seq > ? \
                 ORDER BY seq LIMIT 1024",
            )
            .bind(after)
            .fetch_all(&mut **tx)
            .await
            .map_err(err())?;
            if chunk.is_empty() {
                break;
            }
            for (seq, len) in chunk {
                dropped_bytes += u64::try_from(len).unwrap_or(0) + ROW_OVERHEAD;
                dropped += 1;
                cut = Some(seq);
                after = seq;
                if dropped_bytes >= over {
                    break 'scan;
                }
            }
        }
        if let Some(cut) = cut {
            sqlx::query("DELETE FROM records WHERE kind = 0 AND seq <= ?")
                .bind(cut)
                .execute(&mut **tx)
                .await
                .map_err(err())?;
        }
        Ok((dropped, dropped_bytes))
    }

    /// The stations' committed context (see `stations::state`), if one was ever committed.
    pub async fn station_state(&self) -> Result<Option<String>, OutboxError> {
        let mut inner = self.inner.lock().await;
        sqlx::query_scalar("SELECT state FROM station_state WHERE id = 1")
            .fetch_optional(&mut inner.conn)
            .await
            .map_err(db_err(&self.path))
    }

    /// Records with `after < seq <= up_to` (`up_to = None`: no upper bound), oldest first, at
    /// most `limit`.
    pub async fn read(
        &self,
        after: u64,
        up_to: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, OutboxError> {
        let mut inner = self.inner.lock().await;
        let up_to = up_to.map_or(i64::MAX, |u| i64::try_from(u).unwrap_or(i64::MAX));
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, payload FROM records WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(up_to)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut inner.conn)
        .await
        .map_err(db_err(&self.path))?;
        Ok(rows
            .into_iter()
            .map(|(seq, payload)| StoredRecord {
                seq: u64::try_from(seq).unwrap_or(0),
                payload,
            })
            .collect())
    }

    /// Deletes the records the aggregator acknowledged (inclusive ranges). Returns how many
    /// were stored (seqs already gone — acked before or dropped — are ignored).
    pub async fn ack(&self, ranges: &[[u64; 2]]) -> Result<u64, OutboxError> {
        if ranges.is_empty() {
            return Ok(0);
        }
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let err = || db_err(&self.path);
        let mut tx = inner.conn.begin().await.map_err(err())?;
        let (mut readings, mut events, mut bytes) = (0u64, 0u64, 0u64);
        for [a, b] in ranges {
            let (a, b) = (
                i64::try_from(*a).unwrap_or(i64::MAX),
                i64::try_from(*b).unwrap_or(i64::MAX),
            );
            if a > b {
                continue;
            }
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "DELETE FROM records WHERE seq >= ? AND seq <= ? RETURNING kind, length(payload)",
            )
            .bind(a)
            .bind(b)
            .fetch_all(&mut *tx)
            .await
            .map_err(err())?;
            for (kind, len) in rows {
                bytes += u64::try_from(len).unwrap_or(0) + ROW_OVERHEAD;
                if kind == KIND_READING {
                    readings += 1;
                } else {
                    events += 1;
                }
            }
        }
        tx.commit().await.map_err(err())?;
        inner.readings -= readings;
        inner.events -= events;
        inner.bytes -= bytes;
        self.publish_counters(inner);
        self.counters
            .acked
            .fetch_add(readings + events, Ordering::Relaxed);
        if inner.bytes < self.max_bytes {
            self.counters.buffer_full.store(false, Ordering::Relaxed);
        }
        Ok(readings + events)
    }

    /// The `ts` of the oldest stored record.
    pub async fn oldest_ts(&self) -> Result<Option<Timestamp>, OutboxError> {
        let mut inner = self.inner.lock().await;
        let ts: Option<i64> = sqlx::query_scalar("SELECT ts_us FROM records ORDER BY seq LIMIT 1")
            .fetch_optional(&mut inner.conn)
            .await
            .map_err(db_err(&self.path))?;
        Ok(ts.and_then(chrono::DateTime::from_timestamp_micros))
    }

    /// Checkpoints the WAL and closes the database.
    pub async fn close(self) -> Result<(), OutboxError> {
        let inner = self.inner.into_inner();
        let mut conn = inner.conn;
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await;
        conn.close().await.map_err(db_err(&self.path))
    }
}

enum Opened {
    Corrupt(String),
    Failed(OutboxError),
}

/// Refuses new readings of `rows`, newest first, until `over` bytes are saved; returns how
/// many. The kept rows are renumbered so that their seqs stay consecutive (no holes).
fn refuse_readings(rows: &mut Vec<RecordRow>, over: u64) -> u64 {
    let mut still_over = over;
    let mut keep = vec![true; rows.len()];
    let mut refused = 0u64;
    for (i, row) in rows.iter().enumerate().rev() {
        if still_over == 0 {
            break;
        }
        if row.kind == KIND_READING {
            keep[i] = false;
            refused += 1;
            still_over = still_over.saturating_sub(row.bytes());
        }
    }
    if refused > 0 {
        let base = rows.first().map_or(1, |r| r.seq);
        let mut keep = keep.into_iter();
        rows.retain(|_| keep.next().unwrap_or(true));
        for (i, row) in rows.iter_mut().enumerate() {
            let seq = base + i as u64;
            if row.seq != seq {
                row.seq = seq;
                row.payload = renumber(&row.payload, seq);
            }
        }
    }
    refused
}

/// The record `payload` (canonical JSON) with its seq changed to `seq`: parsed and written
/// again. Rare (only readings refused from the middle of a batch leave seqs to close up), so
/// correctness beats speed here.
fn renumber(payload: &str, seq: u64) -> String {
    match serde_json::from_str::<Record>(payload) {
        Ok(mut r) => {
            r.seq = seq;
            String::from_utf8(r.canonical_json()).unwrap_or_default()
        }
        Err(_) => payload.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use threadline_shared::event::{Quality, Reading, ScanRejected, TagValue};

    use super::*;

    fn row(seq: u64, reading: bool) -> RecordRow {
        let body = if reading {
            RecordBody::Reading(Reading {
                device: "plc".into(),
                tag: "t".into(),
                value: Some(TagValue::UInt(seq)),
                unit: None,
                quality: Quality::Good,
                error: None,
            })
        } else {
            RecordBody::ScanRejected(ScanRejected {
                station: None,
                scanner: "s".into(),
                raw: seq.to_string(),
                reason: "r".into(),
            })
        };
        let rec = Record {
            seq,
            ts: threadline_shared::time::now(),
            body,
        };
        RecordRow {
            seq,
            kind: if reading { KIND_READING } else { KIND_EVENT },
            ts_us: 0,
            payload: String::from_utf8(rec.canonical_json()).expect("utf-8"),
        }
    }

    fn seqs(rows: &[RecordRow]) -> Vec<(u64, u64)> {
        rows.iter()
            .map(|r| (r.seq, Record::from_json(&r.payload).expect("payload").seq))
            .collect()
    }

    #[test]
    fn readings_are_refused_newest_first_and_events_kept_with_consecutive_seqs() {
        let batch = || vec![row(5, true), row(6, false), row(7, true), row(8, true)];
        let mut rows = batch();
        let one = rows[3].bytes();
        assert_eq!(refuse_readings(&mut rows, one), 1);
        assert_eq!(seqs(&rows), [(5, 5), (6, 6), (7, 7)]);

        // More than two readings' worth: the event stays, the oldest reading goes too, and
        // the event takes the first seq of the batch.
        let mut rows = batch();
        let over = rows[2].bytes() + rows[3].bytes() + 1;
        assert_eq!(refuse_readings(&mut rows, over), 3);
        assert_eq!(seqs(&rows), [(5, 5)]);
        assert_eq!(rows[0].kind, KIND_EVENT);
    }
}
