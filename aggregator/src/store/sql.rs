//! One SQL text for both backends.
//!
//! Most statements read the same on PostgreSQL and SQLite once three things are settled here:
//!
//! - **Placeholders** are `$1`, `$2`, …: both sqlx drivers take them (SQLite maps `$n` to the
//!   n-th bind, so a placeholder may be used twice).
//! - **Values** are bound as a [`Bind`] and each backend encodes it as it stores that kind of
//!   value ([`Driver::arguments`]): timestamps as `timestamptz` on PostgreSQL and as canonical
//!   RFC 3339 text on SQLite (`2026-11-25T01:18:08.123456Z`, so text order is time order), epochs
//!   as `uuid` or hyphenated text, JSON as `jsonb` or text. PostgreSQL learns each parameter's
//!   type from the bind, so no `$n::type` casts are needed.
//! - **Rows** are decoded by column name into `#[derive(sqlx::FromRow)]` structs ([`Rows`]);
//!   timestamps come out as canonical text through [`Time`] / [`OptTime`]. Columns whose type
//!   differs (`uuid`, `jsonb` on PostgreSQL) are read as `CAST(col AS TEXT)`.
//!
//! The few places where the dialects really differ are the methods of [`Dialect`]; callers
//! never ask which backend they are on.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use sqlx::error::BoxDynError;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Database, Executor, FromRow};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

/// A value bound to a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Text(Option<&'a str>),
    I64(Option<i64>),
    F64(Option<f64>),
    Bool(bool),
    /// `timestamptz` / canonical text.
    Time(Option<Timestamp>),
    /// `uuid` / hyphenated text.
    Uuid(Uuid),
    Bytes(&'a [u8]),
    /// `jsonb` / text.
    Json(&'a serde_json::Value),
    /// An `int8[]`: PostgreSQL only (SQLite has no arrays; [`Dialect::id_in`] inlines the list).
    I64s(&'a [i64]),
}

macro_rules! bind_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl<'a> From<$t> for Bind<'a> {
            fn from($v: $t) -> Self {
                $e
            }
        })*
    };
}

bind_from! {
    &'a str => |v| Bind::Text(Some(v)),
    &'a String => |v| Bind::Text(Some(v)),
    Option<&'a str> => |v| Bind::Text(v),
    &'a Option<String> => |v| Bind::Text(v.as_deref()),
    i64 => |v| Bind::I64(Some(v)),
    Option<i64> => |v| Bind::I64(v),
    Option<f64> => |v| Bind::F64(v),
    bool => |v| Bind::Bool(v),
    Timestamp => |v| Bind::Time(Some(v)),
    Option<Timestamp> => |v| Bind::Time(v),
    Uuid => |v| Bind::Uuid(v),
    &'a serde_json::Value => |v| Bind::Json(v),
}

/// A statement: SQL text with `$n` placeholders and its binds, in order.
#[derive(Debug, Clone)]
pub(crate) struct Sql<'a> {
    text: Cow<'static, str>,
    binds: Vec<Bind<'a>>,
    /// False for statements whose row estimate PostgreSQL cannot know (recursive walks): it
    /// would JIT-compile them for the millions of rows it guesses, far slower than running them.
    jit: bool,
}

impl<'a> Sql<'a> {
    pub(crate) fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Sql {
            text: text.into(),
            binds: Vec::new(),
            jit: true,
        }
    }

    /// Binds the next placeholder (`$1` first).
    pub(crate) fn bind(mut self, v: impl Into<Bind<'a>>) -> Self {
        self.binds.push(v.into());
        self
    }

    /// Binds a value for SQL still being written and returns its placeholder (`$n`).
    pub(crate) fn param(&mut self, v: impl Into<Bind<'a>>) -> String {
        self.binds.push(v.into());
        format!("${}", self.binds.len())
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Runs without JIT compilation (see the field).
    pub(crate) fn without_jit(mut self) -> Self {
        self.jit = false;
        self
    }

    pub(crate) fn jit(&self) -> bool {
        self.jit
    }

    /// The text for sqlx. Built text is safe by construction: values are always bound; only
    /// integers read from the database ([`id_list`]) and fixed identifiers are ever inlined.
    fn into_sql_str(self) -> sqlx::SqlStr {
        use sqlx::SqlSafeStr as _;
        match self.text {
            Cow::Borrowed(s) => s.into_sql_str(),
            Cow::Owned(s) => sqlx::AssertSqlSafe(s).into_sql_str(),
        }
    }
}

