//! Threadline contracts shared by the gateway and the aggregator.
//!
//! - [`event`]: every trace record type of the MQTT contract, with one canonical JSON form;
//! - [`envelope`]: the batch envelope, the ack message and the gateway status message;
//! - [`topic`]: building and parsing `{root}/{plant}/{line}/{gateway}/{records|status|ack}`;
//! - [`ids`]: GS1 element strings, GS1 Digital Link, GTIN/SSCC check digits, EPC SGTIN-96/SSCC-96;
//! - [`cli`]: stdout of the command-line tools (`outln!`: a closed pipe ends them quietly);
//! - [`config`]: strict TOML loading that reports every problem with file, line, column and field;
//! - [`mqtt`] (feature `mqtt`): the MQTT client setup both daemons use (URL, credentials, TLS);
//! - [`signal`] (feature `signal`): waiting for SIGINT / SIGTERM.
//! - [`signing`] (feature `mqtt`): HMAC-SHA256 signatures of envelopes and acks, key files.
//! - `testing` (feature `test-support`): helpers for the other crates' integration tests.

pub mod cli;
pub mod config;
pub mod envelope;
pub mod event;
pub mod ids;
#[cfg(any(test, feature = "mqtt"))]
pub mod mqtt;
#[cfg(any(test, feature = "signal"))]
pub mod signal;
#[cfg(any(test, feature = "mqtt"))]
pub mod signing;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod time;
pub mod topic;

pub use envelope::{Ack, DeviceHealth, Envelope, GatewayState, Status};
pub use event::{ItemKind, ItemRef, Record, RecordBody, TagValue};
pub use topic::{Topic, TopicError, TopicKind};
