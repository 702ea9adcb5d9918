//! One station handling one input: [`Station`] borrows the station's config and context, the
//! line's context and what the engine knows about tags and labels, and collects the events it
//! produces. Here are also what stations produce ([`StationEvent`], the [`reason`]s of
//! `scan_rejected`, [`StationCounters`]) and the steps shared by tag triggers (`triggers.rs`)
//! and scans (`scans.rs`): making a unit current and rejecting.

use std::collections::{BTreeMap, HashMap};

use threadline_shared::event::{RecordBody, ScanRejected, TagValue, UnitStarted};
use threadline_shared::time::Timestamp;

use super::codes::{PartHint, Pattern};
use super::config::{CodeKind, Rework, StationConfig};
use super::state::{CurrentUnit, Persisted, StationState};
use crate::drivers::RawScan;

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
}

/// What every station reads and none owns.
pub(super) struct Facts {
    /// `[[pattern]]`s, compiled, for classifying scans.
    pub(super) patterns: Vec<Pattern>,
    /// Last good value of every tag, for snapshots (`capture`, `environment`, result, …).
    pub(super) values: HashMap<String, TagValue>,
    /// Engineering unit of every tag (from `[[device.tag]] unit`).
    pub(super) units: HashMap<String, String>,
    /// GTIN → part, from every station's `gtin_parts` (the gateway's knowledge of labels).
    pub(super) gtin_parts: BTreeMap<String, String>,
}

impl Facts {
    /// The part a label names: a part number as is, a GTIN through `gtin_parts` (an unknown
    /// GTIN is the part itself).
    pub(super) fn resolve_part(&self, hint: &PartHint) -> String {
        match hint {
            PartHint::Part(p) => p.clone(),
            PartHint::Gtin(g) => self.gtin_parts.get(g).cloned().unwrap_or_else(|| g.clone()),
        }
    }
}

/// One station while it handles one input.
pub(super) struct Station<'a> {
    pub(super) cfg: &'a StationConfig,
    /// The station's persisted context.
    pub(super) st: &'a mut StationState,
    /// The line's persisted context (its work order), shared by every station.
    pub(super) line: &'a mut Persisted,
    pub(super) facts: &'a Facts,
    pub(super) counters: &'a mut StationCounters,
    /// The events produced so far, in order.
    pub(super) out: &'a mut Vec<StationEvent>,
}

impl Station<'_> {
    pub(super) fn emit(&mut self, ts: Timestamp, body: RecordBody) {
        self.out.push(StationEvent { ts, body });
    }

    /// Makes `serial` the current unit (scan or unit tag); `source` names the scanner or tag.
    pub(super) fn set_unit(&mut self, serial: &str, ts: Timestamp, source: &str, raw: &str) {
        let cfg = self.cfg;
        if self.st.unit.as_ref().is_some_and(|u| u.id == serial) {
            return; // the same unit again: nothing changes
        }
        let reworked = self.st.completed.iter().any(|s| s == serial);
        if reworked && cfg.rework == Rework::Reject {
            let why = reason::ALREADY_COMPLETED.to_owned();
            self.reject_raw(source, raw, ts, why);
            return;
        }
        if let Some(old) = &self.st.unit {
            tracing::warn!(station = %cfg.id, replaced = %old.id, by = %serial, "unit replaced before its operation completed");
        }
        self.st.unit = Some(CurrentUnit {
            id: serial.to_owned(),
            since: ts,
            started_at: None,
        });
        self.st.children.clear();
        if cfg.starts_units && !reworked {
            let work_order = self.line.work_order.clone();
            let part = self
                .line
                .work_order_part
                .clone()
                .or_else(|| {
                    work_order
                        .as_ref()
                        .and_then(|w| cfg.work_order_parts.get(w).cloned())
                })
                .or_else(|| cfg.part.clone());
            let started = UnitStarted {
                unit: serial.to_owned(),
                part,
                work_order,
                station: cfg.id.clone(),
                operator: self.st.operator.clone(),
            };
            self.emit(ts, RecordBody::UnitStarted(started));
        }
    }

    /// A `kind` code this station's kind has no use for.
    pub(super) fn reject_kind(&mut self, scan: &RawScan, kind: CodeKind, ts: Timestamp) {
        self.st.pending = None;
        let why = format!(
            "{}: a {} code at a {} station",
            reason::NOT_USED_HERE,
            kind.as_str(),
            self.cfg.kind.as_str()
        );
        self.reject(scan, ts, why);
    }

    pub(super) fn reject(&mut self, scan: &RawScan, ts: Timestamp, why: String) {
        self.reject_raw(&scan.scanner, &scan.raw, ts, why);
    }

    /// `scan_rejected` for what `scanner` (a reader, or `tag:…` for an edge) delivered as `raw`.
    pub(super) fn reject_raw(&mut self, scanner: &str, raw: &str, ts: Timestamp, why: String) {
        self.counters.rejected += 1;
        let station = self.cfg.id.clone();
        tracing::info!(%station, scanner, raw, reason = %why, "scan rejected");
        let rejected = ScanRejected {
            station: Some(station),
            scanner: scanner.to_owned(),
            raw: raw.to_owned(),
            reason: why,
        };
        self.emit(ts, RecordBody::ScanRejected(rejected));
    }
}
