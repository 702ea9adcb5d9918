//! The durable SQLite outbox: every reading and trace event is written here before it is
//! published, and leaves only when the aggregator has acknowledged its database commit.
//!
//! # Invariants
//!
//! - **One writer.** Only the [`Outbox`] handle of the running gateway writes; all its
//!   operations are serialized by one async mutex around one connection. Readers (the
//!   `buffer stats` command) open the file read-only; WAL mode lets them run concurrently.
//! - **Epoch.** A database is created with a random UUID (`meta.epoch`); the epoch never changes
//!   for the life of the file. A new (or replaced corrupt) database is a new epoch, and `seq`
//!   restarts at 1.
//! - **Seq.** `seq` is assigned inside the same transaction that inserts the record and is
//!   strictly increasing per epoch, never reused: `meta.last_seq` is updated in that
//!   transaction, so deleting every row (all acked) does not rewind it.
//! - **Accepted = committed.** [`Outbox::append`] returns only after the commit; a record it
//!   reports as appended survives a crash of the process (SIGKILL) in every mode, and a power
//!   loss when the batch contained a trace event (see *Durability*).
//! - **Deletion.** A row is deleted only (a) when an aggregator ack covers its seq, or (b) when
//!   it is a *reading* and the outbox is over `max_bytes` (oldest readings first, counted in
//!   `dropped`). Trace events are never dropped: when only trace events remain, new readings
//!   are refused (counted in `refused`) and the outbox reports `buffer_full`.
//! - **Station steps.** [`Outbox::append_step`] commits a station step's events and the
//!   stations' new context (`station_state`, one row, replaced whole) in one transaction: after
//!   a crash at any instant both are there or neither (see `stations::state`).
//! - **Size.** `bytes` = Σ (payload length + [`ROW_OVERHEAD`]) over stored rows, kept in memory
//!   and recomputed from the table at open. It is an estimate of the file's live data, not of
//!   the file size (SQLite reuses freed pages; it does not shrink the file).
//!
//! # On-disk format (`data_dir/outbox.db`, SQLite, WAL)
//!
//! ```sql
//! CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
//!   -- 'format' = '1', 'epoch' = UUID, 'created' = RFC 3339, 'last_seq' = decimal
//! CREATE TABLE records (
//!   seq     INTEGER PRIMARY KEY,  -- the rowid: ordered by seq on disk, range scans are cheap
//!   kind    INTEGER NOT NULL,     -- 0 = reading, 1 = trace event
//!   ts_us   INTEGER NOT NULL,     -- the record's ts, Unix microseconds (oldest-record age)
//!   payload TEXT NOT NULL         -- the record's canonical JSON, `seq` included
//! );
//! CREATE TABLE station_state (
//!   id         INTEGER PRIMARY KEY CHECK (id = 1),  -- one row: the whole context
//!   state      TEXT NOT NULL,     -- the stations' context, JSON (format in `stations::state`)
//!   updated_us INTEGER NOT NULL   -- when it was committed, Unix microseconds
//! );
//! ```
//!
//! `station_state` was added without a format change: an older gateway opening the file ignores
//! it (it would look for the context in `stations.json` and start its stations empty).
//!
//! The payload is stored ready to send: publishing an envelope is string concatenation, no
//! decoding, which is what makes replaying a large backlog fast.
//!
//! # Durability
//!
//! The connection runs with `synchronous = NORMAL` (WAL): a commit survives a crash of the
//! process but the last commits may be lost on a power cut. Readings are a time series sampled
//! again a moment later, and fsyncing every reading batch would cap the append rate at the
//! disk's fsync rate. A batch containing a trace event or a station context is committed with
//! `synchronous = FULL` (the WAL is fsynced at that commit, which also makes every earlier commit
//! durable): trace events are rare and irreplaceable, and the context committed with them must
//! not survive a power cut without them (or they without it).
//!
//! # Failures
//!
//! An I/O error (disk full, read-only file system) fails the call and leaves the outbox as it
//! was (the transaction is rolled back; in-memory counters change only after a commit); the
//! caller keeps its batch and retries. A file that cannot be opened as a database or fails
//! `PRAGMA quick_check` is renamed to `outbox.db.corrupt-<timestamp>` and a fresh outbox (a new
//! epoch) is created, with an error in the log.

mod stats;
mod store;

pub use stats::{OutboxFileStats, read_file_stats};
pub use store::{
    AppendReport, NewRecord, Outbox, OutboxError, OutboxOptions, OutboxStats, ROW_OVERHEAD,
    StoredRecord,
};
