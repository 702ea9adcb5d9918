//! Quality analytics: common-cause analysis (more to come: SPC, scorecard, yield).
//!
//! The statistics are pure and unit-tested ([`fisher`]); the queries ([`common_cause`]) read
//! the genealogy and operations tables on both backends with the store's shared SQL.

pub mod common_cause;
pub mod fisher;

pub use common_cause::{CommonCause, CommonCauseRequest, Factor, PopulationSpec, common_cause};
