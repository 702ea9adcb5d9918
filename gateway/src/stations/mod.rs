//! Station logic: from tag edges and scans to trace events. See `docs/stations.md`.
//!
//! - [`config`]: the `[[pattern]]` and `[[station]]` tables;
//! - `engine`: every station's context, fed tag updates and scans; `state`: the context's
//!   format, committed in the outbox together with the events it produced;
//! - `station`: one station handling one input, with `triggers` (tag changes), `scans`,
//!   `genealogy` (assembly, packing, shipping) and `complete` (operation completion);
//! - `codes`: GS1 / EPC decoding and the pattern classification of a scan.

mod codes;
mod complete;
pub mod config;
mod engine;
mod genealogy;
mod scans;
mod state;
mod station;
mod triggers;

pub use engine::{RouteSubject, StationEngine, SubjectKind};
pub use state::{SavedState, load_committed};
pub use station::{StationCounters, StationEvent, reason};
