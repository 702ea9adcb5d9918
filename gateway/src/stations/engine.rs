//! The station engine: keeps every station's context (current unit, operator, feeders, open
//! container / shipment, the line's work order) and turns tag edges and scans into trace events.
//!
//! It is synchronous and does no I/O but the state file: the runtime feeds it every tag update
//! and scan in the order they arrived and appends what it returns to the outbox. It never needs
//! the aggregator.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use threadline_shared::event::{
    Assembly, ContainerLevel, EnvironmentValue, ItemKind, ItemRef, LotReceived, MaterialLoaded,
    MaterialUse, OperationCompleted, Packing, Parameter, Quality, QualityCheck, RecordBody,
    ScanRejected, Shipped, TagValue, UnitStarted, Verdict,
};
use threadline_shared::time::{Timestamp, canonical};

use super::codes::{Classified, PartHint, Pattern, classify, decode_epc, parse_gs1};
use super::config::{
    CodeKind, Edge, Rework, StationConfig, StationKind, TriggerConfig, TriggerValue,
};
use super::state::{
    self, Child, CurrentUnit, OpenContainer, OpenShipment, Pending, Persisted, StationState,
};
use crate::config::GatewayConfig;
use crate::drivers::{RawScan, TagUpdate};

/// A trace event produced by the station logic, to be appended to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct StationEvent {
    pub ts: Timestamp,
    pub body: RecordBody,
}

/// Why a scan (or a completion edge) could not be used: the `reason` of `scan_rejected`.
pub mod reason {
    pub const NO_PATTERN: &str = "no pattern matches";
    pub const UNREADABLE: &str = "unreadable scan";
    pub const UNKNOWN_STATION: &str = "scanner's station is not configured";
    pub const NO_OPEN_CONTAINER: &str = "no open container";
    pub const NO_OPEN_SHIPMENT: &str = "no open shipment";
    pub const NO_CURRENT_UNIT: &str = "no current unit";
    pub const NO_FEEDER: &str = "no feeder for the lot's part at this station";
    pub const LOT_PART_UNKNOWN: &str =
        "the lot label carries no part and the station has several feeders";
    pub const ALREADY_COMPLETED: &str = "unit already completed at this station (rework = reject)";
    pub const COMPLETION_WITHOUT_UNIT: &str = "completion with no current unit";
    pub const NOT_USED_HERE: &str = "code kind not used at this station kind";
}

/// Counters for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StationCounters {
    /// `scan_rejected` events emitted (including completions with no current unit).
    pub rejected: u64,
    /// Completion edges that found no current unit.
    pub orphan_completions: u64,
    /// Failed writes of `stations.json` (the engine keeps running on its in-memory state).
    pub persist_errors: u64,
}

struct Station {
    cfg: Arc<StationConfig>,
    st: StationState,
}

/// All stations of a gateway.
pub struct StationEngine {
    stations: Vec<Station>,
    index: HashMap<String, usize>,
    patterns: Vec<Pattern>,
    /// Last good value of every tag, for snapshots (`capture`, `environment`, result, …).
    values: HashMap<String, TagValue>,
    /// Engineering unit of every tag (from `[[device.tag]] unit`).
    tag_units: HashMap<String, String>,
    /// Tags some station triggers on; only these change (and persist) the context.
    trigger_tags: HashSet<String>,
    /// GTIN → part, from every station's `gtin_parts` (the gateway's knowledge of labels).
    gtin_parts: BTreeMap<String, String>,
    /// Line-wide context and trigger values (stations' context is in `stations`).
    line: Persisted,
    dir: PathBuf,
    /// Bytes of the last successful write, to skip rewriting an unchanged state.
    last_written: Vec<u8>,
    counters: StationCounters,
}

