//! Work in progress and work-order progress.
//!
//! A unit is **finished** when it left the line's flow: packed into a container, assembled into
//! another unit, shipped, scrapped (its latest disposition), or — when its part has a route —
//! every required operation of its route passed. A unit with at least one operation that is not
//! finished is **in progress** (WIP).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::RoutingError;
use super::routes::{Route, UnitOp, routes_of, statuses, version_for};
use crate::store::Db;
use crate::store::sql::{self, Sql};

/// One unit in progress.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct WipUnit {
    pub serial: String,
    pub part: Option<String>,
    pub line: Option<String>,
    pub work_order: Option<String>,
    /// The unit's latest operation.
    pub last_station: String,
    pub last_operation: String,
    pub last_result: String,
    pub last_at: String,
    /// Seconds since the latest operation.
    pub age_s: f64,
    /// The next required operation of its route, when it has one.
    pub next_station: Option<String>,
}

/// `GET /api/v1/wip`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Wip {
    /// Units in progress (oldest last operation first), at most `limit`.
    pub units: Vec<WipUnit>,
    /// How many are listed.
    pub n: usize,
    /// True when more units are in progress than listed.
    pub truncated: bool,
    /// Only units with an operation since this time were looked at.
    pub since: String,
}

/// Filters of [`wip`].
#[derive(Debug, Clone, Default)]
pub struct WipFilter<'a> {
    pub line: Option<&'a str>,
    pub part: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub limit: usize,
}

#[derive(sqlx::FromRow)]
struct UnitRow {
    id: i64,
    serial: String,
    part: Option<String>,
    line: Option<String>,
    work_order: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OpRow {
    unit_id: i64,
    station: String,
    operation: String,
    result: String,
    equipment: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    started_at: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    completed_at: String,
}

#[derive(sqlx::FromRow)]
struct IdRow {
    unit_id: i64,
}

#[derive(sqlx::FromRow)]
struct DispRow {
    unit_id: i64,
    disposition: String,
}

/// What the finished rule needs of a set of units, read in a few bulk statements.
struct Units {
    rows: Vec<UnitRow>,
    ops: HashMap<i64, Vec<UnitOp>>,
    /// Packed, assembled into another unit, or shipped (an open edge naming it as child).
    left_flow: HashSet<i64>,
    /// Latest disposition.
    disposition: HashMap<i64, String>,
    routes: HashMap<String, Vec<Route>>,
}

impl Units {
    /// Reads the units `unit_filter` selects (an SQL condition on `i`, with its binds in `q`).
    async fn load(db: &Db, where_units: Sql<'_>) -> Result<Units, RoutingError> {
        let rows: Vec<UnitRow> = db.fetch_all(where_units).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut ops: HashMap<i64, Vec<UnitOp>> = HashMap::new();
        let mut left_flow = HashSet::new();
        let mut disposition = HashMap::new();
        for chunk in ids.chunks(500) {
            let list = sql::id_list(chunk);
            let op_rows: Vec<OpRow> = db
                .fetch_all(Sql::new(format!(
                    "SELECT unit_id, station, operation, result, equipment, started_at, completed_at \
                     FROM operations WHERE unit_id IN ({list}) ORDER BY completed_at, id"
                )))
                .await?;
            for o in op_rows {
                ops.entry(o.unit_id).or_default().push(UnitOp {
                    station: o.station,
                    operation: o.operation,
                    result: o.result,
                    equipment: o.equipment,
                    started_at: o.started_at,
                    completed_at: o.completed_at,
                });
            }
            let left: Vec<IdRow> = db
                .fetch_all(Sql::new(format!(
                    "SELECT DISTINCT child_id AS unit_id FROM edges WHERE child_id IN ({list}) \
                     AND valid_to IS NULL AND relation IN ('packed', 'assembled', 'shipped')"
                )))
                .await?;
            left_flow.extend(left.into_iter().map(|r| r.unit_id));
            let disp: Vec<DispRow> = db
                .fetch_all(Sql::new(format!(
                    "SELECT i.id AS unit_id, d.disposition FROM dispositions d \
                     JOIN items i ON i.kind = 'unit' AND i.ext_id = d.serial \
                     WHERE i.id IN ({list}) ORDER BY d.seq"
                )))
                .await?;
            for d in disp {
                disposition.insert(d.unit_id, d.disposition);
            }
        }
        let mut routes = HashMap::new();
        let parts: HashSet<&str> = rows.iter().filter_map(|r| r.part.as_deref()).collect();
        for p in parts {
            routes.insert(p.to_owned(), routes_of(db, p).await?);
        }
        Ok(Units {
            rows,
            ops,
            left_flow,
            disposition,
            routes,
        })
    }

