//! Register interpretation for `threadline-gateway probe`: read raw registers from a device
//! once and show every way they decode (16/32/64-bit integers and floats in each word order,
//! ASCII), so an engineer finds the right address, type and word order in a minute.

use std::fmt::Write as _;
use std::time::Duration;

use crate::drivers::config::{Area, ByteOrder, DataBits, DataType, Parity, StopBits};
use crate::drivers::modbus::decode::{Raw, decode_raw, decode_string};
use crate::drivers::modbus::error::ModbusError;
use crate::drivers::modbus::link::{Link, ReadData, ReadRequest, TcpLink};
use crate::drivers::modbus::rtu::{PortSettings, RtuLink};

/// Where to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `modbus-tcp://HOST:PORT`
    Tcp { address: String },
    /// `modbus-rtu:///dev/ttyX?baud=19200&parity=even&data_bits=8&stop_bits=1`
    Rtu(PortSettings),
}

/// What went wrong, in the words an engineer needs.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bad target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{target} unit {unit} refused the read: {error}")]
    Refused {
        target: String,
        unit: u8,
        error: ModbusError,
    },
    #[error("could not reach {target} unit {unit}: {error}")]
    Unreachable {
        target: String,
        unit: u8,
        error: ModbusError,
    },
}

/// Parses `modbus-tcp://…` / `modbus-rtu://…`.
pub fn parse_target(target: &str) -> Result<Target, ProbeError> {
    let bad = |reason: &str| ProbeError::BadTarget {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(rest) = target.strip_prefix("modbus-tcp://") {
        let address = rest.trim_end_matches('/');
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(bad(
                "expected modbus-tcp://HOST:PORT (e.g. modbus-tcp://10.0.0.5:502)",
            ));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("expected modbus-tcp://HOST:PORT with a numeric port"));
        }
        return Ok(Target::Tcp {
            address: address.to_owned(),
        });
    }
    if let Some(rest) = target.strip_prefix("modbus-rtu://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(bad(
                "expected modbus-rtu:///dev/ttyUSB0?baud=19200&parity=even",
            ));
        }
        let mut s = PortSettings {
            path: path.to_owned(),
            baud: 9600,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "baud" => s.baud = v.parse().map_err(|_| bad("baud must be a number"))?,
                "parity" => {
                    s.parity = match v {
                        "none" => Parity::None,
                        "even" => Parity::Even,
                        "odd" => Parity::Odd,
                        _ => return Err(bad("parity must be none, even or odd")),
                    }
                }
                "data_bits" => {
                    s.data_bits = v
                        .parse::<u8>()
                        .map_err(|_| bad("data_bits must be a number"))
                        .and_then(|n| DataBits::try_from(n).map_err(|e| bad(&e)))?;
                }
                "stop_bits" => {
                    s.stop_bits = v
                        .parse::<u8>()
                        .map_err(|_| bad("stop_bits must be a number"))
                        .and_then(|n| StopBits::try_from(n).map_err(|e| bad(&e)))?;
                }
                other => {
                    return Err(bad(&format!(
                        "unknown option {other:?}, expected baud, parity, data_bits, stop_bits"
                    )));
                }
            }
        }
        return Ok(Target::Rtu(s));
    }
    Err(bad(
        "expected modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyX?baud=…",
    ))
}

/// Reads `count` registers / bits and returns the printable report.
pub async fn probe(
    target: &str,
    unit: u8,
    area: Area,
    start: u16,
    count: u16,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let limit = match area {
        Area::Coil | Area::Discrete => 2000,
        Area::Input | Area::Holding => 125,
    };
    if count == 0 || count > limit || u32::from(start) + u32::from(count) > 65536 {
        return Err(ProbeError::BadRequest(format!(
            "--count must be 1..={limit} and stay below address 65536"
        )));
    }
    let mut link = match parse_target(target)? {
        Target::Tcp { address } => Link::Tcp(TcpLink::new(&address, unit)),
        Target::Rtu(s) => Link::Rtu(RtuLink::register(s, unit)),
    };
    let req = ReadRequest { area, start, count };
    match link.read(req, timeout).await {
        Ok(data) => Ok(format!(
            "{target} unit {unit}\n{}",
            format_report(area, start, &data)
        )),
        Err(error @ ModbusError::Refused(_)) => Err(ProbeError::Refused {
            target: target.to_owned(),
            unit,
            error,
        }),
        Err(error) => Err(ProbeError::Unreachable {
            target: target.to_owned(),
            unit,
            error,
        }),
    }
}

const ORDERS: [(ByteOrder, &str); 4] = [
    (ByteOrder::ABCD, "ABCD"),
    (ByteOrder::CDAB, "CDAB"),
    (ByteOrder::BADC, "BADC"),
    (ByteOrder::DCBA, "DCBA"),
];

