//! The station engine: keeps every station's context (current unit, operator, feeders, open
//! container / shipment, the line's work order) and turns tag edges and scans into trace events.
//!
//! It is synchronous and does no I/O: the runtime feeds it every tag update and scan in the
//! order they arrived and commits what one input produced — its events and, when it changed,
//! the new context ([`StationEngine::take_state`]) — in one outbox transaction (see `state.rs`
//! for why and what the restart sees). It never needs the aggregator. What a station does with an input is in `triggers.rs` (tag changes),
//! `scans.rs` (scans), `genealogy.rs` (assembly, packing, shipping) and `complete.rs`
//! (operation completion), all working on one [`Station`] at a time.

use std::collections::{BTreeMap, HashMap, HashSet};

use threadline_shared::event::{Quality, RecordBody, ScanRejected};
use threadline_shared::time::{Timestamp, canonical};

use super::codes::Pattern;
use super::config::{CodeKind, StationConfig, StationKind};
use super::scans::{classify_scan, is_control_code};
use super::state::{Pending, Persisted, SavedState, StationState};
use super::station::{Facts, Station, StationCounters, StationEvent, reason};
use crate::config::GatewayConfig;
use crate::drivers::{RawScan, TagUpdate};

/// Whether a checked scan names a unit or a lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Unit,
    Lot,
}

impl SubjectKind {
    /// The hold kind (`unit`, `lot`).
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Unit => "unit",
            SubjectKind::Lot => "lot",
        }
    }
}

/// A scanned unit or lot a station with `enforce_route = true` checks (see
/// [`StationEngine::route_subject`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSubject {
    pub station: String,
    pub kind: SubjectKind,
    pub id: String,
    /// Check the unit's route at this station (false: holds only).
    pub route: bool,
    /// A unit: the part it gets when it starts here (the line's work order, the station's
    /// `part`), for a serial the aggregator has not seen yet; a lot: the part its label names.
    pub part: Option<String>,
    /// A lot: the station's current unit, whose route says which materials the operation
    /// takes.
    pub unit: Option<String>,
    /// A lot: the part units started here get (the line's work order, the station's `part`),
    /// for the route when the current unit's part is not known.
    pub unit_part: Option<String>,
}

/// A configured station and its context.
struct Slot {
    cfg: StationConfig,
    st: StationState,
}

/// All stations of a gateway.
pub struct StationEngine {
    stations: Vec<Slot>,
    /// Station id → its place in `stations`.
    index: HashMap<String, usize>,
    facts: Facts,
    /// Tags some station triggers on; only these change (and persist) the context.
    trigger_tags: HashSet<String>,
    /// Line-wide context and trigger values (stations' context is in `stations`).
    line: Persisted,
    /// An input may have changed the context since the last [`StationEngine::take_state`].
    dirty: bool,
    /// The context last handed out (or restored), to skip committing an unchanged one.
    last_taken: String,
    counters: StationCounters,
}

