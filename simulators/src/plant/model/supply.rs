//! Lots at the feeders: a feeder holds one supplier lot; when it runs out, the next lot is
//! received at its supplier's dock (GS1 label scanned there) and loaded at the line (scanned
//! again).

use super::Plant;
use crate::plant::catalog::{PART_BEARING, PART_HOUSING, PART_SCREW, SUPPLIERS};
use crate::plant::floor::{FloorAction, Lane};
use crate::plant::labels::{gs1_check_digit, lot_label};
use crate::plant::truth::{CauseTruth, LotTruth};

/// The lot a feeder holds.
pub(super) struct Feeder {
    lot: String,
    supplier: &'static str,
    /// Units it still supplies.
    left: usize,
}

impl Plant {
    /// Makes sure the feeder of `part` at `station` holds a lot with units left; receives and
    /// loads a new lot when it ran out. Returns the lot and its supplier.
    pub(super) fn feed(
        &mut self,
        lane: &mut Lane,
        station: &'static str,
        scanner: &str,
        part: &'static str,
    ) -> (String, String) {
        let key = (station, part);
        if let Some(f) = self.feeders.get_mut(&key)
            && f.left > 0
        {
            f.left -= 1;
            return (f.lot.clone(), f.supplier.to_owned());
        }
        let Some(sup) = SUPPLIERS.iter().find(|s| s.part == part) else {
            return (String::new(), String::new());
        };
        let lot = format!("LOT-{}-{:06}", sup.tag, self.next_lot);
        self.next_lot += 1;
        let gtin = format!("{}{}", sup.gtin_base, gs1_check_digit(sup.gtin_base));
        let qty = 500;
        let label = lot_label(&gtin, &lot, part, qty);
        // Goods receipt at the dock, then the box goes to the line and its label is scanned.
        lane.push(FloorAction::scan(sup.dock.0, label.clone()));
        self.settle(lane);
        lane.push(FloorAction::scan(scanner, label.clone()));
        self.settle(lane);
        self.truth.lots.insert(
            lot.clone(),
            LotTruth {
                lot: lot.clone(),
                part: part.to_owned(),
                gtin,
                supplier: sup.name.to_owned(),
                supplier_batch: lot.clone(),
                qty: f64::from(qty),
                received_at: sup.dock.1.to_owned(),
                label,
                units: Vec::new(),
                all_units: Vec::new(),
                containers: Vec::new(),
                shipments: Vec::new(),
                customers: Vec::new(),
            },
        );
        // The first box at a feeder of housings or screws is a part-used one left from the last
        // run (a third, two thirds): lots of different parts then change at different units.
        // Were they all to change together, every lot of a unit would have the same consumers
        // and no analysis could tell a bad one from its neighbours.
        let size = match (self.feeders.contains_key(&key), part) {
            (false, PART_HOUSING) => self.params.lot_units / 3,
            (false, PART_SCREW) => self.params.lot_units * 2 / 3,
            _ => self.params.lot_units,
        };
        let left = size.max(1) - 1;
        if part == PART_BEARING {
            self.bearing_lots += 1;
            if self.bearing_lots == self.params.bad_bearing_lot {
                self.truth.causes.push(CauseTruth::SupplierBatch {
                    part: part.to_owned(),
                    lot: lot.clone(),
                    supplier: sup.name.to_owned(),
                    supplier_batch: lot.clone(),
                    station: "ST120".to_owned(),
                    fail_rate: self.params.bad_lot_fail_rate,
                    units: Vec::new(),
                });
            }
        }
        self.feeders.insert(
            key,
            Feeder {
                lot: lot.clone(),
                supplier: sup.name,
                left,
            },
        );
        (lot, sup.name.to_owned())
    }
}
