//! The stations at work: building a sub-assembly (line 1: ST10 press-fit, ST20 inspection) and
//! a finished drive (line 2: ST110 assembly, ST120 end-of-line test), machine cycles with their
//! PLC tags, drawn process parameters, inspection with rework, and garbled scans.

use rand::Rng;

use super::Plant;
use crate::plant::catalog::{
    Machine, PART_BEARING, PART_FINAL, PART_HOUSING, PART_SCREW, PART_SUB, ParamModel, ST10,
    ST10_PARAMS, ST20, ST20_PARAMS, ST110, ST110_PARAMS, ST120, ST120_PARAMS,
};
use crate::plant::floor::{FloorAction, Lane, SimValue};
use crate::plant::truth::{
    CauseTruth, ComponentTruth, MaterialTruth, OpTruth, ParamTruth, RejectedScanTruth,
    RouteRefusalTruth, UnitTruth,
};

impl Plant {
    pub(super) fn maybe_garble(&mut self, lane: &mut Lane, station: &str, scanner: &str) {
        if !self.chance(self.params.garble_rate) {
            return;
        }
        // A damaged label: a few characters that match no pattern.
        const NOISE: &[u8] = b"#?*%&!~ABCXYZ0123456789";
        let len = self.rng.random_range(3..9);
        let mut raw = String::from("?");
        for _ in 0..len {
            let i = self.rng.random_range(0..NOISE.len());
            raw.push(char::from(NOISE[i]));
        }
        lane.push(FloorAction::scan(scanner, raw.clone()));
        self.settle(lane);
        self.truth.rejected_scans.push(RejectedScanTruth {
            station: station.to_owned(),
            scanner: scanner.to_owned(),
            raw,
        });
    }

    /// Every `skip_test_every`-th drive is scanned at packing (ST130) before its end-of-line
    /// test; the route check refuses it and the drive goes on to the tester as usual.
    fn maybe_skip_test(&mut self, lane: &mut Lane, serial: &str) {
        let every = self.params.skip_test_every;
        if every == 0 || !(self.next_unit - 1).is_multiple_of(every) {
            return;
        }
        const PACKING: &str = "st130-scanner";
        lane.push(FloorAction::scan(PACKING, serial.to_owned()));
        self.settle(lane);
        self.truth.route_refusals.push(RouteRefusalTruth {
            unit: serial.to_owned(),
            station: "ST130".to_owned(),
            scanner: PACKING.to_owned(),
            reason: format!("missing operation {} at {}", ST120.operation, ST120.station),
        });
    }

    /// Which parameter of a cycle lands out of spec by chance (or, with `force_out`, surely).
    fn random_out(&mut self, models: &[ParamModel], force_out: bool) -> Option<usize> {
        if force_out || self.chance(self.params.out_of_spec_rate) {
            Some(self.rng.random_range(0..models.len()))
        } else {
            None
        }
    }

    /// Draws the parameters of one cycle; `force_out` forces one out of its limits.
    pub(super) fn draw(&mut self, models: &[ParamModel], force_out: bool) -> Vec<ParamTruth> {
        let out_idx = self.random_out(models, force_out);
        self.draw_with(models, out_idx, 0.0)
    }

