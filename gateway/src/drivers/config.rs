//! `[[device]]`, `[[device.tag]]` and `[[scanner]]` tables.

use std::path::PathBuf;

use serde::Deserialize;
use threadline_shared::config::Validator;

use crate::config::GatewayConfig;

/// Device protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "modbus-tcp")]
    ModbusTcp,
    #[serde(rename = "modbus-rtu")]
    ModbusRtu,
    #[serde(rename = "opcua")]
    OpcUa,
}

/// Modbus data areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Coil,
    Discrete,
    Input,
    Holding,
}

/// Tag data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

/// Word / byte order of multi-register values: ABCD = big-endian words and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ByteOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// One `[[device]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique device id.
    pub id: String,
    pub protocol: Protocol,
    /// modbus-tcp: `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// modbus-tcp / modbus-rtu: slave / unit id.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Per request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Modbus: merge reads across gaps of up to this many registers (or bits).
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Modbus: at most this many registers per read (≤ 125; bit areas: ≤ 2000 bits).
    #[serde(default = "default_max_registers_per_read")]
    pub max_registers_per_read: u16,
    /// modbus-rtu: serial port (prefer `/dev/serial/by-id/…`).
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// opcua: `opc.tcp://host:4840`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// opcua: `None` | `Basic256Sha256`.
    #[serde(default)]
    pub security_policy: Option<String>,
    /// opcua: `None` | `Sign` | `SignAndEncrypt`.
    #[serde(default)]
    pub security_mode: Option<String>,
    /// opcua: user name (with `password_file`); anonymous when absent.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tag: Vec<TagConfig>,
}

fn default_unit_id() -> u8 {
    1
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_max_gap() -> u16 {
    8
}
fn default_max_registers_per_read() -> u16 {
    120
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// One `[[device.tag]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Unique within the gateway.
    pub name: String,
    /// Modbus area.
    #[serde(default)]
    pub area: Option<Area>,
    /// Modbus: 0-based protocol address.
    #[serde(default)]
    pub address: Option<u16>,
    /// Default: `bool` for coils / discrete inputs, `u16` for registers.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    #[serde(default)]
    pub order: ByteOrder,
    /// Registers, for `type = "string"`.
    #[serde(default)]
    pub length: Option<u16>,
    /// value = raw * scale + offset (numeric types).
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub unit: Option<String>,
    /// Modbus poll period.
    #[serde(default = "default_scan_ms")]
    pub scan_ms: u64,
    /// Absolute; a reading is streamed when the value moves more than this (0 = every change).
    #[serde(default)]
    pub deadband: f64,
    /// Stream as a reading; false = used only by station logic.
    #[serde(default = "default_true")]
    pub record: bool,
    /// opcua: node id, e.g. `ns=2;s=Oven.Zone1.Temperature`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// opcua: monitored item sampling interval.
    #[serde(default = "default_sampling_ms")]
    pub sampling_ms: u64,
}

fn default_scale() -> f64 {
    1.0
}
fn default_scan_ms() -> u64 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_sampling_ms() -> u64 {
    1000
}

/// Typed view of a device for dispatch.
#[derive(Debug, Clone)]
pub enum DeviceKind<'a> {
    ModbusTcp { address: &'a str },
    ModbusRtu { port: &'a str },
    OpcUa { endpoint: &'a str },
}

impl DeviceConfig {
    /// The typed view; `None` only for a config that failed validation.
    pub fn kind(&self) -> Option<DeviceKind<'_>> {
        match self.protocol {
            Protocol::ModbusTcp => self
                .address
                .as_deref()
                .map(|address| DeviceKind::ModbusTcp { address }),
            Protocol::ModbusRtu => self
                .port
                .as_deref()
                .map(|port| DeviceKind::ModbusRtu { port }),
            Protocol::OpcUa => self
                .endpoint
                .as_deref()
                .map(|endpoint| DeviceKind::OpcUa { endpoint }),
        }
    }
}

/// Line framing of a serial reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    Lf,
    #[default]
    Cr,
    Crlf,
}

/// What a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerKind {
    #[default]
    Barcode,
    /// EPC hex per line (SGTIN-96, SSCC-96).
    Rfid,
}

/// One `[[scanner]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    pub id: String,
    /// Serial port; prefer the stable `/dev/serial/by-id/…` path.
    pub port: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub framing: Framing,
    #[serde(default)]
    pub kind: ScannerKind,
    /// The station whose logic receives the scans.
    pub station: String,
    /// The same code again within this window is one scan.
    #[serde(default = "default_dedup_ms")]
    pub dedup_ms: u64,
    /// A longer line is rejected (`scan_rejected`), not buffered without end.
    #[serde(default = "default_max_line_len")]
    pub max_line_len: usize,
}

