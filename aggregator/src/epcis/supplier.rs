//! Storing a captured supplier document (tables of migration 0071) and the links it makes now.
//! Reading a lot's supplier events is the query side's (`trace::supplier`).

use serde::Serialize;
use utoipa::ToSchema;

use super::Ids;
use super::capture::{CapturedDocument, candidate_lot_ids, our_lot_keys};
use crate::store::Db;
use crate::store::sql::{Bind, Sql};

/// Answer of `POST /api/v1/epcis/capture`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct CaptureReport {
    /// Events in the document.
    pub events: usize,
    /// Events stored now (new).
    pub captured: usize,
    /// Events stored before (same eventID / content): left as they were.
    pub duplicates: usize,
    /// Each event with the lots of ours it is linked to now (empty: none yet — it links when a
    /// lot it names is received).
    pub links: Vec<CaptureLink>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct CaptureLink {
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// False when the event had been captured before.
    pub new: bool,
    pub lots: Vec<String>,
}

/// Stores every event of `doc` once (one transaction) and reports the lots each links to.
pub async fn store(db: &Db, ids: &Ids, doc: &CapturedDocument) -> sqlx::Result<CaptureReport> {
    let mut qs: Vec<Sql<'_>> = Vec::with_capacity(doc.events.len() * 3);
    for e in &doc.events {
        qs.push(
            Sql::new(
                "INSERT INTO epcis_captured (event_id, event_type, event_time, action, biz_step, \
                 disposition, read_point, biz_location, source, sender, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&e.event_id)
            .bind(&e.event_type)
            .bind(e.event_time)
            .bind(&e.action)
            .bind(&e.biz_step)
            .bind(&e.disposition)
            .bind(&e.read_point)
            .bind(&e.biz_location)
            .bind(&e.source)
            .bind(&doc.sender)
            .bind(Bind::Json(&e.body)),
        );
    }
    let n_events = qs.len();
    for e in &doc.events {
        for (k, named) in &e.keys {
            qs.push(
                Sql::new(
                    "INSERT INTO epcis_captured_keys (key, event_id, named) VALUES ($1, $2, $3) \
                     ON CONFLICT (key, event_id) DO NOTHING",
                )
                .bind(k)
                .bind(&e.event_id)
                .bind(named),
            );
        }
    }
    let counts = db.execute_each(qs).await?;
    let mut links = Vec::with_capacity(doc.events.len());
    let mut captured = 0;
    for (e, n) in doc.events.iter().zip(&counts[..n_events]) {
        let new = *n > 0;
        captured += usize::from(new);
        let keys: Vec<String> = e.keys.iter().map(|(k, _)| k.clone()).collect();
        links.push(CaptureLink {
            event_id: e.event_id.clone(),
            new,
            lots: linked_lots(db, ids, &keys).await?,
        });
    }
    Ok(CaptureReport {
        events: doc.events.len(),
        captured,
        duplicates: doc.events.len() - captured,
        links,
    })
}

/// Our lots that share a key with `keys`, sorted.
async fn linked_lots(db: &Db, ids: &Ids, keys: &[String]) -> sqlx::Result<Vec<String>> {
    #[derive(sqlx::FromRow)]
    struct Lot {
        ext_id: String,
        supplier_batch: Option<String>,
    }
    let cands = candidate_lot_ids(keys, ids);
    let mut out: Vec<String> = Vec::new();
    for chunk in cands.chunks(200) {
        let mut q = Sql::new("");
        let list: Vec<String> = chunk.iter().map(|c| q.param(c.as_str())).collect();
        let list = list.join(", ");
        q.push(&format!(
            "SELECT ext_id, supplier_batch FROM items WHERE kind = 'lot' \
             AND (ext_id IN ({list}) OR supplier_batch IN ({list}))"
        ));
        let rows: Vec<Lot> = db.fetch_all(q).await?;
        for r in rows {
            let linked = our_lot_keys(ids, &r.ext_id, r.supplier_batch.as_deref())
                .iter()
                .any(|(k, _)| keys.contains(k));
            if linked && !out.contains(&r.ext_id) {
                out.push(r.ext_id);
            }
        }
    }
    out.sort();
    Ok(out)
}
