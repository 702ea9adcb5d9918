//! Internal trace (man, machine, material, method, environment) and the readings time series.
//!
//! Both are keyset-paged: `after_id` / `after` is the cursor of the last row of the previous
//! page, so a page costs the same however deep into the result it is, and no answer is ever
//! larger than `limit` rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row as _;
use utoipa::ToSchema;

use super::{Bind, QueryError, bind_all, on_db, ts_opt, ts_param, ts_text};
use crate::store::Db;

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

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct OperationRow {
    pub id: i64,
    pub serial: String,
    pub part: Option<String>,
    pub station: String,
    pub operation: String,
    pub equipment: Option<String>,
    pub operator: Option<String>,
    pub recipe: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: String,
    pub result: String,
    pub defect_code: Option<String>,
    pub out_of_spec: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct OperationPage {
    pub operations: Vec<OperationRow>,
    /// Pass as `after_id` for the next page; absent on the last page.
    pub next_after_id: Option<i64>,
}

/// Matching operations with their unit, in id order.
pub async fn operations(db: &Db, f: &OperationFilter) -> Result<OperationPage, QueryError> {
    let mut binds: Vec<Bind> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let add = |binds: &mut Vec<Bind>, b: Bind| -> usize {
        binds.push(b);
        binds.len()
    };
    for (col, v) in [
        ("o.station", &f.station),
        ("o.equipment", &f.equipment),
        ("o.operator", &f.operator),
        ("o.result", &f.result),
    ] {
        if let Some(v) = v {
            let n = add(&mut binds, Bind::Text(v.clone()));
            conds.push(format!("{col} = ${n}"));
        }
    }
    if let Some(t) = &f.from {
        let n = add(&mut binds, Bind::Text(ts_text(t)));
        conds.push(format!("o.completed_at >= {}", ts_param(db, n)));
    }
    if let Some(t) = &f.to {
        let n = add(&mut binds, Bind::Text(ts_text(t)));
        conds.push(format!("o.completed_at < {}", ts_param(db, n)));
    }
    if let Some(lot) = &f.lot {
        let n = add(&mut binds, Bind::Text(lot.clone()));
        conds.push(format!(
            "(EXISTS (SELECT 1 FROM operation_materials om JOIN items l ON l.id = om.lot_id \
               WHERE om.operation_id = o.id AND l.kind = 'lot' AND l.ext_id = ${n}) \
              OR o.unit_id IN (SELECT e.parent_id FROM edges e JOIN items l ON l.id = e.child_id \
               WHERE l.kind = 'lot' AND l.ext_id = ${n} AND e.relation IN ('consumed', 'assembled')))"
        ));
    }
    let oos_true = if matches!(db, Db::Postgres(_)) {
        "true"
    } else {
        "1"
    };
    let oos_false = if matches!(db, Db::Postgres(_)) {
        "false"
    } else {
        "0"
    };
    match (&f.parameter, f.out_of_spec) {
        (Some(name), oos) => {
            let n = add(&mut binds, Bind::Text(name.clone()));
            let spec = match oos {
                Some(true) => format!(" AND p.in_spec = {oos_false}"),
                Some(false) => format!(" AND p.in_spec = {oos_true}"),
                None => String::new(),
            };
            conds.push(format!(
                "EXISTS (SELECT 1 FROM operation_parameters p WHERE p.operation_id = o.id AND p.name = ${n}{spec})"
            ));
        }
        (None, Some(oos)) => {
            conds.push(format!(
                "o.out_of_spec = {}",
                if oos { oos_true } else { oos_false }
            ));
        }
        (None, None) => {}
    }
    if let Some(after) = f.after_id {
        let n = add(&mut binds, Bind::I64(after));
        conds.push(format!("o.id > ${n}"));
    }
    let limit = f.limit.clamp(1, MAX_LIMIT) as usize;
    let where_clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "SELECT o.id, u.ext_id, u.part, o.station, o.operation, o.equipment, o.operator, o.recipe, \
         o.started_at, o.completed_at, o.result, o.defect_code, o.out_of_spec \
         FROM operations o JOIN items u ON u.id = o.unit_id {where_clause} ORDER BY o.id LIMIT {}",
        limit + 1
    );
    let mut rows = Vec::new();
    on_db!(db, p => {
        let q = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), binds);
        for r in q.fetch_all(p).await? {
            let started_at: Option<DateTime<Utc>> = r.try_get(8)?;
            let completed_at: DateTime<Utc> = r.try_get(9)?;
            rows.push(OperationRow {
                id: r.try_get(0)?,
                serial: r.try_get(1)?,
                part: r.try_get(2)?,
                station: r.try_get(3)?,
                operation: r.try_get(4)?,
                equipment: r.try_get(5)?,
                operator: r.try_get(6)?,
                recipe: r.try_get(7)?,
                started_at: ts_opt(started_at),
                completed_at: ts_text(&completed_at),
                result: r.try_get(10)?,
                defect_code: r.try_get(11)?,
                out_of_spec: r.try_get(12)?,
            });
        }
    });
    let next_after_id = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(OperationPage {
        operations: rows,
        next_after_id,
    })
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
    pub epoch: String,
    pub seq: i64,
}