impl StationEngine {
    /// Builds the stations of `cfg`, restoring persisted state from `state_dir` if present.
    pub fn new(cfg: &GatewayConfig, state_dir: &Path) -> anyhow::Result<StationEngine> {
        std::fs::create_dir_all(state_dir)?;
        let mut saved = state::load(state_dir)?;
        let mut stations = Vec::new();
        let mut index = HashMap::new();
        let mut trigger_tags = HashSet::new();
        let mut gtin_parts = BTreeMap::new();
        for s in &cfg.station {
            let mut st = saved.stations.remove(&s.id).unwrap_or_default();
            // Feeders removed from the config since the state was written are forgotten.
            st.feeders
                .retain(|part, _| s.feeder.iter().any(|f| &f.part == part));
            for t in [&s.complete_on, &s.start_on, &s.disassemble_on]
                .into_iter()
                .flatten()
            {
                trigger_tags.insert(t.tag.clone());
            }
            for t in [&s.unit_tag, &s.work_order_tag].into_iter().flatten() {
                trigger_tags.insert(t.clone());
            }
            gtin_parts.extend(s.gtin_parts.clone());
            index.insert(s.id.clone(), stations.len());
            stations.push(Station {
                cfg: Arc::new(s.clone()),
                st,
            });
        }
        for gone in saved.stations.keys() {
            tracing::warn!(station = %gone, "saved context of a station no longer configured dropped");
        }
        saved.stations.clear();
        saved
            .trigger_values
            .retain(|tag, _| trigger_tags.contains(tag));
        let tag_units = cfg
            .device
            .iter()
            .flat_map(|d| d.tag.iter())
            .filter_map(|t| t.unit.clone().map(|u| (t.name.clone(), u)))
            .collect();
        let mut engine = StationEngine {
            stations,
            index,
            patterns: Pattern::compile(&cfg.pattern),
            values: HashMap::new(),
            tag_units,
            trigger_tags,
            gtin_parts,
            line: saved,
            dir: state_dir.to_path_buf(),
            last_written: Vec::new(),
            counters: StationCounters::default(),
        };
        // Triggers' last values double as the first snapshot values.
        for (tag, v) in &engine.line.trigger_values {
            engine.values.insert(tag.clone(), v.clone());
        }
        engine.last_written = engine.snapshot_bytes();
        Ok(engine)
    }

    /// Feeds every tag update (all tags, before deadband); returns the events it completes.
    pub fn on_tag(&mut self, update: &TagUpdate) -> Vec<StationEvent> {
        let value = match (&update.value, update.quality) {
            (Some(v), Quality::Good | Quality::Uncertain) => v.clone(),
            _ => {
                // A bad value is not a value: snapshots omit it, and it fires no trigger.
                self.values.remove(&update.tag);
                return Vec::new();
            }
        };
        // Hot path (every polled value): no allocation when the tag is already known.
        match self.values.get_mut(&update.tag) {
            Some(v) => v.clone_from(&value),
            None => {
                self.values.insert(update.tag.clone(), value.clone());
            }
        }
        if !self.trigger_tags.contains(&update.tag) {
            return Vec::new();
        }
        if self.line.trigger_values.get(&update.tag) == Some(&value) {
            // Polled again unchanged: no edge, nothing to persist.
            return Vec::new();
        }
        let prev = self
            .line
            .trigger_values
            .insert(update.tag.clone(), value.clone());
        let ts = canonical(update.ts);
        let tag = update.tag.as_str();
        let mut out = Vec::new();
        for i in 0..self.stations.len() {
            let cfg = self.stations[i].cfg.clone();
            if cfg.work_order_tag.as_deref() == Some(tag) {
                let wo = value.to_text();
                if !wo.is_empty() && prev.as_ref().is_none_or(|p| p.to_text() != wo) {
                    self.line.work_order = Some(wo);
                    self.line.work_order_part = None;
                }
            }
            if cfg.unit_tag.as_deref() == Some(tag) {
                // PLC strings are often padded with NULs or blanks.
                let clean = |v: &TagValue| {
                    v.to_text()
                        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                        .to_owned()
                };
                let serial = clean(&value);
                if !serial.is_empty() && prev.as_ref().is_none_or(|p| clean(p) != serial) {
                    let source = format!("tag:{tag}");
                    self.set_unit(i, &serial, ts, &source, &serial, &mut out);
                }
            }
            if cfg
                .start_on
                .as_ref()
                .is_some_and(|t| t.tag == tag && fires(t, prev.as_ref(), &value))
            {
                match &mut self.stations[i].st.unit {
                    Some(u) => u.started_at = Some(ts),
                    None => {
                        tracing::info!(station = %cfg.id, tag, "start edge with no current unit")
                    }
                }
            }
            if cfg
                .complete_on
                .as_ref()
                .is_some_and(|t| t.tag == tag && fires(t, prev.as_ref(), &value))
            {
                let raw = format!("{tag}={}", value.to_text());
                self.complete(i, ts, &format!("tag:{tag}"), &raw, &mut out);
            }
            if cfg
                .disassemble_on
                .as_ref()
                .is_some_and(|t| t.tag == tag && fires(t, prev.as_ref(), &value))
            {
                self.disassemble_all(i, ts, &mut out);
            }
        }
        self.persist();
        out
    }

