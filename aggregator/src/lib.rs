//! Threadline aggregator: MQTT ingest → hash-chained event log → genealogy projections → HTTP API.

pub mod analytics;
pub mod api;
pub mod config;
pub mod epcis;
pub mod ingest;
pub mod routing;
pub mod security;
pub mod store;
pub mod trace;
pub mod web;
