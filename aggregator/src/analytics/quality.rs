//! Supplier scorecard and first-pass yield by group: counts with their denominators (`n`
//! everywhere — no ratio without the number it was computed from).
//!
//! - **Scorecard**: a supplier's lots reach units — their direct consumers and every unit those
//!   were assembled into, at any level (the lot's recall scope). A reached unit *failed* when it
//!   has any failed operation or quality check. Per supplier: lots, units reached (`n`), failed
//!   units, ppm = failed / n · 10⁶, and its worst lots by ppm. A bearing that makes the finished
//!   drive fail its end-of-line test counts against the bearing's supplier.
//! - **Yield**: first-pass yield at a station — of the units whose *first* operation at the
//!   station completed in the window, the share that passed it — grouped by that operation's
//!   equipment, operator or hour, the unit's work order, or every lot the unit consumed at any
//!   BOM level (one unit counts in each of its lots).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Db;
use crate::store::sql::{self, Sql};
use crate::trace::QueryError;

/// Worst lots listed per supplier.
pub const WORST_LOTS: usize = 5;

/// One lot of a supplier.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct LotScore {
    pub lot: String,
    pub part: Option<String>,
    pub supplier_batch: Option<String>,
    /// Units the lot reached (the denominator of `ppm`).
    pub n: u64,
    pub failed_units: u64,
    pub ppm: Option<f64>,
}

/// One supplier.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct SupplierScore {
    pub supplier: String,
    /// Lots of the supplier that reached a unit in the window.
    pub lots: u64,
    /// Units its lots reached (each once; the denominator of `ppm`).
    pub units: u64,
    /// The same as `units`: the denominator, under the name every ratio carries.
    pub n: u64,
    pub failed_units: u64,
    pub ppm: Option<f64>,
    /// Its lots by ppm, worst first (at most 5).
    pub worst_lots: Vec<LotScore>,
}

/// The answer of `GET /api/v1/suppliers/scorecard`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Scorecard {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Suppliers by ppm, worst first.
    pub suppliers: Vec<SupplierScore>,
}

#[derive(sqlx::FromRow)]
struct ReachRow {
    lot_id: i64,
    unit_id: i64,
}

#[derive(sqlx::FromRow)]
struct LotRow {
    id: i64,
    ext_id: String,
    part: Option<String>,
    supplier: String,
    supplier_batch: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UnitIdRow {
    unit_id: i64,
}

fn ppm(failed: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| failed as f64 / n as f64 * 1e6)
}

fn time_pred<'a>(
    q: &mut Sql<'a>,
    col: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> String {
    let mut s = String::new();
    if let Some(t) = from {
        s.push_str(&format!(" AND {col} >= {}", q.param(t)));
    }
    if let Some(t) = to {
        s.push_str(&format!(" AND {col} < {}", q.param(t)));
    }
    s
}