    /// Feeds a scan; returns the events it causes (including `scan_rejected`).
    pub fn on_scan(&mut self, scan: &RawScan) -> Vec<StationEvent> {
        let mut out = Vec::new();
        self.scan_inner(scan, &mut out);
        self.persist();
        out
    }

    /// Counters for metrics.
    pub fn counters(&self) -> StationCounters {
        self.counters
    }

    /// The current unit of a station (for status pages and tests).
    pub fn current_unit(&self, station: &str) -> Option<&str> {
        let i = *self.index.get(station)?;
        self.stations[i].st.unit.as_ref().map(|u| u.id.as_str())
    }

    /// The logged-in operator of a station.
    pub fn operator(&self, station: &str) -> Option<&str> {
        let i = *self.index.get(station)?;
        self.stations[i].st.operator.as_deref()
    }

    /// The lot loaded in a station's feeder of `part`.
    pub fn feeder_lot(&self, station: &str, part: &str) -> Option<&str> {
        let i = *self.index.get(station)?;
        self.stations[i].st.feeders.get(part).map(String::as_str)
    }

    /// The line's current work order.
    pub fn work_order(&self) -> Option<&str> {
        self.line.work_order.as_deref()
    }

    fn scan_inner(&mut self, scan: &RawScan, out: &mut Vec<StationEvent>) {
        let ts = canonical(scan.ts);
        let Some(&i) = self.index.get(&scan.station) else {
            self.reject(None, scan, ts, reason::UNKNOWN_STATION.to_owned(), out);
            return;
        };
        if let Some(err) = &scan.error {
            self.reject(
                Some(i),
                scan,
                ts,
                format!("{}: {err}", reason::UNREADABLE),
                out,
            );
            return;
        }
        let cfg = self.stations[i].cfg.clone();
        let code = scan.raw.trim();
        if self.control_code(i, &cfg, scan, code, ts, out) {
            return;
        }
        let (text, gs1) = if scan.rfid {
            match decode_epc(code) {
                Some(pairs) => (
                    pairs
                        .iter()
                        .map(|(a, v)| format!("({a}){v}"))
                        .collect::<String>(),
                    Some(pairs),
                ),
                None => (code.to_owned(), None),
            }
        } else {
            (code.to_owned(), parse_gs1(code))
        };
        let Some(c) = classify(&self.patterns, &cfg.id, &text, gs1.as_deref()) else {
            self.reject(Some(i), scan, ts, reason::NO_PATTERN.to_owned(), out);
            return;
        };
        match c.kind {
            CodeKind::Operator => self.stations[i].st.operator = Some(c.id),
            CodeKind::WorkOrder => {
                self.line.work_order_part = c.part_hint.as_ref().map(|h| self.resolve_part(h));
                self.line.work_order = Some(c.id);
            }
            CodeKind::Lot => self.lot_scan(i, &cfg, scan, c, ts, out),
            CodeKind::Unit => self.unit_scan(i, &cfg, scan, c, ts, out),
            CodeKind::Container => self.container_scan(i, &cfg, scan, c, ts, out),
            CodeKind::Shipment => {
                if cfg.kind != StationKind::Ship {
                    self.reject_kind(i, &cfg, scan, c.kind, ts, out);
                    return;
                }
                let customer = c
                    .customer
                    .or_else(|| cfg.shipment_customers.get(&c.id).cloned())
                    .or_else(|| cfg.customer.clone());
                self.stations[i].st.shipment = Some(OpenShipment { id: c.id, customer });
            }
        }
    }

