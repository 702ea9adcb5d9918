//! Read-only statistics of an outbox file, for `threadline-gateway buffer stats` (works while
//! the daemon runs: WAL lets a reader see the last committed state without blocking the writer).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::store::{OutboxError, ROW_OVERHEAD};

/// What `buffer stats` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxFileStats {
    pub path: PathBuf,
    pub epoch: Uuid,
    pub created: Option<String>,
    pub readings: u64,
    pub events: u64,
    /// Σ payload + per-row overhead (what `buffer_max_mb` limits).
    pub bytes: u64,
    /// Size of the database file plus its WAL.
    pub file_bytes: u64,
    pub oldest_seq: Option<u64>,
    pub oldest_ts: Option<Timestamp>,
    /// The seq the next appended record gets.
    pub next_seq: u64,
}

/// Reads the statistics of the outbox at `path` without writing to it.
pub async fn read_file_stats(path: &Path) -> Result<OutboxFileStats, OutboxError> {
    let err = |source| OutboxError::Db {
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        return Err(OutboxError::Invalid {
            path: path.to_owned(),
            what: "no outbox here (the gateway has not run with this data_dir yet)".into(),
        });
    }
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .map_err(err)?
        .filename(path)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&opts).await.map_err(err)?;
    let meta: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM meta")
        .fetch_all(&mut conn)
        .await
        .map_err(err)?;
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let epoch = get("epoch")
        .and_then(|e| Uuid::parse_str(&e).ok())
        .ok_or_else(|| OutboxError::Invalid {
            path: path.to_owned(),
            what: "meta.epoch missing or invalid".into(),
        })?;
    let last_seq: u64 = get("last_seq").and_then(|s| s.parse().ok()).unwrap_or(0);
    let row = sqlx::query(
        "SELECT COALESCE(SUM(kind = 0), 0) AS readings, COALESCE(SUM(kind = 1), 0) AS events, \
         COALESCE(SUM(length(payload)), 0) AS bytes, COUNT(*) AS n, MAX(seq) AS max_seq FROM records",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(err)?;
    let oldest: Option<(i64, i64)> =
        sqlx::query_as("SELECT seq, ts_us FROM records ORDER BY seq LIMIT 1")
            .fetch_optional(&mut conn)
            .await
            .map_err(err)?;
    let _ = conn.close().await;
    let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    let n = to_u64(row.get("n"));
    let max_seq: Option<i64> = row.get("max_seq");
    let last_seq = last_seq.max(max_seq.map(to_u64).unwrap_or(0));
    let file_bytes = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    Ok(OutboxFileStats {
        path: path.to_owned(),
        epoch,
        created: get("created"),
        readings: to_u64(row.get("readings")),
        events: to_u64(row.get("events")),
        bytes: to_u64(row.get("bytes")) + n * ROW_OVERHEAD,
        file_bytes,
        oldest_seq: oldest.map(|(s, _)| to_u64(s)),
        oldest_ts: oldest.and_then(|(_, ts)| chrono::DateTime::from_timestamp_micros(ts)),
        next_seq: last_seq + 1,
    })
}
