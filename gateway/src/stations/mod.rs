//! Station logic: from tag edges and scans to trace events.

pub mod config;
