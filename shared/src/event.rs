//! The trace event model: every record a gateway publishes and the aggregator stores.
//!
//! Canonical JSON form (what [`Record::canonical_json`] produces and the golden fixtures in
//! `shared/tests/fixtures/` pin down): `seq`, `ts`, `type` first, then the type's fields in the
//! order declared here; optional fields that are absent are omitted (never `null`); timestamps are
//! RFC 3339 UTC with microseconds ([`crate::time`]). Readers accept `null` for an optional field
//! and ignore fields they do not know, so a newer gateway can add fields without breaking an
//! older aggregator.

use serde::{Deserialize, Serialize};

use crate::time::{Timestamp, rfc3339, rfc3339_opt};

/// One record of a gateway's outbox: a reading or a trace event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Strictly increasing per (gateway, epoch); the idempotency key with them.
    pub seq: u64,
    /// When it happened on the floor.
    #[serde(with = "rfc3339")]
    pub ts: Timestamp,
    #[serde(flatten)]
    pub body: RecordBody,
}

impl Record {
    /// The canonical JSON bytes of this record (the input of the aggregator's hash chain).
    pub fn canonical_json(&self) -> Vec<u8> {
        // Serializing plain data structures to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record's `type` as on the wire.
    pub fn type_name(&self) -> &'static str {
        self.body.type_name()
    }

    /// Parses one record's JSON text: the same result as `serde_json::from_str::<Record>`,
    /// several times faster. The derived `Deserialize` (a flattened, internally tagged enum)
    /// buffers every field into an intermediate tree before it knows the type; this reads the
    /// head (`seq`, `ts`, `type`) and then the body straight into its type's struct (which
    /// ignores the head's fields). On any error it runs the derived path, so error messages
    /// (a dead letter's reason) stay those of the derive.
    pub fn from_json(text: &str) -> Result<Record, serde_json::Error> {
        #[derive(Deserialize)]
        struct Head<'a> {
            seq: u64,
            #[serde(with = "rfc3339")]
            ts: Timestamp,
            #[serde(rename = "type", borrow)]
            type_: std::borrow::Cow<'a, str>,
        }
        fn body(type_: &str, text: &str) -> Option<RecordBody> {
            use serde_json::from_str as p;
            Some(match type_ {
                "reading" => RecordBody::Reading(p(text).ok()?),
                "lot_received" => RecordBody::LotReceived(p(text).ok()?),
                "material_loaded" => RecordBody::MaterialLoaded(p(text).ok()?),
                "unit_started" => RecordBody::UnitStarted(p(text).ok()?),
                "operation_completed" => RecordBody::OperationCompleted(p(text).ok()?),
                "assembled" => RecordBody::Assembled(p(text).ok()?),
                "disassembled" => RecordBody::Disassembled(p(text).ok()?),
                "packed" => RecordBody::Packed(p(text).ok()?),
                "unpacked" => RecordBody::Unpacked(p(text).ok()?),
                "shipped" => RecordBody::Shipped(p(text).ok()?),
                "quality_check" => RecordBody::QualityCheck(p(text).ok()?),
                "scan_rejected" => RecordBody::ScanRejected(p(text).ok()?),
                _ => return None,
            })
        }
        let fast = serde_json::from_str::<Head<'_>>(text).ok().and_then(|h| {
            body(&h.type_, text).map(|body| Record {
                seq: h.seq,
                ts: h.ts,
                body,
            })
        });
        match fast {
            Some(r) => Ok(r),
            None => serde_json::from_str(text),
        }
    }
}

/// The type-specific part of a record; `type` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordBody {
    Reading(Reading),
    LotReceived(LotReceived),
    MaterialLoaded(MaterialLoaded),
    UnitStarted(UnitStarted),
    OperationCompleted(OperationCompleted),
    Assembled(Assembly),
    Disassembled(Assembly),
    Packed(Packing),
    Unpacked(Packing),
    Shipped(Shipped),
    QualityCheck(QualityCheck),
    ScanRejected(ScanRejected),
}

