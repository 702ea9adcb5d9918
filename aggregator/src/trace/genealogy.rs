//! Transitive genealogy of one item, backward (what went into it) or forward (where it went).
//!
//! Iterative breadth-first search with one batched query per level (`= ANY($1)` on PostgreSQL,
//! `IN (…)` chunks on SQLite: `Dialect::id_in`) rather than a recursive CTE: the BFS stops exactly at `max_nodes`
//! and `max_depth`, reports `truncated`, keeps the visited set in memory (rework and returns
//! create loops) and returns the edges with their validity, which a CTE would have to carry
//! along or re-query. Each level reads at most `max_nodes + 1` edges, so memory stays bounded
//! however wide the graph is. On the 1 M-unit benchmark a backward trace is a handful of index
//! lookups (see docs/query-plans.md).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ItemKind, QueryError, ts_opt};
use crate::store::Db;
use crate::store::sql::{self, Sql};

/// Which way to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Parent → child: components, lots, suppliers.
    Backward,
    /// Child → parent: assemblies, containers, shipments.
    Forward,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "backward" => Some(Direction::Backward),
            "forward" => Some(Direction::Forward),
            _ => None,
        }
    }
}

/// A trace request; see the defaults in [`TraceRequest::new`].
#[derive(Debug, Clone)]
pub struct TraceRequest {
    pub kind: ItemKind,
    pub id: String,
    pub direction: Direction,
    /// Levels below (or above) the root to follow.
    pub max_depth: u32,
    /// Nodes to return at most, the root included.
    pub max_nodes: u32,
    /// Only edges valid at this instant (valid_from ≤ t < valid_to).
    pub as_of: Option<DateTime<Utc>>,
    /// Follow the edges of the units reached (their components, or what they went into); false:
    /// units are leaves (a container's contents down to the units packed).
    pub expand_units: bool,
}

pub const DEFAULT_MAX_DEPTH: u32 = 20;
pub const DEFAULT_MAX_NODES: u32 = 10_000;
/// Upper bound a caller may ask for; beyond it use recall (set-based) instead.
pub const LIMIT_MAX_NODES: u32 = 100_000;

