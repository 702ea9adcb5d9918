//! The query side: unit report, genealogy trace, recall scope, internal trace, readings.
//!
//! Every function takes the `Db` handle and answers for both backends with the same SQL text
//! where possible (`$n` placeholders work in both; SQLite maps `$n` to the n-th bind).
//! Timestamps are bound as canonical RFC 3339 text: PostgreSQL casts them (`$n::timestamptz`),
//! SQLite compares them as text, which orders correctly because every stored timestamp has the
//! canonical form (`2026-11-25T01:18:08.123456Z`).

pub mod csv;
pub mod genealogy;
pub mod internal;
pub mod recall;
pub mod report;

pub use genealogy::{Direction, TraceEdge, TraceGraph, TraceNode, TraceRequest, trace};
pub use internal::{
    OperationFilter, OperationPage, OperationRow, ReadingFilter, ReadingPage, ReadingRow,
    operations, readings,
};
pub use recall::{Recall, RecallCounts, RecallShipment, recall};
pub use report::{
    Component, ComponentMaterial, Container, EnvValue, Material, Operation, Parameter,
    QualityCheck, Shipment, UnitReport, unit_report,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Db;

/// Errors of the query layer, shaped by what the caller does with them.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The root id does not exist (the API answers 404 with the id).
    #[error("unknown {what} {id:?}")]
    NotFound { what: &'static str, id: String },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored value could not be interpreted (e.g. environment JSON).
    #[error("bad stored data: {0}")]
    Data(String),
}

/// What kind of item an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Unit,
    Lot,
    Container,
    Shipment,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Unit => "unit",
            ItemKind::Lot => "lot",
            ItemKind::Container => "container",
            ItemKind::Shipment => "shipment",
        }
    }

    pub fn parse(s: &str) -> Option<ItemKind> {
        match s {
            "unit" => Some(ItemKind::Unit),
            "lot" => Some(ItemKind::Lot),
            "container" => Some(ItemKind::Container),
            "shipment" => Some(ItemKind::Shipment),
            _ => None,
        }
    }
}

/// A value bound to a dynamically built statement.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    I64(i64),
}

/// Runs `$body` with `$pool` bound to the backend's pool; the body is compiled once per backend,
/// so row decoding code is shared while staying statically typed.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($pool) => $body,
            $crate::store::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Binds every value of `$binds` to `$q` in order.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds.iter() {
            q = match b {
                $crate::trace::Bind::Text(s) => q.bind(s.clone()),
                $crate::trace::Bind::I64(v) => q.bind(*v),
            };
        }
        q
    }};
}
pub(crate) use bind_all;

/// A timestamp placeholder: PostgreSQL needs the text parameter cast; SQLite compares text.
pub(crate) fn ts_param(db: &Db, n: usize) -> String {
    match db {
        Db::Postgres(_) => format!("${n}::timestamptz"),
        Db::Sqlite(_) => format!("${n}"),
    }
}

/// Canonical text of a timestamp, for binding and for output.
pub(crate) fn ts_text(ts: &DateTime<Utc>) -> String {
    threadline_shared::time::format(&threadline_shared::time::canonical(*ts))
}

pub(crate) fn ts_opt(ts: Option<DateTime<Utc>>) -> Option<String> {
    ts.as_ref().map(ts_text)
}

/// `IN (…)` list of integer ids (ids are integers we read ourselves — inlining cannot inject).
pub(crate) fn id_list(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// Looks up an item's internal id.
pub(crate) async fn item_id(
    db: &Db,
    kind: ItemKind,
    ext_id: &str,
) -> Result<Option<i64>, QueryError> {
    let sql = "SELECT id FROM items WHERE kind = $1 AND ext_id = $2";
    let id: Option<i64> = on_db!(db, p => sqlx::query_scalar(sql)
        .bind(kind.as_str())
        .bind(ext_id)
        .fetch_optional(p)
        .await?);
    Ok(id)
}
