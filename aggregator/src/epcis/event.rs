//! One EPCIS 2.0 event as Threadline exports it: a closed set of fields (those the mapping
//! uses), written as JSON-LD in the standard's field order, and its event hash.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use threadline_shared::time::Timestamp;

/// The EPCIS event types the export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Object,
    Aggregation,
    Transformation,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::Object,
        EventType::Aggregation,
        EventType::Transformation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Object => "ObjectEvent",
            EventType::Aggregation => "AggregationEvent",
            EventType::Transformation => "TransformationEvent",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `quantityList` / `childQuantityList` / `inputQuantityList` element.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub epc_class: String,
    pub quantity: Option<f64>,
    /// UN/CEFACT Rec. 20 code.
    pub uom: Option<&'static str>,
}

/// One `sensorReport` of the event's single `sensorElement`.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReport {
    /// The parameter: a GS1 measurement type is not known for plant parameters, so this is a URI
    /// under `id_base` (`…/parameter/{name}`).
    pub type_: String,
    pub device_id: Option<String>,
    pub value: Option<f64>,
    pub string_value: Option<String>,
    pub boolean_value: Option<bool>,
    pub uom: Option<&'static str>,
}

/// A Threadline field with no EPCIS equivalent, written as `tl:{name}` (namespace in the
/// document's `@context`).
#[derive(Debug, Clone, PartialEq)]
pub struct Extension {
    pub name: &'static str,
    pub value: String,
}

/// An EPCIS event. Empty lists and `None` are omitted from the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub type_: EventType,
    /// Millisecond precision (what the event hash keeps).
    pub event_time: Timestamp,
    pub parent_id: Option<String>,
    pub epc_list: Vec<String>,
    pub input_epc_list: Vec<String>,
    pub child_epcs: Vec<String>,
    pub quantity_list: Vec<Quantity>,
    pub child_quantity_list: Vec<Quantity>,
    pub input_quantity_list: Vec<Quantity>,
    pub output_epc_list: Vec<String>,
    pub action: Option<&'static str>,
    /// CBV 2.0 bare value (`receiving`); its URI form is `https://ref.gs1.org/cbv/BizStep-…`.
    pub biz_step: Option<&'static str>,
    pub disposition: Option<&'static str>,
    pub read_point: Option<String>,
    /// `(type, id)`, type a CBV BTT bare value.
    pub biz_transactions: Vec<(&'static str, String)>,
    /// `(type, id)`, type a CBV SDT bare value.
    pub sources: Vec<(&'static str, String)>,
    pub destinations: Vec<(&'static str, String)>,
    pub sensor_time: Option<Timestamp>,
    pub sensor_reports: Vec<SensorReport>,
    pub extensions: Vec<Extension>,
    /// Set by [`Event::with_hash`]: `ni:///sha-256;…?ver=CBV2.0`.
    pub event_id: String,
}

impl Event {
    pub fn new(type_: EventType, event_time: Timestamp) -> Event {
        use chrono::SubsecRound as _;
        Event {
            type_,
            event_time: event_time.trunc_subsecs(3),
            parent_id: None,
            epc_list: Vec::new(),
            input_epc_list: Vec::new(),
            child_epcs: Vec::new(),
            quantity_list: Vec::new(),
            child_quantity_list: Vec::new(),
            input_quantity_list: Vec::new(),
            output_epc_list: Vec::new(),
            action: None,
            biz_step: None,
            disposition: None,
            read_point: None,
            biz_transactions: Vec::new(),
            sources: Vec::new(),
            destinations: Vec::new(),
            sensor_time: None,
            sensor_reports: Vec::new(),
            extensions: Vec::new(),
            event_id: String::new(),
        }
    }

    /// Computes and sets `eventID` (see [`super::hash`]); `vocabulary` is the `tl:` namespace.
    pub fn with_hash(mut self, vocabulary: &str) -> Event {
        self.event_id = super::hash::event_hash(&self, vocabulary);
        self
    }

    pub fn ext(&mut self, name: &'static str, value: Option<impl Into<String>>) {
        if let Some(v) = value {
            self.extensions.push(Extension {
                name,
                value: v.into(),
            });
        }
    }

    /// Every EPC (instance id) the event names: `epcList`, `childEPCs`, `inputEPCList`,
    /// `outputEPCList`, `parentID` (what `MATCH_anyEPC` looks at).
    pub fn any_epcs(&self) -> impl Iterator<Item = &str> {
        self.epc_list
            .iter()
            .chain(&self.child_epcs)
            .chain(&self.input_epc_list)
            .chain(&self.output_epc_list)
            .chain(&self.parent_id)
            .map(String::as_str)
    }

    /// `epcList` and `childEPCs` (what `MATCH_epc` looks at).
    pub fn epcs(&self) -> impl Iterator<Item = &str> {
        self.epc_list
            .iter()
            .chain(&self.child_epcs)
            .map(String::as_str)
    }

    /// Every EPC class of its quantity lists (`MATCH_anyEPCClass`).
    pub fn any_classes(&self) -> impl Iterator<Item = &str> {
        self.quantity_list
            .iter()
            .chain(&self.child_quantity_list)
            .chain(&self.input_quantity_list)
            .map(|q| q.epc_class.as_str())
    }
}

/// RFC 3339 UTC with milliseconds (`2026-01-01T10:00:00.123Z`).
pub fn time_ms(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Ts<'a>(&'a Timestamp);
impl Serialize for Ts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time_ms(self.0))
    }
}

