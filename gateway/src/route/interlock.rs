//! Interlock writes: the verdict of a station's route check written to the PLC
//! (`[[station]] interlock = { tag, ok, nok }`): a single coil, a single holding register
//! (16-bit types) or two holding registers (32-bit types, in the tag's byte order), on a
//! Modbus TCP connection of its own per device (the poller's is not shared, so a write never
//! waits behind a poll cycle); or an OPC UA Write of the tag's node's Value, typed as the tag's
//! `type` says, on an OPC UA session of its own per device (same endpoint, security, trust and
//! user as the device's reading session; the write's status code is checked). On Modbus RTU the
//! serial bus belongs to its port worker (`drivers::modbus::rtu`): a write takes its turn in the
//! port's queue between the polls of the bus's devices.
//!
//! tokio-modbus has no timeouts: connecting and every write are wrapped in the device's
//! `timeout_ms`, and after a timeout or an error the connection is dropped, so a late answer is
//! never taken for the next write's. Every write is logged and counted; a write the PLC
//! refused (exception) or that timed out is an error log and `interlock_failures`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::str::FromStr as _;

use opcua::client::Session;
use opcua::types::{AttributeId, DataValue, NodeId, NumericRange, StatusCode, Variant, WriteValue};
use tokio::sync::mpsc;
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Writer as _};

use super::GateCounters;
use crate::config::GatewayConfig;
use crate::drivers::config::{Area, ByteOrder, DataType, DeviceConfig, DeviceKind};
use crate::drivers::modbus::ModbusError;
use crate::drivers::modbus::link::WriteRequest;
use crate::drivers::modbus::rtu::{PortSettings, RtuLink};
use crate::drivers::opcua::write_session;

/// Writes queued per device, at most (a burst of scans; older ones are not dropped, the
/// newest is, with an error log: the PLC then still holds an earlier verdict).
const QUEUE: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    Coil(bool),
    Words(Vec<u16>),
    /// OPC UA: the Value written to the tag's node.
    Value(Variant),
}

/// Where a tag is written: a Modbus address or an OPC UA node.
#[derive(Debug, Clone)]
enum At {
    Register(u16),
    Node(NodeId),
}

#[derive(Debug, Clone)]
struct Target {
    device: usize,
    tag: String,
    at: At,
    ok: Payload,
    nok: Payload,
}

#[derive(Debug)]
struct Write {
    station: String,
    tag: String,
    verdict: &'static str,
    at: At,
    payload: Payload,
}

/// The interlocks of a gateway's stations.
#[derive(Debug, Default)]
pub struct Interlocks {
    by_station: HashMap<String, Target>,
    writers: Vec<mpsc::Sender<Write>>,
}

impl Interlocks {
    /// One writer task per device with an interlock tag (a validated config).
    pub fn start(cfg: &GatewayConfig, counters: Arc<GateCounters>) -> Interlocks {
        let mut me = Interlocks::default();
        let mut device_writer: HashMap<&str, usize> = HashMap::new();
        for s in &cfg.station {
            let Some(il) = &s.interlock else { continue };
            let Some((d, t)) = cfg
                .device
                .iter()
                .find_map(|d| d.tag.iter().find(|t| t.name == il.tag).map(|t| (d, t)))
            else {
                continue;
            };
            let scaled = |v: f64| (v - t.offset) / t.scale;
            // Modbus (TCP and RTU): a coil, or holding registers in the tag's type and order.
            let modbus = |v: f64| match t.area {
                Some(Area::Coil) => Payload::Coil(v != 0.0),
                _ => Payload::Words(words(
                    scaled(v),
                    t.data_type.unwrap_or(DataType::U16),
                    t.order,
                )),
            };
            let (at, ok, nok, writer) = match d.kind() {
                Some(DeviceKind::ModbusTcp { address }) => {
                    let Some(reg) = t.address else { continue };
                    let w = Writer::Modbus {
                        address: address.to_owned(),
                        unit: d.unit_id,
                        timeout: Duration::from_millis(d.timeout_ms),
                    };
                    (At::Register(reg), modbus(il.ok), modbus(il.nok), w)
                }
                Some(DeviceKind::ModbusRtu { .. }) => {
                    let (Some(reg), Some(port)) = (t.address, PortSettings::of(d)) else {
                        continue;
                    };
                    // A place in the serial port's queue, beside the device's own polls.
                    let w = Writer::Rtu {
                        link: RtuLink::register(port, d.unit_id),
                        timeout: Duration::from_millis(d.timeout_ms),
                    };
                    (At::Register(reg), modbus(il.ok), modbus(il.nok), w)
                }
                Some(DeviceKind::OpcUa { .. }) => {
                    let (Some(node), Some(ty)) = (t.node_id.as_deref(), t.data_type) else {
                        continue;
                    };
                    let Ok(node) = NodeId::from_str(node) else {
                        continue;
                    };
                    let (Some(ok), Some(nok)) =
                        (variant(scaled(il.ok), ty), variant(scaled(il.nok), ty))
                    else {
                        continue;
                    };
                    let w = Writer::OpcUa {
                        device: Box::new(d.clone()),
                        data_dir: cfg.gateway.data_dir.clone(),
                    };
                    (At::Node(node), Payload::Value(ok), Payload::Value(nok), w)
                }
                _ => continue,
            };
            let device = *device_writer.entry(d.id.as_str()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run_writer(d.id.clone(), writer, rx, counters.clone()));
                me.writers.push(tx);
                me.writers.len() - 1
            });
            me.by_station.insert(
                s.id.clone(),
                Target {
                    device,
                    tag: t.name.clone(),
                    at,
                    ok,
                    nok,
                },
            );
        }
        me
    }

    /// Writes `ok` (accepted) or `nok` to the station's interlock tag, if it has one.
    pub fn signal(&self, station: &str, accepted: bool) {
        let Some(t) = self.by_station.get(station) else {
            return;
        };
        let w = Write {
            station: station.to_owned(),
            tag: t.tag.clone(),
            verdict: if accepted { "ok" } else { "nok" },
            at: t.at.clone(),
            payload: if accepted {
                t.ok.clone()
            } else {
                t.nok.clone()
            },
        };
        if let Err(e) = self.writers[t.device].try_send(w) {
            tracing::error!(station, tag = %t.tag, error = %e, "interlock write not queued");
        }
    }
}