/// The supplier scorecard over units first seen in `[from, to)`.
pub async fn scorecard(
    db: &Db,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Scorecard, QueryError> {
    let lots: Vec<LotRow> = db
        .fetch_all(Sql::new(
            "SELECT id, ext_id, part, supplier, supplier_batch FROM items \
             WHERE kind = 'lot' AND supplier IS NOT NULL",
        ))
        .await?;
    // Every (lot, unit it reached): direct consumers, then up the assembled edges.
    let mut q = Sql::new("");
    let window = time_pred(&mut q, "u.first_seen_at", from, to);
    q.push(&format!(
        "WITH RECURSIVE reach(lot_id, unit_id) AS ( \
           SELECT e.child_id, e.parent_id FROM edges e JOIN items l ON l.id = e.child_id \
           WHERE l.kind = 'lot' AND l.supplier IS NOT NULL AND e.relation IN ('consumed', 'assembled') \
           UNION \
           SELECT r.lot_id, e.parent_id FROM reach r JOIN edges e ON e.child_id = r.unit_id \
           WHERE e.relation = 'assembled') \
         SELECT r.lot_id, r.unit_id FROM reach r JOIN items u ON u.id = r.unit_id \
         WHERE u.kind = 'unit'{window}"
    ));
    let reach: Vec<ReachRow> = db.fetch_all(q.without_jit()).await?;
    let failed: HashSet<i64> = failed_units(db).await?;

    let lot_of: HashMap<i64, &LotRow> = lots.iter().map(|l| (l.id, l)).collect();
    let mut units_of_lot: HashMap<i64, HashSet<i64>> = HashMap::new();
    for r in &reach {
        units_of_lot.entry(r.lot_id).or_default().insert(r.unit_id);
    }
    let mut by_supplier: BTreeMap<&str, (Vec<LotScore>, HashSet<i64>)> = BTreeMap::new();
    for (lot_id, units) in &units_of_lot {
        let Some(l) = lot_of.get(lot_id) else {
            continue;
        };
        let n = units.len() as u64;
        let f = units.iter().filter(|u| failed.contains(u)).count() as u64;
        let e = by_supplier.entry(l.supplier.as_str()).or_default();
        e.0.push(LotScore {
            lot: l.ext_id.clone(),
            part: l.part.clone(),
            supplier_batch: l.supplier_batch.clone(),
            n,
            failed_units: f,
            ppm: ppm(f, n),
        });
        e.1.extend(units.iter().copied());
    }
    let mut suppliers: Vec<SupplierScore> = by_supplier
        .into_iter()
        .map(|(s, (mut lots, units))| {
            let n = units.len() as u64;
            let f = units.iter().filter(|u| failed.contains(u)).count() as u64;
            lots.sort_by(|a, b| {
                b.ppm
                    .unwrap_or(0.0)
                    .total_cmp(&a.ppm.unwrap_or(0.0))
                    .then(b.n.cmp(&a.n))
                    .then(a.lot.cmp(&b.lot))
            });
            let count = lots.len() as u64;
            lots.truncate(WORST_LOTS);
            SupplierScore {
                supplier: s.to_owned(),
                lots: count,
                units: n,
                n,
                failed_units: f,
                ppm: ppm(f, n),
                worst_lots: lots,
            }
        })
        .collect();
    suppliers.sort_by(|a, b| {
        b.ppm
            .unwrap_or(0.0)
            .total_cmp(&a.ppm.unwrap_or(0.0))
            .then(a.supplier.cmp(&b.supplier))
    });
    Ok(Scorecard {
        from: from.as_ref().map(sql::time_text),
        to: to.as_ref().map(sql::time_text),
        suppliers,
    })
}

/// Units with any failed operation or quality check.
async fn failed_units(db: &Db) -> Result<HashSet<i64>, QueryError> {
    let mut set = HashSet::new();
    db.for_each::<UnitIdRow>(
        Sql::new(
            "SELECT DISTINCT unit_id FROM operations WHERE result = 'fail' \
             UNION SELECT DISTINCT unit_id FROM quality_checks WHERE result = 'fail'",
        ),
        |r| {
            set.insert(r.unit_id);
        },
    )
    .await?;
    Ok(set)
}

/// What yield is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum YieldBy {
    Lot,
    Equipment,
    Operator,
    WorkOrder,
    Hour,
}

impl YieldBy {
    pub fn as_str(self) -> &'static str {
        match self {
            YieldBy::Lot => "lot",
            YieldBy::Equipment => "equipment",
            YieldBy::Operator => "operator",
            YieldBy::WorkOrder => "work_order",
            YieldBy::Hour => "hour",
        }
    }
}

/// One group's first-pass yield.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct YieldGroup {
    /// The lot, equipment, operator, work order or hour (`YYYY-MM-DDTHH`, UTC); null = none
    /// recorded.
    pub group: Option<String>,
    /// Units whose first operation at the station is in this group.
    pub n: u64,
    /// Of those, passed the first time.
    pub first_pass: u64,
    /// first_pass / n.
    pub fpy: f64,
    /// by=lot: the lot's part, supplier and supplier batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier_batch: Option<String>,
}

/// The answer of `GET /api/v1/analysis/yield`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct YieldReport {
    pub station: String,
    pub by: YieldBy,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Units first tested at the station in the window.
    pub n: u64,
    pub first_pass: u64,
    /// first_pass / n; null when n = 0.
    pub fpy: Option<f64>,
    /// Worst first (fpy ascending, then n descending).
    pub groups: Vec<YieldGroup>,
}

#[derive(sqlx::FromRow)]
struct FirstRow {
    unit_id: i64,
    equipment: Option<String>,
    operator: Option<String>,
    work_order: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    completed_at: String,
    result: String,
}

#[derive(sqlx::FromRow)]
struct UnitLotRow {
    parent_id: i64,
    ext_id: String,
    part: Option<String>,
    supplier: Option<String>,
    supplier_batch: Option<String>,
}

