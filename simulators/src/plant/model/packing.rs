//! Packing and shipping on line 2: ST130 packs finished units into cases, ST135 stacks full
//! cases onto a pallet, ST140 ships a full pallet on a new shipment to one customer.

use rand::Rng;

use super::Plant;
use crate::plant::catalog::{CLOSE_CASE, CLOSE_PALLET, CLOSE_SHIPMENT, CUSTOMERS};
use crate::plant::floor::{FloorAction, Lane};
use crate::plant::labels::{shipment_label, sscc, sscc_label};
use crate::plant::truth::{ContainerTruth, ShipmentTruth};

/// The case and the pallet open at the packing tables during a batch.
#[derive(Default)]
pub(super) struct Packing {
    case: Option<Open>,
    pallet: Option<Open>,
}

/// An open container (SSCC) and what went into it so far: units (case) or cases (pallet).
struct Open {
    id: String,
    children: Vec<String>,
}

impl Plant {
    /// ST130 packs finished `unit` into the open case (a new one when none is open); a full
    /// case goes onto the pallet, a full pallet is shipped.
    pub(super) fn pack(&mut self, lane: &mut Lane, packing: &mut Packing, unit: &str) {
        if packing.case.is_none() {
            let id = sscc(0, self.next_container);
            self.next_container += 1;
            lane.push(FloorAction::scan("st130-scanner", sscc_label(&id)));
            self.settle(lane);
            packing.case = Some(Open {
                id,
                children: Vec::new(),
            });
        }
        if let Some(case) = packing.case.as_mut() {
            lane.push(FloorAction::scan("st130-scanner", unit.to_owned()));
            self.settle(lane);
            case.children.push(unit.to_owned());
            if case.children.len() >= self.params.case_size
                && let Some(case) = packing.case.take()
            {
                self.close_case(lane, &mut packing.pallet, case);
            }
        }
        if packing
            .pallet
            .as_ref()
            .is_some_and(|p| p.children.len() >= self.params.cases_per_pallet)
            && let Some(pallet) = packing.pallet.take()
        {
            self.ship_pallet(lane, pallet.id, pallet.children);
        }
    }

    /// At the end of a batch: the open case goes onto the pallet and the pallet is shipped, so
    /// that the truth of every container is complete.
    pub(super) fn close_packing(&mut self, lane: &mut Lane, mut packing: Packing) {
        if let Some(case) = packing.case.take() {
            self.close_case(lane, &mut packing.pallet, case);
        }
        if let Some(pallet) = packing.pallet.take() {
            self.ship_pallet(lane, pallet.id, pallet.children);
        }
    }

    /// A full (or last) case goes onto the open pallet (ST135).
    fn close_case(&mut self, lane: &mut Lane, pallet: &mut Option<Open>, case: Open) {
        let Open {
            id: case,
            children: units,
        } = case;
        if pallet.is_none() {
            let id = sscc(1, self.next_container);
            self.next_container += 1;
            lane.push(FloorAction::scan("st135-scanner", sscc_label(&id)));
            self.settle(lane);
            *pallet = Some(Open {
                id,
                children: Vec::new(),
            });
        }
        let Some(Open {
            id: pallet_id,
            children: cases,
        }) = pallet.as_mut()
        else {
            return;
        };
        // The full case is closed at the packing table, then stacked onto the pallet.
        lane.push(FloorAction::scan("st130-scanner", CLOSE_CASE));
        self.settle(lane);
        lane.push(FloorAction::scan("st135-scanner", sscc_label(&case)));
        self.settle(lane);
        cases.push(case.clone());
        for u in &units {
            if let Some(t) = self.truth.units.get_mut(u) {
                t.case = Some(case.clone());
                t.pallet = Some(pallet_id.clone());
            }
        }
        self.truth.containers.insert(
            case.clone(),
            ContainerTruth {
                id: case,
                level: "case".to_owned(),
                parent: Some(pallet_id.clone()),
                children: units,
                shipment: None,
            },
        );
    }

    /// A full (or last) pallet is shipped (ST140) on a new shipment to one customer.
    fn ship_pallet(&mut self, lane: &mut Lane, pallet: String, cases: Vec<String>) {
        let shipment = format!("SHP-{:06}", self.next_shipment);
        self.next_shipment += 1;
        let customer = CUSTOMERS[self.rng.random_range(0..CUSTOMERS.len())].to_owned();
        lane.push(FloorAction::scan("st135-scanner", CLOSE_PALLET));
        self.settle(lane);
        lane.push(FloorAction::scan(
            "st140-scanner",
            shipment_label(&shipment, &customer),
        ));
        self.settle(lane);
        lane.push(FloorAction::scan("st140-scanner", sscc_label(&pallet)));
        self.settle(lane);
        lane.push(FloorAction::scan("st140-scanner", CLOSE_SHIPMENT));
        self.settle(lane);
        let mut units = Vec::new();
        for c in &cases {
            if let Some(ct) = self.truth.containers.get_mut(c) {
                ct.shipment = Some(shipment.clone());
                units.extend(ct.children.iter().cloned());
            }
        }
        for u in &units {
            if let Some(t) = self.truth.units.get_mut(u) {
                t.shipment = Some(shipment.clone());
                t.customer = Some(customer.clone());
            }
            // The sub-assembly inside shipped with it.
            let sub = self
                .truth
                .units
                .get(u)
                .and_then(|t| t.components.first())
                .map(|c| c.serial.clone());
            if let Some(t) = sub.and_then(|s| self.truth.units.get_mut(&s)) {
                t.shipment = Some(shipment.clone());
                t.customer = Some(customer.clone());
            }
        }
        self.truth.containers.insert(
            pallet.clone(),
            ContainerTruth {
                id: pallet.clone(),
                level: "pallet".to_owned(),
                parent: None,
                children: cases,
                shipment: Some(shipment.clone()),
            },
        );
        self.truth.shipments.insert(
            shipment.clone(),
            ShipmentTruth {
                id: shipment,
                customer,
                pallets: vec![pallet],
                units,
            },
        );
    }
}