/// A value as the registers of a holding tag (`type`, `order`).
fn words(raw: f64, ty: DataType, order: ByteOrder) -> Vec<u16> {
    let be: Vec<u8> = match ty {
        DataType::I16 => (raw.round() as i16).to_be_bytes().to_vec(),
        DataType::U32 => (raw.round() as u32).to_be_bytes().to_vec(),
        DataType::I32 => (raw.round() as i32).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        _ => (raw.round() as u16).to_be_bytes().to_vec(),
    };
    let mut w: Vec<u16> = be
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    match order {
        ByteOrder::ABCD => {}
        ByteOrder::CDAB => w.reverse(),
        ByteOrder::BADC => w.iter_mut().for_each(|x| *x = x.swap_bytes()),
        ByteOrder::DCBA => {
            w.reverse();
            w.iter_mut().for_each(|x| *x = x.swap_bytes());
        }
    }
    w
}

/// How a device's interlock writes reach it.
enum Writer {
    Modbus {
        address: String,
        unit: u8,
        timeout: Duration,
    },
    OpcUa {
        device: Box<DeviceConfig>,
        data_dir: std::path::PathBuf,
    },
    /// Modbus RTU: the bus is the port worker's; writes queue between the polls.
    Rtu { link: RtuLink, timeout: Duration },
}

/// A device's open connection for interlock writes.
enum Connection {
    Modbus(Context),
    OpcUa {
        session: Arc<Session>,
        event_loop: tokio::task::JoinHandle<StatusCode>,
    },
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Connection::OpcUa { event_loop, .. } = self {
            event_loop.abort();
        }
    }
}

async fn run_writer(
    device: String,
    mut writer: Writer,
    mut rx: mpsc::Receiver<Write>,
    counters: Arc<GateCounters>,
) {
    let mut conn: Option<Connection> = None;
    while let Some(w) = rx.recv().await {
        let result = match &mut writer {
            Writer::Modbus {
                address,
                unit,
                timeout,
            } => write_modbus(&mut conn, address, *unit, *timeout, &w).await,
            Writer::OpcUa { device, data_dir } => {
                write_opcua(&mut conn, device, data_dir, &w).await
            }
            Writer::Rtu { link, timeout } => write_rtu(link, *timeout, &w).await,
        };
        match result {
            Ok(()) => {
                counters.interlock_writes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%device, station = %w.station, tag = %w.tag, verdict = w.verdict, value = ?w.payload, "interlock written");
            }
            Err(e) => {
                // The connection may hold a late answer: never reuse it.
                conn = None;
                counters.interlock_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%device, station = %w.station, tag = %w.tag, verdict = w.verdict, error = %e, "interlock write failed");
            }
        }
    }
    if let Some(Connection::OpcUa { session, .. }) = &conn {
        let _ = tokio::time::timeout(Duration::from_secs(1), session.disconnect()).await;
    }
}

