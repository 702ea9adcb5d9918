//! The ground truth of what the plant did — never what a gateway reported — so that an
//! end-to-end test can hold the aggregator's answers against it. Serialised as the truth file
//! of `threadline-sim --truth`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::PART_FINAL;

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

/// A scan the route check must refuse: a unit presented at `station` before `missing` passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRefusalTruth {
    pub unit: String,
    pub station: String,
    pub scanner: String,
    /// The refusal's reason, as the gateway words it
    /// (`missing operation OP120 end-of-line test at ST120`).
    pub reason: String,
}

/// A cause the plant injected on purpose, for analytics to find (see docs/analysis.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CauseTruth {
    /// A bad supplier batch: finished units built with it fail the end-of-line test more often.
    SupplierBatch {
        part: String,
        lot: String,
        supplier: String,
        supplier_batch: String,
        /// Where the failures show (ST120, defect 302 noise).
        station: String,
        /// First-attempt failure probability of the units built with it.
        fail_rate: f64,
        /// Finished units built with it.
        units: Vec<String>,
    },
    /// A machine parameter drifting (inside its spec limits).
    Drift {
        station: String,
        equipment: String,
        parameter: String,
        /// The first unit pressed with a shifted mean.
        from_unit: String,
        sd_per_unit: f64,
        max_sd: f64,
        /// Units pressed while drifting.
        units: Vec<String>,
    },
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
    /// Units presented at an enforcing station too early (`skip_test_every`).
    #[serde(default)]
    pub route_refusals: Vec<RouteRefusalTruth>,
    /// The causes injected on purpose (bad batch, drift).
    #[serde(default)]
    pub causes: Vec<CauseTruth>,
}

impl Truth {
    /// Finished units (the line-2 product).
    pub fn finished_units(&self) -> impl Iterator<Item = &UnitTruth> {
        self.units.values().filter(|u| u.part == PART_FINAL)
    }

    /// The injected bad supplier batch's lot, if any.
    pub fn bad_lot(&self) -> Option<&str> {
        self.causes.iter().find_map(|c| match c {
            CauseTruth::SupplierBatch { lot, .. } => Some(lot.as_str()),
            CauseTruth::Drift { .. } => None,
        })
    }

    /// Finished units with a failed operation (the complaint list of the demo).
    pub fn failed_finished_units(&self) -> Vec<String> {
        self.finished_units()
            .filter(|u| u.operations.iter().any(|o| o.result == "fail"))
            .map(|u| u.serial.clone())
            .collect()
    }

    /// Fills the derived fields (lot reach: all units, containers, shipments, customers).
    pub(super) fn derive(&mut self) {
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
