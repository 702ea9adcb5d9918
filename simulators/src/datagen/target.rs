//! The database the plant is generated into: connecting for a bulk load, migrating, refusing a
//! database that already holds items, and what is done before and after the load.
//!
//! PostgreSQL: the session loads without foreign-key triggers (`session_replication_role =
//! replica`: the data is consistent by construction, superuser only) and without a WAL flush
//! per COPY; secondary indexes are dropped before the load and rebuilt from their saved
//! definitions after it, then the id sequences are moved past the generated ids and the tables
//! are vacuumed. Readings' day partitions are made before the load. SQLite: foreign keys off,
//! no fsync, `ANALYZE` at the end.

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::layout::Layout;
use super::rows::Table;

/// A migrated, empty aggregator database.
pub(super) enum Target {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// What [`Target::prepare`] took away, for [`Target::finish`] to put back.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// (name, definition) of the secondary indexes dropped for the load (PostgreSQL).
    dropped_indexes: Vec<(String, String)>,
}

impl Target {
    /// Connects to `url` (postgres://… or sqlite://…) and runs the aggregator's migrations.
    pub(super) async fn open(url: &str) -> anyhow::Result<Target> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = connect_postgres(url).await?;
            sqlx::migrate!("../aggregator/migrations/postgres")
                .run(&pool)
                .await
                .context("migrating")?;
            Ok(Target::Postgres(pool))
        } else {
            let opts: SqliteConnectOptions = url
                .parse::<SqliteConnectOptions>()
                .context("bad SQLite url")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Off);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .context("opening SQLite")?;
            sqlx::migrate!("../aggregator/migrations/sqlite")
                .run(&pool)
                .await
                .context("migrating")?;
            Ok(Target::Sqlite(pool))
        }
    }

    /// Refuses to mix with existing data: the generator assigns ids itself.
    pub(super) async fn ensure_empty(&self) -> anyhow::Result<()> {
        const SQL: &str = "SELECT count(*) FROM items";
        let existing: i64 = match self {
            Target::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
            Target::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
        };
        if existing > 0 {
            anyhow::bail!("the database already holds {existing} items; use an empty database");
        }
        Ok(())
    }

    /// Readies the database for a bulk load of the plant of `layout`.
    pub(super) async fn prepare(&self, layout: &Layout) -> anyhow::Result<Prepared> {
        match self {
            Target::Postgres(pool) => {
                // Drop secondary indexes during the load; rebuilt from their saved definitions.
                let dropped_indexes: Vec<(String, String)> = sqlx::query_as(
                    "SELECT i.indexname, i.indexdef FROM pg_indexes i \
                     WHERE i.schemaname = current_schema() AND i.tablename IN ('items','edges','operations','operation_parameters','operation_materials','quality_checks','readings') \
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
                )
                .fetch_all(pool)
                .await?;
                for (name, _) in &dropped_indexes {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
                        .execute(pool)
                        .await?;
                }
                // `readings` is partitioned by day: make the partitions of the generated
                // history, or every reading would land in the default partition.
                sqlx::query(
                    "SELECT threadline_ensure_readings_partition(d::date) \
                     FROM generate_series($1::date, $2::date, interval '1 day') AS d",
                )
                .bind(layout.t0.date_naive())
                .bind(layout.last_day().date_naive())
                .execute(pool)
                .await
                .context("creating the readings partitions")?;
                Ok(Prepared { dropped_indexes })
            }
            Target::Sqlite(pool) => {
                // One long transaction would be fastest but holds everything in the WAL; batches
                // of statements under synchronous=OFF are close enough.
                sqlx::raw_sql("PRAGMA foreign_keys = OFF")
                    .execute(pool)
                    .await?;
                Ok(Prepared::default())
            }
        }
    }

    /// After the load: indexes back, sequences past the generated ids, statistics.
    pub(super) async fn finish(&self, prepared: Prepared) -> anyhow::Result<()> {
        match self {
            Target::Postgres(pool) => {
                for (name, def) in prepared.dropped_indexes {
                    tracing::info!(index = name.as_str(), "rebuilding index");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(def))
                        .execute(pool)
                        .await
                        .with_context(|| format!("rebuilding {name}"))?;
                }
                for t in [
                    Table::Items,
                    Table::Edges,
                    Table::Operations,
                    Table::QualityChecks,
                ] {
                    let t = t.name();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"
                    )))
                    .execute(pool)
                    .await?;
                }
                // VACUUM, not only ANALYZE: it sets the visibility map, without which the
                // recall's index-only scans fetch every heap page anyway.
                sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await?;
            }
            Target::Sqlite(pool) => {
                sqlx::raw_sql("ANALYZE").execute(pool).await?;
            }
        }
        Ok(())
    }
}

/// A pool of two connections (the generator's and the COPY task's) with the bulk-load session
/// settings: no foreign-key trigger per row, no WAL flush per COPY, memory for the index
/// rebuilds. Without them (not a superuser) when the server refuses them.
async fn connect_postgres(url: &str) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse().context("bad PostgreSQL url")?;
    let opts = opts.options([
        ("synchronous_commit", "off"),
        ("maintenance_work_mem", "1GB"),
        ("session_replication_role", "replica"),
    ]);
    match PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts)
        .await
    {
        Ok(p) => Ok(p),
        Err(e) => {
            tracing::warn!(error = %e, "bulk-load session settings refused (not a superuser?); loading with foreign-key checks");
            PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .context("connecting to PostgreSQL")
        }
    }
}