impl TraceRequest {
    pub fn new(kind: ItemKind, id: impl Into<String>, direction: Direction) -> TraceRequest {
        TraceRequest {
            kind,
            id: id.into(),
            direction,
            max_depth: DEFAULT_MAX_DEPTH,
            max_nodes: DEFAULT_MAX_NODES,
            as_of: None,
            expand_units: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct TraceNode {
    pub kind: ItemKind,
    pub id: String,
    pub part: Option<String>,
    pub placeholder: bool,
    pub supplier: Option<String>,
    pub level: Option<String>,
    pub customer: Option<String>,
    /// Distance from the root in edges.
    pub depth: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct TraceEdge {
    pub parent: String,
    pub parent_kind: ItemKind,
    pub child: String,
    pub child_kind: ItemKind,
    pub relation: String,
    pub qty: Option<f64>,
    pub station: Option<String>,
    /// When the link was made (valid_from).
    pub at: String,
    pub valid_to: Option<String>,
    /// Disassembled / unpacked since.
    pub closed: bool,
    pub closed_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct TraceGraph {
    pub root: TraceNode,
    pub direction: Direction,
    pub as_of: Option<String>,
    pub nodes: Vec<TraceNode>,
    pub edges: Vec<TraceEdge>,
    /// More nodes or levels exist beyond max_nodes / max_depth.
    pub truncated: bool,
    /// Backward traces: the suppliers' part of the history — events captured from their EPCIS
    /// documents that name a lot of the graph (see `docs/epcis.md`, capture), oldest first.
    pub supplier_events: Vec<super::supplier::SupplierEvent>,
}

/// An edge leaving the frontier, with its far end's item.
#[derive(sqlx::FromRow)]
struct RawEdge {
    #[sqlx(rename = "id")]
    edge_id: i64,
    parent_id: i64,
    child_id: i64,
    relation: String,
    qty: Option<f64>,
    station: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    valid_from: String,
    #[sqlx(try_from = "sql::OptTime")]
    valid_to: Option<String>,
    closed_reason: Option<String>,
    #[sqlx(flatten)]
    far: ItemCols,
}

/// The item columns of a node as read from `items`.
#[derive(sqlx::FromRow)]
struct ItemCols {
    kind: String,
    ext_id: String,
    part: Option<String>,
    placeholder: bool,
    supplier: Option<String>,
    level: Option<String>,
    customer: Option<String>,
}

impl ItemCols {
    fn node(&self, depth: u32) -> Result<TraceNode, QueryError> {
        let kind = ItemKind::parse(&self.kind)
            .ok_or_else(|| QueryError::Data(format!("unknown item kind {:?}", self.kind)))?;
        Ok(TraceNode {
            kind,
            id: self.ext_id.clone(),
            part: self.part.clone(),
            placeholder: self.placeholder,
            supplier: self.supplier.clone(),
            level: self.level.clone(),
            customer: self.customer.clone(),
            depth,
        })
    }
}

/// Walks the genealogy of `req.kind`/`req.id`.
pub async fn trace(db: &Db, req: &TraceRequest) -> Result<TraceGraph, QueryError> {
    #[derive(sqlx::FromRow)]
    struct Root {
        id: i64,
        #[sqlx(flatten)]
        cols: ItemCols,
    }
    let root_row: Option<Root> = db
        .fetch_optional(
            Sql::new(
                "SELECT id, kind, ext_id, part, placeholder, supplier, level, customer \
                 FROM items WHERE kind = $1 AND ext_id = $2",
            )
            .bind(req.kind.as_str())
            .bind(&req.id),
        )
        .await?;
    let root_row = match root_row {
        Some(r) => Some((r.id, r.cols.node(0)?)),
        None => None,
    };
    let Some((root_id, root)) = root_row else {
        return Err(QueryError::NotFound {
            what: req.kind.as_str(),
            id: req.id.clone(),
        });
    };

    let max_nodes = req.max_nodes.max(1) as usize;
    // internal id → index into `nodes`
    let mut visited: HashMap<i64, usize> = HashMap::new();
    visited.insert(root_id, 0);
    let mut nodes = vec![root.clone()];
    let mut edges: Vec<TraceEdge> = Vec::new();
    let mut seen_edges: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut truncated = false;
    let mut frontier = vec![root_id];
    let mut depth = 0u32;

    while !frontier.is_empty() {
        if depth >= req.max_depth {
            // Something beyond the depth bound? One cheap probe decides `truncated`.
            let more = fetch_level(db, &frontier, req.direction, req.as_of, 1).await?;
            truncated |= !more.is_empty();
            break;
        }
        // Read at most what could still fit, plus one to detect overflow.
        let budget = max_nodes + 1;
        let level = fetch_level(db, &frontier, req.direction, req.as_of, budget).await?;
        if level.len() >= budget {
            truncated = true;
        }
        let mut next = Vec::new();
        for e in level {
            if !seen_edges.insert(e.edge_id) {
                continue;
            }
            let (near, far) = match req.direction {
                Direction::Backward => (e.parent_id, e.child_id),
                Direction::Forward => (e.child_id, e.parent_id),
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = visited.entry(far) {
                if nodes.len() >= max_nodes {
                    truncated = true;
                    continue;
                }
                slot.insert(nodes.len());
                let node = e.far.node(depth + 1)?;
                if req.expand_units || node.kind != ItemKind::Unit {
                    next.push(far);
                }
                nodes.push(node);
            }
            let (Some(&ni), Some(&fi)) = (visited.get(&near), visited.get(&far)) else {
                continue;
            };
            let (pi, ci) = match req.direction {
                Direction::Backward => (ni, fi),
                Direction::Forward => (fi, ni),
            };
            edges.push(TraceEdge {
                parent: nodes[pi].id.clone(),
                parent_kind: nodes[pi].kind,
                child: nodes[ci].id.clone(),
                child_kind: nodes[ci].kind,
                relation: e.relation,
                qty: e.qty,
                station: e.station,
                at: e.valid_from,
                closed: e.valid_to.is_some(),
                valid_to: e.valid_to,
                closed_reason: e.closed_reason,
            });
        }
        frontier = next;
        depth += 1;
    }

    Ok(TraceGraph {
        root,
        direction: req.direction,
        as_of: ts_opt(req.as_of),
        nodes,
        edges,
        truncated,
        supplier_events: Vec::new(),
    })
}

/// The edges leaving `frontier` in `direction`, with the far end's item, at most `limit` rows.
async fn fetch_level(
    db: &Db,
    frontier: &[i64],
    direction: Direction,
    as_of: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<Vec<RawEdge>, QueryError> {
    let (near_col, far_col) = match direction {
        Direction::Backward => ("parent_id", "child_id"),
        Direction::Forward => ("child_id", "parent_id"),
    };
    let dialect = db.dialect();
    let mut out = Vec::new();
    for chunk in frontier.chunks(dialect.max_id_list()) {
        if out.len() >= limit {
            break;
        }
        let mut q = Sql::new("");
        let near = dialect.id_in(&mut q, &format!("e.{near_col}"), chunk);
        let as_of_clause = match as_of {
            Some(t) => {
                let t = q.param(t);
                format!(" AND e.valid_from <= {t} AND (e.valid_to IS NULL OR e.valid_to > {t})")
            }
            None => String::new(),
        };
        q.push(&format!(
            "SELECT e.id, e.parent_id, e.child_id, e.relation, e.qty, e.station, e.valid_from, \
             e.valid_to, e.closed_reason, \
             i.kind, i.ext_id, i.part, i.placeholder, i.supplier, i.level, i.customer \
             FROM edges e JOIN items i ON i.id = e.{far_col} \
             WHERE {near}{as_of_clause} ORDER BY e.id LIMIT {}",
            limit - out.len()
        ));
        out.extend(db.fetch_all::<RawEdge>(q).await?);
    }
    Ok(out)
}