impl StationEngine {
    /// Builds the stations of `cfg`, continuing from the committed context `saved` (`None`: a
    /// first start, every station empty).
    pub fn new(cfg: &GatewayConfig, saved: Option<SavedState>) -> StationEngine {
        let mut saved = saved.map_or_else(Persisted::empty, |s| s.0);
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
            stations.push(Slot { cfg: s.clone(), st });
        }
        for gone in saved.stations.keys() {
            tracing::warn!(station = %gone, "saved context of a station no longer configured dropped");
        }
        saved.stations.clear();
        saved
            .trigger_values
            .retain(|tag, _| trigger_tags.contains(tag));
        let units = cfg
            .device
            .iter()
            .flat_map(|d| d.tag.iter())
            .filter_map(|t| t.unit.clone().map(|u| (t.name.clone(), u)))
            .collect();
        // Triggers' last values double as the first snapshot values.
        let values = saved
            .trigger_values
            .iter()
            .map(|(tag, v)| (tag.clone(), v.clone()))
            .collect();
        let mut engine = StationEngine {
            stations,
            index,
            facts: Facts {
                patterns: Pattern::compile(&cfg.pattern),
                values,
                units,
                gtin_parts,
            },
            trigger_tags,
            line: saved,
            dirty: false,
            last_taken: String::new(),
            counters: StationCounters::default(),
        };
        engine.last_taken = engine.snapshot();
        engine
    }

    /// Feeds every tag update (all tags, before deadband); returns the events it completes.
    pub fn on_tag(&mut self, update: &TagUpdate) -> Vec<StationEvent> {
        let value = match (&update.value, update.quality) {
            (Some(v), Quality::Good | Quality::Uncertain) => v.clone(),
            _ => {
                // A bad value is not a value: snapshots omit it, and it fires no trigger.
                self.facts.values.remove(&update.tag);
                return Vec::new();
            }
        };
        // Hot path (every polled value): no allocation when the tag is already known.
        match self.facts.values.get_mut(&update.tag) {
            Some(v) => v.clone_from(&value),
            None => {
                self.facts.values.insert(update.tag.clone(), value.clone());
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
        let mut out = Vec::new();
        for i in 0..self.stations.len() {
            self.station(i, &mut out)
                .on_trigger(&update.tag, prev.as_ref(), &value, ts);
        }
        self.dirty = true;
        out
    }

    /// Feeds a scan; returns the events it causes (including `scan_rejected`).
    pub fn on_scan(&mut self, scan: &RawScan) -> Vec<StationEvent> {
        let ts = canonical(scan.ts);
        let mut out = Vec::new();
        match self.index.get(&scan.station) {
            Some(&i) => self.station(i, &mut out).on_scan(scan, ts),
            None => self.reject_unknown_station(scan, ts, &mut out),
        }
        self.dirty = true;
        out
    }

    /// What a station with `enforce_route = true` must check before it handles `scan`: the
    /// unit or lot it names, and whether the unit's route applies here (a unit about to be
    /// worked, packed or shipped; not a lot, nor a child unit scanned into the current one).
    /// `None`: nothing to check (another station, a control code, an unreadable or unmatched
    /// code — the engine rejects those itself).
    pub fn route_subject(&self, scan: &RawScan) -> Option<RouteSubject> {
        let &i = self.index.get(&scan.station)?;
        let Slot { cfg, st } = &self.stations[i];
        if !cfg.enforce_route || scan.error.is_some() {
            return None;
        }
        let code = scan.raw.trim();
        if is_control_code(cfg, code) {
            return None;
        }
        let c = classify_scan(&self.facts, &cfg.id, scan, code)?;
        let removing = matches!(st.pending, Some(Pending::Disassemble { .. }));
        let (kind, route) = match (c.kind, cfg.kind) {
            (_, StationKind::Receive) => return None,
            // Taking a child out is never refused.
            (CodeKind::Lot | CodeKind::Unit, _) if removing => return None,
            (CodeKind::Lot, StationKind::Pack | StationKind::Ship) => return None,
            (CodeKind::Lot, _) => (SubjectKind::Lot, false),
            (CodeKind::Unit, StationKind::Assembly) => {
                let child = st.unit.as_ref().is_some_and(|u| u.id != c.id);
                (SubjectKind::Unit, !child)
            }
            (CodeKind::Unit, _) => (SubjectKind::Unit, true),
            _ => return None,
        };
        let line_part = self
            .line
            .work_order_part
            .clone()
            .or_else(|| {
                self.line
                    .work_order
                    .as_ref()
                    .and_then(|w| cfg.work_order_parts.get(w).cloned())
            })
            .or_else(|| cfg.part.clone());
        let (part, unit, unit_part) = match kind {
            SubjectKind::Lot => (
                c.part_hint.as_ref().map(|h| self.facts.resolve_part(h)),
                st.unit.as_ref().map(|u| u.id.clone()),
                line_part,
            ),
            SubjectKind::Unit => (line_part, None, None),
        };
        Some(RouteSubject {
            station: cfg.id.clone(),
            kind,
            id: c.id,
            route,
            part,
            unit,
            unit_part,
        })
    }

    /// Refuses `scan` for `why` (the route check's verdict): a `scan_rejected`, and a unit
    /// refused where it would have become current leaves the station with no current unit, so
    /// that a completion edge cannot record the refused unit's operation on the previous one.
    pub fn refuse_scan(
        &mut self,
        scan: &RawScan,
        why: String,
        clear_unit: bool,
    ) -> Vec<StationEvent> {
        let ts = canonical(scan.ts);
        let mut out = Vec::new();
        match self.index.get(&scan.station) {
            Some(&i) => {
                let mut s = self.station(i, &mut out);
                if clear_unit && s.cfg.kind.has_units() && s.st.unit.take().is_some() {
                    s.st.children.clear();
                }
                s.reject(scan, ts, why);
            }
            None => self.reject_unknown_station(scan, ts, &mut out),
        }
        self.dirty = true;
        out
    }

    /// The context to commit with the events of the inputs handed in since the last call, when
    /// it changed (JSON, the format of `state.rs`); `None` when it did not. The caller commits
    /// it in the same outbox transaction as those events.
    pub fn take_state(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let now = self.snapshot();
        if now == self.last_taken {
            return None;
        }
        self.last_taken.clone_from(&now);
        Some(now)
    }

    /// Counters for metrics.
    pub fn counters(&self) -> StationCounters {
        self.counters
    }

    /// The current unit of a station (for status pages and tests).
    pub fn current_unit(&self, station: &str) -> Option<&str> {
        let st = self.state(station)?;
        st.unit.as_ref().map(|u| u.id.as_str())
    }

    /// The logged-in operator of a station.
    pub fn operator(&self, station: &str) -> Option<&str> {
        self.state(station)?.operator.as_deref()
    }

    /// The lot loaded in a station's feeder of `part`.
    pub fn feeder_lot(&self, station: &str, part: &str) -> Option<&str> {
        self.state(station)?.feeders.get(part).map(String::as_str)
    }

    /// The line's current work order.
    pub fn work_order(&self) -> Option<&str> {
        self.line.work_order.as_deref()
    }

    fn state(&self, station: &str) -> Option<&StationState> {
        let i = *self.index.get(station)?;
        Some(&self.stations[i].st)
    }

    /// Station `i` ready to handle one input, its events going to `out`.
    fn station<'a>(&'a mut self, i: usize, out: &'a mut Vec<StationEvent>) -> Station<'a> {
        let Slot { cfg, st } = &mut self.stations[i];
        Station {
            cfg: &*cfg,
            st,
            line: &mut self.line,
            facts: &self.facts,
            counters: &mut self.counters,
            out,
        }
    }

    /// A scan from a reader whose station is not configured.
    fn reject_unknown_station(
        &mut self,
        scan: &RawScan,
        ts: Timestamp,
        out: &mut Vec<StationEvent>,
    ) {
        let why = reason::UNKNOWN_STATION;
        self.counters.rejected += 1;
        tracing::warn!(scanner = %scan.scanner, station = %scan.station, raw = %scan.raw, reason = %why, "scan rejected");
        out.push(StationEvent {
            ts,
            body: RecordBody::ScanRejected(ScanRejected {
                station: Some(scan.station.clone()),
                scanner: scan.scanner.clone(),
                raw: scan.raw.clone(),
                reason: why.to_owned(),
            }),
        });
    }

    /// The whole context: the line's with every station's.
    fn snapshot(&self) -> String {
        let mut p = self.line.clone();
        p.stations = self
            .stations
            .iter()
            .map(|s| (s.cfg.id.clone(), s.st.clone()))
            .collect();
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string(&p).expect("station context serializes")
    }
}
