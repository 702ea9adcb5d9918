//! Storage: PostgreSQL (production) and SQLite (embedded default) behind one handle.
//!
//! - [`write`]: the batch write path (dedupe, hash chain, projections) over both backends;
//! - [`chain`]: the hash chain's definition and verifier;
//! - [`postgres`], [`sqlite`]: each backend's statements;
//! - [`access`]: master data upserts and the ingest-side reads (gateways, events, verify);
//! - [`retention`]: removing readings older than `readings_retention_days`.

pub mod access;
pub mod chain;
pub mod model;
pub mod postgres;
pub mod retention;
pub mod sqlite;
pub mod write;

pub use model::*;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// A connection pool to one of the two backends.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://…`) and runs the embedded migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        use anyhow::Context as _;
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
            Db::Postgres(pool)
        } else {
            let opts: SqliteConnectOptions = url
                .parse::<SqliteConnectOptions>()
                .with_context(|| format!("bad SQLite url {url:?}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(10));
            if let Some(dir) = opts.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect_with(opts)
                .await
                .with_context(|| format!("opening SQLite database {url:?}"))?;
            Db::Sqlite(pool)
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Runs the embedded migrations of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A timestamp as SQLite stores it: canonical RFC 3339 UTC text with microseconds
/// (`2026-11-25T01:18:08.123456Z`), so that text order is time order and every writer and reader
/// agrees (sqlx's own chrono encoding would write `+00:00` with a varying number of digits).
pub(crate) fn sqlite_time(ts: threadline_shared::time::Timestamp) -> String {
    threadline_shared::time::format(&threadline_shared::time::canonical(ts))
}
