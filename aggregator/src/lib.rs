//! Threadline aggregator: MQTT ingest → hash-chained event log → genealogy projections → HTTP API.

pub mod config;
