//! `[[device]]` and `[[device.tag]]` tables, and the checks of one device (or tag) on its own
//! (`[[scanner]]` lives with the readers, in `drivers::reader::config`, and is re-exported
//! here). Checks across devices and sections (unique ids and tag names, the station
//! a scanner feeds) are the gateway config's, in `crate::config`.
//!
//! Closed sets of values are enums (`protocol`, `parity`, `data_bits`, `security_policy`, …):
//! a typo fails where it stands, with the list of valid values.

use std::path::PathBuf;

use serde::Deserialize;
use threadline_shared::config::Validator;

pub use super::reader::config::{
    Framing, GsSubstitute, HidLink, KeyboardLayout, ScannerConfig, ScannerInterface, ScannerKind,
    ScannerLink, SerialLink, Terminator,
};

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

/// Serial data bits per character: `data_bits = 5 | 6 | 7 | 8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum DataBits {
    Five,
    Six,
    Seven,
    #[default]
    Eight,
}

impl TryFrom<u8> for DataBits {
    type Error = String;

    fn try_from(n: u8) -> Result<DataBits, String> {
        match n {
            5 => Ok(DataBits::Five),
            6 => Ok(DataBits::Six),
            7 => Ok(DataBits::Seven),
            8 => Ok(DataBits::Eight),
            _ => Err(format!("invalid data_bits {n}, expected one of 5, 6, 7, 8")),
        }
    }
}

/// Serial stop bits: `stop_bits = 1 | 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum StopBits {
    #[default]
    One,
    Two,
}

impl TryFrom<u8> for StopBits {
    type Error = String;

    fn try_from(n: u8) -> Result<StopBits, String> {
        match n {
            1 => Ok(StopBits::One),
            2 => Ok(StopBits::Two),
            _ => Err(format!("invalid stop_bits {n}, expected 1 or 2")),
        }
    }
}

/// OPC UA security policy (`security_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SecurityPolicy {
    #[default]
    None,
    Basic256Sha256,
}

impl SecurityPolicy {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::None => "None",
            SecurityPolicy::Basic256Sha256 => "Basic256Sha256",
        }
    }

    /// The modes this policy allows, the first being the default.
    pub fn modes(self) -> &'static [SecurityMode] {
        match self {
            SecurityPolicy::None => &[SecurityMode::None],
            SecurityPolicy::Basic256Sha256 => &[SecurityMode::SignAndEncrypt, SecurityMode::Sign],
        }
    }
}

/// OPC UA message security mode (`security_mode`). A spelling that names no mode fails where
/// it stands, with the valid names; which modes a policy allows is checked with the policy
/// ([`DeviceConfig::opcua_security`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SecurityMode {
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::None => "None",
            SecurityMode::Sign => "Sign",
            SecurityMode::SignAndEncrypt => "SignAndEncrypt",
        }
    }
}

/// OPC UA server certificate trust (`trust_server_certs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustServerCerts {
    /// Only certificates in `data_dir/pki/trusted/`.
    #[default]
    Pinned,
    /// Any certificate (stored as trusted on first sight).
    Any,
}

/// One `[[device]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique device id.
    pub id: String,
    pub protocol: Protocol,
    /// modbus-tcp: `host:port`.
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
    pub port: Option<String>,
    /// modbus-rtu: line speed.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// modbus-rtu.
    #[serde(default)]
    pub parity: Parity,
    /// modbus-rtu.
    #[serde(default)]
    pub data_bits: DataBits,
    /// modbus-rtu.
    #[serde(default)]
    pub stop_bits: StopBits,
    /// opcua: `opc.tcp://host:4840`.
    pub endpoint: Option<String>,
    /// opcua: `None` (default) | `Basic256Sha256`.
    pub security_policy: Option<SecurityPolicy>,
    /// opcua: `None` | `Sign` | `SignAndEncrypt` (default of `Basic256Sha256`).
    pub security_mode: Option<SecurityMode>,
    /// opcua: user name (with `password_file`); anonymous when absent.
    pub username: Option<String>,
    /// opcua: file holding the user's password (never inline).
    pub password_file: Option<PathBuf>,
    /// opcua: which server certificates to accept with a secure policy: `pinned` (default:
    /// only those in `data_dir/pki/trusted/`, put there by `threadline-gateway opcua-trust`)
    /// or `any` (an explicit opt-out: any certificate, stored as trusted on first sight).
    #[serde(default)]
    pub trust_server_certs: TrustServerCerts,
    /// The device's tags.
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

