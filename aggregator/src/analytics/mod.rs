//! Quality analytics: common-cause analysis, SPC, supplier scorecard, first-pass yield.
//!
//! The statistics are pure and unit-tested ([`fisher`], the chart and rule functions of
//! [`spc`]); the queries read the genealogy and operations tables on both backends with the
//! store's shared SQL.

pub mod common_cause;
pub mod fisher;
pub mod quality;
pub mod spc;

pub use common_cause::{CommonCause, CommonCauseRequest, Factor, PopulationSpec, common_cause};
pub use quality::{Scorecard, YieldBy, YieldReport, scorecard, yield_by};
pub use spc::{ChartKind, Spc, SpcPoint, SpcRequest, spc};
