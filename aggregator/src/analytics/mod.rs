//! Quality analytics: common-cause analysis, SPC, supplier scorecard, first-pass yield.
//!
//! The statistics are pure and unit-tested ([`fisher`], the chart and rule functions of
//! [`spc`]); the queries read the genealogy and operations tables on both backends with the
//! store's shared SQL.

pub mod common_cause;
pub mod factor_index;
pub mod fisher;
pub mod quality;
pub mod spc;

pub use common_cause::{CommonCause, CommonCauseRequest, Factor, PopulationSpec, common_cause};
pub use quality::{Scorecard, YieldBy, YieldReport, scorecard, yield_by};
pub use spc::{ChartKind, Spc, SpcPoint, SpcRequest, spc};

use std::collections::{HashMap, HashSet};

use crate::store::Db;
use crate::store::sql::Sql;

#[derive(sqlx::FromRow)]
struct AssemblyEdge {
    parent_id: i64,
    child_id: i64,
}

/// Every unit of the assemblies of `roots` (down the `assembled` edges, any depth, at most 50
/// levels), each with the roots it went into; a root maps to itself.
pub(crate) async fn assembly_roots(db: &Db, roots: &[i64]) -> sqlx::Result<HashMap<i64, Vec<i64>>> {
    let dialect = db.dialect();
    let mut root_of: HashMap<i64, Vec<i64>> = roots.iter().map(|&r| (r, vec![r])).collect();
    let mut seen: HashSet<(i64, i64)> = roots.iter().map(|&r| (r, r)).collect();
    let mut frontier: Vec<i64> = roots.to_vec();
    for _depth in 0..50 {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for chunk in frontier.chunks(dialect.max_id_list()) {
            let mut q = Sql::new("");
            let near = dialect.id_in(&mut q, "e.parent_id", chunk);
            q.push(&format!(
                "SELECT e.parent_id, e.child_id FROM edges e JOIN items c ON c.id = e.child_id \
                 WHERE {near} AND e.relation = 'assembled' AND c.kind = 'unit'"
            ));
            for p in db.fetch_all::<AssemblyEdge>(q).await? {
                for r in root_of.get(&p.parent_id).cloned().unwrap_or_default() {
                    if seen.insert((p.child_id, r)) {
                        root_of.entry(p.child_id).or_default().push(r);
                        next.push(p.child_id);
                    }
                }
            }
        }
        next.sort_unstable();
        next.dedup();
        frontier = next;
    }
    Ok(root_of)
}
