//! GS1 EPCIS 2.0 (ISO/IEC 19987) export: Threadline's trace records as EPCIS events in JSON-LD.
//!
//! - [`ids`]: Digital Link / `id_base` URIs;
//! - [`event`]: the event model and its JSON-LD form;
//! - [`hash`]: the event hash (`eventID`);
//! - [`map`](map_record): one stored record → its EPCIS events (the table in `docs/epcis.md`);
//! - [`export`]: the streamed documents behind `GET /api/v1/epcis/events` and
//!   `GET /api/v1/units/{serial}/epcis`;
//! - [`capture`], [`supplier`]: `POST /api/v1/epcis/capture` — a supplier's document checked,
//!   keyed and stored, linked to our lots (read back by `trace::supplier`).

pub mod capture;
pub mod event;
pub mod export;
pub mod hash;
pub mod ids;
pub mod supplier;

use threadline_shared::event::{ItemKind, Record, RecordBody, TagValue, Verdict};

pub use event::{Event, EventType, Quantity, SensorReport};
pub use ids::Ids;

/// The JSON-LD context of EPCIS 2.0.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld";

/// `[epcis]` of the aggregator configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpcisSection {
    /// Base of the HTTP URIs of ids that carry no GTIN / SSCC (units, lots, stations, parties).
    #[serde(default = "default_id_base")]
    pub id_base: String,
}

impl Default for EpcisSection {
    fn default() -> Self {
        EpcisSection {
            id_base: default_id_base(),
        }
    }
}

/// The default: a placeholder a plant replaces with a URI of its own domain (the ids must be
/// globally unique for the customer who receives them).
pub fn default_id_base() -> String {
    "https://threadline.invalid/id".to_owned()
}

impl EpcisSection {
    /// Problems with `id_base`, if any (the config validation reports them).
    pub fn check(&self) -> Option<String> {
        let b = &self.id_base;
        let rest = b
            .strip_prefix("https://")
            .or_else(|| b.strip_prefix("http://"));
        match rest {
            None => Some(format!("{b:?}: expected an http:// or https:// URI")),
            Some(r) if r.is_empty() || r.starts_with('/') => {
                Some(format!("{b:?}: the URI has no host"))
            }
            Some(r) if r.contains(['?', '#', ' ']) => Some(format!(
                "{b:?}: expected a URI without query, fragment or spaces (ids are appended as path segments)"
            )),
            Some(_) => None,
        }
    }
}

/// UN/CEFACT Recommendation 20 code of a unit as plants write it, if known.
pub fn rec20(unit: &str) -> Option<&'static str> {
    Some(match unit.trim() {
        "mm" => "MMT",
        "cm" => "CMT",
        "m" => "MTR",
        "µm" | "um" => "4H",
        "bar" => "BAR",
        "mbar" => "MBR",
        "Pa" => "PAL",
        "kPa" => "KPA",
        "MPa" => "MPA",
        "°C" | "degC" | "C" => "CEL",
        "K" => "KEL",
        "N" => "NEW",
        "kN" => "B47",
        "Nm" | "N·m" | "N.m" => "NU",
        "s" => "SEC",
        "ms" => "C26",
        "min" => "MIN",
        "h" => "HUR",
        "kg" => "KGM",
        "g" => "GRM",
        "mg" => "MGM",
        "l" | "L" => "LTR",
        "ml" | "mL" => "MLT",
        "%" => "P1",
        "V" => "VLT",
        "mV" => "2Z",
        "A" => "AMP",
        "mA" => "4K",
        "W" => "WTT",
        "kW" => "KWT",
        "Hz" => "HTZ",
        "rpm" | "1/min" => "RPM",
        "pcs" | "pc" | "ea" => "H87",
        _ => return None,
    })
}

/// A sensor report of one named value: numbers as `value`, bools as `booleanValue`, text as
/// `stringValue`; the unit as a Rec. 20 `uom` when it has one.
fn report(
    ids: &Ids,
    name: &str,
    value: &TagValue,
    unit: Option<&str>,
    device: Option<&str>,
) -> SensorReport {
    let mut r = SensorReport {
        type_: ids.parameter(name),
        device_id: device.map(|d| ids.equipment(d)),
        value: None,
        string_value: None,
        boolean_value: None,
        uom: unit.and_then(rec20),
    };
    match value {
        TagValue::Bool(b) => r.boolean_value = Some(*b),
        TagValue::Text(t) => r.string_value = Some(t.clone()),
        v => match v.as_f64() {
            Some(f) if f.is_finite() => r.value = Some(f),
            _ => r.string_value = Some(v.to_text()),
        },
    }
    r
}

fn verdict_disposition(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "conformant",
        Verdict::Fail => "non_conformant",
    }
}