    fn ops(&self, id: i64) -> &[UnitOp] {
        self.ops.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }

    fn route(&self, r: &UnitRow) -> Option<&Route> {
        let versions = self.routes.get(r.part.as_deref()?)?;
        let first = self
            .ops(r.id)
            .iter()
            .map(|o| o.started_at.as_deref().unwrap_or(&o.completed_at))
            .min();
        version_for(versions, first)
    }

    /// The first required route operation not passed: `None` without a route or when complete.
    fn next_required(&self, r: &UnitRow) -> Option<(String, bool)> {
        let route = self.route(r)?;
        let st = statuses(route, self.ops(r.id));
        match st.into_iter().find(|o| o.required && o.status != "passed") {
            Some(o) => Some((o.station, false)),
            None => Some((String::new(), true)),
        }
    }

    fn scrapped(&self, r: &UnitRow) -> bool {
        self.disposition.get(&r.id).map(String::as_str) == Some("scrap")
    }

    fn finished(&self, r: &UnitRow) -> bool {
        self.left_flow.contains(&r.id)
            || self.scrapped(r)
            || matches!(self.next_required(r), Some((_, true)))
    }

    /// Per (station, operation), did the latest attempt fail?
    fn has_open_failure(&self, id: i64) -> bool {
        let mut last: HashMap<(&str, &str), &str> = HashMap::new();
        for o in self.ops(id) {
            last.insert((&o.station, &o.operation), &o.result);
        }
        last.values().any(|r| *r == "fail")
    }
}

fn age_s(now: DateTime<Utc>, at: &str) -> f64 {
    threadline_shared::time::parse(at)
        .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// Units in progress, oldest last operation first.
pub async fn wip(db: &Db, f: &WipFilter<'_>) -> Result<Wip, RoutingError> {
    let now = threadline_shared::time::now();
    let since = f.since.unwrap_or(now - chrono::Duration::days(30));
    let mut q = Sql::new(
        "SELECT i.id, i.ext_id AS serial, i.part, i.line, i.work_order FROM items i \
         WHERE i.kind = 'unit' AND i.id IN \
           (SELECT DISTINCT unit_id FROM operations WHERE completed_at >= ",
    );
    let p = q.param(since);
    q.push(&p);
    q.push(")");
    if let Some(line) = f.line {
        let p = q.param(line);
        q.push(&format!(" AND i.line = {p}"));
    }
    if let Some(part) = f.part {
        let p = q.param(part);
        q.push(&format!(" AND i.part = {p}"));
    }
    let units = Units::load(db, q).await?;
    let mut out: Vec<WipUnit> = Vec::new();
    for r in &units.rows {
        if units.finished(r) {
            continue;
        }
        let Some(last) = units.ops(r.id).last() else {
            continue;
        };
        out.push(WipUnit {
            serial: r.serial.clone(),
            part: r.part.clone(),
            line: r.line.clone(),
            work_order: r.work_order.clone(),
            last_station: last.station.clone(),
            last_operation: last.operation.clone(),
            last_result: last.result.clone(),
            last_at: last.completed_at.clone(),
            age_s: age_s(now, &last.completed_at),
            next_station: units.next_required(r).map(|(s, _)| s),
        });
    }
    out.sort_by(|a, b| a.last_at.cmp(&b.last_at).then(a.serial.cmp(&b.serial)));
    let truncated = out.len() > f.limit;
    out.truncate(f.limit);
    Ok(Wip {
        n: out.len(),
        units: out,
        truncated,
        since: sql::time_text(&since),
    })
}

/// Time between two consecutive stations of the same units.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct QueueTime {
    pub from_station: String,
    pub to_station: String,
    /// Unit moves measured.
    pub n: usize,
    pub p50_s: f64,
    pub p95_s: f64,
}

/// `GET /api/v1/work-orders/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct WorkOrderProgress {
    pub work_order: String,
    pub part: Option<String>,
    pub line: Option<String>,
    /// Planned quantity from master data (null when the work order was never sent).
    pub planned: Option<f64>,
    /// Units of the work order seen at all.
    pub units: usize,
    /// Units with at least one operation.
    pub started: usize,
    /// Finished units (packed, assembled, shipped, or route complete; see the module doc).
    pub completed: usize,
    /// Completed units with no failed operation left (a rework that passed counts as passed).
    pub passed: usize,
    /// Units whose latest attempt at some operation failed.
    pub failed: usize,
    /// Units whose latest disposition is scrap.
    pub scrapped: usize,
    /// In progress = started, not completed, not scrapped.
    pub in_progress: usize,
    /// Units that passed every operation at the first attempt, of the started ones.
    pub first_pass: usize,
    pub queue_times: Vec<QueueTime>,
}