fn default_dedup_ms() -> u64 {
    500
}
fn default_max_line_len() -> usize {
    512
}

/// Cross-field checks of devices, tags and scanners.
pub(crate) fn validate(cfg: &GatewayConfig, v: &mut Validator<'_>) {
    let mut device_ids = std::collections::HashSet::new();
    let mut tag_names = std::collections::HashSet::new();
    for (i, d) in cfg.device.iter().enumerate() {
        let at = format!("device[{i}]");
        if !device_ids.insert(d.id.as_str()) {
            v.error(
                format!("{at}.id"),
                format!("duplicate device id {:?}", d.id),
            );
        }
        let needs = |v: &mut Validator<'_>, present: bool, key: &str, proto: &str| {
            if !present {
                v.error(
                    format!("{at}.{key}"),
                    format!("missing field `{key}`, required for protocol = \"{proto}\""),
                );
            }
        };
        match d.protocol {
            Protocol::ModbusTcp => needs(v, d.address.is_some(), "address", "modbus-tcp"),
            Protocol::ModbusRtu => needs(v, d.port.is_some(), "port", "modbus-rtu"),
            Protocol::OpcUa => needs(v, d.endpoint.is_some(), "endpoint", "opcua"),
        }
        if d.protocol == Protocol::OpcUa
            && let Err(e) = crate::drivers::opcua::check_security(
                d.security_policy.as_deref(),
                d.security_mode.as_deref(),
            )
        {
            v.error(format!("{at}.security_policy"), e);
        }
        if d.protocol == Protocol::OpcUa
            && let Some(Err(e)) = d
                .endpoint
                .as_deref()
                .map(crate::drivers::opcua::check_endpoint)
        {
            v.error(format!("{at}.endpoint"), e);
        }
        if d.protocol != Protocol::OpcUa && !(1..=125).contains(&d.max_registers_per_read) {
            v.error(
                format!("{at}.max_registers_per_read"),
                "must be between 1 and 125",
            );
        }
        for (j, t) in d.tag.iter().enumerate() {
            let tat = format!("{at}.tag[{j}]");
            if !tag_names.insert(t.name.as_str()) {
                v.error(
                    format!("{tat}.name"),
                    format!(
                        "duplicate tag name {:?} (tag names are unique within the gateway)",
                        t.name
                    ),
                );
            }
            match d.protocol {
                Protocol::ModbusTcp | Protocol::ModbusRtu => {
                    if t.area.is_none() {
                        v.error(
                            format!("{tat}.area"),
                            "missing field `area`, expected one of coil, discrete, input, holding",
                        );
                    }
                    if t.address.is_none() {
                        v.error(
                            format!("{tat}.address"),
                            "missing field `address` (0-based protocol address)",
                        );
                    }
                    if t.node_id.is_some() {
                        v.error(
                            format!("{tat}.node_id"),
                            "node_id is for opcua devices; Modbus tags use area and address",
                        );
                    }
                    let bit_area = matches!(t.area, Some(Area::Coil | Area::Discrete));
                    if bit_area && t.data_type.is_some_and(|ty| ty != DataType::Bool) {
                        v.error(
                            format!("{tat}.type"),
                            "coils and discrete inputs are single bits: type must be \"bool\"",
                        );
                    }
                    if t.data_type == Some(DataType::String) && t.length.is_none_or(|l| l == 0) {
                        v.error(
                            format!("{tat}.length"),
                            "type = \"string\" needs length (registers, ≥ 1)",
                        );
                    }
                    if t.scan_ms == 0 {
                        v.error(format!("{tat}.scan_ms"), "must be at least 1");
                    }
                }
                Protocol::OpcUa => {
                    if t.node_id.is_none() {
                        v.error(format!("{tat}.node_id"), "missing field `node_id`, required for opcua tags (e.g. \"ns=2;s=Oven.Temp\")");
                    }
                    if t.area.is_some() || t.address.is_some() {
                        v.error(
                            format!("{tat}.area"),
                            "area/address are for Modbus devices; opcua tags use node_id",
                        );
                    }
                }
            }
            if t.deadband < 0.0 {
                v.error(format!("{tat}.deadband"), "must not be negative");
            }
        }
    }
    let station_ids: std::collections::HashSet<&str> =
        cfg.station.iter().map(|s| s.id.as_str()).collect();
    let mut scanner_ids = std::collections::HashSet::new();
    for (i, s) in cfg.scanner.iter().enumerate() {
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

/// Every tag name of the config, for station checks.
pub fn tag_names(cfg: &GatewayConfig) -> std::collections::HashSet<&str> {
    cfg.device
        .iter()
        .flat_map(|d| d.tag.iter().map(|t| t.name.as_str()))
        .collect()
}
