//! Threadline line gateway: drivers → tag values → station logic → outbox → MQTT.
//!
//! [`drivers`] acquire tag values and scans; [`stations`] turn edges and scans into trace
//! events and [`readings`] picks the tag updates streamed as readings; [`outbox`] holds every
//! record durably until [`publish`] has it acknowledged; [`runtime`] wires them; [`config`] is
//! the file, [`health`] the local `/metrics` and `/healthz`.

pub mod config;
pub mod drivers;
#[doc(hidden)]
pub mod failpoint;
pub mod health;
pub mod outbox;
pub mod publish;
pub mod readings;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod stations;
pub mod test_support;