    /// Station control codes (logout, complete, close, disassemble, unpack); true if `code` was one.
    fn control_code(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        code: &str,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) -> bool {
        let st = &mut self.stations[i].st;
        if cfg.logout_code.as_deref() == Some(code) {
            st.operator = None;
            return true;
        }
        if cfg.complete_code.as_deref() == Some(code) {
            if st.unit.is_none() {
                self.reject(Some(i), scan, ts, reason::NO_CURRENT_UNIT.to_owned(), out);
            } else {
                self.complete(i, ts, &scan.scanner, code, out);
            }
            return true;
        }
        if cfg.close_code.as_deref() == Some(code) {
            let closed = match cfg.kind {
                StationKind::Ship => st
                    .shipment
                    .take()
                    .map(|_| ())
                    .ok_or(reason::NO_OPEN_SHIPMENT),
                _ => st
                    .container
                    .take()
                    .map(|_| ())
                    .ok_or(reason::NO_OPEN_CONTAINER),
            };
            st.pending = None;
            if let Err(why) = closed {
                self.reject(Some(i), scan, ts, why.to_owned(), out);
            }
            return true;
        }
        if let Some(dc) = cfg.disassemble_code.as_deref() {
            let reason = if code == dc {
                Some(cfg.disassemble_reason.clone())
            } else {
                code.strip_prefix(dc)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
            };
            if let Some(reason) = reason {
                if st.unit.is_none() {
                    self.reject(Some(i), scan, ts, reason::NO_CURRENT_UNIT.to_owned(), out);
                } else {
                    st.pending = Some(Pending::Disassemble { reason });
                }
                return true;
            }
        }
        if cfg.unpack_code.as_deref() == Some(code) {
            if st.container.is_none() {
                self.reject(Some(i), scan, ts, reason::NO_OPEN_CONTAINER.to_owned(), out);
            } else {
                st.pending = Some(Pending::Unpack);
            }
            return true;
        }
        false
    }

    fn resolve_part(&self, hint: &PartHint) -> String {
        match hint {
            PartHint::Part(p) => p.clone(),
            PartHint::Gtin(g) => self.gtin_parts.get(g).cloned().unwrap_or_else(|| g.clone()),
        }
    }

    fn lot_scan(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        c: Classified,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        let part = c.part_hint.as_ref().map(|h| self.resolve_part(h));
        match cfg.kind {
            StationKind::Receive => {
                out.push(StationEvent {
                    ts,
                    body: RecordBody::LotReceived(LotReceived {
                        lot: c.id,
                        part,
                        supplier: c.supplier.or_else(|| cfg.supplier.clone()),
                        supplier_batch: c.batch,
                        qty: c.qty,
                        station: Some(cfg.id.clone()),
                    }),
                });
                return;
            }
            StationKind::Pack | StationKind::Ship => {
                self.reject_kind(i, cfg, scan, c.kind, ts, out);
                return;
            }
            StationKind::Process | StationKind::Assembly | StationKind::Inspect => {}
        }
        let pending = self.stations[i].st.pending.take();
        if let Some(Pending::Disassemble { reason }) = pending {
            self.disassemble_one(
                i,
                cfg,
                ItemRef::new(ItemKind::Lot, c.id),
                c.qty,
                reason,
                ts,
                out,
            );
            return;
        }
        let feeder = match &part {
            Some(p) => cfg.feeder.iter().find(|f| &f.part == p),
            None if cfg.feeder.len() == 1 => cfg.feeder.first(),
            None if cfg.feeder.len() > 1 => {
                self.reject(Some(i), scan, ts, reason::LOT_PART_UNKNOWN.to_owned(), out);
                return;
            }
            None => None,
        };
        if let Some(f) = feeder {
            let st = &mut self.stations[i].st;
            st.feeders.insert(f.part.clone(), c.id.clone());
            out.push(StationEvent {
                ts,
                body: RecordBody::MaterialLoaded(MaterialLoaded {
                    station: cfg.id.clone(),
                    lot: c.id,
                    part: Some(f.part.clone()),
                    operator: st.operator.clone(),
                }),
            });
            return;
        }
        // No feeder takes it: an assembly station binds it to the current unit directly.
        if cfg.kind == StationKind::Assembly && self.stations[i].st.unit.is_some() {
            let qty = c.qty.or(Some(1.0));
            self.assemble(i, cfg, ItemRef::new(ItemKind::Lot, c.id), qty, ts, out);
            return;
        }
        let why = match part {
            Some(p) => format!("{} ({p})", reason::NO_FEEDER),
            None => reason::NO_FEEDER.to_owned(),
        };
        self.reject(Some(i), scan, ts, why, out);
    }