async fn write_modbus(
    conn: &mut Option<Connection>,
    address: &str,
    unit: u8,
    timeout: Duration,
    w: &Write,
) -> Result<(), String> {
    if !matches!(conn, Some(Connection::Modbus(_))) {
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| format!("no connection within {} ms", timeout.as_millis()))?
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        *conn = Some(Connection::Modbus(tokio_modbus::client::tcp::attach_slave(
            stream,
            Slave(unit),
        )));
    }
    let (Some(Connection::Modbus(c)), At::Register(reg)) = (conn.as_mut(), &w.at) else {
        return Err("not a Modbus write".to_owned());
    };
    let reg = *reg;
    let work = async {
        match &w.payload {
            Payload::Coil(b) => c.write_single_coil(reg, *b).await,
            Payload::Words(ws) if ws.len() == 1 => c.write_single_register(reg, ws[0]).await,
            Payload::Words(ws) => c.write_multiple_registers(reg, ws).await,
            Payload::Value(_) => Ok(Ok(())),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("transport: {e}")),
        Ok(Ok(Err(exception))) => Err(format!("the device refused the write: {exception}")),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

async fn write_rtu(link: &mut RtuLink, timeout: Duration, w: &Write) -> Result<(), String> {
    let At::Register(address) = w.at else {
        return Err("not a Modbus write".to_owned());
    };
    let req = match &w.payload {
        Payload::Coil(value) => WriteRequest::Coil {
            address,
            value: *value,
        },
        Payload::Words(words) => WriteRequest::Registers {
            address,
            words: words.clone(),
        },
        Payload::Value(_) => return Err("not a Modbus write".to_owned()),
    };
    link.write(req, timeout).await.map_err(|e| match e {
        ModbusError::Refused(x) => format!("the device refused the write: {x}"),
        other => other.to_string(),
    })
}

async fn write_opcua(
    conn: &mut Option<Connection>,
    device: &DeviceConfig,
    data_dir: &std::path::Path,
    w: &Write,
) -> Result<(), String> {
    if !matches!(conn, Some(Connection::OpcUa { .. })) {
        let (session, event_loop) = write_session(data_dir, device).await?;
        *conn = Some(Connection::OpcUa {
            session,
            event_loop,
        });
    }
    let (Some(Connection::OpcUa { session, .. }), At::Node(node), Payload::Value(value)) =
        (conn.as_ref(), &w.at, &w.payload)
    else {
        return Err("not an OPC UA write".to_owned());
    };
    let timeout = Duration::from_millis(device.timeout_ms.max(100));
    let write = WriteValue {
        node_id: node.clone(),
        attribute_id: AttributeId::Value as u32,
        index_range: NumericRange::None,
        value: DataValue {
            value: Some(value.clone()),
            ..Default::default()
        },
    };
    match tokio::time::timeout(timeout, session.write(&[write])).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("write service: {e}")),
        Ok(Ok(codes)) => match codes.first() {
            Some(code) if code.is_good() => Ok(()),
            Some(code) => Err(format!("the server refused the write: {code}")),
            None => Err("the server answered no status for the write".to_owned()),
        },
    }
}

/// A value as the OPC UA Variant of the tag's `type` (`None`: strings are not interlocks).
fn variant(raw: f64, ty: DataType) -> Option<Variant> {
    Some(match ty {
        DataType::Bool => Variant::Boolean(raw != 0.0),
        DataType::U16 => Variant::UInt16(raw.round() as u16),
        DataType::I16 => Variant::Int16(raw.round() as i16),
        DataType::U32 => Variant::UInt32(raw.round() as u32),
        DataType::I32 => Variant::Int32(raw.round() as i32),
        DataType::U64 => Variant::UInt64(raw.round() as u64),
        DataType::I64 => Variant::Int64(raw.round() as i64),
        DataType::F32 => Variant::Float(raw as f32),
        DataType::F64 => Variant::Double(raw),
        DataType::String => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_words_follow_the_tag_order() {
        assert_eq!(words(1.0, DataType::U16, ByteOrder::ABCD), [1]);
        assert_eq!(words(-1.0, DataType::I16, ByteOrder::ABCD), [0xffff]);
        assert_eq!(
            words(f64::from(0x0102_0304u32), DataType::U32, ByteOrder::ABCD),
            [0x0102, 0x0304]
        );
        assert_eq!(
            words(f64::from(0x0102_0304u32), DataType::U32, ByteOrder::CDAB),
            [0x0304, 0x0102]
        );
        assert_eq!(
            words(f64::from(0x0102_0304u32), DataType::U32, ByteOrder::BADC),
            [0x0201, 0x0403]
        );
        assert_eq!(
            words(f64::from(0x0102_0304u32), DataType::U32, ByteOrder::DCBA),
            [0x0403, 0x0201]
        );
        assert_eq!(words(1.0, DataType::F32, ByteOrder::ABCD), [0x3f80, 0x0000]);
    }
}
