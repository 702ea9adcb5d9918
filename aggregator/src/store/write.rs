//! The write path shared by both backends: deduplicate, chain, insert, project — one transaction
//! per batch. The backends (`postgres`, `sqlite`) only execute the statements.
//!
//! Readings are not chained: they go to `readings` only (idempotent by primary key). Trace events
//! go to the chained `events` log and, in the same transaction, to the projections (items, edges,
//! operations, …). Only events that are new (not already stored) are projected, so a re-delivered
//! batch changes nothing but its ack.

use std::collections::{BTreeMap, HashMap, HashSet};

use threadline_shared::event::{ItemKind, Record, RecordBody, TagValue};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

use super::chain;
use super::model::{Batch, BatchOutcome, DeadLetter, DeadLetterKind, StatusUpdate};
use super::{postgres, sqlite};

/// Key of an item: (kind, external id).
pub type ItemKey = (ItemKind, String);

/// A new event row with its chain link.
#[derive(Debug, Clone)]
pub struct EventInsert {
    pub gateway: String,
    pub epoch: Uuid,
    pub seq: i64,
    pub ts: Timestamp,
    pub type_: &'static str,
    pub body: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A reading row.
#[derive(Debug, Clone)]
pub struct ReadingInsert {
    pub gateway: String,
    pub epoch: Uuid,
    pub seq: i64,
    pub ts: Timestamp,
    pub device: String,
    pub tag: String,
    pub value_num: Option<f64>,
    pub value_text: Option<String>,
    pub unit: Option<String>,
    pub quality: &'static str,
    pub error: Option<String>,
}

/// What trace events say about an item; merged in event order (a later value wins).
#[derive(Debug, Clone, Default)]
pub struct ItemFill {
    pub part: Option<String>,
    pub supplier: Option<String>,
    pub supplier_batch: Option<String>,
    pub qty: Option<f64>,
    pub work_order: Option<String>,
    pub line: Option<String>,
    pub level: Option<String>,
    pub customer: Option<String>,
    pub shipped_at: Option<Timestamp>,
    /// False once the item's defining data arrived (lot_received, unit_started, master data,
    /// packed as a container, shipped with a customer).
    pub placeholder: bool,
    /// True when any field above is set (else the item is only referenced).
    pub fills: bool,
    pub first_seen_at: Option<Timestamp>,
}

impl ItemFill {
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

#[derive(Debug, Clone)]
pub struct EdgeInsert {
    pub parent: ItemKey,
    pub child: ItemKey,
    pub relation: &'static str,
    pub qty: Option<f64>,
    pub station: Option<String>,
    pub valid_from: Timestamp,
    pub event_id: i64,
}

#[derive(Debug, Clone)]
pub struct EdgeClose {
    pub parent: ItemKey,
    pub child: ItemKey,
    pub relation: &'static str,
    pub at: Timestamp,
    pub reason: String,
    pub event_id: i64,
    pub gateway: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct OperationInsert {
    pub event_id: i64,
    pub unit: String,
    pub station: String,
    pub operation: String,
    pub equipment: Option<String>,
    pub operator: Option<String>,
    pub recipe: Option<String>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Timestamp,
    pub result: &'static str,
    pub defect_code: Option<String>,
    pub out_of_spec: bool,
    pub environment: String,
    pub gateway: String,
}

#[derive(Debug, Clone)]
pub struct ParameterInsert {
    pub event_id: i64,
    pub name: String,
    pub value_num: Option<f64>,
    pub value_text: Option<String>,
    pub unit: Option<String>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub in_spec: bool,
}

#[derive(Debug, Clone)]
pub struct MaterialInsert {
    pub event_id: i64,
    pub lot: String,
    pub qty: f64,
}

#[derive(Debug, Clone)]
pub struct QualityInsert {
    pub event_id: i64,
    pub unit: String,
    pub characteristic: String,
    pub value_num: Option<f64>,
    pub value_text: Option<String>,
    pub unit_of_measure: Option<String>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub result: &'static str,
    pub station: Option<String>,
    pub operator: Option<String>,
    pub checked_at: Timestamp,
}

/// Every projection row derived from a batch's new events.
#[derive(Debug, Default)]
pub struct Projection {
    pub items: BTreeMap<ItemKey, ItemFill>,
    pub edges: Vec<EdgeInsert>,
    pub closes: Vec<EdgeClose>,
    pub operations: Vec<OperationInsert>,
    pub parameters: Vec<ParameterInsert>,
    pub materials: Vec<MaterialInsert>,
    pub quality: Vec<QualityInsert>,
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
    pub fn add(&mut self, event_id: i64, gateway: &str, line: &str, rec: &Record, body: &str) {
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
                    self.parameters.push(ParameterInsert {
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
                    self.materials.push(MaterialInsert {
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
                self.operations.push(OperationInsert {
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
                    body: body.to_owned(),
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
                    body: body.to_owned(),
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
pub fn split_value(v: &TagValue) -> (Option<f64>, Option<String>) {
    match v {
        TagValue::Text(s) => (None, Some(s.clone())),
        other => (other.as_f64(), None),
    }
}

/// A transaction on either backend; every statement the write path needs.
pub enum Tx<'c> {
    Postgres(sqlx::Transaction<'c, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'c, sqlx::Sqlite>),
}

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Tx::Postgres(t) => postgres::$f(t, $($arg),*).await,
            Tx::Sqlite(t) => sqlite::$f(t, $($arg),*).await,
        }
    };
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }
    async fn lock_gateway(&mut self, gw: &str, plant: &str, line: &str) -> sqlx::Result<()> {
        dispatch!(self, lock_gateway(gw, plant, line))
    }
    async fn chain_head(&mut self, gw: &str) -> sqlx::Result<Option<Vec<u8>>> {
        dispatch!(self, chain_head(gw))
    }
    async fn existing_seqs(
        &mut self,
        gw: &str,
        epoch: Uuid,
        seqs: &[i64],
    ) -> sqlx::Result<HashSet<i64>> {
        dispatch!(self, existing_seqs(gw, epoch, seqs))
    }
    async fn insert_events(&mut self, rows: &[EventInsert]) -> sqlx::Result<Vec<i64>> {
        dispatch!(self, insert_events(rows))
    }
    async fn insert_readings(&mut self, rows: &[ReadingInsert]) -> sqlx::Result<u64> {
        dispatch!(self, insert_readings(rows))
    }
    async fn upsert_items(
        &mut self,
        items: &BTreeMap<ItemKey, ItemFill>,
    ) -> sqlx::Result<HashMap<ItemKey, i64>> {
        dispatch!(self, upsert_items(items))
    }
    async fn insert_edges(
        &mut self,
        rows: &[EdgeInsert],
        ids: &HashMap<ItemKey, i64>,
    ) -> sqlx::Result<()> {
        dispatch!(self, insert_edges(rows, ids))
    }
    async fn close_edge(
        &mut self,
        c: &EdgeClose,
        ids: &HashMap<ItemKey, i64>,
    ) -> sqlx::Result<bool> {
        dispatch!(self, close_edge(c, ids))
    }
    async fn insert_operations(
        &mut self,
        p: &Projection,
        ids: &HashMap<ItemKey, i64>,
    ) -> sqlx::Result<()> {
        dispatch!(self, insert_operations(p, ids))
    }
    async fn insert_quality(
        &mut self,
        rows: &[QualityInsert],
        ids: &HashMap<ItemKey, i64>,
    ) -> sqlx::Result<()> {
        dispatch!(self, insert_quality(rows, ids))
    }
    async fn insert_dead_letters(&mut self, rows: &[DeadLetter]) -> sqlx::Result<()> {
        dispatch!(self, insert_dead_letters(rows))
    }
    async fn upsert_status(&mut self, s: &StatusUpdate) -> sqlx::Result<()> {
        dispatch!(self, upsert_status(s))
    }
    async fn touch_gateway(&mut self, gw: &str, newest: Timestamp) -> sqlx::Result<()> {
        dispatch!(self, touch_gateway(gw, newest))
    }
}

/// Writes one batch in the given (open) transaction; the caller commits.
pub async fn write_batch(tx: &mut Tx<'_>, batch: &Batch) -> sqlx::Result<BatchOutcome> {
    let mut out = BatchOutcome::default();
    let mut dead: Vec<DeadLetter> = batch.dead_letters.clone();

    for s in &batch.statuses {
        tx.upsert_status(s).await?;
    }

    // Group envelopes by gateway; lock gateways in name order (no deadlock between replicas).
    let mut by_gateway: BTreeMap<&str, Vec<&super::model::EnvelopeRecords>> = BTreeMap::new();
    for e in &batch.envelopes {
        by_gateway.entry(e.gateway.as_str()).or_default().push(e);
    }
    let mut readings: Vec<ReadingInsert> = Vec::new();
    let mut events: Vec<EventInsert> = Vec::new();
    // Index into `events` → (gateway, line, record) for projecting after the insert.
    let mut event_src: Vec<(&str, &str, &Record)> = Vec::new();
    let mut reading_keys: HashSet<(String, Uuid, i64)> = HashSet::new();

    for (gw, envs) in &by_gateway {
        let first = envs[0];
        tx.lock_gateway(gw, &first.plant, &first.line).await?;
        let mut head = tx
            .chain_head(gw)
            .await?
            .unwrap_or_else(|| chain::GENESIS.to_vec());
        // Trace-event seqs already stored, per epoch.
        let mut by_epoch: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
        for e in envs {
            let seqs = by_epoch.entry(e.epoch).or_default();
            seqs.extend(
                e.records
                    .iter()
                    .filter(|r| !r.body.is_reading())
                    .map(|r| r.seq as i64),
            );
        }
        let mut stored: HashMap<Uuid, HashSet<i64>> = HashMap::new();
        for (epoch, seqs) in &by_epoch {
            if !seqs.is_empty() {
                stored.insert(*epoch, tx.existing_seqs(gw, *epoch, seqs).await?);
            }
        }
        for e in envs {
            let committed = out
                .committed
                .entry((e.gateway.clone(), e.plant.clone(), e.line.clone(), e.epoch))
                .or_default();
            committed.extend(e.dead_seqs.iter().copied());
            let stored = stored.entry(e.epoch).or_default();
            for rec in &e.records {
                committed.push(rec.seq);
                let newest = out.newest_ts.entry(e.gateway.clone()).or_insert(rec.ts);
                if rec.ts > *newest {
                    *newest = rec.ts;
                }
                let seq = rec.seq as i64;
                if let RecordBody::Reading(r) = &rec.body {
                    if !reading_keys.insert((e.gateway.clone(), e.epoch, seq)) {
                        out.duplicates += 1;
                        continue;
                    }
                    let (value_num, value_text) = match &r.value {
                        Some(v) => split_value(v),
                        None => (None, None),
                    };
                    readings.push(ReadingInsert {
                        gateway: e.gateway.clone(),
                        epoch: e.epoch,
                        seq,
                        ts: rec.ts,
                        device: r.device.clone(),
                        tag: r.tag.clone(),
                        value_num,
                        value_text,
                        unit: r.unit.clone(),
                        quality: r.quality.as_str(),
                        error: r.error.clone(),
                    });
                    continue;
                }
                if !stored.insert(seq) {
                    out.duplicates += 1;
                    continue;
                }
                let body = String::from_utf8(rec.canonical_json()).unwrap_or_default();
                let hash = chain::link_hash(&head, gw, &e.epoch, body.as_bytes());
                events.push(EventInsert {
                    gateway: e.gateway.clone(),
                    epoch: e.epoch,
                    seq,
                    ts: rec.ts,
                    type_: rec.type_name(),
                    body,
                    prev_hash: std::mem::replace(&mut head, hash.to_vec()),
                    hash: hash.to_vec(),
                });
                event_src.push((e.gateway.as_str(), e.line.as_str(), rec));
            }
        }
    }

    if !readings.is_empty() {
        let new = tx.insert_readings(&readings).await?;
        out.duplicates += readings.len() as u64 - new;
        if new > 0 {
            *out.new_by_type.entry("reading").or_default() += new;
        }
    }
    if !events.is_empty() {
        let ids = tx.insert_events(&events).await?;
        let mut proj = Projection::default();
        for ((ev, id), (gw, line, rec)) in events.iter().zip(&ids).zip(&event_src) {
            *out.new_by_type.entry(ev.type_).or_default() += 1;
            proj.add(*id, gw, line, rec, &ev.body);
        }
        let ids = tx.upsert_items(&proj.items).await?;
        if !proj.edges.is_empty() {
            tx.insert_edges(&proj.edges, &ids).await?;
        }
        for c in &proj.closes {
            if !tx.close_edge(c, &ids).await? {
                dead.push(DeadLetter {
                    topic: String::new(),
                    gateway: Some(c.gateway.clone()),
                    kind: DeadLetterKind::UnmatchedClose,
                    reason: format!(
                        "event {}: no open {} edge {} {} → {} {} to close (arrived before the \
                         event that opened it?); the event itself is stored in the log",
                        c.event_id, c.relation, c.parent.0, c.parent.1, c.child.0, c.child.1
                    ),
                    payload: c.body.clone().into_bytes(),
                });
            }
        }
        if !proj.operations.is_empty() {
            tx.insert_operations(&proj, &ids).await?;
        }
        if !proj.quality.is_empty() {
            tx.insert_quality(&proj.quality, &ids).await?;
        }
    }
    for (gw, ts) in &out.newest_ts {
        tx.touch_gateway(gw, *ts).await?;
    }
    if !dead.is_empty() {
        tx.insert_dead_letters(&dead).await?;
        for d in &dead {
            *out.dead_letters.entry(d.kind).or_default() += 1;
        }
    }
    Ok(out)
}
