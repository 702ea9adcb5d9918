//! The supplier's part of a lot's history: events captured from suppliers' EPCIS documents
//! (`POST /api/v1/epcis/capture`) that name one of our lots, by the matching rule of
//! `epcis::capture` (shared lot keys). Shown in the backward trace, the unit report and the lot
//! page.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use utoipa::ToSchema;

use super::{ItemKind, QueryError, TraceGraph, UnitReport};
use crate::epcis::Ids;
use crate::epcis::capture::our_lot_keys;
use crate::store::Db;
use crate::store::sql::{self, Sql};

/// One supplier event linked to one of our lots.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct SupplierEvent {
    /// Our lot it is linked to.
    pub lot: String,
    /// The identifier in the supplier's event that names the lot (an LGTIN, a lot URI, an EPC).
    pub matched: String,
    /// Which of the lot's keys it met: `uri` (the lot's own URI / LGTIN), `lot_number` (the
    /// LGTIN's lot number is our lot id), `supplier_batch` (… is the lot's supplier batch).
    pub matched_by: String,
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// ObjectEvent, AggregationEvent, TransformationEvent, AssociationEvent, TransactionEvent.
    pub event_type: String,
    /// UTC.
    pub event_time: String,
    pub action: Option<String>,
    /// Bare CBV value (`commissioning`, `shipping`) when it was one.
    pub biz_step: Option<String>,
    pub disposition: Option<String>,
    pub read_point: Option<String>,
    pub biz_location: Option<String>,
    /// The supplier party (`sourceList`), else the document's sender.
    pub source: Option<String>,
    pub captured_at: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    key: String,
    named: String,
    event_id: String,
    event_type: String,
    #[sqlx(try_from = "sql::Time")]
    event_time: String,
    action: Option<String>,
    biz_step: Option<String>,
    disposition: Option<String>,
    read_point: Option<String>,
    biz_location: Option<String>,
    source: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    captured_at: String,
}

/// Supplier events of these lots (by id), oldest first; each (lot, event) once.
pub async fn for_lots(
    db: &Db,
    ids: &Ids,
    lots: &[String],
) -> Result<Vec<SupplierEvent>, QueryError> {
    if lots.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(sqlx::FromRow)]
    struct Lot {
        ext_id: String,
        supplier_batch: Option<String>,
    }
    // key → (lot, how)
    let mut by_key: HashMap<String, Vec<(String, &'static str)>> = HashMap::new();
    for chunk in lots.chunks(200) {
        let mut q = Sql::new("");
        let list: Vec<String> = chunk.iter().map(|l| q.param(l.as_str())).collect();
        q.push(&format!(
            "SELECT ext_id, supplier_batch FROM items WHERE kind = 'lot' AND ext_id IN ({})",
            list.join(", ")
        ));
        let rows: Vec<Lot> = db.fetch_all(q).await?;
        for r in rows {
            for (k, how) in our_lot_keys(ids, &r.ext_id, r.supplier_batch.as_deref()) {
                by_key.entry(k).or_default().push((r.ext_id.clone(), how));
            }
        }
    }
    let keys: Vec<&String> = by_key.keys().collect();
    let mut out = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for chunk in keys.chunks(300) {
        let mut q = Sql::new("");
        let list: Vec<String> = chunk.iter().map(|k| q.param(k.as_str())).collect();
        q.push(&format!(
            "SELECT k.key, k.named, c.event_id, c.event_type, c.event_time, c.action, c.biz_step, \
             c.disposition, c.read_point, c.biz_location, c.source, c.captured_at \
             FROM epcis_captured_keys k JOIN epcis_captured c ON c.event_id = k.event_id \
             WHERE k.key IN ({})",
            list.join(", ")
        ));
        let rows: Vec<Row> = db.fetch_all(q).await?;
        for r in rows {
            for (lot, how) in by_key.get(&r.key).map(Vec::as_slice).unwrap_or_default() {
                if !seen.insert((lot.clone(), r.event_id.clone())) {
                    continue;
                }
                out.push(SupplierEvent {
                    lot: lot.clone(),
                    matched: r.named.clone(),
                    matched_by: (*how).to_owned(),
                    event_id: r.event_id.clone(),
                    event_type: r.event_type.clone(),
                    event_time: r.event_time.clone(),
                    action: r.action.clone(),
                    biz_step: r.biz_step.clone(),
                    disposition: r.disposition.clone(),
                    read_point: r.read_point.clone(),
                    biz_location: r.biz_location.clone(),
                    source: r.source.clone(),
                    captured_at: r.captured_at.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.event_time, &a.lot, &a.event_id).cmp(&(&b.event_time, &b.lot, &b.event_id))
    });
    Ok(out)
}

/// Fills `supplier_events` of a backward trace: the supplier events of every lot it reached
/// (the root included). A forward trace is left as it is (a lot's history lies behind it).
pub async fn fill_graph(db: &Db, ids: &Ids, g: &mut TraceGraph) -> Result<(), QueryError> {
    if g.direction != super::Direction::Backward {
        return Ok(());
    }
    let lots: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| n.kind == ItemKind::Lot)
        .map(|n| n.id.clone())
        .collect();
    g.supplier_events = for_lots(db, ids, &lots).await?;
    Ok(())
}

/// Fills `supplier_history` of a unit report: the supplier events of the lots in it, its own
/// and its sub-assemblies'.
pub async fn fill_report(db: &Db, ids: &Ids, r: &mut UnitReport) -> Result<(), QueryError> {
    let mut lots: Vec<String> = r
        .materials
        .iter()
        .map(|m| m.lot.clone())
        .chain(r.component_materials.iter().map(|m| m.lot.clone()))
        .collect();
    lots.sort();
    lots.dedup();
    r.supplier_history = for_lots(db, ids, &lots).await?;
    Ok(())
}
