//! MQTT intake → validation → batched, idempotent, hash-chained writes → acks.
//!
//! - [`decode`]: topic + payload → records, a status or a dead letter (never a panic);
//! - [`writer`]: the single writer task: batches, one transaction per batch, retry while the
//!   database is down, acks after commit;
//! - [`mqtt`]: the MQTT client (external broker or the embedded one), subscriptions, acks;
//! - [`config`]: `[mqtt]`; the broker connection (URL, credentials, TLS, keep-alive) is the
//!   shared [`threadline_shared::mqtt`] setup, the same as the gateway's;
//! - [`keys`]: the gateways' signing keys (`gateway_keys_dir`), read on demand;
//! - [`broker`]: the embedded MQTT broker (rumqttd) for one-box installs; [`broker_auth`]: who
//!   may log in to it (`broker_password_file`, Mosquitto's format);
//! - [`deaf`]: a broker that takes the records subscription and delivers nothing (NATS with
//!   `$share/…`), told from the gateways' statuses;
//! - [`gaps`]: seq gaps per gateway and epoch (`/api/v1/gateways`, `/metrics`, `/healthz`);
//! - [`stats`]: [`IngestStats`], shared with `/healthz` and `/metrics`.
//!
//! Data path and back-pressure: the MQTT loop decodes each PUBLISH and `send`s it into a bounded
//! channel; while the writer is busy (or the database is down) the channel fills, the MQTT loop
//! stops polling, and the broker holds the rest. Nothing is acked before its commit, so a record
//! lost anywhere before the commit is re-sent by its gateway; a re-sent record is a duplicate
//! the store ignores (and acks again).

pub mod broker;
pub mod broker_auth;
pub mod config;
pub mod deaf;
pub mod decode;
pub mod gaps;
pub mod keys;
pub mod mqtt;
pub mod stats;
pub mod writer;

pub use decode::{Incoming, decode, decode_signed};
pub use keys::GatewayKeys;
pub use mqtt::run;
pub use stats::IngestStats;
pub use writer::{AckSink, DecodeConfig, Queued, WriterConfig, Writers, writer_for};
