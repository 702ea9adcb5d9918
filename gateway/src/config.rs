//! The gateway's configuration file (`threadline-gateway run --config line-1.toml`).
//!
//! Every table is strict (`deny_unknown_fields`) and every field documented; see
//! `docs/configuration.md` and `config/gateway.example.toml`. Problems are reported all at once,
//! with file, line, column and field, by [`threadline_shared::config`].
//!
//! Devices and tags are flat structs with a `protocol` field rather than a serde-tagged enum:
//! a tagged enum buffers its content, which loses the line and column of every error inside a
//! device. The per-protocol rules are checked by `DeviceConfig::check` (through [`Validate`]),
//! and [`DeviceConfig::kind`] gives the typed view the drivers use.
//!
//! Where the checks live: a section module checks its own tables (`drivers::config` a device
//! and its tags, `stations::config` a pattern or a station); this module checks what spans
//! sections or items — unique ids and tag names, stations referring to tags, scanners and
//! patterns referring to stations, work orders needing a starting station. The section
//! modules do not know [`GatewayConfig`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use threadline_shared::config::{self, ConfigErrors, Validate, Validator};

pub use crate::drivers::config::{
    Area, ByteOrder, DataBits, DataType, DeviceConfig, DeviceKind, Framing, GsSubstitute, HidLink,
    KeyboardLayout, Parity, Protocol, ScannerConfig, ScannerInterface, ScannerKind, ScannerLink,
    SecurityMode, SecurityPolicy, SerialLink, StopBits, TagConfig, Terminator,
};
pub use crate::publish::config::MqttSection;
pub use crate::stations::config::{PatternConfig, StationConfig};

/// The whole gateway configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Who this gateway is, where it keeps its state.
    pub gateway: GatewaySection,
    /// The broker it publishes to.
    pub mqtt: MqttSection,
    /// Local HTTP endpoint with `/metrics` and `/healthz`; absent = not served.
    pub health: Option<HealthSection>,
    /// Sparkplug B edge node for readings (`docs/sparkplug.md`); absent = not published.
    pub sparkplug: Option<crate::publish::sparkplug::SparkplugSection>,
    /// Route and hold enforcement at stations with `enforce_route = true`
    /// (docs/routing.md); absent = no station enforces.
    pub route: Option<crate::route::RouteSection>,
    /// PLCs and OPC UA servers, with their tags.
    #[serde(default)]
    pub device: Vec<DeviceConfig>,
    /// Barcode / RFID readers (serial or USB HID), each feeding one station.
    #[serde(default)]
    pub scanner: Vec<ScannerConfig>,
    /// Classifies scanned codes; the first match wins.
    #[serde(default)]
    pub pattern: Vec<PatternConfig>,
    /// The line's stations: what their scans and tag edges mean.
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

/// The path of the config file the process loaded first, for messages that tell the operator
/// a command to run (`opcua-trust --config …`).
static LOADED_FROM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The loaded config file's path as shown in messages (`CONFIG` when none was loaded).
pub fn config_path_for_messages() -> String {
    LOADED_FROM
        .get()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "CONFIG".to_owned())
}

impl GatewayConfig {
    /// Loads and validates a config file, reporting every problem.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let _ = LOADED_FROM.set(path.to_path_buf());
        config::load(path)
    }

    /// [`GatewayConfig::load`], also returning the text that was validated (the running config
    /// a reload is compared with).
    pub fn load_with_text(path: &Path) -> Result<(GatewayConfig, String), ConfigErrors> {
        let _ = LOADED_FROM.set(path.to_path_buf());
        config::load_with_text(path)
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
        if let Some(sp) = &self.sparkplug {
            crate::publish::sparkplug::validate(sp, v);
        }
        if let Some(r) = &self.route {
            crate::route::validate(r, v);
        }
        self.check_devices(v);
        self.check_scanners(v);
        self.check_patterns(v);
        self.check_stations(v);
    }
}

impl GatewayConfig {
    /// One line per station describing its wiring, for `threadline-gateway check`.
    pub fn station_wiring(&self) -> Vec<String> {
        self.station
            .iter()
            .map(|s| {
                let scanners: Vec<&str> = self
                    .scanner
                    .iter()
                    .filter(|r| r.station == s.id)
                    .map(|r| r.id.as_str())
                    .collect();
                s.wiring(&scanners)
            })
            .collect()
    }

    /// One line per scanner describing its link and station, for `threadline-gateway check`.
    pub fn scanner_wiring(&self) -> Vec<String> {
        self.scanner.iter().map(ScannerConfig::wiring).collect()
    }

    /// Every tag name of the config.
    fn tag_names(&self) -> HashSet<&str> {
        self.device
            .iter()
            .flat_map(|d| d.tag.iter().map(|t| t.name.as_str()))
            .collect()
    }

    fn station_ids(&self) -> HashSet<&str> {
        self.station.iter().map(|s| s.id.as_str()).collect()
    }

    /// Each device and tag on its own; device ids and tag names unique in the gateway.
    fn check_devices(&self, v: &mut Validator<'_>) {
        let mut device_ids = HashSet::new();
        let mut tag_names = HashSet::new();
        for (i, d) in self.device.iter().enumerate() {
            let at = format!("device[{i}]");
            if !device_ids.insert(d.id.as_str()) {
                v.error(
                    format!("{at}.id"),
                    format!("duplicate device id {:?}", d.id),
                );
            }
            for (j, t) in d.tag.iter().enumerate() {
                if t.writable
                    && matches!(
                        t.area,
                        Some(
                            crate::drivers::config::Area::Discrete
                                | crate::drivers::config::Area::Input
                        )
                    )
                {
                    v.error(
                        format!("{at}.tag[{j}].writable"),
                        "discrete inputs and input registers cannot be written",
                    );
                }
                if !tag_names.insert(t.name.as_str()) {
                    v.error(
                        format!("{at}.tag[{j}].name"),
                        format!(
                            "duplicate tag name {:?} (tag names are unique within the gateway)",
                            t.name
                        ),
                    );
                }
            }
            d.check(&at, v);
        }
    }