/// How a backend's driver encodes [`Bind`]s (implemented by `store::postgres` and
/// `store::sqlite`).
pub(crate) trait Driver: Database<Arguments: sqlx::IntoArguments<Self>> {
    fn arguments(binds: &[Bind<'_>]) -> Result<Self::Arguments, BoxDynError>;
    /// Rows a statement changed (`QueryResult` has no common trait).
    fn rows_affected(r: &Self::QueryResult) -> u64;
}

/// A row type both backends decode (by column name, `#[derive(sqlx::FromRow)]`).
pub(crate) trait Rows:
    Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{
}

impl<T> Rows for T where
    T: Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{
}

fn arguments<DB: Driver>(q: &Sql<'_>) -> sqlx::Result<DB::Arguments> {
    DB::arguments(&q.binds).map_err(sqlx::Error::Encode)
}

/// Runs `q` on any executor of a backend (pool, connection, transaction); rows affected.
pub(crate) async fn execute<'e, DB, E>(e: E, q: Sql<'_>) -> sqlx::Result<u64>
where
    DB: Driver,
    E: Executor<'e, Database = DB>,
{
    let args = arguments::<DB>(&q)?;
    let r = sqlx::query_with(q.into_sql_str(), args).execute(e).await?;
    Ok(DB::rows_affected(&r))
}

/// Every row of `q`.
pub(crate) async fn fetch_all<'e, DB, E, T>(e: E, q: Sql<'_>) -> sqlx::Result<Vec<T>>
where
    DB: Driver,
    E: Executor<'e, Database = DB>,
    T: Send + Unpin + for<'r> FromRow<'r, DB::Row>,
{
    let args = arguments::<DB>(&q)?;
    sqlx::query_as_with::<DB, T, _>(q.into_sql_str(), args)
        .fetch_all(e)
        .await
}

/// Every row of `q`, handed to `f` one at a time (constant memory).
pub(crate) async fn for_each<'e, DB, E, T>(
    e: E,
    q: Sql<'_>,
    mut f: impl FnMut(T),
) -> sqlx::Result<()>
where
    DB: Driver,
    E: Executor<'e, Database = DB>,
    T: Send + Unpin + for<'r> FromRow<'r, DB::Row>,
{
    let args = arguments::<DB>(&q)?;
    let mut rows = sqlx::query_as_with::<DB, T, _>(q.into_sql_str(), args).fetch(e);
    while let Some(r) = rows.try_next().await? {
        f(r);
    }
    Ok(())
}

