//! Station logic: from tag edges and scans to trace events. See `docs/stations.md`.

mod codes;
pub mod config;
mod engine;
mod state;

pub use engine::{StationCounters, StationEngine, StationEvent, reason};