impl ReadingCursor {
    /// `ts|seq|epoch|gateway` (gateway last: it is the only part that may contain `|`).
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            ts_text(&self.ts),
            self.seq,
            self.epoch,
            self.gateway
        )
    }

    pub fn decode(s: &str) -> Option<ReadingCursor> {
        let mut it = s.splitn(4, '|');
        let ts = threadline_shared::time::parse(it.next()?).ok()?;
        let seq = it.next()?.parse().ok()?;
        let epoch = it.next()?.to_owned();
        uuid::Uuid::parse_str(&epoch).ok()?;
        let gateway = it.next()?.to_owned();
        Some(ReadingCursor {
            ts,
            gateway,
            epoch,
            seq,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ReadingRow {
    pub ts: String,
    pub gateway: String,
    pub device: String,
    pub tag: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
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
    let pg = matches!(db, Db::Postgres(_));
    let mut binds: Vec<Bind> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(tag) = &f.tag {
        binds.push(Bind::Text(tag.clone()));
        conds.push(format!("tag = ${}", binds.len()));
    }
    if let Some(gw) = &f.gateway {
        binds.push(Bind::Text(gw.clone()));
        conds.push(format!("gateway = ${}", binds.len()));
    }
    if let Some(t) = &f.from {
        binds.push(Bind::Text(ts_text(t)));
        conds.push(format!("ts >= {}", ts_param(db, binds.len())));
    }
    if let Some(t) = &f.to {
        binds.push(Bind::Text(ts_text(t)));
        conds.push(format!("ts < {}", ts_param(db, binds.len())));
    }
    if let Some(c) = &f.after {
        binds.push(Bind::Text(ts_text(&c.ts)));
        let t = ts_param(db, binds.len());
        binds.push(Bind::Text(c.gateway.clone()));
        let g = binds.len();
        binds.push(Bind::Text(c.epoch.clone()));
        let e = if pg {
            format!("${}::uuid", binds.len())
        } else {
            format!("${}", binds.len())
        };
        binds.push(Bind::I64(c.seq));
        let s = binds.len();
        conds.push(format!(
            "(ts, gateway, epoch, seq) > ({t}, ${g}, {e}, ${s})"
        ));
    }
    let limit = f.limit.clamp(1, MAX_LIMIT) as usize;
    let where_clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let epoch_col = if pg { "epoch::text" } else { "epoch" };
    let sql = format!(
        "SELECT ts, gateway, {epoch_col}, seq, device, tag, value_num, value_text, unit, quality, error \
         FROM readings {where_clause} ORDER BY ts, gateway, epoch, seq LIMIT {}",
        limit + 1
    );
    let mut rows = Vec::new();
    let mut cursors = Vec::new();
    on_db!(db, p => {
        let q = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), binds);
        for r in q.fetch_all(p).await? {
            let ts: DateTime<Utc> = r.try_get(0)?;
            let gateway: String = r.try_get(1)?;
            cursors.push(ReadingCursor { ts, gateway: gateway.clone(), epoch: r.try_get(2)?, seq: r.try_get(3)? });
            let num: Option<f64> = r.try_get(6)?;
            let text: Option<String> = r.try_get(7)?;
            rows.push(ReadingRow {
                ts: ts_text(&ts),
                gateway,
                device: r.try_get(4)?,
                tag: r.try_get(5)?,
                value: super::report::value_of(num, text),
                unit: r.try_get(8)?,
                quality: r.try_get(9)?,
                error: r.try_get(10)?,
            });
        }
    });
    let next_after = if rows.len() > limit {
        rows.truncate(limit);
        cursors.get(limit - 1).map(ReadingCursor::encode)
    } else {
        None
    };
    Ok(ReadingPage {
        readings: rows,
        next_after,
    })
}