/// The EPCIS events of one stored record (none for readings and rejected scans; two for an
/// operation that consumed material). Every event carries its hash as `eventID`.
pub fn map_record(ids: &Ids, gateway: &str, r: &Record) -> Vec<Event> {
    let voc = ids.vocabulary();
    let station = |s: &Option<String>| s.as_deref().map(|s| ids.station(s));
    let mut out = Vec::with_capacity(1);
    match &r.body {
        RecordBody::Reading(_) | RecordBody::ScanRejected(_) => {}
        RecordBody::LotReceived(l) => {
            let mut e = Event::new(EventType::Object, r.ts);
            e.quantity_list = vec![Quantity {
                epc_class: ids.lot(&l.lot),
                quantity: l.qty,
                uom: None,
            }];
            e.action = Some("ADD");
            e.biz_step = Some("receiving");
            e.disposition = Some("in_progress");
            e.read_point = station(&l.station);
            if let Some(s) = &l.supplier {
                e.sources.push(("owning_party", ids.party(s)));
            }
            e.ext("part", l.part.as_deref());
            e.ext("supplierBatch", l.supplier_batch.as_deref());
            out.push(e);
        }
        RecordBody::MaterialLoaded(m) => {
            let mut e = Event::new(EventType::Object, r.ts);
            e.quantity_list = vec![Quantity {
                epc_class: ids.lot(&m.lot),
                quantity: None,
                uom: None,
            }];
            e.action = Some("OBSERVE");
            e.biz_step = Some("dispensing");
            e.disposition = Some("in_progress");
            e.read_point = Some(ids.station(&m.station));
            e.ext("part", m.part.as_deref());
            e.ext("operator", m.operator.as_deref());
            out.push(e);
        }
        RecordBody::UnitStarted(u) => {
            let mut e = Event::new(EventType::Object, r.ts);
            e.epc_list = vec![ids.unit(&u.unit)];
            e.action = Some("ADD");
            e.biz_step = Some("commissioning");
            e.disposition = Some("active");
            e.read_point = Some(ids.station(&u.station));
            if let Some(wo) = &u.work_order {
                e.biz_transactions.push(("prodorder", ids.work_order(wo)));
            }
            e.ext("part", u.part.as_deref());
            e.ext("operator", u.operator.as_deref());
            out.push(e);
        }
        RecordBody::OperationCompleted(o) => {
            let unit = ids.unit(&o.unit);
            let mut e = Event::new(EventType::Object, r.ts);
            e.epc_list = vec![unit.clone()];
            e.action = Some("OBSERVE");
            e.biz_step = Some("inspecting");
            e.disposition = Some(match o.result {
                Verdict::Pass => "in_progress",
                Verdict::Fail => "non_conformant",
            });
            e.read_point = Some(ids.station(&o.station));
            e.sensor_time = (!o.parameters.is_empty() || !o.environment.is_empty()).then_some(r.ts);
            for p in &o.parameters {
                e.sensor_reports.push(report(
                    ids,
                    &p.name,
                    &p.value,
                    p.unit.as_deref(),
                    o.equipment.as_deref(),
                ));
            }
            for v in &o.environment {
                e.sensor_reports
                    .push(report(ids, &v.name, &v.value, v.unit.as_deref(), None));
            }
            e.ext("operation", Some(o.operation.as_str()));
            e.ext("result", Some(o.result.as_str()));
            e.ext("defectCode", o.defect_code.as_deref());
            e.ext("equipment", o.equipment.as_deref());
            e.ext("operator", o.operator.as_deref());
            e.ext("recipe", o.recipe.as_deref());
            e.ext("startedAt", o.started_at.as_ref().map(event::time_ms));
            if !o.materials.is_empty() {
                let mut t = Event::new(EventType::Transformation, r.ts);
                t.input_quantity_list = o
                    .materials
                    .iter()
                    .map(|m| Quantity {
                        epc_class: ids.lot(&m.lot),
                        quantity: Some(m.qty),
                        uom: None,
                    })
                    .collect();
                t.output_epc_list = vec![unit];
                t.biz_step = Some("assembling");
                t.disposition = Some("in_progress");
                t.read_point = Some(ids.station(&o.station));
                t.ext("operation", Some(o.operation.as_str()));
                out.push(e);
                out.push(t);
            } else {
                out.push(e);
            }
        }
        RecordBody::Assembled(a) | RecordBody::Disassembled(a) => {
            let add = matches!(r.body, RecordBody::Assembled(_));
            let mut e = Event::new(EventType::Aggregation, r.ts);
            e.parent_id = Some(ids.unit(&a.parent));
            child(ids, &mut e, a.child.kind, &a.child.id, a.qty);
            e.action = Some(if add { "ADD" } else { "DELETE" });
            e.biz_step = Some(if add { "assembling" } else { "disassembling" });
            e.disposition = Some(if add {
                "in_progress"
            } else {
                "needs_replacement"
            });
            e.read_point = station(&a.station);
            e.ext("operator", a.operator.as_deref());
            e.ext("reason", a.reason.as_deref());
            out.push(e);
        }
        RecordBody::Packed(p) | RecordBody::Unpacked(p) => {
            let add = matches!(r.body, RecordBody::Packed(_));
            let mut e = Event::new(EventType::Aggregation, r.ts);
            e.parent_id = Some(ids.container(&p.container));
            child(ids, &mut e, p.child.kind, &p.child.id, None);
            e.action = Some(if add { "ADD" } else { "DELETE" });
            e.biz_step = Some(if add { "packing" } else { "unpacking" });
            e.disposition = Some(if add { "in_progress" } else { "container_open" });
            e.read_point = station(&p.station);
            e.ext("level", Some(p.level.as_str()));
            e.ext("operator", p.operator.as_deref());
            out.push(e);
        }
        RecordBody::Shipped(s) => {
            let mut e = Event::new(EventType::Object, r.ts);
            e.epc_list = s
                .container
                .iter()
                .map(|c| ids.container(c))
                .chain(s.unit.iter().map(|u| ids.unit(u)))
                .collect();
            e.action = Some("OBSERVE");
            e.biz_step = Some("shipping");
            e.disposition = Some("in_transit");
            e.read_point = station(&s.station);
            e.biz_transactions
                .push(("desadv", ids.shipment(&s.shipment)));
            if let Some(c) = &s.customer {
                e.destinations.push(("owning_party", ids.party(c)));
            }
            out.push(e);
        }
        RecordBody::QualityCheck(q) => {
            let mut e = Event::new(EventType::Object, r.ts);
            e.epc_list = vec![ids.unit(&q.unit)];
            e.action = Some("OBSERVE");
            e.biz_step = Some("inspecting");
            e.disposition = Some(verdict_disposition(q.result));
            e.read_point = station(&q.station);
            e.sensor_time = Some(r.ts);
            e.sensor_reports.push(report(
                ids,
                &q.characteristic,
                &q.value,
                q.unit_of_measure.as_deref(),
                None,
            ));
            e.ext("characteristic", Some(q.characteristic.as_str()));
            e.ext("result", Some(q.result.as_str()));
            e.ext("operator", q.operator.as_deref());
            out.push(e);
        }
    }
    for e in &mut out {
        e.ext("gateway", Some(gateway));
    }
    out.into_iter().map(|e| e.with_hash(&voc)).collect()
}

