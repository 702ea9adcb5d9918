//! Internal trace (man, machine, material, method, environment) and the readings time series.
//!
//! Both are keyset-paged: `after_id` / `after` is the cursor of the last row of the previous
//! page, so a page costs the same however deep into the result it is, and no answer is ever
//! larger than `limit` rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::report::{Captured, OperationSummary};
use super::{QueryError, time_text};
use crate::store::Db;
use crate::store::sql::{self, Sql};

pub const DEFAULT_LIMIT: u32 = 1_000;
pub const MAX_LIMIT: u32 = 10_000;

/// Filters of `GET /api/v1/operations`; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub station: Option<String>,
    pub equipment: Option<String>,
    pub operator: Option<String>,
    /// Operations on units that consumed this lot (directly, by edge or by operation material).
    pub lot: Option<String>,
    /// completed_at ≥ from
    pub from: Option<DateTime<Utc>>,
    /// completed_at < to
    pub to: Option<DateTime<Utc>>,
    pub result: Option<String>,
    /// With `out_of_spec`: operations whose named parameter is out of spec; alone: operations
    /// that captured that parameter.
    pub parameter: Option<String>,
    pub out_of_spec: Option<bool>,
    pub limit: u32,
    pub after_id: Option<i64>,
}

/// An operation with its unit.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct OperationRow {
    pub serial: String,
    pub part: Option<String>,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub operation: OperationSummary,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct OperationPage {
    pub operations: Vec<OperationRow>,
    /// Pass as `after_id` for the next page; absent on the last page.
    pub next_after_id: Option<i64>,
}

/// Matching operations with their unit, in id order.
pub async fn operations(db: &Db, f: &OperationFilter) -> Result<OperationPage, QueryError> {
    let mut q = Sql::new("");
    let mut conds: Vec<String> = Vec::new();
    for (col, v) in [
        ("o.station", &f.station),
        ("o.equipment", &f.equipment),
        ("o.operator", &f.operator),
        ("o.result", &f.result),
    ] {
        if let Some(v) = v {
            conds.push(format!("{col} = {}", q.param(v)));
        }
    }
    if let Some(t) = f.from {
        conds.push(format!("o.completed_at >= {}", q.param(t)));
    }
    if let Some(t) = f.to {
        conds.push(format!("o.completed_at < {}", q.param(t)));
    }
    if let Some(lot) = &f.lot {
        let n = q.param(lot);
        conds.push(format!(
            "(EXISTS (SELECT 1 FROM operation_materials om JOIN items l ON l.id = om.lot_id \
               WHERE om.operation_id = o.id AND l.kind = 'lot' AND l.ext_id = {n}) \
              OR o.unit_id IN (SELECT e.parent_id FROM edges e JOIN items l ON l.id = e.child_id \
               WHERE l.kind = 'lot' AND l.ext_id = {n} AND e.relation IN ('consumed', 'assembled')))"
        ));
    }
    // Literal booleans (both dialects know `true` / `false`): the planner sees the constant.
    match (&f.parameter, f.out_of_spec) {
        (Some(name), oos) => {
            let n = q.param(name);
            let spec = match oos {
                Some(true) => " AND p.in_spec = false",
                Some(false) => " AND p.in_spec = true",
                None => "",
            };
            conds.push(format!(
                "EXISTS (SELECT 1 FROM operation_parameters p WHERE p.operation_id = o.id \
                 AND p.name = {n}{spec})"
            ));
        }
        (None, Some(oos)) => conds.push(format!("o.out_of_spec = {oos}")),
        (None, None) => {}
    }
    if let Some(after) = f.after_id {
        conds.push(format!("o.id > {}", q.param(after)));
    }
    let limit = f.limit.clamp(1, MAX_LIMIT) as usize;
    q.push(&format!(
        "SELECT o.id, u.ext_id AS serial, u.part, o.station, o.operation, o.equipment, \
         o.operator, o.recipe, o.started_at, o.completed_at, o.result, o.defect_code, \
         o.out_of_spec FROM operations o JOIN items u ON u.id = o.unit_id {} \
         ORDER BY o.id LIMIT {}",
        where_clause(&conds),
        limit + 1
    ));
    let mut rows: Vec<OperationRow> = db.fetch_all(q).await?;
    let next_after_id = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.operation.id)
    } else {
        None
    };
    Ok(OperationPage {
        operations: rows,
        next_after_id,
    })
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

