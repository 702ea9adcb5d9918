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
//! line) and adds what it decided to the cumulative [`Truth`]. The truth is what the plant *did*
//! — never what a gateway reported — so an end-to-end test can hold the aggregator against it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::floor::{FloorAction, Lane, SimValue};

/// Part numbers of the demo plant.
pub const PART_FINAL: &str = "P-DRIVE-200";
pub const PART_SUB: &str = "P-HUB-100";
pub const PART_BEARING: &str = "P-6202";
pub const PART_HOUSING: &str = "P-HSG-10";
pub const PART_SCREW: &str = "P-SCR-M5";

/// ASCII 29, the GS1 group separator that ends a variable-length element.
pub const GS: char = '\u{1d}';

/// Device ids of the demo plant (Modbus TCP simulators).
pub const DEV_LINE1: &str = "l1-plc";
pub const DEV_LINE2: &str = "l2-plc";
pub const DEV_HALL: &str = "hall-env";

/// Control codes that close the open case / pallet / shipment (printed on the packing tables).
pub const CLOSE_CASE: &str = "CLOSE-CASE";
pub const CLOSE_PALLET: &str = "CLOSE-PALLET";
pub const CLOSE_SHIPMENT: &str = "CLOSE-SHIPMENT";

/// The delivery note barcode of a shipment: `SHP-000001/CUSTOMER`.
pub fn shipment_label(shipment: &str, customer: &str) -> String {
    format!("{shipment}/{customer}")
}

/// Customers the shipments go to.
pub const CUSTOMERS: [&str; 3] = ["ACME-AUTOMOTIVE", "NORDWERK-AG", "SAKURA-MOTORS"];

/// Knobs of the plant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantParams {
    /// Same seed, same plant: every decision is drawn from it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Units per case.
    #[serde(default = "default_case_size")]
    pub case_size: usize,
    /// Cases per pallet.
    #[serde(default = "default_cases_per_pallet")]
    pub cases_per_pallet: usize,
    /// A line-side lot runs out after this many units (then the next lot is received and loaded).
    #[serde(default = "default_lot_units")]
    pub lot_units: usize,
    /// Operators change after this many units per line.
    #[serde(default = "default_shift_units")]
    pub shift_units: usize,
    /// Probability that an inspection / test fails (the unit is reworked and retested).
    #[serde(default = "default_fail_rate")]
    pub fail_rate: f64,
    /// Probability that a process parameter lands outside its specification limits.
    #[serde(default = "default_out_of_spec_rate")]
    pub out_of_spec_rate: f64,
    /// Probability that a scan before a unit is garbage (a `scan_rejected` for the gateway).
    #[serde(default = "default_garble_rate")]
    pub garble_rate: f64,
    /// Pause after each machine cycle.
    #[serde(default = "default_cycle_ms")]
    pub cycle_ms: u64,
    /// Pause after a scan or a tag change so that the gateway sees it before the next one;
    /// must exceed the gateways' poll period (`scan_ms`) comfortably (≥ 3×).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// First number of every id counter; a demo run continues from where the last one stopped.
    #[serde(default = "default_id_base")]
    pub id_base: u64,
}

fn default_seed() -> u64 {
    42
}
fn default_case_size() -> usize {
    5
}
fn default_cases_per_pallet() -> usize {
    4
}
fn default_lot_units() -> usize {
    12
}
fn default_shift_units() -> usize {
    10
}
fn default_fail_rate() -> f64 {
    0.08
}
fn default_out_of_spec_rate() -> f64 {
    0.05
}
fn default_garble_rate() -> f64 {
    0.04
}
fn default_cycle_ms() -> u64 {
    300
}
fn default_settle_ms() -> u64 {
    150
}
fn default_id_base() -> u64 {
    1
}

impl Default for PlantParams {
    fn default() -> Self {
        PlantParams {
            seed: default_seed(),
            case_size: default_case_size(),
            cases_per_pallet: default_cases_per_pallet(),
            lot_units: default_lot_units(),
            shift_units: default_shift_units(),
            fail_rate: default_fail_rate(),
            out_of_spec_rate: default_out_of_spec_rate(),
            garble_rate: default_garble_rate(),
            cycle_ms: default_cycle_ms(),
            settle_ms: default_settle_ms(),
            id_base: default_id_base(),
        }
    }
}