/// First-pass yield at `station` grouped by `by`, over first operations completed in
/// `[from, to)`.
pub async fn yield_by(
    db: &Db,
    station: &str,
    by: YieldBy,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<YieldReport, QueryError> {
    let dialect = db.dialect();
    let mut q = Sql::new("");
    let st = q.param(station);
    let window = time_pred(&mut q, "o.completed_at", from, to);
    // The unit's first operation at the station: none earlier (by time, then id).
    q.push(&format!(
        "SELECT o.unit_id, o.equipment, o.operator, u.work_order, o.completed_at, o.result \
         FROM operations o JOIN items u ON u.id = o.unit_id \
         WHERE o.station = {st}{window} AND NOT EXISTS ( \
           SELECT 1 FROM operations p WHERE p.unit_id = o.unit_id AND p.station = o.station \
           AND (p.completed_at < o.completed_at OR (p.completed_at = o.completed_at AND p.id < o.id)))"
    ));
    let firsts: Vec<FirstRow> = db.fetch_all(q).await?;

    // group key → (n, first_pass, lot detail)
    type Detail = (Option<String>, Option<String>, Option<String>);
    let mut groups: BTreeMap<Option<String>, (u64, u64, Detail)> = BTreeMap::new();
    let mut add = |key: Option<String>, pass: bool, detail: Detail| {
        let e = groups.entry(key).or_insert((0, 0, detail));
        e.0 += 1;
        e.1 += u64::from(pass);
    };
    if by == YieldBy::Lot {
        // Lots at any BOM level: walk down the assembled edges from each unit.
        let roots: Vec<i64> = firsts.iter().map(|f| f.unit_id).collect();
        let root_of = super::assembly_roots(db, &roots).await?;
        let closure: Vec<i64> = root_of.keys().copied().collect();
        // root unit → lots (with detail)
        let mut lots_of: HashMap<i64, BTreeMap<String, Detail>> = HashMap::new();
        for chunk in closure.chunks(dialect.max_id_list()) {
            let mut q = Sql::new("");
            let near = dialect.id_in(&mut q, "e.parent_id", chunk);
            q.push(&format!(
                "SELECT e.parent_id, l.ext_id, l.part, l.supplier, l.supplier_batch \
                 FROM edges e JOIN items l ON l.id = e.child_id \
                 WHERE {near} AND e.relation IN ('consumed', 'assembled') AND l.kind = 'lot'"
            ));
            for l in db.fetch_all::<UnitLotRow>(q).await? {
                for &r in root_of.get(&l.parent_id).into_iter().flatten() {
                    lots_of.entry(r).or_default().insert(
                        l.ext_id.clone(),
                        (l.part.clone(), l.supplier.clone(), l.supplier_batch.clone()),
                    );
                }
            }
        }
        for f in &firsts {
            let pass = f.result == "pass";
            match lots_of.get(&f.unit_id) {
                Some(lots) if !lots.is_empty() => {
                    for (lot, d) in lots {
                        add(Some(lot.clone()), pass, d.clone());
                    }
                }
                _ => add(None, pass, (None, None, None)),
            }
        }
    } else {
        for f in &firsts {
            let key = match by {
                YieldBy::Equipment => f.equipment.clone(),
                YieldBy::Operator => f.operator.clone(),
                YieldBy::WorkOrder => f.work_order.clone(),
                YieldBy::Hour => Some(f.completed_at.get(..13).unwrap_or("").to_owned()),
                YieldBy::Lot => None,
            };
            add(key, f.result == "pass", (None, None, None));
        }
    }
    let n = firsts.len() as u64;
    let first_pass = firsts.iter().filter(|f| f.result == "pass").count() as u64;
    let mut groups: Vec<YieldGroup> = groups
        .into_iter()
        .map(|(group, (n, p, (part, supplier, batch)))| YieldGroup {
            group,
            n,
            first_pass: p,
            fpy: p as f64 / n.max(1) as f64,
            part,
            supplier,
            supplier_batch: batch,
        })
        .collect();
    groups.sort_by(|a, b| {
        a.fpy
            .total_cmp(&b.fpy)
            .then(b.n.cmp(&a.n))
            .then(a.group.cmp(&b.group))
    });
    Ok(YieldReport {
        station: station.to_owned(),
        by,
        from: from.as_ref().map(sql::time_text),
        to: to.as_ref().map(sql::time_text),
        n,
        first_pass,
        fpy: (n > 0).then(|| first_pass as f64 / n as f64),
        groups,
    })
}
