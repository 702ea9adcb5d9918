//! Daily partitions of `readings` (PostgreSQL).
//!
//! `readings` is range-partitioned by `ts`, one partition per UTC day named `readings_YYYYMMDD`,
//! plus `readings_default` for rows of any day without one. Partitions are made on demand by the
//! SQL function `threadline_ensure_readings_partition(day)` (migration 0020), which the writer
//! calls *before* a batch's transaction for each day the batch's readings fall on: creating a
//! partition locks the parent table, which must not be held for the length of a batch.
//!
//! Only days from a year back to a day ahead get their own partition: a PLC with a wrong clock
//! must not create thousands of tables; its rows go to `readings_default`, as do the rows of a
//! day whose partition could not be created (the function then returns false and says why in
//! the server log). Old partitions can be detached or dropped whole — that is the retention
//! story (`docs/architecture.md`, "Readings partitions").

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate, Utc};
use sqlx::PgPool;
use threadline_shared::time::Timestamp;

/// Days back from today that still get their own partition.
pub(crate) const PARTITION_DAYS_BACK: i64 = 366;
/// Days ahead of today that get their own partition (clock skew between gateway and server).
pub(crate) const PARTITION_DAYS_AHEAD: i64 = 1;

/// The UTC days of `ts` that should have their own partition.
pub(crate) fn days_of(ts: impl IntoIterator<Item = Timestamp>) -> BTreeSet<NaiveDate> {
    let today = Utc::now().date_naive();
    let (lo, hi) = (
        today - Duration::days(PARTITION_DAYS_BACK),
        today + Duration::days(PARTITION_DAYS_AHEAD),
    );
    ts.into_iter()
        .map(|t| t.date_naive())
        .filter(|d| (lo..=hi).contains(d))
        .collect()
}

/// Makes sure each day has its partition (one statement; cheap when they exist).
pub(crate) async fn ensure(pool: &PgPool, days: &BTreeSet<NaiveDate>) -> sqlx::Result<()> {
    if days.is_empty() {
        return Ok(());
    }
    let days: Vec<NaiveDate> = days.iter().copied().collect();
    sqlx::query("SELECT threadline_ensure_readings_partition(d) FROM UNNEST($1::date[]) AS d")
        .bind(&days)
        .execute(pool)
        .await?;
    Ok(())
}
