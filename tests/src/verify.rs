//! The aggregator's answers held against the truth: unit reports, backward traces and recalls,
//! differences listed one per line (empty = identical), plus the event log's own checks.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use serde_json::Value;
use threadline_simulators::plant::Truth;
use threadline_simulators::plant::catalog::PART_SUB;

use crate::api::Api;
use crate::truth::{expected_backward, expected_shipment_backward};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Differences between the API's unit report and the truth of one unit (empty = identical).
pub fn diff_unit_report(truth: &Truth, serial: &str, report: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let Some(u) = truth.units.get(serial) else {
        return vec![format!("{serial}: not in the truth")];
    };
    for (field, want) in [
        ("serial", &u.serial),
        ("part", &u.part),
        ("work_order", &u.work_order),
        ("line", &u.line),
    ] {
        let got = s(&report[field]);
        if &got != want {
            d.push(format!("{serial}: {field} = {got:?}, truth {want:?}"));
        }
    }
    let got: BTreeSet<(String, String, String, String)> = report["materials"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        s(&m["lot"]),
                        s(&m["part"]),
                        s(&m["supplier"]),
                        s(&m["station"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeSet<(String, String, String, String)> = u
        .materials
        .iter()
        .map(|m| {
            (
                m.lot.clone(),
                m.part.clone(),
                m.supplier.clone(),
                m.station.clone(),
            )
        })
        .collect();
    if got != want {
        d.push(format!("{serial}: materials {got:?}, truth {want:?}"));
    }
    let got: BTreeSet<(String, String)> = report["components"]
        .as_array()
        .map(|a| a.iter().map(|c| (s(&c["serial"]), s(&c["part"]))).collect())
        .unwrap_or_default();
    let want: BTreeSet<(String, String)> = u
        .components
        .iter()
        .map(|c| (c.serial.clone(), c.part.clone()))
        .collect();
    if got != want {
        d.push(format!("{serial}: components {got:?}, truth {want:?}"));
    }
    // Operations in the order they happened.
    let ops: Vec<&Value> = report["operations"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if ops.len() != u.operations.len() {
        d.push(format!(
            "{serial}: {} operations, truth {}: {:?}",
            ops.len(),
            u.operations.len(),
            ops.iter().map(|o| s(&o["station"])).collect::<Vec<_>>()
        ));
    } else {
        for (i, (got, want)) in ops.iter().zip(&u.operations).enumerate() {
            for (field, w) in [
                ("station", want.station.as_str()),
                ("operation", want.operation.as_str()),
                ("equipment", want.equipment.as_str()),
                ("operator", want.operator.as_str()),
                ("recipe", want.recipe.as_str()),
                ("result", want.result.as_str()),
            ] {
                if s(&got[field]) != w {
                    d.push(format!(
                        "{serial}: operation {i} {field} = {:?}, truth {w:?}",
                        s(&got[field])
                    ));
                }
            }
            let defect = s(&got["defect_code"]);
            let want_defect = want.defect_code.clone().unwrap_or_default();
            // A PLC reports "no defect" as 0.
            if defect != want_defect && !(want_defect.is_empty() && defect == "0") {
                d.push(format!(
                    "{serial}: operation {i} defect_code = {defect:?}, truth {want_defect:?}"
                ));
            }
            let params: BTreeMap<String, f64> = got["parameters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((s(&p["name"]), p["value"].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            for p in &want.parameters {
                match params.get(&p.name) {
                    Some(v) if close(*v, p.value) => {}
                    other => d.push(format!(
                        "{serial}: operation {i} parameter {} = {other:?}, truth {}",
                        p.name, p.value
                    )),
                }
            }
        }
    }
    let got: BTreeSet<(String, String)> = report["containers"]
        .as_array()
        .map(|a| a.iter().map(|c| (s(&c["id"]), s(&c["level"]))).collect())
        .unwrap_or_default();
    let mut want = BTreeSet::new();
    if u.part != PART_SUB {
        if let Some(c) = &u.case {
            want.insert((c.clone(), "case".to_owned()));
        }
        if let Some(p) = &u.pallet {
            want.insert((p.clone(), "pallet".to_owned()));
        }
        if got != want {
            d.push(format!("{serial}: containers {got:?}, truth {want:?}"));
        }
        let ship = (
            s(&report["shipment"]["id"]),
            s(&report["shipment"]["customer"]),
        );
        let want_ship = (
            u.shipment.clone().unwrap_or_default(),
            u.customer.clone().unwrap_or_default(),
        );
        if ship != want_ship {
            d.push(format!("{serial}: shipment {ship:?}, truth {want_ship:?}"));
        }
    }
    d
}

/// The unit, lot and container nodes (kind, id) of a trace answer.
pub fn trace_nodes(trace: &Value) -> BTreeSet<(String, String)> {
    trace["nodes"]
        .as_array()
        .map(|a| a.iter().map(|n| (s(&n["kind"]), s(&n["id"]))).collect())
        .unwrap_or_default()
}

/// Differences between a recall answer and the truth of one lot.
pub fn diff_recall(truth: &Truth, lot: &str, recall: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let Some(l) = truth.lots.get(lot) else {
        return vec![format!("{lot}: not in the truth")];
    };
    // Sorted ids of a JSON array, each element's id taken by `id`.
    let list = |v: &Value, id: fn(&Value) -> String| -> Vec<String> {
        let mut x: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(id).collect())
            .unwrap_or_default();
        x.sort();
        x
    };
    for (what, got, want) in [
        ("units", list(&recall["units"], s), &l.all_units),
        ("containers", list(&recall["containers"], s), &l.containers),
        (
            "shipments",
            list(&recall["shipments"], |x| s(&x["id"])),
            &l.shipments,
        ),
        ("customers", list(&recall["customers"], s), &l.customers),
    ] {
        if &got != want {
            d.push(format!("{lot}: recall {what} {got:?}, truth {want:?}"));
        }
    }
    d
}

/// Checks every unit, lot and shipment of the truth against the API; returns every difference.
pub async fn verify_all(api: &Api, truth: &Truth) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    for serial in truth.units.keys() {
        let (st, report) = api.get(&format!("/api/v1/units/{serial}")).await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/units/{serial}: {st} {report}"));
            continue;
        }
        diffs.extend(diff_unit_report(truth, serial, &report));
        let (st, trace) = api
            .get(&format!("/api/v1/trace/unit/{serial}?direction=backward"))
            .await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/trace/unit/{serial}: {st} {trace}"));
            continue;
        }
        let got: BTreeSet<_> = trace_nodes(&trace)
            .into_iter()
            .filter(|(k, _)| k == "unit" || k == "lot")
            .collect();
        let want = expected_backward(truth, serial);
        if got != want {
            diffs.push(format!("{serial}: backward trace {got:?}, truth {want:?}"));
        }
    }
    for lot in truth.lots.keys() {
        let (st, recall) = api.get(&format!("/api/v1/lots/{lot}/recall")).await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/lots/{lot}/recall: {st} {recall}"));
            continue;
        }
        diffs.extend(diff_recall(truth, lot, &recall));
    }
    for sh in truth.shipments.keys() {
        let (st, trace) = api
            .get(&format!("/api/v1/trace/shipment/{sh}?direction=backward"))
            .await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/trace/shipment/{sh}: {st} {trace}"));
            continue;
        }
        let got: BTreeSet<_> = trace_nodes(&trace)
            .into_iter()
            .filter(|(k, _)| k != "supplier")
            .collect();
        let want = expected_shipment_backward(truth, sh);
        if got != want {
            let missing: Vec<_> = want.difference(&got).collect();
            let extra: Vec<_> = got.difference(&want).collect();
            diffs.push(format!(
                "{sh}: shipment backward trace missing {missing:?}, extra {extra:?}"
            ));
        }
    }
    Ok(diffs)
}