/// The child of an aggregation: an instance in `childEPCs`, a lot in `childQuantityList`.
fn child(ids: &Ids, e: &mut Event, kind: ItemKind, id: &str, qty: Option<f64>) {
    match kind {
        ItemKind::Lot => e.child_quantity_list.push(Quantity {
            epc_class: ids.lot(id),
            quantity: qty,
            uom: None,
        }),
        k => e.child_epcs.push(ids.item(k, id)),
    }
}

/// The record types that can yield an event of this type / business step (an SQL pre-filter).
pub fn record_types(
    event_type: Option<&[EventType]>,
    biz_step: Option<&[String]>,
) -> Vec<&'static str> {
    const ALL: [(&str, EventType, &[&str]); 10] = [
        ("lot_received", EventType::Object, &["receiving"]),
        ("material_loaded", EventType::Object, &["dispensing"]),
        ("unit_started", EventType::Object, &["commissioning"]),
        ("operation_completed", EventType::Object, &["inspecting"]),
        (
            "operation_completed",
            EventType::Transformation,
            &["assembling"],
        ),
        ("assembled", EventType::Aggregation, &["assembling"]),
        ("disassembled", EventType::Aggregation, &["disassembling"]),
        ("packed", EventType::Aggregation, &["packing"]),
        ("unpacked", EventType::Aggregation, &["unpacking"]),
        ("shipped", EventType::Object, &["shipping"]),
    ];
    let mut out: Vec<&'static str> = Vec::new();
    let extra = [("quality_check", EventType::Object, &["inspecting"][..])];
    for (ty, et, steps) in ALL.iter().copied().chain(extra) {
        let et_ok = event_type.is_none_or(|l| l.contains(&et));
        let step_ok = biz_step.is_none_or(|l| l.iter().any(|b| steps.contains(&b.as_str())));
        if et_ok && step_ok && !out.contains(&ty) {
            out.push(ty);
        }
    }
    out
}

/// A `bizStep` as given in a query (bare `shipping`, or its URI) → the bare CBV value.
pub fn bare_biz_step(s: &str) -> &str {
    s.strip_prefix("https://ref.gs1.org/cbv/BizStep-")
        .or_else(|| s.strip_prefix("urn:epcglobal:cbv:bizstep:"))
        .unwrap_or(s)
}