struct Quantities<'a>(&'a [Quantity]);
impl Serialize for Quantities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for q in self.0 {
            seq.serialize_element(&QuantityJson(q))?;
        }
        seq.end()
    }
}
struct QuantityJson<'a>(&'a Quantity);
impl Serialize for QuantityJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("epcClass", &q.epc_class)?;
        if let Some(n) = q.quantity {
            m.serialize_entry("quantity", &n)?;
        }
        if let Some(u) = q.uom {
            m.serialize_entry("uom", u)?;
        }
        m.end()
    }
}

struct Typed<'a>(&'a [(&'static str, String)], &'static str);
impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (t, id) in self.0 {
            seq.serialize_element(&TypedEntry(t, self.1, id))?;
        }
        seq.end()
    }
}
struct TypedEntry<'a>(&'a str, &'static str, &'a str);
impl Serialize for TypedEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", self.0)?;
        m.serialize_entry(self.1, self.2)?;
        m.end()
    }
}

struct Sensors<'a>(&'a Event);
impl Serialize for Sensors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Element<'a>(&'a Event);
        impl Serialize for Element<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                if let Some(t) = &self.0.sensor_time {
                    let mut meta = std::collections::BTreeMap::new();
                    meta.insert("time", time_ms(t));
                    m.serialize_entry("sensorMetadata", &meta)?;
                }
                m.serialize_entry(
                    "sensorReport",
                    &self
                        .0
                        .sensor_reports
                        .iter()
                        .map(ReportJson)
                        .collect::<Vec<_>>(),
                )?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&Element(self.0))?;
        seq.end()
    }
}
struct ReportJson<'a>(&'a SensorReport);
impl Serialize for ReportJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", &r.type_)?;
        if let Some(d) = &r.device_id {
            m.serialize_entry("deviceID", d)?;
        }
        if let Some(v) = r.value {
            m.serialize_entry("value", &v)?;
        }
        if let Some(v) = &r.string_value {
            m.serialize_entry("stringValue", v)?;
        }
        if let Some(v) = r.boolean_value {
            m.serialize_entry("booleanValue", &v)?;
        }
        if let Some(u) = r.uom {
            m.serialize_entry("uom", u)?;
        }
        m.end()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", e.type_.as_str())?;
        m.serialize_entry("eventTime", &Ts(&e.event_time))?;
        m.serialize_entry("eventTimeZoneOffset", "+00:00")?;
        m.serialize_entry("eventID", &e.event_id)?;
        if let Some(p) = &e.parent_id {
            m.serialize_entry("parentID", p)?;
        }
        match e.type_ {
            EventType::Object => {
                if !e.epc_list.is_empty() || e.quantity_list.is_empty() {
                    m.serialize_entry("epcList", &e.epc_list)?;
                }
                if !e.quantity_list.is_empty() {
                    m.serialize_entry("quantityList", &Quantities(&e.quantity_list))?;
                }
            }
            EventType::Aggregation => {
                if !e.child_epcs.is_empty() {
                    m.serialize_entry("childEPCs", &e.child_epcs)?;
                }
                if !e.child_quantity_list.is_empty() {
                    m.serialize_entry("childQuantityList", &Quantities(&e.child_quantity_list))?;
                }
            }
            EventType::Transformation => {
                if !e.input_epc_list.is_empty() {
                    m.serialize_entry("inputEPCList", &e.input_epc_list)?;
                }
                if !e.input_quantity_list.is_empty() {
                    m.serialize_entry("inputQuantityList", &Quantities(&e.input_quantity_list))?;
                }
                if !e.output_epc_list.is_empty() {
                    m.serialize_entry("outputEPCList", &e.output_epc_list)?;
                }
            }
        }
        if let Some(a) = e.action {
            m.serialize_entry("action", a)?;
        }
        if let Some(b) = e.biz_step {
            m.serialize_entry("bizStep", b)?;
        }
        if let Some(d) = e.disposition {
            m.serialize_entry("disposition", d)?;
        }
        if let Some(r) = &e.read_point {
            m.serialize_entry("readPoint", &std::collections::BTreeMap::from([("id", r)]))?;
        }
        if !e.biz_transactions.is_empty() {
            m.serialize_entry(
                "bizTransactionList",
                &Typed(&e.biz_transactions, "bizTransaction"),
            )?;
        }
        if !e.sources.is_empty() {
            m.serialize_entry("sourceList", &Typed(&e.sources, "source"))?;
        }
        if !e.destinations.is_empty() {
            m.serialize_entry("destinationList", &Typed(&e.destinations, "destination"))?;
        }
        if !e.sensor_reports.is_empty() {
            m.serialize_entry("sensorElementList", &Sensors(e))?;
        }
        for x in &e.extensions {
            m.serialize_entry(&format!("tl:{}", x.name), &x.value)?;
        }
        m.end()
    }
}
