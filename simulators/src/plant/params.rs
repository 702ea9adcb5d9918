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
    /// Every Nth finished drive is scanned at the packing station ST130 right after assembly,
    /// before its end-of-line test (an operator skipping the tester): the route check refuses it
    /// (`scan_rejected`, recorded in the truth's `route_refusals`); the drive then goes on as
    /// usual. 0 = never. Decided from the unit number, not drawn: the seed's plant is unchanged.
    #[serde(default)]
    pub skip_test_every: u64,
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
    /// Injected cause 1 — the n-th bearing lot received in a run (1 = the first; 0 = none) is a
    /// bad supplier batch: finished drives built with it fail their end-of-line test (noise)
    /// with probability `bad_lot_fail_rate` on the first attempt. Recorded in the truth's
    /// `causes`; docs/analysis.md finds it.
    #[serde(default = "default_bad_bearing_lot")]
    pub bad_bearing_lot: usize,
    /// First-attempt end-of-line failure probability of a drive with the bad bearing batch
    /// (default 1: every one). Lower rates are real too, but a run of a few dozen drives then
    /// cannot always tell the batch from a shift or a lot that overlaps it (12 drives a lot,
    /// shifts of 10): `model/cause_tests.rs` holds the default to a clear margin for 40 seeds.
    #[serde(default = "default_bad_lot_fail_rate")]
    pub bad_lot_fail_rate: f64,
    /// Injected cause 2 — PRESS-1 (ST10) drifts: after this many sub-assemblies of a run
    /// (0 = never) its pressure mean rises by `press_drift_sd_per_unit` standard deviations per
    /// unit, up to `press_drift_max_sd`. Values stay inside the spec limits (the press passes):
    /// only SPC sees it.
    #[serde(default = "default_press_drift_after")]
    pub press_drift_after: usize,
    /// Drift per sub-assembly, in standard deviations of the pressure.
    #[serde(default = "default_press_drift_sd_per_unit")]
    pub press_drift_sd_per_unit: f64,
    /// The drift stops growing here (standard deviations).
    #[serde(default = "default_press_drift_max_sd")]
    pub press_drift_max_sd: f64,
    /// The drift lasts this many sub-assemblies, then the press is serviced and presses at its
    /// nominal mean again: a chart of a longer run still shows the episode against a stable
    /// process around it.
    #[serde(default = "default_press_drift_units")]
    pub press_drift_units: usize,
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
fn default_bad_bearing_lot() -> usize {
    2
}
fn default_bad_lot_fail_rate() -> f64 {
    1.0
}
fn default_press_drift_after() -> usize {
    8
}
fn default_press_drift_sd_per_unit() -> f64 {
    0.5
}
fn default_press_drift_max_sd() -> f64 {
    3.5
}
fn default_press_drift_units() -> usize {
    12
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
            skip_test_every: 0,
            cycle_ms: default_cycle_ms(),
            settle_ms: default_settle_ms(),
            id_base: default_id_base(),
            bad_bearing_lot: default_bad_bearing_lot(),
            bad_lot_fail_rate: default_bad_lot_fail_rate(),
            press_drift_after: default_press_drift_after(),
            press_drift_sd_per_unit: default_press_drift_sd_per_unit(),
            press_drift_max_sd: default_press_drift_max_sd(),
            press_drift_units: default_press_drift_units(),
        }
    }
}
