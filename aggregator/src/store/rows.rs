//! The rows the write path hands a backend: plain data, one struct per table it appends to.
//! A leaf module — it imports nothing from the rest of the store, and both backends import it.

use std::collections::HashMap;

use threadline_shared::event::{ItemKind, Record};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

/// Key of an item: (kind, external id).
pub(crate) type ItemKey = (ItemKind, String);

/// A record's canonical JSON (`Record::canonical_json`), the bytes the hash chain covers. Never
/// empty: the only way to make one is [`CanonicalBody::of`], which refuses an empty or non-UTF-8
/// serialization instead of chaining it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanonicalBody(String);

impl CanonicalBody {
    /// The body of `rec`, or why it has none.
    pub(crate) fn of(rec: &Record) -> Result<CanonicalBody, String> {
        let bytes = rec.canonical_json();
        if bytes.is_empty() {
            return Err("its canonical JSON is empty (serialization failed)".to_owned());
        }
        String::from_utf8(bytes)
            .map(CanonicalBody)
            .map_err(|e| format!("its canonical JSON is not UTF-8: {e}"))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new `events` row with its chain link.
#[derive(Debug, Clone)]
pub(crate) struct EventInsert {
    pub(crate) gateway: String,
    pub(crate) epoch: Uuid,
    pub(crate) seq: i64,
    pub(crate) ts: Timestamp,
    pub(crate) type_: &'static str,
    /// The record's canonical JSON, exactly what the hash covers.
    pub(crate) body: CanonicalBody,
    pub(crate) prev_hash: Vec<u8>,
    pub(crate) hash: Vec<u8>,
}

/// A `readings` row.
#[derive(Debug, Clone)]
pub(crate) struct ReadingInsert {
    pub(crate) gateway: String,
    pub(crate) epoch: Uuid,
    pub(crate) seq: i64,
    pub(crate) ts: Timestamp,
    pub(crate) device: String,
    pub(crate) tag: String,
    /// Numbers and bools; text goes to `value_text`.
    pub(crate) value_num: Option<f64>,
    pub(crate) value_text: Option<String>,
    pub(crate) unit: Option<String>,
    pub(crate) quality: &'static str,
    pub(crate) error: Option<String>,
}

/// What trace events say about an item (an `items` row to upsert); merged in event order, a
/// later value wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct ItemFill {
    pub(crate) part: Option<String>,
    pub(crate) supplier: Option<String>,
    pub(crate) supplier_batch: Option<String>,
    pub(crate) qty: Option<f64>,
    pub(crate) work_order: Option<String>,
    pub(crate) line: Option<String>,
    pub(crate) level: Option<String>,
    pub(crate) customer: Option<String>,
    /// The first time the shipment was seen shipped; an earlier value is kept.
    pub(crate) shipped_at: Option<Timestamp>,
    /// False once the item's defining data arrived (lot_received, unit_started, master data,
    /// packed as a container, shipped with a customer).
    pub(crate) placeholder: bool,
    /// True when any field above is set (else the item is only referenced).
    pub(crate) fills: bool,
    pub(crate) first_seen_at: Option<Timestamp>,
}

/// A new genealogy link (`edges` row).
#[derive(Debug, Clone)]
pub(crate) struct EdgeInsert {
    pub(crate) parent: ItemKey,
    pub(crate) child: ItemKey,
    pub(crate) relation: &'static str,
    pub(crate) qty: Option<f64>,
    pub(crate) station: Option<String>,
    pub(crate) valid_from: Timestamp,
    pub(crate) event_id: i64,
}

/// Closes the oldest open link matching parent, child and relation.
#[derive(Debug, Clone)]
pub(crate) struct EdgeClose {
    pub(crate) parent: ItemKey,
    pub(crate) child: ItemKey,
    pub(crate) relation: &'static str,
    pub(crate) at: Timestamp,
    pub(crate) reason: String,
    pub(crate) event_id: i64,
    /// Gateway of the closing event (kept with a pending close).
    pub(crate) gateway: String,
}

/// An `operations` row; `event_id` links its parameters and materials to it.
#[derive(Debug, Clone)]
pub(crate) struct OperationInsert {
    pub(crate) event_id: i64,
    pub(crate) unit: String,
    pub(crate) station: String,
    pub(crate) operation: String,
    pub(crate) equipment: Option<String>,
    pub(crate) operator: Option<String>,
    pub(crate) recipe: Option<String>,
    pub(crate) started_at: Option<Timestamp>,
    pub(crate) completed_at: Timestamp,
    pub(crate) result: &'static str,
    pub(crate) defect_code: Option<String>,
    /// Any parameter out of its limits.
    pub(crate) out_of_spec: bool,
    /// The environment snapshot as JSON text.
    pub(crate) environment: String,
    pub(crate) gateway: String,
}

/// An `operation_parameters` row of the operation of event `event_id`.
#[derive(Debug, Clone)]
pub(crate) struct ParameterInsert {
    pub(crate) event_id: i64,
    pub(crate) name: String,
    pub(crate) value_num: Option<f64>,
    pub(crate) value_text: Option<String>,
    pub(crate) unit: Option<String>,
    pub(crate) lsl: Option<f64>,
    pub(crate) usl: Option<f64>,
    pub(crate) in_spec: bool,
}

/// An `operation_materials` row of the operation of event `event_id`.
#[derive(Debug, Clone)]
pub(crate) struct MaterialInsert {
    pub(crate) event_id: i64,
    pub(crate) lot: String,
    pub(crate) qty: f64,
}

/// The operations of a batch with their parameters and materials (linked by `event_id` to the
/// operation of the same event).
#[derive(Debug, Clone, Default)]
pub(crate) struct OperationRows {
    pub(crate) operations: Vec<OperationInsert>,
    pub(crate) parameters: Vec<ParameterInsert>,
    pub(crate) materials: Vec<MaterialInsert>,
}

/// A `quality_checks` row.
#[derive(Debug, Clone)]
pub(crate) struct QualityInsert {
    pub(crate) event_id: i64,
    pub(crate) unit: String,
    pub(crate) characteristic: String,
    pub(crate) value_num: Option<f64>,
    pub(crate) value_text: Option<String>,
    pub(crate) unit_of_measure: Option<String>,
    pub(crate) lsl: Option<f64>,
    pub(crate) usl: Option<f64>,
    pub(crate) result: &'static str,
    pub(crate) station: Option<String>,
    pub(crate) operator: Option<String>,
    pub(crate) checked_at: Timestamp,
}

/// Database ids of the items of a batch, after their upsert. Looked up by `&str` (no key to
/// allocate per row).
#[derive(Debug, Default)]
pub(crate) struct ItemIds {
    by_kind: HashMap<ItemKind, HashMap<String, i64>>,
}

impl ItemIds {
    pub(crate) fn insert(&mut self, kind: ItemKind, ext_id: String, id: i64) {
        self.by_kind.entry(kind).or_default().insert(ext_id, id);
    }

    /// The id of an item of the batch; an error names an item the upsert did not return.
    pub(crate) fn get(&self, kind: ItemKind, ext_id: &str) -> sqlx::Result<i64> {
        self.by_kind
            .get(&kind)
            .and_then(|m| m.get(ext_id))
            .copied()
            .ok_or_else(|| {
                sqlx::Error::Protocol(format!("item {kind} {ext_id} missing after upsert"))
            })
    }

    pub(crate) fn of(&self, key: &ItemKey) -> sqlx::Result<i64> {
        self.get(key.0, &key.1)
    }
}

/// Database ids of a batch's operations by the event that reported each.
#[derive(Debug, Default)]
pub(crate) struct OperationIds(HashMap<i64, i64>);

impl OperationIds {
    pub(crate) fn with_capacity(n: usize) -> Self {
        OperationIds(HashMap::with_capacity(n))
    }

    pub(crate) fn insert(&mut self, event_id: i64, id: i64) {
        self.0.insert(event_id, id);
    }

    pub(crate) fn of_event(&self, event_id: i64) -> sqlx::Result<i64> {
        self.0
            .get(&event_id)
            .copied()
            .ok_or_else(|| sqlx::Error::Protocol(format!("operation of event {event_id} missing")))
    }
}