/// One `[[device.tag]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Unique within the gateway.
    pub name: String,
    /// Modbus area.
    pub area: Option<Area>,
    /// Modbus: 0-based protocol address.
    pub address: Option<u16>,
    /// Default: `bool` for coils / discrete inputs, `u16` for registers.
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// Modbus: word / byte order of multi-register values.
    #[serde(default)]
    pub order: ByteOrder,
    /// Registers, for `type = "string"`.
    pub length: Option<u16>,
    /// value = raw * scale + offset (numeric types).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, carried with readings and parameters.
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
    pub node_id: Option<String>,
    /// opcua: monitored item sampling interval.
    #[serde(default = "default_sampling_ms")]
    pub sampling_ms: u64,
    /// The gateway may write this tag (a station's `interlock`); reading is unchanged.
    #[serde(default)]
    pub writable: bool,
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

    /// The OPC UA security of the device: `security_policy` (default `None`) with a mode it
    /// allows (default: its first, `SignAndEncrypt` for a secure policy). The error says which
    /// modes the policy allows.
    pub fn opcua_security(&self) -> Result<(SecurityPolicy, SecurityMode), String> {
        let policy = self.security_policy.unwrap_or_default();
        let allowed = policy.modes();
        let mode = match self.security_mode {
            None => return Ok((policy, allowed[0])),
            Some(m) if allowed.contains(&m) => return Ok((policy, m)),
            Some(m) => m.as_str(),
        };
        let names: Vec<String> = allowed
            .iter()
            .map(|m| format!("{:?}", m.as_str()))
            .collect();
        Err(format!(
            "unsupported security_mode {mode:?}, expected {} with security_policy = {:?}",
            names.join(" or "),
            policy.as_str()
        ))
    }

    /// The checks of this device and its tags on their own; `at` is its path (`device[2]`).
    pub(crate) fn check(&self, at: &str, v: &mut Validator<'_>) {
        let needs = |v: &mut Validator<'_>, present: bool, key: &str, proto: &str| {
            if !present {
                v.error(
                    format!("{at}.{key}"),
                    format!("missing field `{key}`, required for protocol = \"{proto}\""),
                );
            }
        };
        match self.protocol {
            Protocol::ModbusTcp => needs(v, self.address.is_some(), "address", "modbus-tcp"),
            Protocol::ModbusRtu => needs(v, self.port.is_some(), "port", "modbus-rtu"),
            Protocol::OpcUa => needs(v, self.endpoint.is_some(), "endpoint", "opcua"),
        }
        if self.protocol == Protocol::OpcUa {
            if let Err(e) = self.opcua_security() {
                // The policy decides which modes are valid: the pair is reported at the policy
                // when the file names one.
                let key = match self.security_policy {
                    Some(_) => "security_policy",
                    None => "security_mode",
                };
                v.error(format!("{at}.{key}"), e);
            }
            if let Some(Err(e)) = self.endpoint.as_deref().map(check_endpoint) {
                v.error(format!("{at}.endpoint"), e);
            }
        } else if !(1..=125).contains(&self.max_registers_per_read) {
            v.error(
                format!("{at}.max_registers_per_read"),
                "must be between 1 and 125",
            );
        }
        for (j, t) in self.tag.iter().enumerate() {
            t.check(self.protocol, &format!("{at}.tag[{j}]"), v);
        }
    }
}

impl TagConfig {
    /// The checks of this tag of a `protocol` device; `at` is its path (`device[2].tag[0]`).
    fn check(&self, protocol: Protocol, at: &str, v: &mut Validator<'_>) {
        match protocol {
            Protocol::ModbusTcp | Protocol::ModbusRtu => {
                if self.area.is_none() {
                    v.error(
                        format!("{at}.area"),
                        "missing field `area`, expected one of coil, discrete, input, holding",
                    );
                }
                if self.address.is_none() {
                    v.error(
                        format!("{at}.address"),
                        "missing field `address` (0-based protocol address)",
                    );
                }
                if self.node_id.is_some() {
                    v.error(
                        format!("{at}.node_id"),
                        "node_id is for opcua devices; Modbus tags use area and address",
                    );
                }
                let bit_area = matches!(self.area, Some(Area::Coil | Area::Discrete));
                if bit_area && self.data_type.is_some_and(|ty| ty != DataType::Bool) {
                    v.error(
                        format!("{at}.type"),
                        "coils and discrete inputs are single bits: type must be \"bool\"",
                    );
                }
                if self.data_type == Some(DataType::String) && self.length.is_none_or(|l| l == 0) {
                    v.error(
                        format!("{at}.length"),
                        "type = \"string\" needs length (registers, ≥ 1)",
                    );
                }
                if self.scan_ms == 0 {
                    v.error(format!("{at}.scan_ms"), "must be at least 1");
                }
            }
            Protocol::OpcUa => {
                if self.node_id.is_none() {
                    v.error(
                        format!("{at}.node_id"),
                        "missing field `node_id`, required for opcua tags (e.g. \"ns=2;s=Oven.Temp\")",
                    );
                }
                if self.area.is_some() || self.address.is_some() {
                    v.error(
                        format!("{at}.area"),
                        "area/address are for Modbus devices; opcua tags use node_id",
                    );
                }
            }
        }
        if self.deadband < 0.0 {
            v.error(format!("{at}.deadband"), "must not be negative");
        }
    }
}

/// Checks the form of an opcua `endpoint` (`opc.tcp://host:port[/path]`).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint.strip_prefix("opc.tcp://").ok_or_else(|| {
        format!(
            "endpoint {endpoint:?} must start with opc.tcp:// (e.g. \"opc.tcp://10.0.0.5:4840\")"
        )
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("opc.tcp://127.0.0.1:4840").is_ok());
        assert!(check_endpoint("opc.tcp://plc-1:4840/UA/Server").is_ok());
        assert!(check_endpoint("tcp://127.0.0.1:4840").is_err());
        assert!(check_endpoint("opc.tcp://:4840").is_err());
        assert!(check_endpoint("opc.tcp://").is_err());
    }

    fn device(extra: &str) -> Result<DeviceConfig, toml::de::Error> {
        toml::from_str(&format!("id = \"d\"\nprotocol = \"modbus-rtu\"\n{extra}"))
    }

    #[test]
    fn serial_line_settings_are_checked_where_they_stand() {
        let d = device("").expect("defaults");
        assert_eq!((d.data_bits, d.stop_bits), (DataBits::Eight, StopBits::One));
        let d = device("data_bits = 7\nstop_bits = 2").expect("7 and 2");
        assert_eq!((d.data_bits, d.stop_bits), (DataBits::Seven, StopBits::Two));
        let e = device("data_bits = 9")
            .expect_err("9 data bits")
            .to_string();
        assert!(e.contains("expected one of 5, 6, 7, 8"), "{e}");
        let e = device("stop_bits = 0")
            .expect_err("0 stop bits")
            .to_string();
        assert!(e.contains("expected 1 or 2"), "{e}");
    }
}
