//! The end of every reader, whatever its link: de-duplication and delivery of lines as
//! [`RawScan`]s to the station, and the reopen backoff when the device goes away.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{ScannerConfig, ScannerKind};
use super::lines::Line;
use crate::drivers::{DriverContext, RawScan};

/// Where a reader's lines go.
#[derive(Debug)]
pub struct ScanOutput {
    scanner: String,
    station: String,
    rfid: bool,
    dedup: Duration,
    /// The last code delivered and when it was last seen. Kept across reopens: a code repeated
    /// across a replug within the window is still one scan.
    last: Option<(String, Instant)>,
}

impl ScanOutput {
    pub fn new(cfg: &ScannerConfig) -> ScanOutput {
        ScanOutput {
            scanner: cfg.id.clone(),
            station: cfg.station.clone(),
            rfid: cfg.kind == ScannerKind::Rfid,
            dedup: Duration::from_millis(cfg.dedup_ms),
            last: None,
        }
    }

    /// Delivers one line: a code unless it repeats the last one within `dedup_ms`, a bad line
    /// always (the station turns it into `scan_rejected`). Waits while the pipeline is busy;
    /// returns false when the gateway shuts down (or the pipeline is gone).
    pub async fn deliver(&mut self, line: Line, ctx: &DriverContext) -> bool {
        let now = Instant::now();
        let (raw, error) = match line {
            Line::Code(code) => {
                if let Some((prev, at)) = &self.last
                    && *prev == code
                    && now.duration_since(*at) < self.dedup
                {
                    self.last = Some((code, now));
                    return true;
                }
                self.last = Some((code.clone(), now));
                (code, None)
            }
            Line::Bad { raw, error } => (raw, Some(error)),
        };
        ctx.metrics.values.fetch_add(1, Ordering::Relaxed);
        let scan = RawScan {
            scanner: self.scanner.clone(),
            station: self.station.clone(),
            raw,
            rfid: self.rfid,
            ts: threadline_shared::time::now(),
            error,
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => false,
            r = ctx.scans.send(scan) => r.is_ok(),
        }
    }

    /// Delivers lines in order; false as soon as one cannot be.
    pub async fn deliver_all(&mut self, lines: &mut Vec<Line>, ctx: &DriverContext) -> bool {
        for line in lines.drain(..) {
            if !self.deliver(line, ctx).await {
                return false;
            }
        }
        true
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Reopening a reader that is gone: failures are counted in the metrics every time but logged
/// once per outage (not once per retry), and retried with a capped exponential backoff.
#[derive(Debug)]
pub struct Reopen {
    backoff: Duration,
    /// An outage was logged and the reader has not worked since.
    in_outage: bool,
}

impl Default for Reopen {
    fn default() -> Reopen {
        Reopen {
            backoff: BACKOFF_MIN,
            in_outage: false,
        }
    }
}

impl Reopen {
    /// The reader works (again): the next failure is a new outage, retried from the start.
    pub fn healthy(&mut self) {
        self.backoff = BACKOFF_MIN;
        self.in_outage = false;
    }

    /// Opening or reading failed with `msg`: counted, and logged when it starts an outage.
    pub fn failed(&mut self, ctx: &DriverContext, scanner: &str, msg: String) {
        if !self.in_outage {
            tracing::warn!(scanner = %scanner, error = %msg, "scanner unavailable; retrying with backoff");
            self.in_outage = true;
        }
        ctx.metrics.record_error(msg);
    }

    /// Waits out the backoff (doubling it for next time); false when shut down meanwhile.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let sleep = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(sleep) => true,
        }
    }
}
