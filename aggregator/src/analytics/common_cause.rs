//! Common-cause analysis: what a set of complaint units shares, ranked by how unlikely that
//! sharing is by chance (one-sided Fisher exact test against the population, [`super::fisher`]).
//!
//! Factors of a unit:
//! - material, at every BOM level: `lot` (consumed by the unit itself), `component_lot`
//!   (consumed by one of its components, any depth), `supplier` and `supplier_batch` of either;
//! - process, of the unit's own operations: `equipment`, `operator`, `recipe`, `station_hour`
//!   (`{station}@{YYYY-MM-DDTHH}`, UTC) and the unit's `work_order`.
//!
//! The population (default: units of the complaint units' parts first seen between the first
//! and the last of them) always contains the complaint units. Only factors at least one
//! complaint unit has are counted in the population: in a population of up to 20,000 units from
//! each unit's own factors (read as the complaint units' are), in a larger one from the factors'
//! side — material factors by walking up the genealogy from their lots, process factors with
//! one grouped count per kind. Both give the same counts (tested); they differ in cost.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{factor_index, fisher};
use crate::store::Db;
use crate::store::sql::{self, Sql};
use crate::trace::QueryError;

/// At most this many complaint serials per request.
pub const MAX_UNITS: usize = 10_000;
/// Populations up to this many units are counted from the units' side (their own factors,
/// read like the complaint units'); larger ones from the factors' side. The first costs a few
/// indexed reads per population unit, the second a walk up from every lot of an affected
/// supplier and a grouped count over every operation of an affected machine — which on a big
/// plant is far more than 20,000 units' reads.
const SMALL_POPULATION: usize = 20_000;
/// Factors returned by default.
pub const DEFAULT_LIMIT: usize = 50;

/// Body of `POST /api/v1/analysis/common-cause`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommonCauseRequest {
    /// The complaint serials.
    pub units: Vec<String>,
    /// The comparison population; default: units of the same parts first seen in the span of
    /// the given ones.
    pub population: Option<PopulationSpec>,
    /// Factors to return at most, best first (default 50).
    pub limit: Option<usize>,
}

/// Population of the comparison; every field optional.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PopulationSpec {
    /// Part number (default: the complaint units' parts).
    pub part: Option<String>,
    /// Units first seen at or after (RFC 3339; default: the earliest complaint unit).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// Units first seen at or before (RFC 3339; default: the latest complaint unit).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
}

/// One shared factor.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Factor {
    /// lot | component_lot | supplier | supplier_batch | equipment | operator | recipe |
    /// work_order | station_hour
    pub kind: &'static str,
    pub id: String,
    /// Complaint units with the factor.
    pub affected: u64,
    /// Population units with the factor (the complaint units included).
    pub population_with: u64,
    /// (affected / units) / (population_with / population); null when undefined.
    pub lift: Option<f64>,
    /// One-sided Fisher exact p-value, P(X ≥ affected).
    pub p_value: f64,
}

/// The answer.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct CommonCause {
    /// Complaint units found.
    pub units: u64,
    /// Serials not found.
    pub missing: Vec<String>,
    /// Population size (the complaint units included).
    pub population: u64,
    /// The population used: parts and first-seen span.
    pub population_parts: Vec<String>,
    pub population_from: Option<String>,
    pub population_to: Option<String>,
    /// Factors with at least one complaint unit, by p_value ascending (then lift descending).
    pub factors: Vec<Factor>,
    /// Factors tested (the multiple-comparison count; see docs/analysis.md).
    pub factors_tested: u64,
}

