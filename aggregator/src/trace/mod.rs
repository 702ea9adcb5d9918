//! The query side: unit report, genealogy trace, recall scope, internal trace, readings.
//!
//! Every function takes the `Db` handle and answers for both backends with one SQL text
//! (`store::sql`: `$n` placeholders, binds encoded per backend, rows decoded by name); where
//! the dialects differ, the store's `Dialect` writes the fragment. Timestamps are bound as
//! timestamps; SQLite compares them as canonical text, which orders correctly because every
//! stored timestamp has the canonical form (`2026-11-25T01:18:08.123456Z`).

pub mod csv;
pub mod genealogy;
pub mod internal;
pub mod recall;
pub mod report;
pub mod supplier;

pub use genealogy::{Direction, TraceEdge, TraceGraph, TraceNode, TraceRequest, trace};
pub use internal::{
    OperationFilter, OperationPage, OperationRow, ReadingFilter, ReadingPage, ReadingRow,
    operations, readings,
};
pub use recall::{Recall, RecallCounts, RecallShipment, recall, recall_rows};
pub use report::{
    Captured, Component, ComponentMaterial, Container, EnvValue, Material, Operation,
    OperationSummary, Parameter, QualityCheck, Shipment, UnitReport, unit_report,
};
pub use supplier::SupplierEvent;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Db;
use crate::store::sql::Sql;
pub(crate) use crate::store::sql::time_text;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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

/// Canonical text of a timestamp, for output.
pub(crate) fn ts_opt(ts: Option<DateTime<Utc>>) -> Option<String> {
    ts.as_ref().map(time_text)
}

/// Looks up an item's internal id.
pub(crate) async fn item_id(
    db: &Db,
    kind: ItemKind,
    ext_id: &str,
) -> Result<Option<i64>, QueryError> {
    #[derive(sqlx::FromRow)]
    struct Id {
        id: i64,
    }
    let row: Option<Id> = db
        .fetch_optional(
            Sql::new("SELECT id FROM items WHERE kind = $1 AND ext_id = $2")
                .bind(kind.as_str())
                .bind(ext_id),
        )
        .await?;
    Ok(row.map(|r| r.id))
}