    /// Each scanner on its own; scanner ids unique; every scanner feeds a configured station.
    fn check_scanners(&self, v: &mut Validator<'_>) {
        let station_ids = self.station_ids();
        let mut scanner_ids = HashSet::new();
        for (i, s) in self.scanner.iter().enumerate() {
            s.check(&format!("scanner[{i}]"), v);
            if !scanner_ids.insert(s.id.as_str()) {
                v.error(
                    format!("scanner[{i}].id"),
                    format!("duplicate scanner id {:?}", s.id),
                );
            }
            if !station_ids.contains(s.station.as_str()) {
                let mut known: Vec<&str> = station_ids.iter().copied().collect();
                known.sort_unstable();
                v.error(
                    format!("scanner[{i}].station"),
                    format!("unknown station {:?}, expected one of {known:?}", s.station),
                );
            }
        }
    }

    /// Each pattern on its own; the stations it is limited to exist.
    fn check_patterns(&self, v: &mut Validator<'_>) {
        let station_ids = self.station_ids();
        for (i, p) in self.pattern.iter().enumerate() {
            let at = format!("pattern[{i}]");
            p.check(&at, v);
            for (j, s) in p.stations.iter().enumerate() {
                if !station_ids.contains(s.as_str()) {
                    v.error(
                        format!("{at}.stations[{j}]"),
                        format!("unknown station {s:?}"),
                    );
                }
            }
        }
    }

    /// An interlock writes a `writable = true` coil or holding register (16 or 32 bits) of a
    /// Modbus device, or a typed node of an OPC UA device, at a station that checks scans.
    fn check_interlock(
        &self,
        at: &str,
        s: &StationConfig,
        il: &crate::stations::config::InterlockConfig,
        v: &mut Validator<'_>,
    ) {
        use crate::drivers::config::{Area, DataType};
        if !s.enforce_route {
            v.error(
                format!("{at}.interlock"),
                "an interlock writes the verdict of the route check: set `enforce_route = true`",
            );
        }
        let Some((d, t)) = self
            .device
            .iter()
            .find_map(|d| d.tag.iter().find(|t| t.name == il.tag).map(|t| (d, t)))
        else {
            return; // unknown tag: reported with the other tag references
        };
        let key = format!("{at}.interlock.tag");
        if !t.writable {
            v.error(
                &key,
                format!(
                    "tag {:?} is not writable: declare `writable = true` on its [[device.tag]]",
                    il.tag
                ),
            );
            return;
        }
        match d.kind() {
            Some(
                crate::drivers::config::DeviceKind::ModbusTcp { .. }
                | crate::drivers::config::DeviceKind::ModbusRtu { .. },
            ) => {}
            Some(crate::drivers::config::DeviceKind::OpcUa { .. }) => {
                // The Write must carry the node's data type: the tag says which.
                if matches!(t.data_type, None | Some(DataType::String)) {
                    v.error(
                        &key,
                        format!(
                            "tag {:?}: an OPC UA interlock needs the node's `type` on its [[device.tag]] \
                             (bool, u16, i16, u32, i32, u64, i64, f32 or f64)",
                            il.tag
                        ),
                    );
                }
                return;
            }
            _ => {
                v.error(
                    &key,
                    format!(
                        "tag {:?}: interlock writes need a modbus-tcp, modbus-rtu or opcua device",
                        il.tag
                    ),
                );
                return;
            }
        }
        let ok = matches!(
            (t.area, t.data_type),
            (Some(Area::Coil), None | Some(DataType::Bool))
                | (
                    Some(Area::Holding),
                    None | Some(
                        DataType::U16
                            | DataType::I16
                            | DataType::U32
                            | DataType::I32
                            | DataType::F32
                    ),
                )
        );
        if !ok {
            v.error(
                &key,
                format!(
                    "tag {:?}: an interlock writes a coil or a holding register of type u16, i16, u32, i32 or f32",
                    il.tag
                ),
            );
        }
    }

    /// Each station on its own; station ids unique, every tag a station reads exists, and a
    /// line work order (`work_order_tag`) has a station that starts units.
    fn check_stations(&self, v: &mut Validator<'_>) {
        let tags = self.tag_names();
        let mut ids = HashSet::new();
        for (i, s) in self.station.iter().enumerate() {
            let at = format!("station[{i}]");
            if !ids.insert(s.id.as_str()) {
                v.error(
                    format!("{at}.id"),
                    format!("duplicate station id {:?}", s.id),
                );
            }
            for (path, tag) in s.tag_refs() {
                if !tags.contains(tag) {
                    v.error(
                        format!("{at}.{path}"),
                        format!("unknown tag {tag:?}: no [[device.tag]] has this name"),
                    );
                }
            }
            if let Some(il) = &s.interlock {
                self.check_interlock(&at, s, il, v);
            }
            if s.enforce_route && self.route.is_none() {
                v.error(
                    format!("{at}.enforce_route"),
                    "needs a [route] section (aggregator_url) to look units up",
                );
            }
            s.check(&at, v);
        }
        let starters = self.station.iter().any(|s| s.starts_units);
        let wo_tags = self.station.iter().any(|s| s.work_order_tag.is_some());
        if !starters && wo_tags {
            v.error(
                "station",
                "`work_order_tag` is set but no station has `starts_units = true`; work orders are given to units started there",
            );
        }
    }
}
