//! The demo plant: what happens on its floor, decided deterministically from a seed, and the
//! ground truth of the genealogy that results.
//!
//! Two lines. Line 1 makes sub-assemblies `P-HUB-100` (`SA…` serials): ST10 press-fits a bearing
//! (lot feeder `P-6202`) into a housing (lot feeder `P-HSG-10`), ST20 inspects run-out (a failed
//! unit is reworked and inspected again). Line 2 makes the finished drive `P-DRIVE-200` (`SN…`):
//! ST110 assembles one sub-assembly and a screw lot (`P-SCR-M5`), ST120 runs the end-of-line
//! test (fail → rework → retest), ST130 packs units into cases, ST135 stacks cases onto pallets,
//! ST140 ships pallets to customers. Each supplier delivers to its receiving dock (RCV-BRG,
//! RCV-HSG on line 1, RCV-SCR on line 2) where supplier
//! lots arrive with GS1 labels `(01)GTIN(10)LOT<GS>(240)PART<GS>(37)QTY`; a feeder's lot runs out
//! after a number of units and the next lot is received and loaded. Operators change with the
//! shift (badge scans); now and then a scanner reads garbage.
//!
//! [`Plant::plan_batch`] turns the next N finished units into [`Lane`]s of floor actions (one per
//! line) and adds what it decided to the cumulative [`Truth`]. Every decision is drawn from one
//! seeded generator in a fixed order, so the same seed plans the same floor and the same truth.
//!
//! The plant's behaviour, by concern: `stations` (building units: machine cycles, parameters,
//! inspection and rework, garbled scans), `supply` (lots at the feeders), `shifts` (operators
//! and work orders), `packing` (cases, pallets, shipments). What it is made of is in
//! [`super::catalog`], its knobs in [`super::params`].

#[cfg(test)]
mod cause_tests;
mod packing;
mod shifts;
mod stations;
mod supply;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::catalog::DEV_HALL;
use super::floor::{FloorAction, Lane, SimValue};
use super::params::PlantParams;
use super::truth::Truth;
use packing::Packing;
use supply::Feeder;

/// One planned batch: the floor actions per line and what they mean.
#[derive(Debug, Clone)]
pub struct Plan {
    pub lanes: Vec<Lane>,
    /// Finished units this batch makes.
    pub units: Vec<String>,
}

/// The plant's state between batches.
pub struct Plant {
    params: PlantParams,
    rng: StdRng,
    truth: Truth,
    next_unit: u64,
    next_lot: u64,
    next_container: u64,
    next_shipment: u64,
    next_wo: u64,
    /// Feeders by (station, part).
    feeders: BTreeMap<(&'static str, &'static str), Feeder>,
    operators: BTreeMap<&'static str, String>,
    shift: [u64; 2],
    units_on_line: [usize; 2],
    work_order: [Option<String>; 2],
    hall_temp: f64,
    hall_humidity: f64,
    /// Bearing lots received so far (the `bad_bearing_lot`-th is the injected bad batch).
    bearing_lots: usize,
}

impl Plant {
    pub fn new(params: PlantParams) -> Plant {
        let base = params.id_base.max(1);
        Plant {
            rng: StdRng::seed_from_u64(params.seed),
            truth: Truth::default(),
            next_unit: base,
            next_lot: base,
            next_container: base,
            next_shipment: base,
            next_wo: base,
            feeders: BTreeMap::new(),
            operators: BTreeMap::new(),
            shift: [0, 0],
            units_on_line: [0, 0],
            work_order: [None, None],
            hall_temp: 22.0,
            hall_humidity: 45.0,
            bearing_lots: 0,
            params,
        }
    }

    pub fn params(&self) -> &PlantParams {
        &self.params
    }