pub(super) type Key = (&'static str, String);

#[derive(sqlx::FromRow)]
struct UnitRow {
    id: i64,
    ext_id: String,
    part: Option<String>,
    work_order: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    first_seen_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PairRow {
    parent_id: i64,
    child_id: i64,
}

#[derive(sqlx::FromRow)]
struct LotRow {
    parent_id: i64,
    lot_id: i64,
    ext_id: String,
    supplier: Option<String>,
    supplier_batch: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OpRow {
    unit_id: i64,
    station: String,
    equipment: Option<String>,
    operator: Option<String>,
    recipe: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    completed_at: String,
}

#[derive(sqlx::FromRow)]
struct IdRow {
    id: i64,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: i64,
    work_order: Option<String>,
}

#[derive(sqlx::FromRow)]
struct CountRow {
    id: String,
    n: i64,
}

/// The population predicate on items alias `u`, binding into `q`.
struct Population {
    parts: Vec<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// First-seen ranges `[from, to)` left out: counted by the factor index.
    indexed: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Population {
    fn predicate<'a>(&'a self, q: &mut Sql<'a>, u: &str) -> String {
        let mut s = format!("{u}.kind = 'unit'");
        if !self.parts.is_empty() {
            let ps: Vec<String> = self.parts.iter().map(|p| q.param(p)).collect();
            s.push_str(&format!(" AND {u}.part IN ({})", ps.join(", ")));
        }
        if let Some(t) = self.from {
            s.push_str(&format!(" AND {u}.first_seen_at >= {}", q.param(t)));
        }
        if let Some(t) = self.to {
            s.push_str(&format!(" AND {u}.first_seen_at <= {}", q.param(t)));
        }
        // The gaps between the indexed ranges, as ranges of their own: an index range scan
        // each (a `NOT (range)` would read the whole span).
        if !self.indexed.is_empty() {
            let mut gaps = Vec::new();
            let mut at = self.from;
            for (a, b) in &self.indexed {
                if at.is_none_or(|t| t < *a) {
                    gaps.push(match at {
                        Some(t) => format!(
                            "({u}.first_seen_at >= {} AND {u}.first_seen_at < {})",
                            q.param(t),
                            q.param(*a)
                        ),
                        None => format!("{u}.first_seen_at < {}", q.param(*a)),
                    });
                }
                at = Some(*b);
            }
            if let Some(t) = at
                && self.to.is_none_or(|to| t <= to)
            {
                gaps.push(format!("{u}.first_seen_at >= {}", q.param(t)));
            }
            if gaps.is_empty() {
                s.push_str(" AND FALSE");
            } else {
                s.push_str(&format!(" AND ({})", gaps.join(" OR ")));
            }
        }
        s
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    threadline_shared::time::parse(s).ok()
}

/// Runs the analysis.
pub async fn common_cause(db: &Db, req: &CommonCauseRequest) -> Result<CommonCause, QueryError> {
    common_cause_counted(db, req, SMALL_POPULATION, true).await
}

/// [`common_cause`] with the population size up to which counts come from the units' side, and
/// whether the factor index may count the hours it holds (tests run every way on one plant: the
/// answers must be the same).
#[doc(hidden)]
pub async fn common_cause_counted(
    db: &Db,
    req: &CommonCauseRequest,
    small_population: usize,
    use_index: bool,
) -> Result<CommonCause, QueryError> {
    // 1. The complaint units.
    let wanted: Vec<String> = {
        let mut seen = HashSet::new();
        req.units
            .iter()
            .filter(|s| seen.insert(s.as_str()))
            .cloned()
            .collect()
    };
    let mut units: Vec<UnitRow> = Vec::new();
    for chunk in wanted.chunks(500) {
        let mut q = Sql::new("");
        let ps: Vec<String> = chunk.iter().map(|s| q.param(s)).collect();
        q.push(&format!(
            "SELECT id, ext_id, part, work_order, first_seen_at FROM items \
             WHERE kind = 'unit' AND ext_id IN ({})",
            ps.join(", ")
        ));
        units.extend(db.fetch_all::<UnitRow>(q).await?);
    }
    let found: HashSet<&str> = units.iter().map(|u| u.ext_id.as_str()).collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|s| !found.contains(s.as_str()))
        .cloned()
        .collect();

    // 2. The population.
    let spec = req.population.clone().unwrap_or_default();
    let seen_times: Vec<DateTime<Utc>> = units
        .iter()
        .filter_map(|u| u.first_seen_at.as_deref().and_then(parse_time))
        .collect();
    let mut pop = Population {
        parts: match &spec.part {
            Some(p) => vec![p.clone()],
            None => {
                let set: std::collections::BTreeSet<String> =
                    units.iter().filter_map(|u| u.part.clone()).collect();
                set.into_iter().collect()
            }
        },
        from: spec.from.or_else(|| seen_times.iter().min().copied()),
        to: spec.to.or_else(|| seen_times.iter().max().copied()),
        indexed: Vec::new(),
    };
    // The hours the factor index covers whole are summed from it; the rest of the population
    // (the hours cut by the span, dirty or not built yet) is counted below as before.
    let covered = if use_index && !units.is_empty() {
        factor_index::covered(db, &pop.parts, pop.from, pop.to).await?
    } else {
        None
    };
    if let Some(c) = &covered {
        pop.indexed = c.ranges.clone();
    }
    let indexed_units = covered.as_ref().map_or(0, |c| c.units as usize);
    let mut pop_ids: HashSet<i64> = HashSet::new();
    let mut members: Vec<(i64, Option<String>)> = Vec::new();
    if !units.is_empty() {
        let mut q = Sql::new("");
        let pred = pop.predicate(&mut q, "u");
        q.push(&format!(
            "SELECT u.id, u.work_order FROM items u WHERE {pred}"
        ));
        db.for_each::<MemberRow>(q, |r| {
            if pop_ids.insert(r.id) {
                members.push((r.id, r.work_order));
            }
        })
        .await?;
    }
    // Complaint units outside the predicate (other part, no first sighting) join it; those in
    // the hours the index covers are in its counts already.
    let in_covered = |u: &UnitRow| {
        let part_ok =
            pop.parts.is_empty() || u.part.as_ref().is_some_and(|p| pop.parts.contains(p));
        let seen = u.first_seen_at.as_deref().and_then(parse_time);
        part_ok && seen.is_some_and(|t| pop.indexed.iter().any(|(a, b)| *a <= t && t < *b))
    };
    let outside: HashSet<i64> = units
        .iter()
        .filter(|u| !pop_ids.contains(&u.id) && !in_covered(u))
        .map(|u| u.id)
        .collect();
    pop_ids.extend(outside.iter().copied());
    members.extend(
        units
            .iter()
            .filter(|u| outside.contains(&u.id))
            .map(|u| (u.id, u.work_order.clone())),
    );

    // 3. Factors of the complaint units.
    let roots: Vec<(i64, Option<String>)> =
        units.iter().map(|u| (u.id, u.work_order.clone())).collect();
    let (affected, lot_ids) = factors_of(db, &roots).await?;

    // 4. Population counts of those factors. A population small enough is read whole from its
    // own side (each unit's factors, as for the complaint units: a few indexed reads per unit);
    // a large one from the factors' side (walk up from the lots, grouped counts per kind).
    let add_covered = |counts: &mut HashMap<Key, u64>| {
        if let Some(c) = &covered {
            for k in affected.keys() {
                *counts.entry(k.clone()).or_default() += c.counts.get(k).copied().unwrap_or(0);
            }
        }
    };
    if members.len() <= small_population {
        let (of_pop, _) = factors_of(db, &members).await?;
        let mut counts: HashMap<Key, u64> = affected
            .keys()
            .map(|k| (k.clone(), of_pop.get(k).map_or(0, |s| s.len() as u64)))
            .collect();
        add_covered(&mut counts);
        return Ok(rank(
            req,
            &units,
            missing,
            &pop,
            pop_ids.len() + indexed_units,
            &affected,
            &counts,
        ));
    }
    drop(members);
    let mut with: HashMap<Key, HashSet<i64>> = HashMap::new();
    // Material: every lot of an affected lot / batch / supplier, walked up the genealogy.
    let mut origin: HashMap<i64, Vec<(Key, bool)>> = HashMap::new(); // lot id → (factor, direct only)
    for (kind, id) in affected.keys() {
        match *kind {
            "lot" | "component_lot" => {
                if let Some(&lid) = lot_ids.get(id) {
                    origin
                        .entry(lid)
                        .or_default()
                        .push(((*kind, id.clone()), *kind == "lot"));
                }
            }
            "supplier" | "supplier_batch" => {
                let col = if *kind == "supplier" {
                    "supplier"
                } else {
                    "supplier_batch"
                };
                let q = Sql::new(format!(
                    "SELECT id FROM items WHERE kind = 'lot' AND {col} = $1"
                ))
                .bind(id.as_str());
                for r in db.fetch_all::<IdRow>(q).await? {
                    origin
                        .entry(r.id)
                        .or_default()
                        .push(((*kind, id.clone()), false));
                }
            }
            _ => {}
        }
    }
    material_reach(db, &origin, &pop_ids, &mut with).await?;

    let mut counts: HashMap<Key, u64> = with
        .iter()
        .map(|(k, set)| (k.clone(), set.len() as u64))
        .collect();

    // Process: grouped counts over the population predicate, plus complaint units outside it.
    for (kind, col) in [
        ("equipment", "o.equipment"),
        ("operator", "o.operator"),
        ("recipe", "o.recipe"),
        ("work_order", "u.work_order"),
    ] {
        let ids: Vec<&String> = affected
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| id)
            .collect();
        let from = if kind == "work_order" {
            "items u"
        } else {
            "operations o JOIN items u ON u.id = o.unit_id"
        };
        let distinct = if kind == "work_order" {
            "COUNT(*)"
        } else {
            "COUNT(DISTINCT o.unit_id)"
        };
        for chunk in ids.chunks(500) {
            let mut q = Sql::new("");
            let ps: Vec<String> = chunk.iter().map(|s| q.param(s.as_str())).collect();
            let pred = pop.predicate(&mut q, "u");
            q.push(&format!(
                "SELECT {col} AS id, {distinct} AS n FROM {from} \
                 WHERE {col} IN ({}) AND {pred} GROUP BY {col}",
                ps.join(", ")
            ));
            for r in db.fetch_all::<CountRow>(q).await? {
                *counts.entry((kind, r.id)).or_default() += r.n.max(0) as u64;
            }
        }
    }
    // station_hour: one index range per (station, hour), binned here.
    let hours: Vec<(String, DateTime<Utc>)> = affected
        .keys()
        .filter(|(k, _)| *k == "station_hour")
        .filter_map(|(_, id)| {
            let (st, h) = id.rsplit_once('@')?;
            Some((st.to_owned(), parse_time(&format!("{h}:00:00Z"))?))
        })
        .collect();
    let mut hour_units: HashMap<String, HashSet<i64>> = HashMap::new();
    for chunk in hours.chunks(200) {
        let mut q = Sql::new("");
        let mut ors = Vec::new();
        for (st, h) in chunk {
            let s = q.param(st.as_str());
            let a = q.param(*h);
            let b = q.param(*h + chrono::Duration::hours(1));
            ors.push(format!(
                "(o.station = {s} AND o.completed_at >= {a} AND o.completed_at < {b})"
            ));
        }
        let pred = pop.predicate(&mut q, "u");
        q.push(&format!(
            "SELECT o.unit_id, o.station, o.equipment, o.operator, o.recipe, o.completed_at \
             FROM operations o JOIN items u ON u.id = o.unit_id WHERE ({}) AND {pred}",
            ors.join(" OR ")
        ));
        for o in db.fetch_all::<OpRow>(q).await? {
            hour_units
                .entry(station_hour(&o.station, &o.completed_at))
                .or_default()
                .insert(o.unit_id);
        }
    }
    for (k, set) in hour_units {
        counts.insert(("station_hour", k), set.len() as u64);
    }
    // Complaint units outside the predicate count for the process factors they have.
    for (key, set) in &affected {
        if matches!(
            key.0,
            "equipment" | "operator" | "recipe" | "work_order" | "station_hour"
        ) {
            let extra = set.iter().filter(|u| outside.contains(u)).count() as u64;
            *counts.entry(key.clone()).or_default() += extra;
        }
    }
    add_covered(&mut counts);

    Ok(rank(
        req,
        &units,
        missing,
        &pop,
        pop_ids.len() + indexed_units,
        &affected,
        &counts,
    ))
}

/// 5. Each factor tested against the population, best first.
fn rank(
    req: &CommonCauseRequest,
    units: &[UnitRow],
    missing: Vec<String>,
    pop: &Population,
    population: usize,
    affected: &BTreeMap<Key, HashSet<i64>>,
    counts: &HashMap<Key, u64>,
) -> CommonCause {
    let big_n = population as u64;
    let n = units.len() as u64;
    let mut factors: Vec<Factor> = affected
        .iter()
        .map(|(key, set)| {
            let a = set.len() as u64;
            // A complaint unit is in the population: the count is at least `a`.
            let k = counts.get(key).copied().unwrap_or(0).max(a);
            Factor {
                kind: key.0,
                id: key.1.clone(),
                affected: a,
                population_with: k,
                lift: fisher::lift(big_n, k, n, a),
                p_value: fisher::p_upper(big_n, k, n, a),
            }
        })
        .collect();
    let factors_tested = factors.len() as u64;
    factors.sort_by(|x, y| {
        x.p_value
            .total_cmp(&y.p_value)
            .then(y.lift.unwrap_or(0.0).total_cmp(&x.lift.unwrap_or(0.0)))
            .then(y.affected.cmp(&x.affected))
            .then(x.kind.cmp(y.kind))
            .then(x.id.cmp(&y.id))
    });
    factors.truncate(req.limit.unwrap_or(DEFAULT_LIMIT));
    CommonCause {
        units: n,
        missing,
        population: big_n,
        population_parts: pop.parts.clone(),
        population_from: pop.from.as_ref().map(sql::time_text),
        population_to: pop.to.as_ref().map(sql::time_text),
        factors,
        factors_tested,
    }
}

/// Every factor of the units `roots` (id, work order): factor → the roots having it, and the
/// lots met by their external id. Components: walked down the `assembled` edges.
pub(super) async fn factors_of(
    db: &Db,
    roots: &[(i64, Option<String>)],
) -> Result<(BTreeMap<Key, HashSet<i64>>, HashMap<String, i64>), QueryError> {
    let dialect = db.dialect();
    let root_ids: Vec<i64> = roots.iter().map(|(id, _)| *id).collect();
    let root_of = super::assembly_roots(db, &root_ids).await?;
    let closure: Vec<i64> = root_of.keys().copied().collect();

    // factor → complaint units having it
    let mut affected: BTreeMap<Key, HashSet<i64>> = BTreeMap::new();
    let mut lot_ids: HashMap<String, i64> = HashMap::new();
    for chunk in closure.chunks(dialect.max_id_list()) {
        let mut q = Sql::new("");
        let near = dialect.id_in(&mut q, "e.parent_id", chunk);
        q.push(&format!(
            "SELECT e.parent_id, l.id AS lot_id, l.ext_id, l.supplier, l.supplier_batch \
             FROM edges e JOIN items l ON l.id = e.child_id \
             WHERE {near} AND e.relation IN ('consumed', 'assembled') AND l.kind = 'lot'"
        ));
        for l in db.fetch_all::<LotRow>(q).await? {
            lot_ids.insert(l.ext_id.clone(), l.lot_id);
            for &r in root_of.get(&l.parent_id).into_iter().flatten() {
                let kind = if r == l.parent_id {
                    "lot"
                } else {
                    "component_lot"
                };
                affected
                    .entry((kind, l.ext_id.clone()))
                    .or_default()
                    .insert(r);
                if let Some(s) = &l.supplier {
                    affected
                        .entry(("supplier", s.clone()))
                        .or_default()
                        .insert(r);
                }
                if let Some(b) = &l.supplier_batch {
                    affected
                        .entry(("supplier_batch", b.clone()))
                        .or_default()
                        .insert(r);
                }
            }
        }
    }
    for (id, work_order) in roots {
        if let Some(wo) = work_order {
            affected
                .entry(("work_order", wo.clone()))
                .or_default()
                .insert(*id);
        }
    }
    for chunk in root_ids.chunks(dialect.max_id_list()) {
        let mut q = Sql::new("");
        let near = dialect.id_in(&mut q, "unit_id", chunk);
        q.push(&format!(
            "SELECT unit_id, station, equipment, operator, recipe, completed_at \
             FROM operations WHERE {near}"
        ));
        for o in db.fetch_all::<OpRow>(q).await? {
            for (kind, v) in [
                ("equipment", o.equipment),
                ("operator", o.operator),
                ("recipe", o.recipe),
                (
                    "station_hour",
                    Some(station_hour(&o.station, &o.completed_at)),
                ),
            ] {
                if let Some(v) = v {
                    affected.entry((kind, v)).or_default().insert(o.unit_id);
                }
            }
        }
    }

    Ok((affected, lot_ids))
}

/// `{station}@{YYYY-MM-DDTHH}` of a canonical completion time.
fn station_hour(station: &str, completed_at: &str) -> String {
    format!(
        "{station}@{}",
        completed_at.get(..13).unwrap_or(completed_at)
    )
}

/// Walks up from the origin lots: their consumers get the lot's factors, the consumers'
/// assembled ancestors (any depth) too — except the `lot` (direct) factor, which only direct
/// consumers have. Collects, per factor, the population units reached.
async fn material_reach(
    db: &Db,
    origin: &HashMap<i64, Vec<(Key, bool)>>,
    pop: &HashSet<i64>,
    with: &mut HashMap<Key, HashSet<i64>>,
) -> Result<(), QueryError> {
    let dialect = db.dialect();
    let lots: Vec<i64> = origin.keys().copied().collect();
    // unit → factor indices reaching it (direct, ancestor)
    let keys: Vec<(Key, bool)> = origin.values().flatten().cloned().collect();
    let mut idx_of_lot: HashMap<i64, Vec<usize>> = HashMap::new();
    {
        let mut i = 0;
        for (&lot, fs) in origin {
            for _ in fs {
                idx_of_lot.entry(lot).or_default().push(i);
                i += 1;
            }
        }
    }
    // Consumers of the lots (level 0).
    let mut reached: HashMap<i64, HashSet<usize>> = HashMap::new();
    let mut frontier: Vec<i64> = Vec::new();
    for chunk in lots.chunks(dialect.max_id_list()) {
        let mut q = Sql::new("");
        let near = dialect.id_in(&mut q, "e.child_id", chunk);
        q.push(&format!(
            "SELECT e.parent_id, e.child_id FROM edges e \
             WHERE {near} AND e.relation IN ('consumed', 'assembled')"
        ));
        for p in db.fetch_all::<PairRow>(q).await? {
            let set = reached.entry(p.parent_id).or_default();
            let before = set.len();
            for &i in idx_of_lot.get(&p.child_id).into_iter().flatten() {
                set.insert(i);
            }
            if set.len() > before {
                frontier.push(p.parent_id);
            }
        }
    }
    for (&u, set) in &reached {
        if pop.contains(&u) {
            // A direct consumer has the lot as its own `lot`, not as a component lot.
            for &i in set.iter().filter(|&&i| keys[i].0.0 != "component_lot") {
                with.entry(keys[i].0.clone()).or_default().insert(u);
            }
        }
    }
    // Ancestors: everything but the direct-only factors.
    let mut up: HashMap<i64, HashSet<usize>> = reached
        .into_iter()
        .map(|(u, s)| (u, s.into_iter().filter(|&i| !keys[i].1).collect()))
        .collect();
    frontier.sort_unstable();
    frontier.dedup();
    let mut done: HashMap<i64, HashSet<usize>> = HashMap::new();
    for _depth in 0..50 {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for chunk in frontier.chunks(dialect.max_id_list()) {
            let mut q = Sql::new("");
            let near = dialect.id_in(&mut q, "e.child_id", chunk);
            q.push(&format!(
                "SELECT e.parent_id, e.child_id FROM edges e \
                 WHERE {near} AND e.relation = 'assembled'"
            ));
            for p in db.fetch_all::<PairRow>(q).await? {
                let from: Vec<usize> = up
                    .get(&p.child_id)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                let set = done.entry(p.parent_id).or_default();
                let before = set.len();
                set.extend(from.iter().copied());
                if set.len() > before {
                    next.push(p.parent_id);
                    if pop.contains(&p.parent_id) {
                        for &i in &from {
                            let key = &keys[i].0;
                            // An ancestor has the lot as a component lot.
                            let key = if key.0 == "lot" {
                                ("component_lot", key.1.clone())
                            } else {
                                key.clone()
                            };
                            with.entry(key).or_default().insert(p.parent_id);
                        }
                    }
                }
            }
        }
        for &p in &next {
            if let Some(s) = done.get(&p) {
                up.entry(p).or_default().extend(s.iter().copied());
            }
        }
        next.sort_unstable();
        next.dedup();
        frontier = next;
    }
    Ok(())
}