    /// Draws the parameters of one cycle: parameter `out_idx` out of its limits, the first
    /// parameter's mean shifted by `shift_sd` standard deviations (a drifting machine).
    pub(super) fn draw_with(
        &mut self,
        models: &[ParamModel],
        out_idx: Option<usize>,
        shift_sd: f64,
    ) -> Vec<ParamTruth> {
        let mut out = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let shift = if i == 0 { shift_sd * m.sd } else { 0.0 };
            let mut v = m.mean + shift + m.sd * self.noise();
            if let (Some(lsl), Some(usl)) = (m.lsl, m.usl) {
                v = v.clamp(lsl + m.sd * 0.1, usl - m.sd * 0.1);
            } else if let Some(usl) = m.usl {
                v = v.clamp(0.0, usl - m.sd * 0.1);
            }
            if out_idx == Some(i) {
                v = match m.usl {
                    Some(usl) => usl + m.sd * (0.5 + self.rng.random::<f64>()),
                    None => m.lsl.unwrap_or(0.0) - m.sd,
                };
            }
            // What the register can hold is what the gateway will read (an f32 as its shortest
            // decimal, like the gateway carries it).
            let value = match m.scale {
                None => threadline_gateway::drivers::f32_to_f64(v as f32),
                Some(scale) => (v / scale).round() * scale,
            };
            out.push(ParamTruth {
                name: m.tag.to_owned(),
                value,
                unit: m.unit.to_owned(),
                lsl: m.lsl,
                usl: m.usl,
            });
        }
        out
    }

    /// One machine cycle for the current unit: parameters, result, then the cycle-done edge.
    pub(super) fn cycle(
        &mut self,
        lane: &mut Lane,
        m: &Machine,
        params: &[ParamTruth],
        pass: bool,
        defect: Option<u16>,
    ) {
        // Physical values: the tag map applies each tag's scale and type.
        for p in params {
            lane.push(FloorAction::set(
                m.device,
                &p.name,
                SimValue::Float(p.value),
            ));
        }
        let prefix = m.prefix;
        lane.push(FloorAction::set(
            m.device,
            &format!("{prefix}.program"),
            SimValue::Int(i64::from(m.program)),
        ));
        lane.push(FloorAction::set(
            m.device,
            &format!("{prefix}.defect"),
            SimValue::Int(i64::from(defect.unwrap_or(0))),
        ));
        lane.push(FloorAction::set(
            m.device,
            &format!("{prefix}.ok"),
            SimValue::Bool(pass),
        ));
        self.settle(lane);
        lane.push(FloorAction::set(
            m.device,
            &format!("{prefix}.cycle_done"),
            SimValue::Bool(true),
        ));
        self.settle(lane);
        lane.push(FloorAction::set(
            m.device,
            &format!("{prefix}.cycle_done"),
            SimValue::Bool(false),
        ));
        lane.wait(self.params.cycle_ms);
    }

    pub(super) fn op_truth(
        &self,
        m: &Machine,
        params: Vec<ParamTruth>,
        pass: bool,
        defect: Option<u16>,
        lots: Vec<String>,
    ) -> OpTruth {
        OpTruth {
            station: m.station.to_owned(),
            operation: m.operation.to_owned(),
            equipment: m.equipment.to_owned(),
            operator: self.operators.get(m.station).cloned().unwrap_or_default(),
            recipe: m.program.to_string(),
            result: if pass { "pass" } else { "fail" }.to_owned(),
            defect_code: defect.map(|d| d.to_string()),
            parameters: params,
            lots,
        }
    }

    /// Inspection / test with rework: fail → rework → retest until it passes. `bad`: the unit
    /// carries a defect that fails the first attempt with probability `.0`, parameter `.1` out
    /// of its limits, defect code `.2` (the rework cures it).
    pub(super) fn inspect(
        &mut self,
        lane: &mut Lane,
        m: &Machine,
        models: &[ParamModel],
        serial: &str,
        bad: Option<(f64, usize, u16)>,
    ) -> Vec<OpTruth> {
        let mut ops = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (params, forced_defect) = match bad {
                Some((rate, idx, code)) if attempts == 1 && self.chance(rate) => {
                    (self.draw_with(models, Some(idx), 0.0), Some(code))
                }
                _ => {
                    let fail = attempts < 3 && self.chance(self.params.fail_rate);
                    (self.draw(models, fail), None)
                }
            };
            let pass = params.iter().all(ParamTruth::in_spec);
            let defect = if pass {
                None
            } else {
                Some(forced_defect.unwrap_or(if m.prefix == "st20" { 201 } else { 301 }))
            };
            self.maybe_garble(lane, m.station, m.scanner);
            lane.push(FloorAction::scan(m.scanner, serial));
            self.settle(lane);
            self.cycle(lane, m, &params, pass, defect);
            ops.push(self.op_truth(m, params, pass, defect, Vec::new()));
            if pass {
                return ops;
            }
            // The unit goes to the rework bench and comes back: nothing is scanned in between,
            // but the retest scan must not fall into the scanner's duplicate window.
            lane.wait(self.params.cycle_ms.max(600));
        }
    }

    pub(super) fn build_sub_assembly(&mut self, lane: &mut Lane) -> String {
        lane.push(FloorAction::Checkpoint);
        self.staff(lane, 0);
        let wo = self.work_order(lane, 0, ST10.scanner);
        if self.units_on_line[0] > 0 && self.units_on_line[0].is_multiple_of(5) {
            self.set_environment(lane);
        }
        let serial = format!("SA{:010}", self.next_unit);
        self.next_unit += 1;
        let (bearing, bearing_sup) = self.feed(lane, "ST10", ST10.scanner, PART_BEARING);
        let (housing, housing_sup) = self.feed(lane, "ST10", ST10.scanner, PART_HOUSING);
        self.maybe_garble(lane, "ST10", ST10.scanner);
        lane.push(FloorAction::scan(ST10.scanner, serial.clone()));
        self.settle(lane);
        // The press passes by its own (wider) process window; an out-of-spec pressure is still a
        // pass for the PLC — exactly what a quality engineer hunts for later.
        let shift = self.press_drift(&serial);
        let out_idx = self.random_out(&ST10_PARAMS, false);
        let params = self.draw_with(&ST10_PARAMS, out_idx, shift);
        self.cycle(lane, &ST10, &params, true, None);
        let mut ops = vec![self.op_truth(
            &ST10,
            params,
            true,
            None,
            vec![bearing.clone(), housing.clone()],
        )];
        ops.extend(self.inspect(lane, &ST20, &ST20_PARAMS, &serial, None));
        self.record_unit(UnitTruth {
            serial: serial.clone(),
            part: PART_SUB.to_owned(),
            line: "line-1".to_owned(),
            work_order: wo,
            operations: ops,
            components: Vec::new(),
            materials: vec![
                MaterialTruth {
                    lot: bearing,
                    part: PART_BEARING.to_owned(),
                    qty: 1.0,
                    station: "ST10".to_owned(),
                    supplier: bearing_sup,
                },
                MaterialTruth {
                    lot: housing,
                    part: PART_HOUSING.to_owned(),
                    qty: 1.0,
                    station: "ST10".to_owned(),
                    supplier: housing_sup,
                },
            ],
            parent: None,
            case: None,
            pallet: None,
            shipment: None,
            customer: None,
        });
        self.units_on_line[0] += 1;
        serial
    }

    pub(super) fn build_final(&mut self, lane: &mut Lane, sub: &str) -> String {
        lane.push(FloorAction::Checkpoint);
        self.staff(lane, 1);
        let wo = self.work_order(lane, 1, ST110.scanner);
        let serial = format!("SN{:010}", self.next_unit);
        self.next_unit += 1;
        let (screw, screw_sup) = self.feed(lane, "ST110", ST110.scanner, PART_SCREW);
        self.maybe_garble(lane, "ST110", ST110.scanner);
        lane.push(FloorAction::scan(ST110.scanner, serial.clone()));
        self.settle(lane);
        lane.push(FloorAction::scan(ST110.scanner, sub.to_owned()));
        self.settle(lane);
        let params = self.draw(&ST110_PARAMS, false);
        self.cycle(lane, &ST110, &params, true, None);
        let mut ops = vec![self.op_truth(&ST110, params, true, None, vec![screw.clone()])];
        self.maybe_skip_test(lane, &serial);
        // A drive whose sub-assembly holds a bearing of the bad batch is noisy at end of line.
        let bad = self.bad_batch_of(sub, &serial);
        let bad = bad.then_some((self.params.bad_lot_fail_rate, 1, 302));
        ops.extend(self.inspect(lane, &ST120, &ST120_PARAMS, &serial, bad));
        self.record_unit(UnitTruth {
            serial: serial.clone(),
            part: PART_FINAL.to_owned(),
            line: "line-2".to_owned(),
            work_order: wo,
            operations: ops,
            components: vec![ComponentTruth {
                serial: sub.to_owned(),
                part: PART_SUB.to_owned(),
            }],
            materials: vec![MaterialTruth {
                lot: screw,
                part: PART_SCREW.to_owned(),
                qty: 1.0,
                station: "ST110".to_owned(),
                supplier: screw_sup,
            }],
            parent: None,
            case: None,
            pallet: None,
            shipment: None,
            customer: None,
        });
        self.units_on_line[1] += 1;
        serial
    }
    /// The press drift (in standard deviations) for the sub-assembly `serial` about to be
    /// pressed; records the drift cause in the truth from its first unit on.
    fn press_drift(&mut self, serial: &str) -> f64 {
        let after = self.params.press_drift_after;
        let k = self.units_on_line[0];
        if after == 0 || k < after || k >= after + self.params.press_drift_units {
            return 0.0;
        }
        let shift = (self.params.press_drift_sd_per_unit * (k - after + 1) as f64)
            .min(self.params.press_drift_max_sd);
        let found = self.truth.causes.iter_mut().find_map(|c| match c {
            CauseTruth::Drift { units, .. } => Some(units),
            CauseTruth::SupplierBatch { .. } => None,
        });
        match found {
            Some(units) => units.push(serial.to_owned()),
            None => self.truth.causes.push(CauseTruth::Drift {
                station: ST10.station.to_owned(),
                equipment: ST10.equipment.to_owned(),
                parameter: ST10_PARAMS[0].tag.to_owned(),
                from_unit: serial.to_owned(),
                sd_per_unit: self.params.press_drift_sd_per_unit,
                max_sd: self.params.press_drift_max_sd,
                units: vec![serial.to_owned()],
            }),
        }
        shift
    }

    /// Whether sub-assembly `sub` holds a lot of the bad batch; records the finished unit
    /// `serial` with the cause if so.
    fn bad_batch_of(&mut self, sub: &str, serial: &str) -> bool {
        let lots: Vec<String> = self
            .truth
            .units
            .get(sub)
            .map(|u| u.materials.iter().map(|m| m.lot.clone()).collect())
            .unwrap_or_default();
        let mut bad = false;
        for c in &mut self.truth.causes {
            if let CauseTruth::SupplierBatch { lot, units, .. } = c
                && lots.contains(lot)
            {
                units.push(serial.to_owned());
                bad = true;
            }
        }
        bad
    }

    /// Adds a built unit to the truth: the lots it consumed, the components built into it and
    /// its work order point at it.
    fn record_unit(&mut self, unit: UnitTruth) {
        for m in &unit.materials {
            if let Some(l) = self.truth.lots.get_mut(&m.lot) {
                l.units.push(unit.serial.clone());
            }
        }
        for c in &unit.components {
            if let Some(s) = self.truth.units.get_mut(&c.serial) {
                s.parent = Some(unit.serial.clone());
            }
        }
        if let Some(w) = self.truth.work_orders.get_mut(&unit.work_order) {
            w.units.push(unit.serial.clone());
        }
        self.truth.units.insert(unit.serial.clone(), unit);
    }
}
