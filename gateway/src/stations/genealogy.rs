//! The parent / child links a station makes: assembly and disassembly (a child bound to or
//! removed from the current unit), packing and unpacking (a child into or out of the open
//! container), shipping (a container or unit onto the open shipment).

use threadline_shared::event::{Assembly, ContainerLevel, ItemRef, Packing, RecordBody, Shipped};
use threadline_shared::time::Timestamp;

use super::state::{Child, Pending};
use super::station::{Station, StationEvent, reason};
use crate::drivers::RawScan;

impl Station<'_> {
    /// Binds `child` to the current unit (`assembled`); nothing without a current unit.
    pub(super) fn assemble(&mut self, child: ItemRef, qty: Option<f64>, ts: Timestamp) {
        let Some(parent) = &self.st.unit else { return };
        let assembly = Assembly {
            parent: parent.id.clone(),
            child: child.clone(),
            qty,
            station: Some(self.cfg.id.clone()),
            operator: self.st.operator.clone(),
            reason: None,
        };
        self.emit(ts, RecordBody::Assembled(assembly));
        self.st.children.push(Child { item: child, qty });
    }

    /// Removes `child` from the current unit (`disassembled`, with `reason`); the quantity is
    /// the one it was bound with here, if it was.
    pub(super) fn disassemble_one(
        &mut self,
        child: ItemRef,
        qty: Option<f64>,
        reason: String,
        ts: Timestamp,
    ) {
        let st = &mut *self.st;
        // The code was accepted only with a current unit; it may have completed since.
        let Some(parent) = &st.unit else {
            tracing::warn!(station = %self.cfg.id, child = %child.id, "disassembly with no current unit ignored");
            return;
        };
        let qty = st
            .children
            .iter()
            .find(|c| c.item == child)
            .and_then(|c| c.qty)
            .or(qty);
        st.children.retain(|c| c.item != child);
        let assembly = Assembly {
            parent: parent.id.clone(),
            child,
            qty,
            station: Some(self.cfg.id.clone()),
            operator: st.operator.clone(),
            reason: Some(reason),
        };
        self.emit(ts, RecordBody::Disassembled(assembly));
    }

    /// `disassemble_on`: removes every child bound here from the current unit.
    pub(super) fn disassemble_all(&mut self, ts: Timestamp) {
        let cfg = self.cfg;
        let st = &mut *self.st;
        let Some(parent) = &st.unit else {
            tracing::warn!(station = %cfg.id, "disassemble edge with no current unit");
            return;
        };
        for c in st.children.drain(..) {
            self.out.push(StationEvent {
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

    /// Packs `child` into the open container (or unpacks it after the unpack code); the
    /// container closes when it holds `pack_size`.
    pub(super) fn pack_child(&mut self, scan: &RawScan, child: ItemRef, ts: Timestamp) {
        let cfg = self.cfg;
        let level = cfg.level.unwrap_or(ContainerLevel::Case);
        let st = &mut *self.st;
        let Some(open) = &mut st.container else {
            st.pending = None;
            self.reject(scan, ts, reason::NO_OPEN_CONTAINER.to_owned());
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
            self.emit(ts, RecordBody::Unpacked(packing));
            return;
        }
        open.count += 1;
        if cfg.pack_size.is_some_and(|n| open.count >= n) {
            st.container = None;
        }
        self.emit(ts, RecordBody::Packed(packing));
    }

    /// Ships a container or a unit on the open shipment.
    pub(super) fn ship(
        &mut self,
        scan: &RawScan,
        container: Option<String>,
        unit: Option<String>,
        ts: Timestamp,
    ) {
        let Some(sh) = &self.st.shipment else {
            self.reject(scan, ts, reason::NO_OPEN_SHIPMENT.to_owned());
            return;
        };
        let shipped = Shipped {
            container,
            unit,
            shipment: sh.id.clone(),
            customer: sh.customer.clone(),
            station: Some(self.cfg.id.clone()),
        };
        self.emit(ts, RecordBody::Shipped(shipped));
    }
}
