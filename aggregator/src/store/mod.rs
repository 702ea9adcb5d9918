//! Storage: PostgreSQL (production) and SQLite (embedded default) behind one handle, [`Db`].
//!
//! Where things live (imports only point down this list, never back up):
//!
//! - [`db`]: the handle — connect, migrate, write a batch, run shared SQL on either backend;
//! - [`access`]: master data upserts and the ingest-side reads (gateways, events, verify, count);
//! - [`retention`]: removing readings older than `readings_retention_days`;
//! - [`write`]: the batch write path (dedupe, hash chain, insert, project), once, against
//! - [`backend`]: the [`WriteTx`](backend::WriteTx) contract, implemented by
//! - [`postgres`] (bulk COPY / `UNNEST`, day partitions) and [`sqlite`] (per-row statements);
//! - [`projection`]: the pure rules that turn a trace event into projection rows;
//! - [`rows`]: the row types the write path hands a backend (a leaf);
//! - [`chain`]: the hash chain's definition and verifier;
//! - [`sql`]: one SQL text for both backends (binds, row decoding, the few dialect fragments);
//! - [`model`]: what callers pass in and get back (batches, outcomes, API types).

pub mod access;
pub(crate) mod backend;
pub mod chain;
pub mod db;
pub mod dead_letters;
pub mod model;
pub(crate) mod postgres;
pub(crate) mod projection;
pub mod retention;
pub(crate) mod rows;
pub(crate) mod sql;
pub(crate) mod sqlite;
pub(crate) mod write;

pub use db::{Db, redact};
pub use model::*;