/// One process parameter as the PLC reported it (already rounded to what the register holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamTruth {
    pub name: String,
    pub value: f64,
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsl: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usl: Option<f64>,
}

impl ParamTruth {
    pub fn in_spec(&self) -> bool {
        self.lsl.is_none_or(|l| self.value >= l) && self.usl.is_none_or(|u| self.value <= u)
    }
}

/// One operation as it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpTruth {
    pub station: String,
    pub operation: String,
    pub equipment: String,
    pub operator: String,
    pub recipe: String,
    /// `pass` or `fail`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defect_code: Option<String>,
    pub parameters: Vec<ParamTruth>,
    /// Lots consumed by this operation.
    pub lots: Vec<String>,
}

/// A lot consumed by a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterialTruth {
    pub lot: String,
    pub part: String,
    pub qty: f64,
    pub station: String,
    pub supplier: String,
}

/// A child unit built into a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentTruth {
    pub serial: String,
    pub part: String,
}

/// Everything true about one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitTruth {
    pub serial: String,
    pub part: String,
    pub line: String,
    pub work_order: String,
    pub operations: Vec<OpTruth>,
    pub components: Vec<ComponentTruth>,
    pub materials: Vec<MaterialTruth>,
    /// The unit this one was built into (sub-assemblies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pallet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// Everything true about one supplier lot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LotTruth {
    pub lot: String,
    pub part: String,
    pub gtin: String,
    pub supplier: String,
    pub supplier_batch: String,
    pub qty: f64,
    /// The receiving station and the exact label scanned there.
    pub received_at: String,
    pub label: String,
    /// Units that consumed it directly.
    pub units: Vec<String>,
    /// Every unit it went into: direct consumers and the units they were built into.
    pub all_units: Vec<String>,
    pub containers: Vec<String>,
    pub shipments: Vec<String>,
    pub customers: Vec<String>,
}

/// A case or a pallet (SSCC, 18 digits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerTruth {
    pub id: String,
    /// `case` or `pallet`.
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Units (case) or cases (pallet).
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<String>,
}

/// One shipment to one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentTruth {
    pub id: String,
    pub customer: String,
    pub pallets: Vec<String>,
    pub units: Vec<String>,
}

/// One work order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderTruth {
    pub id: String,
    pub part: String,
    pub line: String,
    pub units: Vec<String>,
}

/// A scan the plant knows to be garbage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedScanTruth {
    pub station: String,
    pub scanner: String,
    pub raw: String,
}

/// The ground truth of everything the plant did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub units: BTreeMap<String, UnitTruth>,
    pub lots: BTreeMap<String, LotTruth>,
    pub containers: BTreeMap<String, ContainerTruth>,
    pub shipments: BTreeMap<String, ShipmentTruth>,
    pub work_orders: BTreeMap<String, WorkOrderTruth>,
    pub rejected_scans: Vec<RejectedScanTruth>,
}

impl Truth {
    /// Finished units (the line-2 product).
    pub fn finished_units(&self) -> impl Iterator<Item = &UnitTruth> {
        self.units.values().filter(|u| u.part == PART_FINAL)
    }

    /// Fills the derived fields (lot reach: all units, containers, shipments, customers).
    fn derive(&mut self) {
        for lot in self.lots.values_mut() {
            let mut all: Vec<String> = Vec::new();
            for u in &lot.units {
                let mut cur = Some(u.clone());
                while let Some(s) = cur {
                    cur = self.units.get(&s).and_then(|x| x.parent.clone());
                    if !all.contains(&s) {
                        all.push(s);
                    }
                }
            }
            let mut containers = Vec::new();
            let mut shipments = Vec::new();
            let mut customers = Vec::new();
            for s in &all {
                if let Some(u) = self.units.get(s) {
                    for c in [&u.case, &u.pallet].into_iter().flatten() {
                        containers.push(c.clone());
                    }
                    shipments.extend(u.shipment.clone());
                    customers.extend(u.customer.clone());
                }
            }
            for v in [&mut all, &mut containers, &mut shipments, &mut customers] {
                v.sort();
                v.dedup();
            }
            lot.all_units = all;
            lot.containers = containers;
            lot.shipments = shipments;
            lot.customers = customers;
        }
    }
}

