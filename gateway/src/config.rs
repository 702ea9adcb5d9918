//! The gateway's configuration file (`threadline-gateway run --config line-1.toml`).
//!
//! Every table is strict (`deny_unknown_fields`) and every field documented; see
//! `docs/configuration.md` and `config/gateway.example.toml`. Problems are reported all at once,
//! with file, line, column and field, by [`threadline_shared::config`].
//!
//! Devices and tags are flat structs with a `protocol` field rather than a serde-tagged enum:
//! a tagged enum buffers its content, which loses the line and column of every error inside a
//! device. The per-protocol rules are checked in [`Validate`], and [`DeviceConfig::kind`] gives
//! the typed view that the drivers dispatch on with one exhaustive `match`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use threadline_shared::config::{self, ConfigErrors, Validate, Validator};

pub use crate::drivers::config::{
    Area, ByteOrder, DataType, DeviceConfig, DeviceKind, Framing, Parity, Protocol, ScannerConfig,
    ScannerKind, TagConfig,
};
pub use crate::publish::config::MqttSection;
pub use crate::stations::config::{PatternConfig, StationConfig};

/// The whole gateway configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    pub mqtt: MqttSection,
    /// Local HTTP endpoint with `/metrics` and `/healthz`; absent = not served.
    #[serde(default)]
    pub health: Option<HealthSection>,
    #[serde(default)]
    pub device: Vec<DeviceConfig>,
    #[serde(default)]
    pub scanner: Vec<ScannerConfig>,
    /// Classifies scanned codes; the first match wins.
    #[serde(default)]
    pub pattern: Vec<PatternConfig>,
    #[serde(default)]
    pub station: Vec<StationConfig>,
}

/// `[gateway]`: who this gateway is and where it keeps its outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Unique gateway id; one MQTT topic level (no `/`, `+`, `#`).
    pub id: String,
    pub plant: String,
    pub line: String,
    /// Directory of `outbox.db`, station state and the OPC UA client certificate.
    pub data_dir: PathBuf,
    /// Outbox size limit. When full, readings are dropped oldest-first (counted); trace events
    /// are never dropped.
    #[serde(default = "default_buffer_max_mb")]
    pub buffer_max_mb: u64,
}

fn default_buffer_max_mb() -> u64 {
    1024
}

/// `[health]`: local metrics and health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// e.g. `127.0.0.1:9101`.
    pub listen: String,
    /// `/healthz` fails when a device has had no good poll for this long.
    #[serde(default = "default_device_silence_s")]
    pub max_device_silence_s: u64,
    /// `/healthz` fails when the outbox's oldest record is older than this.
    #[serde(default = "default_outbox_age_s")]
    pub max_outbox_age_s: u64,
}

fn default_device_silence_s() -> u64 {
    60
}
fn default_outbox_age_s() -> u64 {
    600
}

impl GatewayConfig {
    /// Loads and validates a config file, reporting every problem.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        config::load(path)
    }

    /// Parses config text (`file` names it in messages).
    pub fn parse(file: &str, text: &str) -> Result<GatewayConfig, ConfigErrors> {
        config::parse(file, text)
    }

    /// The MQTT client id: `mqtt.client_id` or the gateway id.
    pub fn client_id(&self) -> &str {
        self.mqtt.client_id.as_deref().unwrap_or(&self.gateway.id)
    }
}

impl Validate for GatewayConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        for (what, value) in [
            ("gateway.id", &self.gateway.id),
            ("gateway.plant", &self.gateway.plant),
            ("gateway.line", &self.gateway.line),
        ] {
            if let Err(e) = threadline_shared::topic::check_level("id", value) {
                v.error(what, e.to_string());
            }
        }
        crate::publish::config::validate(&self.mqtt, v);
        crate::drivers::config::validate(self, v);
        crate::stations::config::validate(self, v);
    }
}