impl RecordBody {
    /// Every `type` name of the contract, in declaration order.
    pub const TYPE_NAMES: [&'static str; 12] = [
        "reading",
        "lot_received",
        "material_loaded",
        "unit_started",
        "operation_completed",
        "assembled",
        "disassembled",
        "packed",
        "unpacked",
        "shipped",
        "quality_check",
        "scan_rejected",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            RecordBody::Reading(_) => "reading",
            RecordBody::LotReceived(_) => "lot_received",
            RecordBody::MaterialLoaded(_) => "material_loaded",
            RecordBody::UnitStarted(_) => "unit_started",
            RecordBody::OperationCompleted(_) => "operation_completed",
            RecordBody::Assembled(_) => "assembled",
            RecordBody::Disassembled(_) => "disassembled",
            RecordBody::Packed(_) => "packed",
            RecordBody::Unpacked(_) => "unpacked",
            RecordBody::Shipped(_) => "shipped",
            RecordBody::QualityCheck(_) => "quality_check",
            RecordBody::ScanRejected(_) => "scan_rejected",
        }
    }

    /// True for a time-series reading; false for a trace event (which is never dropped).
    pub fn is_reading(&self) -> bool {
        matches!(self, RecordBody::Reading(_))
    }
}

/// A tag value: number, bool or string. Integers stay integers (no f64 rounding of u64 counters):
/// an integer that fits `i64` is `Int`, a larger one `UInt`.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Serialize for TagValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TagValue::Bool(b) => s.serialize_bool(*b),
            TagValue::Int(i) => s.serialize_i64(*i),
            TagValue::UInt(u) => s.serialize_u64(*u),
            // JSON has no NaN / infinity and serde_json would write `null`, which a required
            // `value` rejects — one NaN register would make the whole envelope unparseable.
            // As text ("NaN", "inf", "-inf") it survives, and is never in spec.
            TagValue::Float(f) if !f.is_finite() => s.serialize_str(&f.to_string()),
            TagValue::Float(f) => s.serialize_f64(*f),
            TagValue::Text(t) => s.serialize_str(t),
        }
    }
}