/// One planned batch: the floor actions per line and what they mean.
#[derive(Debug, Clone)]
pub struct Plan {
    pub lanes: Vec<Lane>,
    /// Finished units this batch makes.
    pub units: Vec<String>,
}

/// A supplier of a part.
struct Supplier {
    part: &'static str,
    name: &'static str,
    gtin_base: &'static str,
    tag: &'static str,
    /// Received at this dock (scanner id, station id).
    dock: (&'static str, &'static str),
}

const SUPPLIERS: [Supplier; 3] = [
    Supplier {
        part: PART_BEARING,
        name: "KUGELLAGER-GMBH",
        gtin_base: "0401234500001",
        tag: "BRG",
        dock: ("rcv-brg-scanner", "RCV-BRG"),
    },
    Supplier {
        part: PART_HOUSING,
        name: "GUSSWERK-NORD",
        gtin_base: "0401234500002",
        tag: "HSG",
        dock: ("rcv-hsg-scanner", "RCV-HSG"),
    },
    Supplier {
        part: PART_SCREW,
        name: "SCHRAUBEN-SUED",
        gtin_base: "0401234500003",
        tag: "SCR",
        dock: ("rcv-scr-scanner", "RCV-SCR"),
    },
];

/// GS1 mod-10 check digit of the digits given (without the check digit).
pub fn gs1_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { d * 3 } else { d })
        .sum();
    (10 - sum % 10) % 10
}

/// The GS1 label of a received lot: `(01)GTIN(10)LOT<GS>(240)PART<GS>(37)QTY`.
pub fn lot_label(gtin: &str, lot: &str, part: &str, qty: u32) -> String {
    format!("01{gtin}10{lot}{GS}240{part}{GS}37{qty}")
}

/// An 18-digit SSCC (extension digit, company prefix 4012345, serial reference, check digit).
pub fn sscc(extension: u8, serial: u64) -> String {
    let body = format!("{extension}4012345{serial:09}");
    let check = gs1_check_digit(&body);
    format!("{body}{check}")
}

/// The scanned form of an SSCC: AI 00 element string.
pub fn sscc_label(sscc: &str) -> String {
    format!("00{sscc}")
}

struct Feeder {
    lot: String,
    supplier: &'static str,
    left: usize,
}

/// A station with an operator.
struct Staffed {
    station: &'static str,
    scanner: &'static str,
}

const LINE1_STAFF: [Staffed; 2] = [
    Staffed {
        station: "ST10",
        scanner: "st10-scanner",
    },
    Staffed {
        station: "ST20",
        scanner: "st20-scanner",
    },
];
const LINE2_STAFF: [Staffed; 2] = [
    Staffed {
        station: "ST110",
        scanner: "st110-scanner",
    },
    Staffed {
        station: "ST120",
        scanner: "st120-scanner",
    },
];

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
}

/// Operations of a station kind with PLC tags.
struct Machine {
    station: &'static str,
    operation: &'static str,
    equipment: &'static str,
    device: &'static str,
    /// Tag name prefix, e.g. `st10`.
    prefix: &'static str,
    program: u16,
    scanner: &'static str,
}

const ST10: Machine = Machine {
    station: "ST10",
    operation: "OP10 press-fit bearing",
    equipment: "PRESS-1",
    device: DEV_LINE1,
    prefix: "st10",
    program: 3,
    scanner: "st10-scanner",
};
const ST20: Machine = Machine {
    station: "ST20",
    operation: "OP20 inspect run-out",
    equipment: "VISION-1",
    device: DEV_LINE1,
    prefix: "st20",
    program: 7,
    scanner: "st20-scanner",
};
const ST110: Machine = Machine {
    station: "ST110",
    operation: "OP110 assemble drive",
    equipment: "SCREWDRIVER-2",
    device: DEV_LINE2,
    prefix: "st110",
    program: 12,
    scanner: "st110-scanner",
};
const ST120: Machine = Machine {
    station: "ST120",
    operation: "OP120 end-of-line test",
    equipment: "EOL-TESTER-2",
    device: DEV_LINE2,
    prefix: "st120",
    program: 21,
    scanner: "st120-scanner",
};

