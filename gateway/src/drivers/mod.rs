//! Acquisition drivers: Modbus TCP/RTU, OPC UA, barcode / RFID readers (serial and USB HID).
//!
//! One contract for all of them: a driver task gets a [`DriverContext`] (where to send values
//! and scans, the shutdown signal, its metrics) and runs until shutdown, recovering from every
//! peer failure by itself (tags go `bad` with the reason while the device is unreachable).
//! [`spawn_device`] is the one place where protocols are dispatched, with one exhaustive
//! `match` on [`config::Protocol`]; a driver reads its typed view with
//! [`config::DeviceConfig::kind`].

pub mod config;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use threadline_shared::event::{Quality, TagValue};
use threadline_shared::time::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An `f32` a device holds, as the `f64` the event model carries: the shortest decimal that
/// reads back as the same `f32` (`21.7f32` becomes `21.7`, not `21.700000762939453`, the
/// f32's exact binary value widened). Nothing is lost: `f32_to_f64(v) as f32 == v` for every
/// finite `v`; NaN and infinities stay what they are. Every driver that decodes an `f32`
/// (Modbus registers, OPC UA `Float`) goes through here, so readings, operation parameters,
/// environment snapshots and everything the aggregator derives from them show what the PLC
/// engineer wrote.
pub fn f32_to_f64(v: f32) -> f64 {
    use std::io::Write as _;
    if !v.is_finite() {
        return f64::from(v);
    }
    // Rust's float formatting is the shortest round-trip representation; `{:e}` keeps it
    // short for every magnitude ("-1.1754944e-38"), so a small stack buffer holds it.
    let mut buf = [0u8; 32];
    let left = {
        let mut w = &mut buf[..];
        if write!(w, "{v:e}").is_err() {
            return f64::from(v);
        }
        w.len()
    };
    let n = buf.len() - left;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::from(v))
}

/// A tag's new value (or its loss) as a driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct TagUpdate {
    pub device: String,
    pub tag: String,
    /// `None` when no value could be read (quality is then `bad`).
    pub value: Option<TagValue>,
    pub quality: Quality,
    /// Why the quality is not good.
    pub error: Option<String>,
    /// Source time (the PLC's / OPC UA server's when it gives one, else the poll time).
    pub ts: Timestamp,
}

/// One line read from a barcode / RFID reader, before classification by the station logic.
#[derive(Debug, Clone, PartialEq)]
pub struct RawScan {
    pub scanner: String,
    pub station: String,
    /// The code as read, framing removed (may contain ASCII 29 group separators).
    pub raw: String,
    /// True for an RFID reader (the code is EPC hex).
    pub rfid: bool,
    pub ts: Timestamp,
    /// Set when the line could not be used as a code at all (too long, not UTF-8, …).
    pub error: Option<String>,
}

/// Counters of one device or reader, exported as Prometheus metrics and in the status message.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    pub polls: AtomicU64,
    pub errors: AtomicU64,
    /// Unix milliseconds of the last fully good poll / data change (0 = never).
    pub last_ok_ms: AtomicU64,
    /// Round-trip time of the last request, microseconds.
    pub last_rtt_us: AtomicU64,
    pub values: AtomicU64,
    /// Last error text, for status and logs.
    pub last_error: std::sync::Mutex<Option<String>>,
    /// A scanner holding its device open: it is healthy while idle, however long nobody scans.
    /// Polled devices never set it (their silence is a fault).
    pub open: AtomicBool,
}

impl DeviceMetrics {
    pub fn record_ok(&self, rtt_us: u64) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.last_rtt_us.store(rtt_us, Ordering::Relaxed);
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        self.last_ok_ms.store(now, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    /// A reader opened its device: ok now, and silence is not a fault until it fails.
    pub fn record_open(&self) {
        self.record_ok(0);
        self.open.store(true, Ordering::Relaxed);
    }

    pub fn record_error(&self, error: impl Into<String>) {
        self.open.store(false, Ordering::Relaxed);
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.into());
        }
    }
}

/// What every driver task gets.
#[derive(Clone)]
pub struct DriverContext {
    /// Tag values out (bounded: a slow consumer slows the poll loop, it never grows memory).
    pub out: mpsc::Sender<TagUpdate>,
    /// Scans out (readers only).
    pub scans: mpsc::Sender<RawScan>,
    /// Cancelled when the gateway shuts down; a driver returns promptly after it.
    pub shutdown: CancellationToken,
    pub metrics: Arc<DeviceMetrics>,
    /// The gateway's data directory (OPC UA client certificate lives here).
    pub data_dir: std::path::PathBuf,
}

pub mod hid;
pub mod modbus;
pub mod opcua;
pub mod reader;
pub mod serial;

/// Starts the driver task of one device: the one place where protocols are dispatched.
pub fn spawn_device(cfg: &config::DeviceConfig, ctx: DriverContext) -> tokio::task::JoinHandle<()> {
    let cfg = cfg.clone();
    match cfg.protocol {
        config::Protocol::ModbusTcp | config::Protocol::ModbusRtu => {
            tokio::spawn(modbus::run_device(cfg, ctx))
        }
        config::Protocol::OpcUa => tokio::spawn(opcua::run_device(cfg, ctx)),
    }
}

/// Starts the reader task of one scanner: the one place where reader interfaces are dispatched.
pub fn spawn_scanner(
    cfg: &config::ScannerConfig,
    ctx: DriverContext,
) -> tokio::task::JoinHandle<()> {
    let cfg = cfg.clone();
    match cfg.interface {
        config::ScannerInterface::Serial => tokio::spawn(serial::run_scanner(cfg, ctx)),
        config::ScannerInterface::Hid => tokio::spawn(hid::run_scanner(cfg, ctx)),
    }
}

#[cfg(test)]
mod tests {
    use super::f32_to_f64;

    #[test]
    fn f32_values_are_carried_as_their_shortest_decimal() {
        assert_eq!(f32_to_f64(21.7), 21.7);
        assert_eq!(f32_to_f64(5.147_486), 5.147486);
        // What a widened f32 looked like in the demo: the same f32, now shown as written.
        assert_eq!(f32_to_f64(5.147486209869385_f64 as f32), 5.147486);
        assert_eq!(f32_to_f64(-0.5), -0.5);
        assert_eq!(f32_to_f64(0.0), 0.0);
        assert_eq!(f32_to_f64(f32::MAX), 3.4028235e38);
        assert_eq!(f32_to_f64(f32::MIN_POSITIVE), 1.1754944e-38);
        assert_eq!(f32_to_f64(f32::INFINITY), f64::INFINITY);
        assert!(f32_to_f64(f32::NAN).is_nan());
    }

    #[test]
    fn every_f32_survives_the_trip() {
        // A spread of bit patterns over every exponent, subnormals included.
        let mut bits: u32 = 1;
        for _ in 0..200_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = f32::from_bits(bits);
            if v.is_finite() {
                assert_eq!((f32_to_f64(v) as f32).to_bits(), v.to_bits(), "{v:e}");
            }
        }
    }
}
