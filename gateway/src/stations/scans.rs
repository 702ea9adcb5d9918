//! Scans at a station: control codes (logout, complete, close, disassemble, unpack), then the
//! code classified by the `[[pattern]]`s and handled by its kind and the station's kind.

use threadline_shared::event::{ItemKind, ItemRef, LotReceived, MaterialLoaded, RecordBody};
use threadline_shared::time::Timestamp;

use super::codes::{Classified, classify, decode_epc, parse_gs1};
use super::config::{CodeKind, StationConfig, StationKind};
use super::state::{OpenContainer, OpenShipment, Pending};
use super::station::{Facts, Station, reason};
use crate::drivers::RawScan;
use threadline_shared::event::ContainerLevel;

impl Station<'_> {
    /// Handles one scan of this station's reader (at `ts`, its floor time).
    pub(super) fn on_scan(&mut self, scan: &RawScan, ts: Timestamp) {
        if let Some(err) = &scan.error {
            self.reject(scan, ts, format!("{}: {err}", reason::UNREADABLE));
            return;
        }
        let cfg = self.cfg;
        let code = scan.raw.trim();
        if self.control_code(scan, code, ts) {
            return;
        }
        let Some(c) = self.classify(scan, code) else {
            self.reject(scan, ts, reason::NO_PATTERN.to_owned());
            return;
        };
        match c.kind {
            CodeKind::Operator => self.st.operator = Some(c.id),
            CodeKind::WorkOrder => {
                self.line.work_order_part =
                    c.part_hint.as_ref().map(|h| self.facts.resolve_part(h));
                self.line.work_order = Some(c.id);
            }
            CodeKind::Lot => self.lot_scan(scan, c, ts),
            CodeKind::Unit => self.unit_scan(scan, c, ts),
            CodeKind::Container => self.container_scan(scan, c, ts),
            CodeKind::Shipment => {
                if cfg.kind != StationKind::Ship {
                    self.reject_kind(scan, c.kind, ts);
                    return;
                }
                let customer = c
                    .customer
                    .or_else(|| cfg.shipment_customers.get(&c.id).cloned())
                    .or_else(|| cfg.customer.clone());
                self.st.shipment = Some(OpenShipment { id: c.id, customer });
            }
        }
    }

    /// The code read as GS1 (an RFID reader's EPC decoded to GS1 first) and classified by the
    /// first pattern that matches at this station.
    fn classify(&self, scan: &RawScan, code: &str) -> Option<Classified> {
        classify_scan(self.facts, &self.cfg.id, scan, code)
    }

    /// Station control codes (logout, complete, close, disassemble, unpack); true if `code` was one.
    fn control_code(&mut self, scan: &RawScan, code: &str, ts: Timestamp) -> bool {
        let cfg = self.cfg;
        if cfg.logout_code.as_deref() == Some(code) {
            self.st.operator = None;
            return true;
        }
        if cfg.complete_code.as_deref() == Some(code) {
            if self.st.unit.is_none() {
                self.reject(scan, ts, reason::NO_CURRENT_UNIT.to_owned());
            } else {
                self.complete(ts, &scan.scanner, code);
            }
            return true;
        }
        if cfg.close_code.as_deref() == Some(code) {
            let closed = match cfg.kind {
                StationKind::Ship => self
                    .st
                    .shipment
                    .take()
                    .map(|_| ())
                    .ok_or(reason::NO_OPEN_SHIPMENT),
                _ => self
                    .st
                    .container
                    .take()
                    .map(|_| ())
                    .ok_or(reason::NO_OPEN_CONTAINER),
            };
            self.st.pending = None;
            if let Err(why) = closed {
                self.reject(scan, ts, why.to_owned());
            }
            return true;
        }
        if let Some(reason) = cfg.disassemble_code.as_deref().and_then(|dc| {
            if code == dc {
                Some(cfg.disassemble_reason.clone())
            } else {
                code.strip_prefix(dc)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
            }
        }) {
            if self.st.unit.is_none() {
                self.reject(scan, ts, reason::NO_CURRENT_UNIT.to_owned());
            } else {
                self.st.pending = Some(Pending::Disassemble { reason });
            }
            return true;
        }
        if cfg.unpack_code.as_deref() == Some(code) {
            if self.st.container.is_none() {
                self.reject(scan, ts, reason::NO_OPEN_CONTAINER.to_owned());
            } else {
                self.st.pending = Some(Pending::Unpack);
            }
            return true;
        }
        false
    }

    /// A lot: received (receive), loaded into its feeder, bound to the unit (assembly without
    /// a feeder for it), or disassembled after a disassembly code.
    fn lot_scan(&mut self, scan: &RawScan, c: Classified, ts: Timestamp) {
        let cfg = self.cfg;
        let part = c.part_hint.as_ref().map(|h| self.facts.resolve_part(h));
        match cfg.kind {
            StationKind::Receive => {
                let received = LotReceived {
                    lot: c.id,
                    part,
                    supplier: c.supplier.or_else(|| cfg.supplier.clone()),
                    supplier_batch: c.batch,
                    qty: c.qty,
                    station: Some(cfg.id.clone()),
                };
                self.emit(ts, RecordBody::LotReceived(received));
                return;
            }
            StationKind::Pack | StationKind::Ship => {
                self.reject_kind(scan, c.kind, ts);
                return;
            }
            StationKind::Process | StationKind::Assembly | StationKind::Inspect => {}
        }
        if let Some(Pending::Disassemble { reason }) = self.st.pending.take() {
            self.disassemble_one(ItemRef::new(ItemKind::Lot, c.id), c.qty, reason, ts);
            return;
        }
        let feeder = match &part {
            Some(p) => cfg.feeder.iter().find(|f| &f.part == p),
            None if cfg.feeder.len() == 1 => cfg.feeder.first(),
            None if cfg.feeder.len() > 1 => {
                self.reject(scan, ts, reason::LOT_PART_UNKNOWN.to_owned());
                return;
            }
            None => None,
        };
        if let Some(f) = feeder {
            self.st.feeders.insert(f.part.clone(), c.id.clone());
            let loaded = MaterialLoaded {
                station: cfg.id.clone(),
                lot: c.id,
                part: Some(f.part.clone()),
                operator: self.st.operator.clone(),
            };
            self.emit(ts, RecordBody::MaterialLoaded(loaded));
            return;
        }
        // No feeder takes it: an assembly station binds it to the current unit directly.
        if cfg.kind == StationKind::Assembly && self.st.unit.is_some() {
            let qty = c.qty.or(Some(1.0));
            self.assemble(ItemRef::new(ItemKind::Lot, c.id), qty, ts);
            return;
        }
        let why = match part {
            Some(p) => format!("{} ({p})", reason::NO_FEEDER),
            None => reason::NO_FEEDER.to_owned(),
        };
        self.reject(scan, ts, why);
    }

    /// A unit: becomes current, is bound to (or removed from) the current unit at an assembly
    /// station, is packed or shipped.
    fn unit_scan(&mut self, scan: &RawScan, c: Classified, ts: Timestamp) {
        match self.cfg.kind {
            StationKind::Process | StationKind::Inspect => {
                self.st.pending = None;
                self.set_unit(&c.id, ts, &scan.scanner, &scan.raw);
            }
            StationKind::Assembly => {
                let child = ItemRef::new(ItemKind::Unit, c.id.clone());
                if let Some(Pending::Disassemble { reason }) = self.st.pending.take() {
                    self.disassemble_one(child, Some(1.0), reason, ts);
                } else if self.st.unit.as_ref().is_some_and(|u| u.id != c.id) {
                    self.assemble(child, Some(1.0), ts);
                } else {
                    self.set_unit(&c.id, ts, &scan.scanner, &scan.raw);
                }
            }
            StationKind::Pack => self.pack_child(scan, ItemRef::new(ItemKind::Unit, c.id), ts),
            StationKind::Ship => self.ship(scan, None, Some(c.id), ts),
            StationKind::Receive => self.reject_kind(scan, c.kind, ts),
        }
    }

    /// A container label: opens a container (or, at pallet level, packs a case into the open
    /// pallet) at a pack station, is shipped at a ship station.
    fn container_scan(&mut self, scan: &RawScan, c: Classified, ts: Timestamp) {
        let cfg = self.cfg;
        match cfg.kind {
            StationKind::Pack => {
                let st = &mut *self.st;
                let pallet = cfg.level == Some(ContainerLevel::Pallet);
                let open_other = st.container.as_ref().is_some_and(|o| o.id != c.id);
                if pallet && (open_other || matches!(st.pending, Some(Pending::Unpack))) {
                    // At pallet level a container scanned while a pallet is open is a case.
                    self.pack_child(scan, ItemRef::new(ItemKind::Container, c.id), ts);
                } else if st.container.as_ref().is_none_or(|o| o.id != c.id) {
                    if let Some(old) = &st.container {
                        tracing::info!(station = %cfg.id, closed = %old.id, opened = %c.id, "new container label closes the open one");
                    }
                    st.pending = None;
                    st.container = Some(OpenContainer { id: c.id, count: 0 });
                }
            }
            StationKind::Ship => self.ship(scan, Some(c.id), None, ts),
            _ => self.reject_kind(scan, c.kind, ts),
        }
    }
}

/// [`Station::classify`] without a station at hand (the route check reads scans before the
/// engine handles them).
pub(super) fn classify_scan(
    facts: &Facts,
    station: &str,
    scan: &RawScan,
    code: &str,
) -> Option<Classified> {
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
    classify(&facts.patterns, station, &text, gs1.as_deref())
}

/// `code` is one of the station's control codes (logout, complete, close, disassemble with or
/// without a reason, unpack): what [`Station::control_code`] acts on.
pub(super) fn is_control_code(cfg: &StationConfig, code: &str) -> bool {
    let exact = [
        &cfg.logout_code,
        &cfg.complete_code,
        &cfg.close_code,
        &cfg.unpack_code,
        &cfg.disassemble_code,
    ]
    .into_iter()
    .flatten()
    .any(|c| c == code);
    exact
        || cfg
            .disassemble_code
            .as_deref()
            .is_some_and(|dc| code.strip_prefix(dc).is_some_and(|r| r.starts_with(':')))
}