/// Filters of `GET /api/v1/readings`.
#[derive(Debug, Clone, Default)]
pub struct ReadingFilter {
    pub tag: Option<String>,
    pub gateway: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: u32,
    /// Opaque cursor from the previous page (`next_after`).
    pub after: Option<ReadingCursor>,
}

/// Keyset position: (ts, gateway, epoch, seq) of the last row returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingCursor {
    pub ts: DateTime<Utc>,
    pub gateway: String,
    pub epoch: Uuid,
    pub seq: i64,
}

impl ReadingCursor {
    /// `ts|seq|epoch|gateway` (gateway last: it is the only part that may contain `|`).
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            time_text(&self.ts),
            self.seq,
            self.epoch,
            self.gateway
        )
    }

    pub fn decode(s: &str) -> Option<ReadingCursor> {
        let mut it = s.splitn(4, '|');
        let ts = threadline_shared::time::parse(it.next()?).ok()?;
        let seq = it.next()?.parse().ok()?;
        let epoch = Uuid::parse_str(it.next()?).ok()?;
        let gateway = it.next()?.to_owned();
        Some(ReadingCursor {
            ts,
            gateway,
            epoch,
            seq,
        })
    }
}

/// From the `next_after` text of a previous page (query parameter `after`).
impl<'de> serde::Deserialize<'de> for ReadingCursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ReadingCursor;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the next_after cursor of a previous page")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ReadingCursor, E> {
                ReadingCursor::decode(s)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// One reading of a tag.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct ReadingRow {
    #[sqlx(try_from = "sql::Time")]
    pub ts: String,
    pub gateway: String,
    pub device: String,
    pub tag: String,
    #[schema(value_type = Object)]
    #[sqlx(flatten)]
    pub value: Captured,
    pub unit: Option<String>,
    pub quality: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ReadingPage {
    pub readings: Vec<ReadingRow>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Readings in time order.
pub async fn readings(db: &Db, f: &ReadingFilter) -> Result<ReadingPage, QueryError> {
    let mut q = Sql::new("");
    let mut conds: Vec<String> = Vec::new();
    if let Some(tag) = &f.tag {
        conds.push(format!("tag = {}", q.param(tag)));
    }
    if let Some(gw) = &f.gateway {
        conds.push(format!("gateway = {}", q.param(gw)));
    }
    if let Some(t) = f.from {
        conds.push(format!("ts >= {}", q.param(t)));
    }
    if let Some(t) = f.to {
        conds.push(format!("ts < {}", q.param(t)));
    }
    if let Some(c) = &f.after {
        let (t, g, e, s) = (
            q.param(c.ts),
            q.param(&c.gateway),
            q.param(c.epoch),
            q.param(c.seq),
        );
        conds.push(format!("(ts, gateway, epoch, seq) > ({t}, {g}, {e}, {s})"));
    }
    let limit = f.limit.clamp(1, MAX_LIMIT) as usize;
    q.push(&format!(
        "SELECT ts, gateway, CAST(epoch AS TEXT) AS epoch, seq, device, tag, value_num, \
         value_text, unit, quality, error FROM readings {} \
         ORDER BY ts, gateway, epoch, seq LIMIT {}",
        where_clause(&conds),
        limit + 1
    ));
    let mut rows: Vec<Keyed> = db.fetch_all(q).await?;
    let next_after = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor).transpose()?
    } else {
        None
    };
    Ok(ReadingPage {
        readings: rows.into_iter().map(|r| r.reading).collect(),
        next_after,
    })
}

/// A reading with the rest of its key, for the cursor.
#[derive(sqlx::FromRow)]
struct Keyed {
    #[sqlx(flatten)]
    reading: ReadingRow,
    epoch: String,
    seq: i64,
}

/// The `next_after` of a page that ends with `r`.
fn cursor(r: &Keyed) -> Result<String, QueryError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        QueryError::Data(format!("reading {what} of the page's last row: {e}"))
    };
    Ok(ReadingCursor {
        ts: threadline_shared::time::parse(&r.reading.ts).map_err(|e| bad("ts", &e))?,
        gateway: r.reading.gateway.clone(),
        epoch: Uuid::parse_str(&r.epoch).map_err(|e| bad("epoch", &e))?,
        seq: r.seq,
    }
    .encode())
}
