//! MQTT delivery with end-to-end acknowledgement: outbox → `…/records` envelopes (QoS 1) →
//! aggregator → `…/ack` → outbox deletion.
//!
//! - [`options`]: broker URL, TLS (rustls with the ring provider), credentials, last will;
//! - [`publisher`]: the delivery loop (in-flight window, re-sends, backlog/live interleave,
//!   status messages).

pub mod options;
pub mod publisher;

pub use options::{MqttSetupError, mqtt_options};
pub use publisher::{DeviceSource, PublishMetrics, Publisher, PublisherConfig};
