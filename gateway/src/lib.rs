//! Threadline line gateway: drivers → tag values → station logic → outbox → MQTT.

pub mod config;
pub mod drivers;
pub mod health;
pub mod outbox;
pub mod publish;
pub mod runtime;
pub mod stations;
