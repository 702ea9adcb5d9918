//! Interlock writes: the verdict of a station's route check written to the PLC
//! (`[[station]] interlock = { tag, ok, nok }`): a single coil, a single holding register
//! (16-bit types) or two holding registers (32-bit types, in the tag's byte order), on a
//! Modbus TCP connection of its own per device (the poller's is not shared, so a write never
//! waits behind a poll cycle).
//!
//! tokio-modbus has no timeouts: connecting and every write are wrapped in the device's
//! `timeout_ms`, and after a timeout or an error the connection is dropped, so a late answer is
//! never taken for the next write's. Every write is logged and counted; a write the PLC
//! refused (exception) or that timed out is an error log and `interlock_failures`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Writer};

use super::GateCounters;
use crate::config::GatewayConfig;
use crate::drivers::config::{Area, ByteOrder, DataType, DeviceKind};

/// Writes queued per device, at most (a burst of scans; older ones are not dropped, the
/// newest is, with an error log: the PLC then still holds an earlier verdict).
const QUEUE: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    Coil(bool),
    Words(Vec<u16>),
}

#[derive(Debug, Clone)]
struct Target {
    device: usize,
    tag: String,
    address: u16,
    ok: Payload,
    nok: Payload,
}

#[derive(Debug)]
struct Write {
    station: String,
    tag: String,
    verdict: &'static str,
    address: u16,
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
            let Some(DeviceKind::ModbusTcp { address }) = d.kind() else {
                continue;
            };
            let Some(reg) = t.address else { continue };
            let encode = |v: f64| match t.area {
                Some(Area::Coil) => Payload::Coil(v != 0.0),
                _ => Payload::Words(words(
                    (v - t.offset) / t.scale,
                    t.data_type.unwrap_or(DataType::U16),
                    t.order,
                )),
            };
            let device = *device_writer.entry(d.id.as_str()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run_writer(
                    d.id.clone(),
                    address.to_owned(),
                    d.unit_id,
                    Duration::from_millis(d.timeout_ms),
                    rx,
                    counters.clone(),
                ));
                me.writers.push(tx);
                me.writers.len() - 1
            });
            me.by_station.insert(
                s.id.clone(),
                Target {
                    device,
                    tag: t.name.clone(),
                    address: reg,
                    ok: encode(il.ok),
                    nok: encode(il.nok),
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
            address: t.address,
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

async fn run_writer(
    device: String,
    address: String,
    unit: u8,
    timeout: Duration,
    mut rx: mpsc::Receiver<Write>,
    counters: Arc<GateCounters>,
) {
    let mut ctx: Option<Context> = None;
    while let Some(w) = rx.recv().await {
        let result = write_once(&mut ctx, &address, unit, timeout, &w).await;
        match result {
            Ok(()) => {
                counters.interlock_writes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%device, station = %w.station, tag = %w.tag, verdict = w.verdict, value = ?w.payload, "interlock written");
            }
            Err(e) => {
                // The connection may hold a late answer: never reuse it.
                ctx = None;
                counters.interlock_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%device, station = %w.station, tag = %w.tag, verdict = w.verdict, error = %e, "interlock write failed");
            }
        }
    }
}

async fn write_once(
    ctx: &mut Option<Context>,
    address: &str,
    unit: u8,
    timeout: Duration,
    w: &Write,
) -> Result<(), String> {
    let c = match ctx {
        Some(c) => c,
        None => {
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
                .await
                .map_err(|_| format!("no connection within {} ms", timeout.as_millis()))?
                .map_err(|e| format!("cannot connect to {address}: {e}"))?;
            let _ = stream.set_nodelay(true);
            ctx.insert(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
        }
    };
    let work = async {
        match &w.payload {
            Payload::Coil(b) => c.write_single_coil(w.address, *b).await,
            Payload::Words(ws) if ws.len() == 1 => c.write_single_register(w.address, ws[0]).await,
            Payload::Words(ws) => c.write_multiple_registers(w.address, ws).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("transport: {e}")),
        Ok(Ok(Err(exception))) => Err(format!("the device refused the write: {exception}")),
        Ok(Ok(Ok(()))) => Ok(()),
    }
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
