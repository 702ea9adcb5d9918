//! What changes on a line over time: operators by shift (badge scans at the stations) and work
//! orders (a new one every 25 units).

use super::Plant;
use crate::plant::catalog::{LINE1_STAFF, LINE2_STAFF, PART_FINAL, PART_SUB, Staffed};
use crate::plant::floor::{FloorAction, Lane};
use crate::plant::truth::WorkOrderTruth;

impl Plant {
    /// Badge scans at the start and at every shift change of a line.
    pub(super) fn staff(&mut self, lane: &mut Lane, line: usize) {
        let staff: &[Staffed] = if line == 0 {
            &LINE1_STAFF
        } else {
            &LINE2_STAFF
        };
        let due = self.units_on_line[line].is_multiple_of(self.params.shift_units.max(1));
        if !due && staff.iter().all(|s| self.operators.contains_key(s.station)) {
            return;
        }
        if due && self.units_on_line[line] > 0 {
            self.shift[line] += 1;
        }
        let shift = self.shift[line] % 3;
        for (i, s) in staff.iter().enumerate() {
            let op = format!("OP{}", 1000 + line as u64 * 100 + i as u64 * 10 + shift);
            if self.operators.get(s.station) == Some(&op) {
                continue;
            }
            lane.push(FloorAction::scan(s.scanner, op.clone()));
            self.settle(lane);
            self.operators.insert(s.station, op);
        }
    }

    /// The work order of a line; a new one every 25 units.
    pub(super) fn work_order(&mut self, lane: &mut Lane, line: usize, scanner: &str) -> String {
        let new = self.work_order[line].is_none() || self.units_on_line[line].is_multiple_of(25);
        if new {
            let id = format!("WO-{:06}", self.next_wo);
            self.next_wo += 1;
            lane.push(FloorAction::scan(scanner, id.clone()));
            self.settle(lane);
            let (part, line_id) = if line == 0 {
                (PART_SUB, "line-1")
            } else {
                (PART_FINAL, "line-2")
            };
            self.truth.work_orders.insert(
                id.clone(),
                WorkOrderTruth {
                    id: id.clone(),
                    part: part.to_owned(),
                    line: line_id.to_owned(),
                    units: Vec::new(),
                },
            );
            self.work_order[line] = Some(id);
        }
        self.work_order[line].clone().unwrap_or_default()
    }
}