/// One width of the multi-register tables.
struct Wide {
    /// Registers per value.
    regs: usize,
    title: &'static str,
    /// Unsigned, signed, float.
    types: [DataType; 3],
    names: [&'static str; 3],
    /// Columns of hex, unsigned and signed.
    widths: [usize; 3],
}

const WIDE: [Wide; 2] = [
    Wide {
        regs: 2,
        title: "32-bit (registers addr, addr+1)",
        types: [DataType::U32, DataType::I32, DataType::F32],
        names: ["u32", "i32", "f32"],
        widths: [10, 11, 12],
    },
    Wide {
        regs: 4,
        title: "64-bit (registers addr..addr+3)",
        types: [DataType::U64, DataType::I64, DataType::F64],
        names: ["u64", "i64", "f64"],
        widths: [18, 20, 20],
    },
];

/// The table of every `wide.regs`-register value starting in `w`, in each word order.
fn write_wide(s: &mut String, start: u16, w: &[u16], wide: &Wide) {
    if w.len() < wide.regs {
        return;
    }
    let [hw, uw, iw] = wide.widths;
    let [un, sn, fname] = wide.names;
    let _ = writeln!(
        s,
        "\n{}\n{:>6} {:>5}  {:>hw$}  {:>uw$}  {:>iw$}  {fname}",
        wide.title, "addr", "order", "hex", un, sn
    );
    let digits = wide.regs * 4;
    for i in 0..=w.len() - wide.regs {
        let a = u32::from(start) + i as u32;
        let regs = &w[i..i + wide.regs];
        for (o, on) in ORDERS {
            let [unsigned, signed, float] = wide.types.map(|ty| decode_raw(ty, o, regs));
            let hex = match unsigned {
                Some(Raw::UInt(u)) => format!("0x{u:0digits$X}"),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "{a:>6} {on:>5}  {hex:>hw$}  {:>uw$}  {:>iw$}  {}",
                raw_text(unsigned),
                raw_text(signed),
                raw_text(float),
            );
        }
    }
}

fn raw_text(r: Option<Raw>) -> String {
    match r {
        Some(Raw::Int(i)) => i.to_string(),
        Some(Raw::UInt(u)) => u.to_string(),
        Some(Raw::Float(f)) => format!("{f}"),
        Some(Raw::Bool(b)) => b.to_string(),
        None => "-".into(),
    }
}

/// The table: raw words (hex, decimal), then 32-bit and 64-bit interpretations per order.
pub fn format_report(area: Area, start: u16, data: &ReadData) -> String {
    let mut s = String::new();
    let (name, base) = match area {
        Area::Coil => ("coil", 0u32),
        Area::Discrete => ("discrete input", 10_001),
        Area::Input => ("input register", 30_001),
        Area::Holding => ("holding register", 40_001),
    };
    let one_based = |a: u32| if base == 0 { a + 1 } else { base + a };
    match data {
        ReadData::Bits(bits) => {
            let _ = writeln!(s, "{:>6} {:>7}  value", "addr", "1-based");
            for (i, b) in bits.iter().enumerate() {
                let a = u32::from(start) + i as u32;
                let _ = writeln!(s, "{a:>6} {:>7}  {}", one_based(a), u8::from(*b));
            }
            let _ = write!(s, "{} {name}s", bits.len());
        }
        ReadData::Words(w) => {
            let _ = writeln!(
                s,
                "{:>6} {:>7}  {:>6} {:>6} {:>7}  {:>16}  ascii",
                "addr", "1-based", "hex", "u16", "i16", "binary"
            );
            for (i, &r) in w.iter().enumerate() {
                let a = u32::from(start) + i as u32;
                let ascii: String = r
                    .to_be_bytes()
                    .iter()
                    .map(|&b| {
                        if b.is_ascii_graphic() || b == b' ' {
                            char::from(b)
                        } else {
                            '.'
                        }
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "{a:>6} {:>7}  0x{r:04X} {r:>6} {:>7}  {r:016b}  {ascii}",
                    one_based(a),
                    r as i16
                );
            }
            for wide in &WIDE {
                write_wide(&mut s, start, w, wide);
            }
            let _ = writeln!(
                s,
                "\nas string: {:?} (ABCD)  {:?} (BADC)",
                decode_string(w, ByteOrder::ABCD),
                decode_string(w, ByteOrder::BADC)
            );
            let _ = write!(s, "{} {name}s", w.len());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("modbus-tcp://127.0.0.1:5020").expect("tcp"),
            Target::Tcp {
                address: "127.0.0.1:5020".into()
            }
        );
        let Target::Rtu(s) =
            parse_target("modbus-rtu:///dev/ttyUSB1?baud=19200&parity=even").expect("rtu")
        else {
            panic!("not rtu")
        };
        assert_eq!(
            (s.path.as_str(), s.baud, s.parity),
            ("/dev/ttyUSB1", 19200, Parity::Even)
        );
        for bad in [
            "tcp://x:1",
            "modbus-tcp://nohost",
            "modbus-tcp://h:99999",
            "modbus-rtu://",
            "modbus-rtu:///dev/x?parity=mark",
            "modbus-rtu:///dev/x?speed=1",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_shows_every_interpretation() {
        let text = format_report(
            Area::Holding,
            100,
            &ReadData::Words(vec![0x42F6, 0xE979, 0x4142, 0x0000]),
        );
        assert!(text.contains("0x42F6  17142"), "{text}");
        assert!(text.contains("40101"), "{text}");
        assert!(text.contains("123.456"), "{text}");
        assert!(text.contains("CDAB") && text.contains("BADC") && text.contains("DCBA"));
        assert!(text.contains("64-bit"));
        let bits = format_report(Area::Coil, 0, &ReadData::Bits(vec![true, false]));
        assert!(bits.contains("2 coils"), "{bits}");
    }
}
