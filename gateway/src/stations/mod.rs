//! Station logic: from tag edges and scans to trace events.

pub mod config;

use std::path::Path;

use threadline_shared::event::RecordBody;
use threadline_shared::time::Timestamp;

use crate::config::GatewayConfig;
use crate::drivers::{RawScan, TagUpdate};

/// A trace event produced by the station logic, to be appended to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct StationEvent {
    pub ts: Timestamp,
    pub body: RecordBody,
}

/// All stations of a gateway (placeholder until the station logic lands).
pub struct StationEngine {}

impl StationEngine {
    /// Builds the stations of `cfg`, restoring persisted state from `state_dir` if present.
    pub fn new(cfg: &GatewayConfig, state_dir: &Path) -> anyhow::Result<StationEngine> {
        let _ = (cfg, state_dir);
        Ok(StationEngine {})
    }

    /// Feeds every tag update (all tags, before deadband); returns the events it completes.
    pub fn on_tag(&mut self, update: &TagUpdate) -> Vec<StationEvent> {
        let _ = update;
        Vec::new()
    }

    /// Feeds a scan; returns the events it causes (including `scan_rejected`).
    pub fn on_scan(&mut self, scan: &RawScan) -> Vec<StationEvent> {
        let _ = scan;
        Vec::new()
    }
}
