//! The plant simulator: a demo plant of two lines driven the way a shop floor drives a gateway
//! (scanner lines into pseudo-terminals, PLC tags into simulated Modbus devices), with the
//! ground truth of the genealogy it produced.
//!
//! - [`model`]: what the plant does, decided from a seed, and the [`model::Truth`];
//! - [`floor`]: the floor actions and their concurrent, cancellable execution.

pub mod config;
pub mod endpoints;
pub mod floor;
pub mod model;
pub mod run;
pub mod sims;
pub mod tagmap;

pub use config::{LoadedPlant, PlantFile};
pub use endpoints::{Endpoints, Overrides, rewrite_gateway_config};
pub use floor::{
    Control, Floor, FloorAction, FloorError, Lane, RecordingFloor, SimValue, run_lanes,
};
pub use model::{Plan, Plant, PlantParams, Truth};
pub use run::{RunOptions, RunOutcome, run_plant, write_truth};
