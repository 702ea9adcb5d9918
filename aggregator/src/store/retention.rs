//! Readings retention (`[database] readings_retention_days`): readings older than the window are
//! removed; trace events and the genealogy are never touched (they are the evidence a recall
//! needs for the product's whole life).
//!
//! PostgreSQL drops whole day partitions (`readings_YYYYMMDD`) whose day ended before the
//! cutoff — instant, no table bloat — and deletes the expired rows of `readings_default`.
//! SQLite deletes expired rows in chunks, so that ingest (which needs the single write lock)
//! waits at most one chunk.

use chrono::{Duration, NaiveDate, Utc};
use serde::Serialize;

use super::Db;

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Day partitions dropped (PostgreSQL), oldest first.
    pub partitions_dropped: Vec<String>,
    /// Rows deleted one by one (SQLite; PostgreSQL's default partition).
    pub rows_deleted: u64,
}

/// Rows per delete statement on SQLite.
const SQLITE_CHUNK_ROWS: i64 = 10_000;

impl Db {
    /// Removes readings older than `days` days (from now); see the module doc.
    pub async fn apply_readings_retention(&self, days: u32) -> sqlx::Result<RetentionReport> {
        let cutoff = Utc::now() - Duration::days(i64::from(days));
        let mut report = RetentionReport::default();
        match self {
            Db::Postgres(p) => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_[0-9]{8}$'
                     ORDER BY c.relname",
                )
                .fetch_all(p)
                .await?;
                for name in names {
                    let Some(day) = name
                        .strip_prefix("readings_")
                        .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
                    else {
                        continue;
                    };
                    // The partition holds [day, day + 1): expired when that whole range is.
                    let end = (day + Duration::days(1))
                        .and_hms_opt(0, 0, 0)
                        .map(|t| t.and_utc());
                    if end.is_some_and(|end| end <= cutoff) {
                        // The name came from the catalog and matched ^readings_[0-9]{8}$.
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
                            .execute(p)
                            .await?;
                        tracing::info!(partition = %name, "readings retention: dropped");
                        report.partitions_dropped.push(name);
                    }
                }
                report.rows_deleted = sqlx::query("DELETE FROM readings_default WHERE ts < $1")
                    .bind(cutoff)
                    .execute(p)
                    .await?
                    .rows_affected();
            }
            Db::Sqlite(p) => {
                let cutoff = super::sqlite::time_text(cutoff);
                loop {
                    let n = sqlx::query(
                        // `readings` is WITHOUT ROWID: chunks by its key.
                        "DELETE FROM readings WHERE (gateway, epoch, seq) IN
                           (SELECT gateway, epoch, seq FROM readings WHERE ts < ?1 LIMIT ?2)",
                    )
                    .bind(&cutoff)
                    .bind(SQLITE_CHUNK_ROWS)
                    .execute(p)
                    .await?
                    .rows_affected();
                    report.rows_deleted += n;
                    if n < SQLITE_CHUNK_ROWS as u64 {
                        break;
                    }
                }
            }
        }
        Ok(report)
    }
}
