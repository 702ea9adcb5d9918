//! Projections: what the genealogy tables learn from one new trace event. Pure — no database,
//! no I/O — so the rules are tested here on records alone; the backends only write the rows.
//!
//! Rules (see also `docs/architecture.md`, "Projections"): an id seen before its master data is
//! a *placeholder* item; `lot_received`, `unit_started`, `packed` (the container) and `shipped`
//! with a customer define an item. `operation_completed` → an operation (`out_of_spec` = any
//! parameter not `Parameter::in_spec`), its parameters and materials, and one `consumed` edge
//! unit → lot per material. `assembled` / `packed` / `shipped` → edges; `disassembled` /
//! `unpacked` → closes of the oldest open matching edge. `material_loaded` only names its lot;
//! readings and `scan_rejected` project nothing.

use std::collections::BTreeMap;

use threadline_shared::event::{ItemKind, Record, RecordBody, TagValue};
use threadline_shared::time::Timestamp;

use super::rows::{
    EdgeClose, EdgeInsert, ItemFill, ItemKey, MaterialInsert, OperationInsert, OperationRows,
    ParameterInsert, QualityInsert,
};

impl ItemFill {
    /// Folds a later event's knowledge into this one: a later value wins, except `shipped_at`
    /// (the first shipment time stays) and `first_seen_at` (the earliest).
    fn merge(&mut self, other: ItemFill) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            part,
            supplier,
            supplier_batch,
            qty,
            work_order,
            line,
            level,
            customer
        );
        if self.shipped_at.is_none() {
            self.shipped_at = other.shipped_at;
        }
        self.placeholder = self.placeholder && other.placeholder;
        self.fills |= other.fills;
        self.first_seen_at = match (self.first_seen_at, other.first_seen_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Every projection row derived from a batch's new events.
#[derive(Debug, Default)]
pub(crate) struct Projection {
    pub(crate) items: BTreeMap<ItemKey, ItemFill>,
    pub(crate) edges: Vec<EdgeInsert>,
    pub(crate) closes: Vec<EdgeClose>,
    pub(crate) ops: OperationRows,
    pub(crate) quality: Vec<QualityInsert>,
}

impl Projection {
    fn item(&mut self, kind: ItemKind, id: &str, ts: Timestamp) -> ItemKey {
        self.fill(
            kind,
            id,
            ItemFill {
                placeholder: true,
                first_seen_at: Some(ts),
                ..ItemFill::default()
            },
        )
    }

    fn fill(&mut self, kind: ItemKind, id: &str, fill: ItemFill) -> ItemKey {
        let key = (kind, id.to_owned());
        match self.items.get_mut(&key) {
            Some(f) => f.merge(fill),
            None => {
                self.items.insert(key.clone(), fill);
            }
        }
        key
    }

    /// Adds what one new trace event implies.
    pub(crate) fn add(&mut self, event_id: i64, gateway: &str, line: &str, rec: &Record) {
        let ts = rec.ts;
        let defined = |f: ItemFill| ItemFill {
            placeholder: false,
            fills: true,
            first_seen_at: Some(ts),
            ..f
        };
        match &rec.body {
            RecordBody::Reading(_) | RecordBody::ScanRejected(_) => {}
            RecordBody::LotReceived(l) => {
                self.fill(
                    ItemKind::Lot,
                    &l.lot,
                    defined(ItemFill {
                        part: l.part.clone(),
                        supplier: l.supplier.clone(),
                        supplier_batch: l.supplier_batch.clone(),
                        qty: l.qty,
                        ..ItemFill::default()
                    }),
                );
            }
            RecordBody::MaterialLoaded(m) => {
                self.item(ItemKind::Lot, &m.lot, ts);
            }
            RecordBody::UnitStarted(u) => {
                self.fill(
                    ItemKind::Unit,
                    &u.unit,
                    defined(ItemFill {
                        part: u.part.clone(),
                        work_order: u.work_order.clone(),
                        line: Some(line.to_owned()),
                        ..ItemFill::default()
                    }),
                );
            }
            RecordBody::OperationCompleted(op) => {
                let unit = self.item(ItemKind::Unit, &op.unit, ts);
                let mut out_of_spec = false;
                for p in &op.parameters {
                    let in_spec = p.in_spec();
                    out_of_spec |= !in_spec;
                    let (value_num, value_text) = split_value(&p.value);
                    self.ops.parameters.push(ParameterInsert {
                        event_id,
                        name: p.name.clone(),
                        value_num,
                        value_text,
                        unit: p.unit.clone(),
                        lsl: p.lsl,
                        usl: p.usl,
                        in_spec,
                    });
                }
                for m in &op.materials {
                    let lot = self.item(ItemKind::Lot, &m.lot, ts);
                    if let Some(part) = &m.part {
                        // The label told the part; it fills a placeholder lot without
                        // clearing it (supplier data still missing).
                        self.fill(
                            ItemKind::Lot,
                            &m.lot,
                            ItemFill {
                                part: Some(part.clone()),
                                placeholder: true,
                                fills: true,
                                ..ItemFill::default()
                            },
                        );
                    }
                    self.ops.materials.push(MaterialInsert {
                        event_id,
                        lot: m.lot.clone(),
                        qty: m.qty,
                    });
                    // One consumed edge per operation and lot: the genealogy keeps where
                    // (station) and when each consumption happened.
                    self.edges.push(EdgeInsert {
                        parent: unit.clone(),
                        child: lot,
                        relation: "consumed",
                        qty: Some(m.qty),
                        station: Some(op.station.clone()),
                        valid_from: ts,
                        event_id,
                    });
                }
                let environment =
                    serde_json::to_string(&op.environment).unwrap_or_else(|_| "[]".to_owned());
                self.ops.operations.push(OperationInsert {
                    event_id,
                    unit: op.unit.clone(),
                    station: op.station.clone(),
                    operation: op.operation.clone(),
                    equipment: op.equipment.clone(),
                    operator: op.operator.clone(),
                    recipe: op.recipe.clone(),
                    started_at: op.started_at,
                    completed_at: ts,
                    result: op.result.as_str(),
                    defect_code: op.defect_code.clone(),
                    out_of_spec,
                    environment,
                    gateway: gateway.to_owned(),
                });
            }
            RecordBody::Assembled(a) => {
                let parent = self.item(ItemKind::Unit, &a.parent, ts);
                let child = self.item(a.child.kind, &a.child.id, ts);
                self.edges.push(EdgeInsert {
                    parent,
                    child,
                    relation: "assembled",
                    qty: a.qty,
                    station: a.station.clone(),
                    valid_from: ts,
                    event_id,
                });
            }
            RecordBody::Disassembled(a) => {
                let parent = self.item(ItemKind::Unit, &a.parent, ts);
                let child = self.item(a.child.kind, &a.child.id, ts);
                self.closes.push(EdgeClose {
                    parent,
                    child,
                    relation: "assembled",
                    at: ts,
                    reason: a
                        .reason
                        .clone()
                        .unwrap_or_else(|| "disassembled".to_owned()),
                    event_id,
                    gateway: gateway.to_owned(),
                });
            }
            RecordBody::Packed(p) => {
                let container = self.fill(
                    ItemKind::Container,
                    &p.container,
                    defined(ItemFill {
                        level: Some(p.level.as_str().to_owned()),
                        ..ItemFill::default()
                    }),
                );
                let child = self.item(p.child.kind, &p.child.id, ts);
                self.edges.push(EdgeInsert {
                    parent: container,
                    child,
                    relation: "packed",
                    qty: None,
                    station: p.station.clone(),
                    valid_from: ts,
                    event_id,
                });
            }
            RecordBody::Unpacked(p) => {
                let container = self.item(ItemKind::Container, &p.container, ts);
                let child = self.item(p.child.kind, &p.child.id, ts);
                self.closes.push(EdgeClose {
                    parent: container,
                    child,
                    relation: "packed",
                    at: ts,
                    reason: "unpacked".to_owned(),
                    event_id,
                    gateway: gateway.to_owned(),
                });
            }
            RecordBody::Shipped(s) => {
                let shipment = match &s.customer {
                    Some(c) => self.fill(
                        ItemKind::Shipment,
                        &s.shipment,
                        defined(ItemFill {
                            customer: Some(c.clone()),
                            shipped_at: Some(ts),
                            ..ItemFill::default()
                        }),
                    ),
                    None => self.fill(
                        ItemKind::Shipment,
                        &s.shipment,
                        ItemFill {
                            shipped_at: Some(ts),
                            placeholder: true,
                            fills: true,
                            first_seen_at: Some(ts),
                            ..ItemFill::default()
                        },
                    ),
                };
                let children = s
                    .container
                    .iter()
                    .map(|c| (ItemKind::Container, c))
                    .chain(s.unit.iter().map(|u| (ItemKind::Unit, u)));
                let children: Vec<ItemKey> = children.map(|(k, id)| self.item(k, id, ts)).collect();
                for child in children {
                    self.edges.push(EdgeInsert {
                        parent: shipment.clone(),
                        child,
                        relation: "shipped",
                        qty: None,
                        station: s.station.clone(),
                        valid_from: ts,
                        event_id,
                    });
                }
            }
            RecordBody::QualityCheck(q) => {
                self.item(ItemKind::Unit, &q.unit, ts);
                let (value_num, value_text) = split_value(&q.value);
                self.quality.push(QualityInsert {
                    event_id,
                    unit: q.unit.clone(),
                    characteristic: q.characteristic.clone(),
                    value_num,
                    value_text,
                    unit_of_measure: q.unit_of_measure.clone(),
                    lsl: q.lsl,
                    usl: q.usl,
                    result: q.result.as_str(),
                    station: q.station.clone(),
                    operator: q.operator.clone(),
                    checked_at: ts,
                });
            }
        }
    }
}

/// Numbers (and bools) go to `value_num`, text to `value_text`.
pub(crate) fn split_value(v: &TagValue) -> (Option<f64>, Option<String>) {
    match v {
        TagValue::Text(s) => (None, Some(s.clone())),
        other => (other.as_f64(), None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};
    use threadline_shared::event::{ItemKind, Record};

    use super::{ItemKey, Projection};

    fn ts(t: u32) -> String {
        format!("2026-01-01T10:{:02}:{:02}.000000Z", t / 60, t % 60)
    }

    fn at(t: u32) -> threadline_shared::time::Timestamp {
        threadline_shared::time::parse(&ts(t)).unwrap()
    }

    /// A record of `type` at second `t` with `fields`.
    fn rec(seq: u64, t: u32, ty: &str, mut fields: Value) -> Record {
        let o = fields.as_object_mut().unwrap();
        o.insert("seq".into(), json!(seq));
        o.insert("ts".into(), json!(ts(t)));
        o.insert("type".into(), json!(ty));
        Record::from_json(&fields.to_string()).unwrap()
    }

    /// Projects `recs` as events 1, 2, … of gateway `gw-1` on line `L1`.
    fn project(recs: &[Record]) -> Projection {
        let mut p = Projection::default();
        for (i, r) in recs.iter().enumerate() {
            p.add(i as i64 + 1, "gw-1", "L1", r);
        }
        p
    }

    fn key(kind: ItemKind, id: &str) -> ItemKey {
        (kind, id.to_owned())
    }

    #[test]
    fn operation_projects_its_rows_and_names_placeholders() {
        let p = project(&[rec(
            7,
            30,
            "operation_completed",
            json!({
                "unit": "SN1", "station": "ST10", "operation": "press-fit", "equipment": "PRESS-1",
                "operator": "OP1", "recipe": "7", "result": "fail", "defect_code": "D17",
                "parameters": [
                    {"name": "pressure", "value": 230.0, "unit": "bar", "lsl": 180.0, "usl": 220.0},
                    {"name": "tool", "value": "T-4"},
                ],
                "environment": [{"name": "hall.temp", "value": 21.5, "unit": "°C"}],
                "materials": [{"lot": "LOT-A", "part": "P-6202", "qty": 2.0}],
            }),
        )]);

        let unit = &p.items[&key(ItemKind::Unit, "SN1")];
        assert!(unit.placeholder && !unit.fills, "{unit:?}");
        assert_eq!(unit.first_seen_at, Some(at(30)));
        // The label told the lot's part: filled, still a placeholder (no supplier data).
        let lot = &p.items[&key(ItemKind::Lot, "LOT-A")];
        assert!(lot.placeholder && lot.fills, "{lot:?}");
        assert_eq!(lot.part.as_deref(), Some("P-6202"));

        assert_eq!(p.ops.operations.len(), 1);
        let op = &p.ops.operations[0];
        assert_eq!(
            (
                op.event_id,
                op.unit.as_str(),
                op.station.as_str(),
                op.operation.as_str()
            ),
            (1, "SN1", "ST10", "press-fit")
        );
        assert_eq!(
            (
                op.equipment.as_deref(),
                op.operator.as_deref(),
                op.recipe.as_deref()
            ),
            (Some("PRESS-1"), Some("OP1"), Some("7"))
        );
        assert_eq!(
            (op.result, op.defect_code.as_deref()),
            ("fail", Some("D17"))
        );
        assert!(op.out_of_spec, "230 bar is above 220");
        assert_eq!(op.completed_at, at(30));
        assert_eq!(op.gateway, "gw-1");
        let env: Value = serde_json::from_str(&op.environment).unwrap();
        assert_eq!(
            env,
            json!([{"name": "hall.temp", "value": 21.5, "unit": "°C"}])
        );

        assert_eq!(p.ops.parameters.len(), 2);
        let (pressure, tool) = (&p.ops.parameters[0], &p.ops.parameters[1]);
        assert_eq!(
            (pressure.name.as_str(), pressure.value_num),
            ("pressure", Some(230.0))
        );
        assert_eq!((pressure.lsl, pressure.usl), (Some(180.0), Some(220.0)));
        assert!(!pressure.in_spec);
        assert_eq!(tool.value_text.as_deref(), Some("T-4"));
        assert_eq!(tool.value_num, None);
        assert!(tool.in_spec, "text without limits is in spec");

        assert_eq!(p.ops.materials.len(), 1);
        assert_eq!(
            (p.ops.materials[0].lot.as_str(), p.ops.materials[0].qty),
            ("LOT-A", 2.0)
        );
        // One consumed edge per operation and lot, with station and time.
        assert_eq!(p.edges.len(), 1);
        let e = &p.edges[0];
        assert_eq!(
            (&e.parent, &e.child),
            (&key(ItemKind::Unit, "SN1"), &key(ItemKind::Lot, "LOT-A"))
        );
        assert_eq!(
            (e.relation, e.qty, e.station.as_deref()),
            ("consumed", Some(2.0), Some("ST10"))
        );
        assert_eq!((e.valid_from, e.event_id), (at(30), 1));
        assert!(p.closes.is_empty() && p.quality.is_empty());
    }

    #[test]
    fn operation_in_spec_is_not_out_of_spec() {
        let p = project(&[rec(
            1,
            1,
            "operation_completed",
            json!({"unit": "SN1", "station": "ST10", "operation": "op", "result": "pass",
                   "parameters": [{"name": "p", "value": 200.0, "lsl": 180.0, "usl": 220.0}]}),
        )]);
        assert!(!p.ops.operations[0].out_of_spec);
        assert!(p.ops.parameters[0].in_spec);
        assert_eq!(p.ops.operations[0].environment, "[]");
    }

    #[test]
    fn defining_events_clear_placeholders_and_merge_in_order() {
        let p = project(&[
            rec(
                1,
                5,
                "material_loaded",
                json!({"station": "ST10", "lot": "LOT-A"}),
            ),
            rec(
                2,
                2,
                "lot_received",
                json!({"lot": "LOT-A", "part": "P-1", "supplier": "ACME",
                                             "supplier_batch": "B7", "qty": 500.0}),
            ),
            rec(
                3,
                6,
                "unit_started",
                json!({"unit": "SN1", "part": "PUMP", "work_order": "WO-1",
                                             "station": "ST01"}),
            ),
        ]);
        let lot = &p.items[&key(ItemKind::Lot, "LOT-A")];
        assert!(!lot.placeholder && lot.fills);
        assert_eq!(
            (
                lot.part.as_deref(),
                lot.supplier.as_deref(),
                lot.supplier_batch.as_deref(),
                lot.qty
            ),
            (Some("P-1"), Some("ACME"), Some("B7"), Some(500.0))
        );
        assert_eq!(lot.first_seen_at, Some(at(2)), "the earliest sighting");
        let unit = &p.items[&key(ItemKind::Unit, "SN1")];
        assert!(!unit.placeholder);
        assert_eq!(
            (
                unit.part.as_deref(),
                unit.work_order.as_deref(),
                unit.line.as_deref()
            ),
            (Some("PUMP"), Some("WO-1"), Some("L1"))
        );
        assert!(p.edges.is_empty() && p.ops.operations.is_empty());
    }

    #[test]
    fn assembly_packing_and_shipping_make_edges_and_closes() {
        let p = project(&[
            rec(
                1,
                1,
                "assembled",
                json!({"parent": "SN1", "child": {"kind": "unit", "id": "SUB1"},
                                          "qty": 1.0, "station": "ST20"}),
            ),
            rec(
                2,
                2,
                "disassembled",
                json!({"parent": "SN1", "child": {"kind": "unit", "id": "SUB1"}}),
            ),
            rec(
                3,
                3,
                "disassembled",
                json!({"parent": "SN1", "child": {"kind": "lot", "id": "LOT-B"},
                                             "reason": "rework"}),
            ),
            rec(
                4,
                4,
                "packed",
                json!({"container": "CASE-1", "level": "case",
                                       "child": {"kind": "unit", "id": "SN1"}, "station": "PACK"}),
            ),
            rec(
                5,
                5,
                "unpacked",
                json!({"container": "CASE-1", "level": "case",
                                         "child": {"kind": "unit", "id": "SN1"}}),
            ),
            rec(
                6,
                6,
                "shipped",
                json!({"shipment": "SHP-1", "customer": "ACME",
                                        "container": "CASE-1", "unit": "SN2", "station": "DOCK"}),
            ),
        ]);
        let rel: Vec<(&str, &ItemKey, &ItemKey, i64)> = p
            .edges
            .iter()
            .map(|e| (e.relation, &e.parent, &e.child, e.event_id))
            .collect();
        assert_eq!(
            rel,
            [
                (
                    "assembled",
                    &key(ItemKind::Unit, "SN1"),
                    &key(ItemKind::Unit, "SUB1"),
                    1
                ),
                (
                    "packed",
                    &key(ItemKind::Container, "CASE-1"),
                    &key(ItemKind::Unit, "SN1"),
                    4
                ),
                (
                    "shipped",
                    &key(ItemKind::Shipment, "SHP-1"),
                    &key(ItemKind::Container, "CASE-1"),
                    6
                ),
                (
                    "shipped",
                    &key(ItemKind::Shipment, "SHP-1"),
                    &key(ItemKind::Unit, "SN2"),
                    6
                ),
            ]
        );
        assert_eq!(
            (p.edges[0].qty, p.edges[0].station.as_deref()),
            (Some(1.0), Some("ST20"))
        );
        assert_eq!(p.edges[3].station.as_deref(), Some("DOCK"));

        let closes: Vec<(&str, &str, &str, i64)> = p
            .closes
            .iter()
            .map(|c| {
                (
                    c.relation,
                    c.child.1.as_str(),
                    c.reason.as_str(),
                    c.event_id,
                )
            })
            .collect();
        assert_eq!(
            closes,
            [
                ("assembled", "SUB1", "disassembled", 2),
                ("assembled", "LOT-B", "rework", 3),
                ("packed", "SN1", "unpacked", 5),
            ]
        );
        assert_eq!(
            (p.closes[0].at, p.closes[0].gateway.as_str()),
            (at(2), "gw-1")
        );

        let case = &p.items[&key(ItemKind::Container, "CASE-1")];
        assert!(!case.placeholder);
        assert_eq!(case.level.as_deref(), Some("case"));
        let shp = &p.items[&key(ItemKind::Shipment, "SHP-1")];
        assert!(!shp.placeholder);
        assert_eq!(
            (shp.customer.as_deref(), shp.shipped_at),
            (Some("ACME"), Some(at(6)))
        );
        assert!(p.items[&key(ItemKind::Unit, "SN2")].placeholder);
    }

    #[test]
    fn shipment_without_customer_stays_a_placeholder_with_its_time() {
        let p = project(&[rec(
            1,
            9,
            "shipped",
            json!({"shipment": "SHP-2", "unit": "SN3"}),
        )]);
        let shp = &p.items[&key(ItemKind::Shipment, "SHP-2")];
        assert!(shp.placeholder && shp.fills);
        assert_eq!(
            (shp.customer.as_deref(), shp.shipped_at),
            (None, Some(at(9)))
        );
        assert_eq!(p.edges.len(), 1);
    }

    #[test]
    fn quality_checks_keep_value_limits_and_verdict() {
        let p = project(&[
            rec(
                1,
                1,
                "quality_check",
                json!({"unit": "SN1", "characteristic": "bore", "value": 12.01,
                                              "unit_of_measure": "mm", "lsl": 11.99, "usl": 12.02,
                                              "result": "pass", "station": "QC1", "operator": "OP9"}),
            ),
            rec(
                2,
                2,
                "quality_check",
                json!({"unit": "SN1", "characteristic": "colour",
                                              "value": "red", "result": "fail"}),
            ),
        ]);
        assert_eq!(p.quality.len(), 2);
        let (bore, colour) = (&p.quality[0], &p.quality[1]);
        assert_eq!(
            (
                bore.event_id,
                bore.unit.as_str(),
                bore.characteristic.as_str()
            ),
            (1, "SN1", "bore")
        );
        assert_eq!(
            (bore.value_num, bore.value_text.as_deref()),
            (Some(12.01), None)
        );
        assert_eq!(
            (bore.lsl, bore.usl, bore.unit_of_measure.as_deref()),
            (Some(11.99), Some(12.02), Some("mm"))
        );
        assert_eq!(
            (
                bore.result,
                bore.station.as_deref(),
                bore.operator.as_deref()
            ),
            ("pass", Some("QC1"), Some("OP9"))
        );
        assert_eq!(bore.checked_at, at(1));
        assert_eq!(
            (
                colour.value_num,
                colour.value_text.as_deref(),
                colour.result
            ),
            (None, Some("red"), "fail")
        );
        assert!(p.items[&key(ItemKind::Unit, "SN1")].placeholder);
    }

    #[test]
    fn readings_and_scan_rejects_project_nothing() {
        let p = project(&[
            rec(
                1,
                1,
                "reading",
                json!({"device": "plc", "tag": "t", "value": 1.0, "quality": "good"}),
            ),
            rec(
                2,
                2,
                "scan_rejected",
                json!({"scanner": "S1", "raw": "xx", "reason": "bad check digit"}),
            ),
        ]);
        assert!(p.items.is_empty() && p.edges.is_empty() && p.closes.is_empty());
        assert!(p.ops.operations.is_empty() && p.quality.is_empty());
    }
}
