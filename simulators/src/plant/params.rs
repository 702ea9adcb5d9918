//! The knobs of the plant (`[plant]` of the plant file), each with its default.

use serde::{Deserialize, Serialize};

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
