//! Threadline aggregator: MQTT ingest → hash-chained event log → genealogy projections → HTTP API.

pub mod api;
pub mod config;
pub mod epcis;
pub mod ingest;
pub mod store;
pub mod trace;
pub mod web;