    fn unit_scan(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        c: Classified,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        match cfg.kind {
            StationKind::Process | StationKind::Inspect => {
                self.stations[i].st.pending = None;
                self.set_unit(i, &c.id, ts, &scan.scanner, &scan.raw, out);
            }
            StationKind::Assembly => {
                let pending = self.stations[i].st.pending.take();
                let child = ItemRef::new(ItemKind::Unit, c.id.clone());
                if let Some(Pending::Disassemble { reason }) = pending {
                    self.disassemble_one(i, cfg, child, Some(1.0), reason, ts, out);
                } else if self.stations[i]
                    .st
                    .unit
                    .as_ref()
                    .is_some_and(|u| u.id != c.id)
                {
                    self.assemble(i, cfg, child, Some(1.0), ts, out);
                } else {
                    self.set_unit(i, &c.id, ts, &scan.scanner, &scan.raw, out);
                }
            }
            StationKind::Pack => {
                self.pack_child(i, cfg, scan, ItemRef::new(ItemKind::Unit, c.id), ts, out);
            }
            StationKind::Ship => self.ship(i, cfg, scan, None, Some(c.id), ts, out),
            StationKind::Receive => self.reject_kind(i, cfg, scan, c.kind, ts, out),
        }
    }

    fn container_scan(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        c: Classified,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        match cfg.kind {
            StationKind::Pack => {
                let st = &mut self.stations[i].st;
                let pallet = cfg.level == Some(ContainerLevel::Pallet);
                let open_other = st.container.as_ref().is_some_and(|o| o.id != c.id);
                if pallet && (open_other || matches!(st.pending, Some(Pending::Unpack))) {
                    // At pallet level a container scanned while a pallet is open is a case.
                    self.pack_child(
                        i,
                        cfg,
                        scan,
                        ItemRef::new(ItemKind::Container, c.id),
                        ts,
                        out,
                    );
                } else if st.container.as_ref().is_none_or(|o| o.id != c.id) {
                    if let Some(old) = &st.container {
                        tracing::info!(station = %cfg.id, closed = %old.id, opened = %c.id, "new container label closes the open one");
                    }
                    st.pending = None;
                    st.container = Some(OpenContainer { id: c.id, count: 0 });
                }
            }
            StationKind::Ship => self.ship(i, cfg, scan, Some(c.id), None, ts, out),
            _ => self.reject_kind(i, cfg, scan, c.kind, ts, out),
        }
    }