// By hand rather than `#[serde(untagged)]`: that buffers the value and tries each variant in
// turn, building an error for every miss — measurably slow for the commonest field of ingest.
impl<'de> Deserialize<'de> for TagValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TagValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, a bool or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<TagValue, E> {
                Ok(TagValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<TagValue, E> {
                Ok(TagValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<TagValue, E> {
                Ok(i64::try_from(v).map_or(TagValue::UInt(v), TagValue::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TagValue, E> {
                Ok(TagValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<TagValue, E> {
                Ok(TagValue::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<TagValue, E> {
                Ok(TagValue::Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl TagValue {
    /// The value as a number, if it is one (bools are 0 / 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            TagValue::Bool(b) => Some(f64::from(u8::from(*b))),
            TagValue::Int(i) => Some(*i as f64),
            TagValue::UInt(u) => Some(*u as f64),
            TagValue::Float(f) => Some(*f),
            TagValue::Text(_) => None,
        }
    }

    /// The value as text (strings as they are, numbers and bools formatted).
    pub fn to_text(&self) -> String {
        match self {
            TagValue::Bool(b) => b.to_string(),
            TagValue::Int(i) => i.to_string(),
            TagValue::UInt(u) => u.to_string(),
            TagValue::Float(f) => f.to_string(),
            TagValue::Text(s) => s.clone(),
        }
    }
}

impl From<f64> for TagValue {
    fn from(v: f64) -> Self {
        TagValue::Float(v)
    }
}
impl From<bool> for TagValue {
    fn from(v: bool) -> Self {
        TagValue::Bool(v)
    }
}
impl From<i64> for TagValue {
    fn from(v: i64) -> Self {
        TagValue::Int(v)
    }
}
impl From<&str> for TagValue {
    fn from(v: &str) -> Self {
        TagValue::Text(v.to_owned())
    }
}
impl From<String> for TagValue {
    fn from(v: String) -> Self {
        TagValue::Text(v)
    }
}

/// Quality of a reading, as OPC UA and every historian know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    Bad,
    Uncertain,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::Uncertain => "uncertain",
        }
    }
}

/// `reading`: one sampled tag value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device: String,
    pub tag: String,
    /// Absent when the quality is bad and no value could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<TagValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub quality: Quality,
    /// Why the quality is not good (exception, timeout, OPC UA status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `lot_received`: goods receipt of a supplier lot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LotReceived {
    pub lot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_batch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

/// `material_loaded`: a lot was loaded into a station's feeder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterialLoaded {
    pub station: String,
    pub lot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// `unit_started`: a serial entered production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStarted {
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order: Option<String>,
    pub station: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// Pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

/// A process parameter captured with an operation, with its specification limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: TagValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsl: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usl: Option<f64>,
}

impl Parameter {
    /// In spec when numeric and within [lsl, usl] (limits that are absent do not constrain);
    /// a non-numeric value is in spec only when it has no limits.
    pub fn in_spec(&self) -> bool {
        match self.value.as_f64() {
            Some(v) => self.lsl.is_none_or(|l| v >= l) && self.usl.is_none_or(|u| v <= u),
            None => self.lsl.is_none() && self.usl.is_none(),
        }
    }
}

/// An environment value snapshotted with an operation (ambient temperature, humidity, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentValue {
    pub name: String,
    pub value: TagValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A material lot consumed by an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterialUse {
    pub lot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    pub qty: f64,
}

/// `operation_completed`: the internal trace of one operation on one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationCompleted {
    pub unit: String,
    pub station: String,
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equipment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    pub result: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defect_code: Option<String>,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub environment: Vec<EnvironmentValue>,
    #[serde(default)]
    pub materials: Vec<MaterialUse>,
}

/// Kinds of traceable items (genealogy nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Unit,
    Lot,
    Container,
    Shipment,
}

impl ItemKind {
    pub const ALL: [ItemKind; 4] = [
        ItemKind::Unit,
        ItemKind::Lot,
        ItemKind::Container,
        ItemKind::Shipment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Unit => "unit",
            ItemKind::Lot => "lot",
            ItemKind::Container => "container",
            ItemKind::Shipment => "shipment",
        }
    }
}

impl std::str::FromStr for ItemKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unit" => Ok(ItemKind::Unit),
            "lot" => Ok(ItemKind::Lot),
            "container" => Ok(ItemKind::Container),
            "shipment" => Ok(ItemKind::Shipment),
            other => Err(format!(
                "unknown item kind {other:?}, expected one of unit, lot, container, shipment"
            )),
        }
    }
}

impl std::fmt::Display for ItemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to an item: `{"kind":"unit","id":"SN0000000042"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemRef {
    pub kind: ItemKind,
    pub id: String,
}

impl ItemRef {
    pub fn new(kind: ItemKind, id: impl Into<String>) -> Self {
        ItemRef {
            kind,
            id: id.into(),
        }
    }
}

/// `assembled` / `disassembled`: a child unit or lot bound to (or removed from) a parent unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assembly {
    pub parent: String,
    pub child: ItemRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Why a child was removed (disassembly) — or reworked in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Container levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerLevel {
    Case,
    Pallet,
}

impl ContainerLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerLevel::Case => "case",
            ContainerLevel::Pallet => "pallet",
        }
    }
}

/// `packed` / `unpacked`: a unit or case put into (or taken out of) a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packing {
    pub container: String,
    pub level: ContainerLevel,
    pub child: ItemRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// `shipped`: a container or unit left on a shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipped {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub shipment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

/// `quality_check`: an inspected characteristic of a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityCheck {
    pub unit: String,
    pub characteristic: String,
    pub value: TagValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_of_measure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsl: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usl: Option<f64>,
    pub result: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// `scan_rejected`: a scan that could not be used, with the raw code and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRejected {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    pub scanner: String,
    pub raw: String,
    pub reason: String,
}
