//! The handle to the database: connecting, migrating, writing batches, and running the shared
//! SQL of the read side ([`Sql`]) on whichever backend it is. The only place outside the
//! backend modules that knows both.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::model::{Batch, BatchOutcome};
use super::postgres::PgWrite;
use super::sql::{self, Dialect, Rows, Sql};
use super::sqlite::SqliteWrite;
use super::write;

/// PostgreSQL plans every execution of a prepared statement for its values. After five runs it
/// may switch to one generic plan, blind to the values: for a time-range query over millions of
/// units (common cause's population outside the factor index) that plan was a scan of the whole
/// span, 0.45 s → 6 s from the sixth call on. Planning our statements costs well under a
/// millisecond.
const CUSTOM_PLANS: &str = "force_custom_plan";

/// A connection pool to one of the two backends. Callers outside the store use its methods and
/// never need to know which backend it is (tests may reach the pool to run SQL of their own).
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
            let opts: sqlx::postgres::PgConnectOptions = url
                .parse()
                .with_context(|| format!("bad PostgreSQL url {}", redact(url)))?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect_with(opts.options([("plan_cache_mode", CUSTOM_PLANS)]))
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
                .busy_timeout(std::time::Duration::from_secs(10))
                // The writer's hot pages (the right edge of each readings index, per gateway
                // and per tag) must stay in memory as the tables grow: the default 2 MB cache
                // holds about 500 pages. Up to 64 MiB per connection, taken only as used.
                .pragma("cache_size", "-65536")
                // Checkpoints run beside the writer ([`Db::checkpoint`]); the writer checkpoints
                // itself (at commit, waiting) only if those fall behind by this many pages.
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                // A WAL that grew during a burst is cut back to this size once checkpointed.
                .pragma("journal_size_limit", (64i64 << 20).to_string())
                // The multi-row statements of the write path, several sizes per table.
                .statement_cache_capacity(256);
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

    /// The pool of the HTTP API's queries, apart from ingest's: at most `max_connections`
    /// connections (ingest keeps its own), and a time limit of `timeout_ms` (0 = none) — a slow
    /// query is stopped instead of holding connections and snapshots ingest needs:
    /// - PostgreSQL: `statement_timeout` on each connection (cancelled with SQLSTATE 57014);
    /// - SQLite, which has no statement timeout: a progress handler armed each time a
    ///   connection is handed out (a statement on the pool, a transaction, a stream) interrupts
    ///   the work once `timeout_ms` have passed since (`SQLITE_INTERRUPT`, code 9). A long read
    ///   never blocks the writer (WAL), but it holds the WAL from being checkpointed.
    ///
    /// Both errors answer 503 with the reason ([`crate::api::ApiError`]). Work that needs
    /// longer than the limit runs as several statements (`verify_chains` pages). Call after
    /// [`Db::connect`] (which migrates).
    pub async fn connect_queries(
        url: &str,
        max_connections: u32,
        timeout_ms: u64,
    ) -> anyhow::Result<Db> {
        use anyhow::Context as _;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts: sqlx::postgres::PgConnectOptions = url
                .parse()
                .with_context(|| format!("bad PostgreSQL url {}", redact(url)))?;
            let opts = opts.options([
                ("statement_timeout", timeout_ms.to_string()),
                ("plan_cache_mode", CUSTOM_PLANS.to_owned()),
            ]);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect_with(opts)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
            Ok(Db::Postgres(pool))
        } else {
            let opts: SqliteConnectOptions = url
                .parse::<SqliteConnectOptions>()
                .with_context(|| format!("bad SQLite url {url:?}"))?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(10));
            let limit = (timeout_ms > 0).then(|| std::time::Duration::from_millis(timeout_ms));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                // A new connection is handed out right after connecting, an idle one after
                // `before_acquire`: both start the clock; `after_release` stops it.
                .after_connect(move |conn, _| Box::pin(arm_deadline(conn, limit)))
                .before_acquire(move |conn, _| {
                    Box::pin(async move { arm_deadline(conn, limit).await.map(|()| true) })
                })
                .after_release(|conn, _| {
                    Box::pin(async move {
                        conn.lock_handle().await?.remove_progress_handler();
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await
                .with_context(|| format!("opening SQLite database {url:?}"))?;
            Ok(Db::Sqlite(pool))
        }
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

/// WAL pages (4 KiB) after which a committing SQLite connection checkpoints by itself: 64 MiB,
/// a backstop for when [`Db::checkpoint`] does not run or falls behind (SQLite's default, 1000
/// pages, made the writer copy pages into the database file and wait for that every second or
/// third batch).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// A connection that copies the pages the SQLite WAL holds into the database file, beside the
/// writer: `wal_checkpoint(PASSIVE)` waits for no one (what a reader still uses stays for the
/// next time). Run every [`crate::ingest::writer::CHECKPOINT_EVERY`], it keeps the WAL short
/// and the writer from checkpointing at commit, where it would wait for the copy and its
/// fsync. A connection apart from the pool: the writer's pooled connection keeps its page cache
/// (SQLite drops a connection's cache when another connection changed the database since).
#[derive(Debug)]
pub struct Checkpointer(sqlx::sqlite::SqliteConnection);

impl Checkpointer {
    /// One passive checkpoint; the WAL's pages and how many of them are now in the database
    /// file.
    pub async fn checkpoint(&mut self) -> sqlx::Result<(i64, i64)> {
        let (_busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut self.0)
            .await?;
        Ok((log, done))
    }
}

/// SQLite virtual-machine instructions between two looks at the clock (well under a
/// millisecond of work).
const PROGRESS_OPS: i32 = 10_000;

/// Interrupts whatever `conn` runs once `limit` has passed from now (`None`: never).
async fn arm_deadline(
    conn: &mut sqlx::sqlite::SqliteConnection,
    limit: Option<std::time::Duration>,
) -> sqlx::Result<()> {
    let mut handle = conn.lock_handle().await?;
    match limit {
        Some(limit) => {
            let deadline = std::time::Instant::now() + limit;
            handle.set_progress_handler(PROGRESS_OPS, move || std::time::Instant::now() < deadline);
        }
        None => handle.remove_progress_handler(),
    }
    Ok(())
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

impl Db {
    /// Writes one batch in one transaction and commits it. Nothing is visible (and nothing may
    /// be acked) unless this returns `Ok`.
    pub async fn write_batch(&self, batch: &Batch) -> sqlx::Result<BatchOutcome> {
        match self {
            Db::Postgres(p) => {
                write::write_and_commit(PgWrite::begin(p, batch).await?, batch).await
            }
            Db::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                let tx = SqliteWrite::begin(&mut conn, batch.needs_full_sync()).await?;
                write::write_and_commit(tx, batch).await
            }
        }
    }

    /// Why the database refused what it was given — the data, not the database being
    /// unavailable: `Some(reason)` for errors that writing the same rows again can never fix
    /// (PostgreSQL SQLSTATE class 22 data exception — a NUL character, a value out of range —,
    /// 23 integrity constraint, 54 program limit exceeded — an index row too big; SQLite
    /// `TOOBIG`, `CONSTRAINT`, `MISMATCH`, `RANGE`; a value that cannot be encoded). `None` for
    /// everything else (connection lost, disk full, lock timeout, …): those are retried.
    pub fn refusal(&self, e: &sqlx::Error) -> Option<String> {
        match e {
            sqlx::Error::Database(d) => {
                let code = d.code()?;
                let refused = match self {
                    Db::Postgres(_) => ["22", "23", "54"].iter().any(|c| code.starts_with(c)),
                    Db::Sqlite(_) => code
                        .parse::<i64>()
                        .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25)),
                };
                refused.then(|| format!("{} (code {code})", d.message()))
            }
            sqlx::Error::Encode(e) => Some(format!("cannot encode a value: {e}")),
            _ => None,
        }
    }

    /// SQLite: a connection of its own for checkpointing the WAL beside the writer
    /// ([`Checkpointer`]); `None` on PostgreSQL, which needs none.
    pub async fn checkpointer(&self) -> sqlx::Result<Option<Checkpointer>> {
        match self {
            Db::Postgres(_) => Ok(None),
            Db::Sqlite(p) => {
                use sqlx::ConnectOptions as _;
                Ok(Some(Checkpointer(p.connect_options().connect().await?)))
            }
        }
    }

    /// How many writers may commit batches at the same time: SQLite allows one write
    /// transaction at a time, PostgreSQL as many as there are connections.
    pub fn max_parallel_writers(&self) -> usize {
        match self {
            Db::Postgres(_) => usize::MAX,
            Db::Sqlite(_) => 1,
        }
    }

    /// The SQL fragments this backend writes its own way.
    pub(crate) fn dialect(&self) -> Dialect {
        Dialect {
            postgres: matches!(self, Db::Postgres(_)),
        }
    }

    /// Runs one statement; rows affected.
    pub(crate) async fn execute(&self, q: Sql<'_>) -> sqlx::Result<u64> {
        match self {
            Db::Postgres(p) => sql::execute(p, q).await,
            Db::Sqlite(p) => sql::execute(p, q).await,
        }
    }

    /// Runs the statements in one transaction (all or nothing).
    pub(crate) async fn execute_all(&self, qs: Vec<Sql<'_>>) -> sqlx::Result<()> {
        match self {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                for q in qs {
                    sql::execute(&mut *tx, q).await?;
                }
                tx.commit().await
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for q in qs {
                    sql::execute(&mut *tx, q).await?;
                }
                tx.commit().await
            }
        }
    }

    /// Runs the statements in one transaction (all or nothing); rows affected by each.
    pub(crate) async fn execute_each(&self, qs: Vec<Sql<'_>>) -> sqlx::Result<Vec<u64>> {
        let mut out = Vec::with_capacity(qs.len());
        match self {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                for q in qs {
                    out.push(sql::execute(&mut *tx, q).await?);
                }
                tx.commit().await?;
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for q in qs {
                    out.push(sql::execute(&mut *tx, q).await?);
                }
                tx.commit().await?;
            }
        }
        Ok(out)
    }

    /// Every row of `q`.
    pub(crate) async fn fetch_all<T: Rows>(&self, q: Sql<'_>) -> sqlx::Result<Vec<T>> {
        match self {
            Db::Postgres(p) if !q.jit() => {
                let mut tx = p.begin().await?;
                sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
                let rows = sql::fetch_all(&mut *tx, q).await?;
                tx.commit().await?;
                Ok(rows)
            }
            Db::Postgres(p) => sql::fetch_all(p, q).await,
            Db::Sqlite(p) => sql::fetch_all(p, q).await,
        }
    }

    /// The first row of `q`, if any (write the statement to return at most one).
    pub(crate) async fn fetch_optional<T: Rows>(&self, q: Sql<'_>) -> sqlx::Result<Option<T>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    /// Runs `q` on a task of its own and hands its rows over a channel of `cap` rows as they
    /// come (the statement waits while the channel is full, so memory stays bounded however
    /// many rows there are). A database error is the stream's last item; dropping the receiver
    /// stops the statement.
    pub(crate) fn spawn_rows<T: Rows + 'static>(
        &self,
        q: Sql<'static>,
        cap: usize,
    ) -> tokio::sync::mpsc::Receiver<sqlx::Result<T>> {
        let (tx, rx) = tokio::sync::mpsc::channel(cap.max(1));
        let db = self.clone();
        tokio::spawn(async move {
            let r = match &db {
                Db::Postgres(p) if !q.jit() => {
                    async {
                        let mut t = p.begin().await?;
                        sqlx::query("SET LOCAL jit = off").execute(&mut *t).await?;
                        sql::send_each(&mut *t, q, &tx).await?;
                        t.commit().await
                    }
                    .await
                }
                Db::Postgres(p) => sql::send_each(p, q, &tx).await,
                Db::Sqlite(p) => sql::send_each(p, q, &tx).await,
            };
            if let Err(e) = r {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    /// Every row of `q`, one at a time (constant memory).
    pub(crate) async fn for_each<T: Rows>(&self, q: Sql<'_>, f: impl FnMut(T)) -> sqlx::Result<()> {
        match self {
            Db::Postgres(p) => sql::for_each(p, q, f).await,
            Db::Sqlite(p) => sql::for_each(p, q, f).await,
        }
    }
}
