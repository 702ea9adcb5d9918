//! MQTT delivery with end-to-end acknowledgement: outbox → `…/records` envelopes (QoS 1) →
//! aggregator → `…/ack` → outbox deletion.
//!
//! - [`config`]: `[mqtt]`; the broker connection (URL, credentials, TLS, keep-alive) is the
//!   shared [`threadline_shared::mqtt`] setup, the same as the aggregator's;
//! - [`publisher`]: the delivery loop (in-flight window, re-sends, backlog/live interleave,
//!   status messages);
//! - [`sparkplug`]: `[sparkplug]`, the Sparkplug B edge node for readings.

pub mod config;
pub mod publisher;
pub mod sparkplug;

pub use config::MqttSection;
pub use publisher::{DeviceSource, PublishMetrics, Publisher, PublisherConfig};
