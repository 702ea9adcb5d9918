//! The plant simulator's ground truth: reading it, posting its master data as an ERP would, and
//! what a trace must reach according to it.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use threadline_simulators::plant::Truth;

use crate::api::Api;

/// Reads the truth file the plant simulator wrote.
pub fn read_truth(path: &Path) -> Result<Truth> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Posts the ERP / WMS master data of the truth (lots with suppliers, work orders with parts,
/// shipments with customers), as an ERP would.
pub async fn post_master_data(api: &Api, truth: &Truth) -> Result<()> {
    for l in truth.lots.values() {
        let (st, body) = api
            .post(
                "/api/v1/lots",
                &serde_json::json!({"lot": l.lot, "part": l.part, "supplier": l.supplier,
                    "supplier_batch": l.supplier_batch, "qty": l.qty}),
            )
            .await?;
        if !(200..300).contains(&st) {
            bail!("POST /api/v1/lots {}: {st} {body}", l.lot);
        }
    }
    for w in truth.work_orders.values() {
        let (st, body) = api
            .post(
                "/api/v1/work-orders",
                &serde_json::json!({"id": w.id, "part": w.part, "line": w.line}),
            )
            .await?;
        if !(200..300).contains(&st) {
            bail!("POST /api/v1/work-orders {}: {st} {body}", w.id);
        }
    }
    for s in truth.shipments.values() {
        let (st, body) = api
            .post(
                "/api/v1/shipments",
                &serde_json::json!({"id": s.id, "customer": s.customer}),
            )
            .await?;
        if !(200..300).contains(&st) {
            bail!("POST /api/v1/shipments {}: {st} {body}", s.id);
        }
    }
    Ok(())
}

/// What a backward trace of `serial` must reach: the unit, its components (every level) and
/// every lot they consumed.
pub fn expected_backward(truth: &Truth, serial: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![serial.to_owned()];
    while let Some(u) = stack.pop() {
        if let Some(t) = truth.units.get(&u) {
            for m in &t.materials {
                out.insert(("lot".to_owned(), m.lot.clone()));
            }
            for c in &t.components {
                stack.push(c.serial.clone());
            }
        }
        out.insert(("unit".to_owned(), u));
    }
    out
}

/// What a backward trace of a shipment must reach: its pallets and cases, their units with
/// everything those consumed.
pub fn expected_shipment_backward(truth: &Truth, shipment: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    out.insert(("shipment".to_owned(), shipment.to_owned()));
    if let Some(sh) = truth.shipments.get(shipment) {
        for p in &sh.pallets {
            out.insert(("container".to_owned(), p.clone()));
            if let Some(pc) = truth.containers.get(p) {
                for c in &pc.children {
                    out.insert(("container".to_owned(), c.clone()));
                }
            }
        }
        for u in &sh.units {
            out.extend(expected_backward(truth, u));
        }
    }
    out
}