/// Nearest-rank percentile of sorted seconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Progress of work order `id`; 404 when neither master data nor any unit names it.
pub async fn work_order(db: &Db, id: &str) -> Result<WorkOrderProgress, RoutingError> {
    #[derive(sqlx::FromRow)]
    struct Wo {
        part: Option<String>,
        qty: Option<f64>,
        line: Option<String>,
    }
    let wo: Option<Wo> = db
        .fetch_optional(Sql::new("SELECT part, qty, line FROM work_orders WHERE id = $1").bind(id))
        .await?;
    let units = Units::load(
        db,
        Sql::new(
            "SELECT i.id, i.ext_id AS serial, i.part, i.line, i.work_order FROM items i \
             WHERE i.kind = 'unit' AND i.work_order = $1",
        )
        .bind(id),
    )
    .await?;
    if wo.is_none() && units.rows.is_empty() {
        return Err(RoutingError::NotFound {
            what: "work order",
            id: id.to_owned(),
        });
    }
    let mut p = WorkOrderProgress {
        work_order: id.to_owned(),
        part: wo.as_ref().and_then(|w| w.part.clone()),
        line: wo.as_ref().and_then(|w| w.line.clone()),
        planned: wo.as_ref().and_then(|w| w.qty),
        units: units.rows.len(),
        started: 0,
        completed: 0,
        passed: 0,
        failed: 0,
        scrapped: 0,
        in_progress: 0,
        first_pass: 0,
        queue_times: Vec::new(),
    };
    let mut moves: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for r in &units.rows {
        let ops = units.ops(r.id);
        if p.part.is_none() {
            p.part.clone_from(&r.part);
        }
        if p.line.is_none() {
            p.line.clone_from(&r.line);
        }
        if ops.is_empty() {
            continue;
        }
        p.started += 1;
        let finished = units.finished(r);
        let open_failure = units.has_open_failure(r.id);
        let scrapped = units.scrapped(r);
        p.completed += usize::from(finished && !scrapped);
        p.passed += usize::from(finished && !scrapped && !open_failure);
        p.failed += usize::from(open_failure);
        p.scrapped += usize::from(scrapped);
        p.in_progress += usize::from(!finished && !scrapped);
        p.first_pass += usize::from(ops.iter().all(|o| o.result == "pass"));
        for w in ops.windows(2) {
            if w[0].station == w[1].station {
                continue;
            }
            let arrive = w[1].started_at.as_deref().unwrap_or(&w[1].completed_at);
            let (Ok(a), Ok(b)) = (
                threadline_shared::time::parse(&w[0].completed_at),
                threadline_shared::time::parse(arrive),
            ) else {
                continue;
            };
            let s = (b - a).num_milliseconds() as f64 / 1000.0;
            if s >= 0.0 {
                moves
                    .entry((w[0].station.clone(), w[1].station.clone()))
                    .or_default()
                    .push(s);
            }
        }
    }
    p.queue_times = moves
        .into_iter()
        .map(|((from, to), mut v)| {
            v.sort_by(f64::total_cmp);
            QueueTime {
                from_station: from,
                to_station: to,
                n: v.len(),
                p50_s: percentile(&v, 50.0),
                p95_s: percentile(&v, 95.0),
            }
        })
        .collect();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