/// The `scan_rejected` events of the event log (raw codes), through `GET /api/v1/events`.
pub async fn rejected_scans(api: &Api) -> Result<BTreeSet<String>> {
    Ok(scan_rejections(api)
        .await?
        .into_iter()
        .map(|(_, raw, _)| raw)
        .collect())
}

/// Every `scan_rejected` event of the aggregator as `(station, raw, reason)`, in event order.
pub async fn scan_rejections(api: &Api) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let (st, v) = api
            .get(&format!("/api/v1/events?after_id={after}&limit=1000"))
            .await?;
        if st != 200 {
            bail!("GET /api/v1/events: {st} {v}");
        }
        for e in v["events"].as_array().into_iter().flatten() {
            if s(&e["type"]) == "scan_rejected" {
                let r = &e["record"];
                out.push((s(&r["station"]), s(&r["raw"]), s(&r["reason"])));
            }
        }
        match v["next_after"].as_i64() {
            Some(n) if n > after => after = n,
            _ => break,
        }
    }
    Ok(out)
}

/// `GET /api/v1/audit/verify` says every hash chain is intact.
pub async fn audit_ok(api: &Api) -> Result<()> {
    let (st, v) = api.get("/api/v1/audit/verify").await?;
    if st != 200 || v["ok"] != Value::Bool(true) {
        bail!("audit verify: {st} {v}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_simulators::plant::{Plant, PlantParams};

    #[test]
    fn expectations_follow_the_truth() {
        let mut p = Plant::new(PlantParams::default());
        p.plan_batch(10);
        let t = p.truth();
        let sn = t.finished_units().next().unwrap();
        let want = expected_backward(t, &sn.serial);
        // The unit, its sub-assembly, a screw, a bearing and a housing lot.
        assert_eq!(want.len(), 5, "{want:?}");
        let sh = t.shipments.keys().next().unwrap();
        let w = expected_shipment_backward(t, sh);
        assert!(w.contains(&("unit".to_owned(), sn.serial.clone())));
        // A report built from the truth itself has no differences.
        let report = serde_json::json!({
            "serial": sn.serial, "part": sn.part, "work_order": sn.work_order, "line": sn.line,
            "materials": sn.materials.iter().map(|m| serde_json::json!({"lot": m.lot, "part": m.part, "supplier": m.supplier, "station": m.station})).collect::<Vec<_>>(),
            "components": sn.components.iter().map(|c| serde_json::json!({"serial": c.serial, "part": c.part})).collect::<Vec<_>>(),
            "operations": sn.operations.iter().map(|o| serde_json::json!({"station": o.station, "operation": o.operation, "equipment": o.equipment, "operator": o.operator, "recipe": o.recipe, "result": o.result, "defect_code": o.defect_code,
                "parameters": o.parameters.iter().map(|p| serde_json::json!({"name": p.name, "value": p.value})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "containers": [{"id": sn.case, "level": "case"}, {"id": sn.pallet, "level": "pallet"}],
            "shipment": {"id": sn.shipment, "customer": sn.customer},
        });
        assert_eq!(
            diff_unit_report(t, &sn.serial, &report),
            Vec::<String>::new()
        );
        let mut broken = report.clone();
        broken["operations"][0]["operator"] = Value::String("OP9999".into());
        assert_eq!(diff_unit_report(t, &sn.serial, &broken).len(), 1);
    }

    #[test]
    fn a_recall_built_from_the_truth_has_no_differences() {
        let mut p = Plant::new(PlantParams::default());
        p.plan_batch(10);
        let t = p.truth();
        let (lot, l) = t.lots.iter().next().unwrap();
        assert!(!l.customers.is_empty(), "{lot} reached no customer");
        let recall = serde_json::json!({
            "units": l.all_units, "containers": l.containers, "customers": l.customers,
            "shipments": l.shipments.iter().map(|s| serde_json::json!({"id": s})).collect::<Vec<_>>(),
        });
        assert_eq!(diff_recall(t, lot, &recall), Vec::<String>::new());
        let mut broken = recall.clone();
        broken["customers"] = serde_json::json!([]);
        assert_eq!(
            diff_recall(t, lot, &broken),
            vec![format!(
                "{lot}: recall customers [], truth {:?}",
                l.customers
            )]
        );
    }
}