/// Every row of `q`, sent into `tx` as the reader takes them: the channel is bounded, so the
/// statement waits for a slow reader and memory stays at the channel's capacity. Ends early,
/// without error, when the receiver is gone (the client went away).
pub(crate) async fn send_each<'e, DB, E, T>(
    e: E,
    q: Sql<'_>,
    tx: &tokio::sync::mpsc::Sender<sqlx::Result<T>>,
) -> sqlx::Result<()>
where
    DB: Driver,
    E: Executor<'e, Database = DB>,
    T: Send + Unpin + for<'r> FromRow<'r, DB::Row>,
{
    let args = arguments::<DB>(&q)?;
    let mut rows = sqlx::query_as_with::<DB, T, _>(q.into_sql_str(), args).fetch(e);
    while let Some(r) = rows.try_next().await? {
        if tx.send(Ok(r)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The few SQL fragments the dialects write differently. Obtained from
/// [`Db::dialect`](super::Db::dialect); each method says why the difference exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    pub(crate) postgres: bool,
}

/// SQLite binds at most 32 766 variables and long `IN` lists slow its planner down.
const SQLITE_MAX_LIST: usize = 2_000;

impl Dialect {
    /// The join keyword that keeps the tables in the order written. SQLite's planner keeps the
    /// order of a `CROSS JOIN` (and accepts `ON` with it); left to itself, the SQLite bundled with
    /// sqlx picks orders that scan whole tables. PostgreSQL's planner chooses well: `JOIN`.
    pub(crate) fn ordered_join(self) -> &'static str {
        if self.postgres { "JOIN" } else { "CROSS JOIN" }
    }

    /// How many ids one [`Dialect::id_in`] list may hold; split longer lists into chunks.
    pub(crate) fn max_id_list(self) -> usize {
        if self.postgres {
            usize::MAX
        } else {
            SQLITE_MAX_LIST
        }
    }

    /// `col` is one of `ids`: `= ANY($n)` with one array bind on PostgreSQL, an inline
    /// `IN (…)` list on SQLite (ids are integers read from the database: inlining cannot
    /// inject). At most [`Dialect::max_id_list`] ids.
    pub(crate) fn id_in<'a>(self, q: &mut Sql<'a>, col: &str, ids: &'a [i64]) -> String {
        if self.postgres {
            format!("{col} = ANY({})", q.param(Bind::I64s(ids)))
        } else {
            format!("{col} IN ({})", id_list(ids))
        }
    }

    /// `col` for an `ORDER BY` in byte order (the order of Rust's `str`), whatever the
    /// database's collation: `COLLATE "C"` on PostgreSQL; SQLite's default collation is
    /// already bytewise.
    pub(crate) fn byte_order(self, col: &str) -> String {
        if self.postgres {
            format!("{col} COLLATE \"C\"")
        } else {
            col.to_owned()
        }
    }

    /// A join that looks up `table`'s row with `key = outer` once per outer row, as an index
    /// probe. PostgreSQL cannot estimate how many rows a recursive CTE yields; its guess
    /// (millions for a popular lot) picks a hash join over a sequential scan instead, far slower
    /// for any real recall — `LATERAL … OFFSET 0` keeps it a per-row probe. SQLite probes anyway.
    pub(crate) fn lookup_join(
        self,
        table: &str,
        alias: &str,
        cols: &str,
        key: &str,
        outer: &str,
    ) -> String {
        if self.postgres {
            format!(
                "CROSS JOIN LATERAL (SELECT {cols} FROM {table} WHERE {table}.{key} = {outer} \
                 OFFSET 0) {alias}"
            )
        } else {
            format!("JOIN {table} {alias} ON {alias}.{key} = {outer}")
        }
    }
}

/// `1,2,3` (ids are integers we read ourselves — inlining cannot inject).
pub(crate) fn id_list(ids: &[i64]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s
}

/// A `NOT NULL` timestamp column decoded as canonical RFC 3339 text
/// (`#[sqlx(try_from = "Time")] field: String`).
#[derive(Debug, Clone, Copy, sqlx::Type)]
#[sqlx(transparent)]
pub(crate) struct Time(DateTime<Utc>);

/// A nullable timestamp column decoded as canonical text
/// (`#[sqlx(try_from = "OptTime")] field: Option<String>`).
#[derive(Debug, Clone, Copy, sqlx::Type)]
#[sqlx(transparent)]
pub(crate) struct OptTime(Option<DateTime<Utc>>);

/// Canonical text of a timestamp, for binding and for output.
pub(crate) fn time_text(ts: &DateTime<Utc>) -> String {
    threadline_shared::time::format(&threadline_shared::time::canonical(*ts))
}

impl From<Time> for String {
    fn from(t: Time) -> String {
        time_text(&t.0)
    }
}

impl From<OptTime> for Option<String> {
    fn from(t: OptTime) -> Option<String> {
        t.0.as_ref().map(time_text)
    }
}