    /// The cumulative truth of every batch planned so far.
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    /// The id base a later run should start from so that its ids never collide with this one's.
    pub fn next_id_base(&self) -> u64 {
        [
            self.next_unit,
            self.next_lot,
            self.next_container,
            self.next_shipment,
            self.next_wo,
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
    }

    fn noise(&mut self) -> f64 {
        // Box-Muller: one standard normal draw.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn settle(&self, lane: &mut Lane) {
        lane.wait(self.params.settle_ms);
    }

    /// Plans the next `n` finished units (and the sub-assemblies they need); every open case,
    /// pallet and shipment is closed at the end of the batch so that its truth is complete.
    pub fn plan_batch(&mut self, n: usize) -> Plan {
        let mut l1 = Lane::new("line-1");
        let mut l2 = Lane::new("line-2");
        let mut finished = Vec::new();
        self.set_environment(&mut l1);
        let mut packing = Packing::default();
        for _ in 0..n {
            let sub = self.build_sub_assembly(&mut l1);
            let unit = self.build_final(&mut l2, &sub);
            self.pack(&mut l2, &mut packing, &unit);
            finished.push(unit);
        }
        self.close_packing(&mut l2, packing);
        self.truth.derive();
        Plan {
            lanes: vec![l1, l2],
            units: finished,
        }
    }

    fn set_environment(&mut self, lane: &mut Lane) {
        self.hall_temp =
            ((self.hall_temp + 0.3 * self.noise()).clamp(18.0, 30.0) * 10.0).round() / 10.0;
        self.hall_humidity =
            ((self.hall_humidity + 1.0 * self.noise()).clamp(30.0, 70.0) * 10.0).round() / 10.0;
        lane.push(FloorAction::set(
            DEV_HALL,
            "hall.temp",
            SimValue::Float(self.hall_temp),
        ));
        lane.push(FloorAction::set(
            DEV_HALL,
            "hall.humidity",
            SimValue::Float(self.hall_humidity),
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plant::catalog::{PART_BEARING, PART_HOUSING, PART_SCREW};
    use crate::plant::labels::sscc_label;

    fn plan(seed: u64, n: usize) -> (Plan, Truth) {
        let mut p = Plant::new(PlantParams {
            seed,
            ..PlantParams::default()
        });
        let plan = p.plan_batch(n);
        (plan, p.truth().clone())
    }

    #[test]
    fn every_nth_drive_is_presented_at_packing_before_its_test_and_nothing_else_changes() {
        let params = |skip| PlantParams {
            seed: 42,
            skip_test_every: skip,
            ..PlantParams::default()
        };
        let mut with = Plant::new(params(7));
        let plan = with.plan_batch(30);
        let truth = with.truth().clone();
        let mut without = Plant::new(params(0));
        without.plan_batch(30);
        // The same plant otherwise: the attempts are not drawn from the seed.
        let mut same = truth.clone();
        same.route_refusals.clear();
        assert_eq!(&same, without.truth());
        assert!(without.truth().route_refusals.is_empty());
        let refused: Vec<&str> = truth
            .route_refusals
            .iter()
            .map(|r| r.unit.as_str())
            .collect();
        assert_eq!(refused.len(), 4, "{refused:?}"); // every 7th drive of 30 (SN numbers are shared with the sub-assemblies)
        let line2 = &plan.lanes[1].actions;
        let scans = |code: &str| -> Vec<(usize, String)> {
            line2
                .iter()
                .enumerate()
                .filter_map(|(i, a)| match a {
                    FloorAction::Scan { scanner, code: c } if c == code => {
                        Some((i, scanner.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        for r in &truth.route_refusals {
            assert_eq!(
                r.reason,
                "missing operation OP120 end-of-line test at ST120"
            );
            // Scanned at ST110 (assembly), at ST130 too early, (at ST120 for a rework), and
            // packed once at the end.
            let at: Vec<String> = scans(&r.unit).into_iter().map(|(_, s)| s).collect();
            assert_eq!(at[..2], ["st110-scanner", "st130-scanner"], "{}", r.unit);
            assert_eq!(
                at.last().map(String::as_str),
                Some("st130-scanner"),
                "{}",
                r.unit
            );
            assert_eq!(
                at.iter().filter(|s| *s == "st130-scanner").count(),
                2,
                "{at:?}"
            );
            assert!(
                truth.units[&r.unit].case.is_some(),
                "{} is still packed",
                r.unit
            );
        }
    }

    #[test]
    fn same_seed_same_plant() {
        let (a, ta) = plan(7, 30);
        let (b, tb) = plan(7, 30);
        assert_eq!(ta, tb);
        assert_eq!(a.lanes[0].actions, b.lanes[0].actions);
        assert_eq!(a.lanes[1].actions, b.lanes[1].actions);
        let (_, tc) = plan(8, 30);
        assert_ne!(ta, tc);
    }

    #[test]
    fn genealogy_is_complete_and_consistent() {
        let (plan, t) = plan(42, 30);
        assert_eq!(plan.units.len(), 30);
        assert_eq!(t.finished_units().count(), 30);
        assert_eq!(t.units.len(), 60);
        for u in t.finished_units() {
            assert_eq!(u.components.len(), 1);
            let sub = &t.units[&u.components[0].serial];
            assert_eq!(sub.parent.as_deref(), Some(u.serial.as_str()));
            assert_eq!(sub.materials.len(), 2);
            assert!(u.case.is_some() && u.pallet.is_some());
            assert!(u.shipment.is_some() && u.customer.is_some());
            let last = u.operations.last().unwrap();
            assert_eq!(last.station, "ST120");
            assert_eq!(last.result, "pass");
            for op in &u.operations {
                assert!(op.operator.starts_with("OP"), "{op:?}");
            }
        }
        // 30 units in cases of 5 on pallets of 4 cases: 6 cases, 2 pallets, 2 shipments.
        let cases = t.containers.values().filter(|c| c.level == "case").count();
        let pallets = t
            .containers
            .values()
            .filter(|c| c.level == "pallet")
            .count();
        assert_eq!((cases, pallets, t.shipments.len()), (6, 2, 2));
        // Lots change: 30 units with 12 per lot; the first housing box holds 4, the first
        // screw box 8 → bearings 12+12+6, housings 4+12+12+2, screws 8+12+10.
        for (part, n) in [(PART_BEARING, 3), (PART_HOUSING, 4), (PART_SCREW, 3)] {
            let lots: Vec<_> = t.lots.values().filter(|l| l.part == part).collect();
            assert_eq!(lots.len(), n, "{part}");
            let used: usize = lots.iter().map(|l| l.units.len()).sum();
            assert_eq!(used, 30);
        }
        // A bearing lot reaches the finished units its sub-assemblies went into.
        let bearing = t.lots.values().find(|l| l.part == PART_BEARING).unwrap();
        assert_eq!(bearing.all_units.len(), 2 * bearing.units.len());
        assert!(!bearing.customers.is_empty());
    }

    #[test]
    fn rework_garbage_shift_changes_and_out_of_spec_happen() {
        let (plan, t) = plan(42, 60);
        let reworked = t
            .units
            .values()
            .filter(|u| u.operations.iter().any(|o| o.result == "fail"))
            .count();
        assert!(reworked > 0, "no rework in 60 units");
        assert!(!t.rejected_scans.is_empty(), "no garbled scan");
        let out_of_spec = t
            .units
            .values()
            .flat_map(|u| &u.operations)
            .filter(|o| o.result == "pass" && o.parameters.iter().any(|p| !p.in_spec()))
            .count();
        assert!(out_of_spec > 0, "no out-of-spec pass");
        let operators: std::collections::BTreeSet<_> = t
            .units
            .values()
            .flat_map(|u| &u.operations)
            .map(|o| o.operator.clone())
            .collect();
        assert!(operators.len() >= 8, "{operators:?}");
        // Every failed op has a defect code and no pass has one.
        for o in t.units.values().flat_map(|u| &u.operations) {
            assert_eq!(o.result == "fail", o.defect_code.is_some());
        }
        // Garbled codes are scanned for real.
        let scans: Vec<&str> = plan
            .lanes
            .iter()
            .flat_map(|l| &l.actions)
            .filter_map(|a| match a {
                FloorAction::Scan { code, .. } => Some(code.as_str()),
                _ => None,
            })
            .collect();
        for r in &t.rejected_scans {
            assert!(scans.contains(&r.raw.as_str()));
        }
    }

    #[test]
    fn labels_parse_as_gs1() {
        let mut p = Plant::new(PlantParams::default());
        p.plan_batch(6);
        for l in p.truth().lots.values() {
            let e = threadline_shared::ids::parse_gs1(&l.label).unwrap();
            assert_eq!(e.lot(), Some(l.lot.as_str()));
            assert_eq!(e.gtin(), Some(l.gtin.as_str()));
            assert_eq!(e.get("240"), Some(l.part.as_str()));
            assert_eq!(e.count(), Some(500));
        }
        for c in p.truth().containers.keys() {
            let e = threadline_shared::ids::parse_gs1(&sscc_label(c)).unwrap();
            assert_eq!(e.sscc(), Some(c.as_str()));
        }
    }

    #[test]
    fn batches_continue_without_id_collisions() {
        let mut p = Plant::new(PlantParams::default());
        let a = p.plan_batch(7);
        let b = p.plan_batch(7);
        for u in &b.units {
            assert!(!a.units.contains(u));
        }
        assert_eq!(p.truth().finished_units().count(), 14);
        let mut q = Plant::new(PlantParams {
            id_base: p.next_id_base(),
            ..PlantParams::default()
        });
        let c = q.plan_batch(3);
        for u in &c.units {
            assert!(!p.truth().units.contains_key(u));
        }
    }
}