/// A parameter's statistical model.
struct ParamModel {
    tag: &'static str,
    unit: &'static str,
    mean: f64,
    sd: f64,
    lsl: Option<f64>,
    usl: Option<f64>,
    /// How the register stores it: `None` = f32, `Some(scale)` = 16-bit integer × scale.
    scale: Option<f64>,
}

const ST10_PARAMS: [ParamModel; 2] = [
    ParamModel {
        tag: "st10.pressure",
        unit: "bar",
        mean: 200.0,
        sd: 5.0,
        lsl: Some(180.0),
        usl: Some(220.0),
        scale: None,
    },
    ParamModel {
        tag: "st10.force_peak",
        unit: "kN",
        mean: 10.0,
        sd: 0.6,
        lsl: None,
        usl: Some(12.5),
        scale: None,
    },
];
const ST20_PARAMS: [ParamModel; 1] = [ParamModel {
    tag: "st20.runout",
    unit: "mm",
    mean: 0.02,
    sd: 0.006,
    lsl: None,
    usl: Some(0.05),
    scale: None,
}];
const ST110_PARAMS: [ParamModel; 2] = [
    ParamModel {
        tag: "st110.torque",
        unit: "Nm",
        mean: 5.0,
        sd: 0.12,
        lsl: Some(4.5),
        usl: Some(5.5),
        scale: None,
    },
    ParamModel {
        tag: "st110.angle",
        unit: "deg",
        mean: 720.0,
        sd: 15.0,
        lsl: Some(650.0),
        usl: Some(800.0),
        scale: None,
    },
];
const ST120_PARAMS: [ParamModel; 2] = [
    ParamModel {
        tag: "st120.leak_rate",
        unit: "ml/min",
        mean: 1.0,
        sd: 0.25,
        lsl: None,
        usl: Some(2.0),
        scale: None,
    },
    ParamModel {
        tag: "st120.noise",
        unit: "dB",
        mean: 52.0,
        sd: 2.0,
        lsl: None,
        usl: Some(60.0),
        scale: Some(0.1),
    },
];

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
        let mut case: Option<(String, Vec<String>)> = None;
        let mut pallet: Option<(String, Vec<String>)> = None;
        for _ in 0..n {
            let sub = self.build_sub_assembly(&mut l1);
            let unit = self.build_final(&mut l2, &sub);
            finished.push(unit.clone());
            // Pack: ST130 units → case.
            if case.is_none() {
                let id = sscc(0, self.next_container);
                self.next_container += 1;
                l2.push(FloorAction::scan("st130-scanner", sscc_label(&id)));
                self.settle(&mut l2);
                case = Some((id, Vec::new()));
            }
            if let Some((id, units)) = case.as_mut() {
                l2.push(FloorAction::scan("st130-scanner", unit.clone()));
                self.settle(&mut l2);
                units.push(unit.clone());
                if units.len() >= self.params.case_size {
                    let (id, units) = (id.clone(), std::mem::take(units));
                    case = None;
                    self.close_case(&mut l2, &mut pallet, id, units);
                }
            }
            if let Some((_, cases)) = &pallet
                && cases.len() >= self.params.cases_per_pallet
                && let Some((id, cases)) = pallet.take()
            {
                self.ship_pallet(&mut l2, id, cases);
            }
        }
        if let Some((id, units)) = case.take() {
            self.close_case(&mut l2, &mut pallet, id, units);
        }
        if let Some((id, cases)) = pallet.take() {
            self.ship_pallet(&mut l2, id, cases);
        }
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

    /// Badge scans at the start and at every shift change of a line.
    fn staff(&mut self, lane: &mut Lane, line: usize) {
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
    fn work_order(&mut self, lane: &mut Lane, line: usize, scanner: &str) -> String {
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

    /// Makes sure the feeder of `part` at `station` holds a lot with units left; receives and
    /// loads a new lot when it ran out. Returns the lot and its supplier.
    fn feed(
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
        let left = self.params.lot_units.max(1) - 1;
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

    fn maybe_garble(&mut self, lane: &mut Lane, station: &str, scanner: &str) {
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

    /// Draws the parameters of one cycle; `spec_fail` forces one out of its limits.
    fn draw(&mut self, models: &[ParamModel], force_out: bool) -> Vec<ParamTruth> {
        let out_idx = if force_out || self.chance(self.params.out_of_spec_rate) {
            Some(self.rng.random_range(0..models.len()))
        } else {
            None
        };
        let mut out = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let mut v = m.mean + m.sd * self.noise();
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
    fn cycle(
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

    fn op_truth(
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

    /// Inspection / test with rework: fail → rework → retest until it passes.
    fn inspect(
        &mut self,
        lane: &mut Lane,
        m: &Machine,
        models: &[ParamModel],
        serial: &str,
    ) -> Vec<OpTruth> {
        let mut ops = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let fail = attempts < 3 && self.chance(self.params.fail_rate);
            let params = self.draw(models, fail);
            let pass = params.iter().all(ParamTruth::in_spec);
            let defect = if pass {
                None
            } else {
                Some(if m.prefix == "st20" { 201 } else { 301 })
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

    fn build_sub_assembly(&mut self, lane: &mut Lane) -> String {
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
        let params = self.draw(&ST10_PARAMS, false);
        self.cycle(lane, &ST10, &params, true, None);
        let mut ops = vec![self.op_truth(
            &ST10,
            params,
            true,
            None,
            vec![bearing.clone(), housing.clone()],
        )];
        ops.extend(self.inspect(lane, &ST20, &ST20_PARAMS, &serial));
        for lot in [&bearing, &housing] {
            if let Some(l) = self.truth.lots.get_mut(lot) {
                l.units.push(serial.clone());
            }
        }
        if let Some(w) = self.truth.work_orders.get_mut(&wo) {
            w.units.push(serial.clone());
        }
        self.truth.units.insert(
            serial.clone(),
            UnitTruth {
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
            },
        );
        self.units_on_line[0] += 1;
        serial
    }

    fn build_final(&mut self, lane: &mut Lane, sub: &str) -> String {
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
        ops.extend(self.inspect(lane, &ST120, &ST120_PARAMS, &serial));
        if let Some(l) = self.truth.lots.get_mut(&screw) {
            l.units.push(serial.clone());
        }
        if let Some(s) = self.truth.units.get_mut(sub) {
            s.parent = Some(serial.clone());
        }
        if let Some(w) = self.truth.work_orders.get_mut(&wo) {
            w.units.push(serial.clone());
        }
        self.truth.units.insert(
            serial.clone(),
            UnitTruth {
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
            },
        );
        self.units_on_line[1] += 1;
        serial
    }

    /// A full (or last) case goes onto the open pallet (ST135).
    fn close_case(
        &mut self,
        lane: &mut Lane,
        pallet: &mut Option<(String, Vec<String>)>,
        case: String,
        units: Vec<String>,
    ) {
        if pallet.is_none() {
            let id = sscc(1, self.next_container);
            self.next_container += 1;
            lane.push(FloorAction::scan("st135-scanner", sscc_label(&id)));
            self.settle(lane);
            *pallet = Some((id, Vec::new()));
        }
        let Some((pallet_id, cases)) = pallet.as_mut() else {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plan(seed: u64, n: usize) -> (Plan, Truth) {
        let mut p = Plant::new(PlantParams {
            seed,
            ..PlantParams::default()
        });
        let plan = p.plan_batch(n);
        (plan, p.truth().clone())
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
        // Lots change: 30 units with 12 per lot → 3 lots of each part.
        for part in [PART_BEARING, PART_HOUSING, PART_SCREW] {
            let lots: Vec<_> = t.lots.values().filter(|l| l.part == part).collect();
            assert_eq!(lots.len(), 3, "{part}");
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
    fn labels_are_valid_gs1() {
        assert_eq!(gs1_check_digit("629104150021"), 3);
        let s = sscc(0, 1);
        assert_eq!(s.len(), 18);
        assert_eq!(gs1_check_digit(&s[..17]), s[17..].parse::<u32>().unwrap());
        let l = lot_label("04012345000015", "LOT-BRG-000001", PART_BEARING, 500);
        assert_eq!(
            l,
            "0104012345000015".to_owned() + "10LOT-BRG-000001\u{1d}240P-6202\u{1d}37500"
        );
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
