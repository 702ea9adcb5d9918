//! The plant simulator: a demo plant of two lines driven the way a shop floor drives a gateway
//! (scanner lines into pseudo-terminals, PLC tags into simulated Modbus devices), with the
//! ground truth of the genealogy it produced.
//!
//! - [`model`]: what the plant does ([`Plant::plan_batch`]), decided from a seed;
//! - [`catalog`]: what it is made of (parts, devices, suppliers, stations, parameter models);
//! - [`params`]: its knobs ([`PlantParams`]); [`labels`]: the GS1 barcodes it prints;
//! - [`truth`]: what it did ([`Truth`]), the yardstick of the end-to-end tests;
//! - [`floor`]: the floor actions and their concurrent, cancellable execution;
//! - [`sims`], [`tagmap`]: the simulated PLCs and scanners the actions drive;
//! - [`config`], [`endpoints`], [`run`]: the plant file, the gateways' configs pointed at the
//!   simulators, and a whole run from plan to truth file.

pub mod catalog;
pub mod config;
pub mod endpoints;
pub mod floor;
pub mod labels;
pub mod model;
pub mod params;
pub mod run;
pub mod sims;
pub mod tagmap;
pub mod truth;

pub use config::{LoadedPlant, PlantFile};
pub use endpoints::{Endpoints, Overrides, rewrite_gateway_config};
pub use floor::{
    Control, Floor, FloorAction, FloorError, Lane, RecordingFloor, SimValue, run_lanes,
};
pub use model::{Plan, Plant};
pub use params::PlantParams;
pub use run::{RunOptions, RunOutcome, run_plant, write_truth};
pub use truth::{CauseTruth, RouteRefusalTruth, Truth};