    fn pack_child(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        child: ItemRef,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        let level = cfg.level.unwrap_or(ContainerLevel::Case);
        let st = &mut self.stations[i].st;
        let Some(open) = &mut st.container else {
            st.pending = None;
            self.reject(Some(i), scan, ts, reason::NO_OPEN_CONTAINER.to_owned(), out);
            return;
        };
        let packing = Packing {
            container: open.id.clone(),
            level,
            child,
            station: Some(cfg.id.clone()),
            operator: st.operator.clone(),
        };
        if matches!(st.pending.take(), Some(Pending::Unpack)) {
            open.count = open.count.saturating_sub(1);
            out.push(StationEvent {
                ts,
                body: RecordBody::Unpacked(packing),
            });
            return;
        }
        open.count += 1;
        if cfg.pack_size.is_some_and(|n| open.count >= n) {
            st.container = None;
        }
        out.push(StationEvent {
            ts,
            body: RecordBody::Packed(packing),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn ship(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        container: Option<String>,
        unit: Option<String>,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        let Some(sh) = &self.stations[i].st.shipment else {
            self.reject(Some(i), scan, ts, reason::NO_OPEN_SHIPMENT.to_owned(), out);
            return;
        };
        out.push(StationEvent {
            ts,
            body: RecordBody::Shipped(Shipped {
                container,
                unit,
                shipment: sh.id.clone(),
                customer: sh.customer.clone(),
                station: Some(cfg.id.clone()),
            }),
        });
    }

    fn assemble(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        child: ItemRef,
        qty: Option<f64>,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        let st = &mut self.stations[i].st;
        let Some(parent) = &st.unit else { return };
        out.push(StationEvent {
            ts,
            body: RecordBody::Assembled(Assembly {
                parent: parent.id.clone(),
                child: child.clone(),
                qty,
                station: Some(cfg.id.clone()),
                operator: st.operator.clone(),
                reason: None,
            }),
        });
        st.children.push(Child { item: child, qty });
    }

    #[allow(clippy::too_many_arguments)]
    fn disassemble_one(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        child: ItemRef,
        qty: Option<f64>,
        reason: String,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        let st = &mut self.stations[i].st;
        // The code was accepted only with a current unit; it may have completed since.
        let Some(parent) = &st.unit else {
            tracing::warn!(station = %cfg.id, child = %child.id, "disassembly with no current unit ignored");
            return;
        };
        let qty = st
            .children
            .iter()
            .find(|c| c.item == child)
            .and_then(|c| c.qty)
            .or(qty);
        st.children.retain(|c| c.item != child);
        out.push(StationEvent {
            ts,
            body: RecordBody::Disassembled(Assembly {
                parent: parent.id.clone(),
                child,
                qty,
                station: Some(cfg.id.clone()),
                operator: st.operator.clone(),
                reason: Some(reason),
            }),
        });
    }

    fn disassemble_all(&mut self, i: usize, ts: Timestamp, out: &mut Vec<StationEvent>) {
        let cfg = self.stations[i].cfg.clone();
        let st = &mut self.stations[i].st;
        let Some(parent) = &st.unit else {
            tracing::warn!(station = %cfg.id, "disassemble edge with no current unit");
            return;
        };
        for c in st.children.drain(..) {
            out.push(StationEvent {
                ts,
                body: RecordBody::Disassembled(Assembly {
                    parent: parent.id.clone(),
                    child: c.item,
                    qty: c.qty,
                    station: Some(cfg.id.clone()),
                    operator: st.operator.clone(),
                    reason: Some(cfg.disassemble_reason.clone()),
                }),
            });
        }
    }

    /// Makes `serial` the current unit (scan or unit tag); `source` names the scanner or tag.
    fn set_unit(
        &mut self,
        i: usize,
        serial: &str,
        ts: Timestamp,
        source: &str,
        raw: &str,
        out: &mut Vec<StationEvent>,
    ) {
        let cfg = self.stations[i].cfg.clone();
        let st = &mut self.stations[i].st;
        if st.unit.as_ref().is_some_and(|u| u.id == serial) {
            return; // the same unit again: nothing changes
        }
        let reworked = st.completed.contains(&serial.to_owned());
        if reworked && cfg.rework == Rework::Reject {
            self.reject_raw(
                i,
                source,
                raw,
                ts,
                reason::ALREADY_COMPLETED.to_owned(),
                out,
            );
            return;
        }
        if let Some(old) = &st.unit {
            tracing::warn!(station = %cfg.id, replaced = %old.id, by = %serial, "unit replaced before its operation completed");
        }
        st.unit = Some(CurrentUnit {
            id: serial.to_owned(),
            since: ts,
            started_at: None,
        });
        st.children.clear();
        if cfg.starts_units && !reworked {
            let wo = self.line.work_order.clone();
            let part = self
                .line
                .work_order_part
                .clone()
                .or_else(|| {
                    wo.as_ref()
                        .and_then(|w| cfg.work_order_parts.get(w).cloned())
                })
                .or_else(|| cfg.part.clone());
            out.push(StationEvent {
                ts,
                body: RecordBody::UnitStarted(UnitStarted {
                    unit: serial.to_owned(),
                    part,
                    work_order: wo,
                    station: cfg.id.clone(),
                    operator: self.stations[i].st.operator.clone(),
                }),
            });
        }
    }

    /// Completes the operation of the current unit at `ts` (the edge's floor time).
    fn complete(
        &mut self,
        i: usize,
        ts: Timestamp,
        source: &str,
        raw: &str,
        out: &mut Vec<StationEvent>,
    ) {
        let cfg = self.stations[i].cfg.clone();
        let Some(unit) = self.stations[i].st.unit.take() else {
            self.counters.orphan_completions += 1;
            tracing::warn!(station = %cfg.id, source, "completion with no current unit");
            self.reject_raw(
                i,
                source,
                raw,
                ts,
                reason::COMPLETION_WITHOUT_UNIT.to_owned(),
                out,
            );
            return;
        };
        let value = |tag: &str| self.values.get(tag);
        let mut parameters = Vec::new();
        for c in &cfg.capture {
            match value(&c.tag) {
                Some(v) => parameters.push(Parameter {
                    name: c.name.clone().unwrap_or_else(|| c.tag.clone()),
                    value: v.clone(),
                    unit: self.tag_units.get(&c.tag).cloned(),
                    lsl: c.lsl,
                    usl: c.usl,
                }),
                None => {
                    tracing::warn!(station = %cfg.id, tag = %c.tag, unit = %unit.id, "captured tag has no good value; parameter omitted")
                }
            }
        }
        let environment = cfg
            .environment
            .iter()
            .filter_map(|t| {
                value(t).map(|v| EnvironmentValue {
                    name: t.clone(),
                    value: v.clone(),
                    unit: self.tag_units.get(t).cloned(),
                })
            })
            .collect();
        let mut result = match &cfg.result {
            None => Verdict::Pass,
            Some(r) => match value(&r.tag) {
                Some(v) if matches_value(v, &r.pass) => Verdict::Pass,
                _ => Verdict::Fail,
            },
        };
        let recipe = cfg.recipe.as_deref().and_then(value).map(TagValue::to_text);
        let defect_code = cfg
            .defect_code
            .as_deref()
            .and_then(value)
            .filter(|v| v.as_f64() != Some(0.0) && !v.to_text().trim().is_empty())
            .map(TagValue::to_text);
        let st = &self.stations[i].st;
        let mut checks = Vec::new();
        for c in &cfg.characteristics {
            let Some(v) = value(&c.tag) else {
                tracing::warn!(station = %cfg.id, tag = %c.tag, unit = %unit.id, "characteristic has no good value; check omitted, operation fails");
                result = Verdict::Fail;
                continue;
            };
            let p = Parameter {
                name: String::new(),
                value: v.clone(),
                unit: None,
                lsl: c.lsl,
                usl: c.usl,
            };
            let verdict = if p.in_spec() {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            if verdict == Verdict::Fail {
                result = Verdict::Fail;
            }
            checks.push(StationEvent {
                ts,
                body: RecordBody::QualityCheck(QualityCheck {
                    unit: unit.id.clone(),
                    characteristic: c.name.clone().unwrap_or_else(|| c.tag.clone()),
                    value: v.clone(),
                    unit_of_measure: self.tag_units.get(&c.tag).cloned(),
                    lsl: c.lsl,
                    usl: c.usl,
                    result: verdict,
                    station: Some(cfg.id.clone()),
                    operator: st.operator.clone(),
                }),
            });
        }
        let mut materials = Vec::new();
        for f in &cfg.feeder {
            match st.feeders.get(&f.part) {
                Some(lot) => materials.push(MaterialUse {
                    lot: lot.clone(),
                    part: Some(f.part.clone()),
                    qty: f.qty_per_unit,
                }),
                None => {
                    tracing::warn!(station = %cfg.id, part = %f.part, unit = %unit.id, "feeder empty at completion: material not traced")
                }
            }
        }
        out.push(StationEvent {
            ts,
            body: RecordBody::OperationCompleted(OperationCompleted {
                unit: unit.id.clone(),
                station: cfg.id.clone(),
                operation: cfg.operation_name().to_owned(),
                equipment: cfg.equipment.clone(),
                operator: st.operator.clone(),
                recipe,
                started_at: Some(unit.started_at.unwrap_or(unit.since)),
                result,
                defect_code,
                parameters,
                environment,
                materials,
            }),
        });
        out.extend(checks);
        let st = &mut self.stations[i].st;
        st.children.clear();
        st.pending = None;
        st.completed.retain(|s| s != &unit.id);
        st.completed.push_back(unit.id);
        while st.completed.len() > cfg.rework_memory {
            st.completed.pop_front();
        }
    }

    fn reject_kind(
        &mut self,
        i: usize,
        cfg: &StationConfig,
        scan: &RawScan,
        kind: CodeKind,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        self.stations[i].st.pending = None;
        let why = format!(
            "{}: a {} code at a {} station",
            reason::NOT_USED_HERE,
            kind.as_str(),
            cfg.kind.as_str()
        );
        self.reject(Some(i), scan, ts, why, out);
    }

    fn reject(
        &mut self,
        i: Option<usize>,
        scan: &RawScan,
        ts: Timestamp,
        why: String,
        out: &mut Vec<StationEvent>,
    ) {
        match i {
            Some(i) => self.reject_raw(i, &scan.scanner, &scan.raw, ts, why, out),
            None => {
                self.counters.rejected += 1;
                tracing::warn!(scanner = %scan.scanner, station = %scan.station, raw = %scan.raw, reason = %why, "scan rejected");
                out.push(StationEvent {
                    ts,
                    body: RecordBody::ScanRejected(ScanRejected {
                        station: Some(scan.station.clone()),
                        scanner: scan.scanner.clone(),
                        raw: scan.raw.clone(),
                        reason: why,
                    }),
                });
            }
        }
    }

    fn reject_raw(
        &mut self,
        i: usize,
        scanner: &str,
        raw: &str,
        ts: Timestamp,
        why: String,
        out: &mut Vec<StationEvent>,
    ) {
        self.counters.rejected += 1;
        let station = self.stations[i].cfg.id.clone();
        tracing::info!(%station, scanner, raw, reason = %why, "scan rejected");
        out.push(StationEvent {
            ts,
            body: RecordBody::ScanRejected(ScanRejected {
                station: Some(station),
                scanner: scanner.to_owned(),
                raw: raw.to_owned(),
                reason: why,
            }),
        });
    }

    fn snapshot_bytes(&self) -> Vec<u8> {
        let mut p = self.line.clone();
        p.stations = self
            .stations
            .iter()
            .map(|s| (s.cfg.id.clone(), s.st.clone()))
            .collect();
        serde_json::to_vec_pretty(&p).unwrap_or_default()
    }

    /// Writes the state file if the context changed.
    fn persist(&mut self) {
        let bytes = self.snapshot_bytes();
        if bytes == self.last_written {
            return;
        }
        match state::write_atomic(&self.dir, &bytes) {
            Ok(()) => self.last_written = bytes,
            Err(e) => {
                self.counters.persist_errors += 1;
                tracing::error!(
                    error = format!("{e:#}"),
                    "writing station state failed; retried at the next change"
                );
            }
        }
    }
}

fn truthy(v: &TagValue) -> bool {
    match v.as_f64() {
        Some(n) => n != 0.0,
        None => !v.to_text().trim().is_empty(),
    }
}

fn matches_value(v: &TagValue, want: &TriggerValue) -> bool {
    match want {
        TriggerValue::Bool(b) => v.as_f64().is_some_and(|n| (n != 0.0) == *b),
        TriggerValue::Number(n) => v.as_f64().is_some_and(|x| (x - n).abs() < 1e-9),
        TriggerValue::Text(t) => v.to_text() == *t,
    }
}

/// Whether a trigger fires on the change `prev` → `now`. With no previous value (first value
/// ever, nothing persisted) nothing fires: a level is not an edge.
fn fires(t: &TriggerConfig, prev: Option<&TagValue>, now: &TagValue) -> bool {
    let Some(prev) = prev else { return false };
    if let Some(eq) = &t.equals {
        return matches_value(now, eq) && !matches_value(prev, eq);
    }
    match t.edge {
        Edge::Rising => !truthy(prev) && truthy(now),
        Edge::Falling => truthy(prev) && !truthy(now),
        Edge::Change => prev != now,
    }
}
