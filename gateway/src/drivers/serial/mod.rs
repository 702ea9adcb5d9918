//! Serial barcode / RFID reader driver.
//!
//! A reader is a line-oriented device: every code ends with the configured terminator (`cr`,
//! `lf` or `crlf`). The driver turns lines into [`RawScan`]s for the station of the scanner:
//! - a line longer than `max_line_len` is emitted once with `error` set (the station logic turns
//!   it into `scan_rejected`), and the bytes up to the next terminator are discarded (resync);
//!   a line that is not UTF-8 is emitted with `error` as well — nothing is dropped silently;
//! - the same code again within `dedup_ms` is one scan (readers in continuous mode repeat);
//! - the port is opened by its (stable, `/dev/serial/by-id/…`) path and reopened when it goes
//!   away (USB unplugged): open failures and I/O errors are retried with a capped exponential
//!   backoff, counted in the metrics, and logged once per outage (not once per retry).

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_serial::SerialPortBuilderExt;

use crate::drivers::config::{Framing, ScannerConfig, ScannerKind};
use crate::drivers::{DriverContext, RawScan};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Splits a byte stream into lines, bounded by `max_len`.
#[derive(Debug)]
pub struct LineSplitter {
    framing: Framing,
    max_len: usize,
    buf: Vec<u8>,
    /// Inside an over-long line: bytes are dropped until the next terminator.
    discarding: bool,
}

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Code(String),
    /// The line could not be used; the payload is what we can show of it and why.
    Bad {
        raw: String,
        error: String,
    },
}

impl LineSplitter {
    pub fn new(framing: Framing, max_len: usize) -> LineSplitter {
        LineSplitter {
            framing,
            max_len: max_len.max(1),
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// Feeds bytes; returns the complete lines they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            // `crlf` ends a line at LF and drops the CR before it; `cr` and `lf` end at their
            // byte, and a stray other terminator byte (a reader set to crlf) is dropped too.
            let end = match self.framing {
                Framing::Cr => b == b'\r',
                Framing::Lf | Framing::Crlf => b == b'\n',
            };
            if end {
                if self.discarding {
                    self.discarding = false;
                    self.buf.clear();
                    continue;
                }
                let line = std::mem::take(&mut self.buf);
                if let Some(l) = finish(line) {
                    out.push(l);
                }
                continue;
            }
            if self.discarding {
                continue;
            }
            if matches!(
                (self.framing, b),
                (Framing::Cr, b'\n') | (Framing::Lf, b'\r')
            ) {
                continue;
            }
            self.buf.push(b);
            if self.buf.len() > self.max_len + usize::from(self.framing == Framing::Crlf) {
                let head =
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(64)]).into_owned();
                out.push(Line::Bad {
                    raw: head,
                    error: format!("line longer than {} bytes (truncated here; resynchronizing at the next terminator)", self.max_len),
                });
                self.buf.clear();
                self.discarding = true;
            }
        }
        out
    }
}

fn finish(mut line: Vec<u8>) -> Option<Line> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return None; // an empty line is no scan
    }
    Some(match String::from_utf8(line) {
        Ok(s) if s.chars().any(|c| c.is_control() && c != '\u{1d}') => Line::Bad {
            raw: s.escape_debug().to_string(),
            error: "control characters in the code".to_owned(),
        },
        Ok(s) => Line::Code(s.trim().to_owned()),
        Err(e) => Line::Bad {
            raw: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            error: "not valid UTF-8".to_owned(),
        },
    })
}

/// Reads one scanner until `ctx.shutdown`, reopening the port when it goes away.
pub async fn run_scanner(cfg: ScannerConfig, ctx: DriverContext) {
    let mut backoff = BACKOFF_MIN;
    let mut outage_logged = false;
    // Survives reconnects: a code repeated across a replug within the window is still one scan.
    let mut last: Option<(String, Instant)> = None;
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let opened = tokio_serial::new(&cfg.port, cfg.baud)
            .timeout(Duration::from_millis(100))
            .open_native_async();
        let mut port = match opened {
            Ok(p) => {
                tracing::info!(scanner = %cfg.id, port = %cfg.port, "scanner port open");
                backoff = BACKOFF_MIN;
                p
            }
            Err(e) => {
                let msg = format!("opening {}: {e}", cfg.port);
                ctx.metrics.record_error(msg.clone());
                if !outage_logged {
                    tracing::warn!(scanner = %cfg.id, error = %msg, "scanner unavailable; retrying with backoff");
                    outage_logged = true;
                }
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut splitter = LineSplitter::new(cfg.framing, cfg.max_line_len);
        let mut buf = [0u8; 512];
        let why = loop {
            let n = tokio::select! {
                () = ctx.shutdown.cancelled() => return,
                r = port.read(&mut buf) => r,
            };
            let n = match n {
                Ok(0) => break "end of file (device gone)".to_owned(),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => break e.to_string(),
            };
            let started = Instant::now();
            for line in splitter.push(&buf[..n]) {
                let now = Instant::now();
                let (raw, error) = match line {
                    Line::Code(code) => {
                        let window = Duration::from_millis(cfg.dedup_ms);
                        if let Some((prev, at)) = &last
                            && *prev == code
                            && now.duration_since(*at) < window
                        {
                            last = Some((code, now));
                            continue;
                        }
                        last = Some((code.clone(), now));
                        (code, None)
                    }
                    Line::Bad { raw, error } => (raw, Some(error)),
                };
                ctx.metrics
                    .values
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let scan = RawScan {
                    scanner: cfg.id.clone(),
                    station: cfg.station.clone(),
                    raw,
                    rfid: cfg.kind == ScannerKind::Rfid,
                    ts: threadline_shared::time::now(),
                    error,
                };
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return,
                    r = ctx.scans.send(scan) => if r.is_err() { return },
                }
            }
            ctx.metrics
                .record_ok(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        };
        let msg = format!("reading {}: {why}", cfg.port);
        tracing::warn!(scanner = %cfg.id, error = %msg, "scanner lost; reopening");
        ctx.metrics.record_error(msg);
        // Failures to reopen belong to this outage, already logged.
        outage_logged = true;
        drop(port);
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Line {
        Line::Code(s.to_owned())
    }

    #[test]
    fn framing_and_split_reads() {
        let mut s = LineSplitter::new(Framing::Cr, 32);
        assert_eq!(s.push(b"SN00"), vec![]);
        assert_eq!(
            s.push(b"01\rOP0001\r\n\r"),
            vec![code("SN0001"), code("OP0001")]
        );
        let mut s = LineSplitter::new(Framing::Crlf, 32);
        assert_eq!(s.push(b"A1\r\nB2\r\n"), vec![code("A1"), code("B2")]);
        let mut s = LineSplitter::new(Framing::Lf, 32);
        assert_eq!(s.push(b"A1\nB2\r\n"), vec![code("A1"), code("B2")]);
    }

    #[test]
    fn long_line_is_reported_once_then_resyncs() {
        let mut s = LineSplitter::new(Framing::Cr, 8);
        let out = s.push(b"0123456789ABCDEF\rSN1\r");
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Line::Bad { error, .. } if error.contains("longer than 8")));
        assert_eq!(out[1], code("SN1"));
    }

    #[test]
    fn garbage_is_reported() {
        let mut s = LineSplitter::new(Framing::Cr, 64);
        let out = s.push(b"\xff\xfe\x01\r");
        assert!(matches!(&out[0], Line::Bad { error, .. } if error.contains("UTF-8")));
        let out = s.push(b"AB\x07C\r");
        assert!(matches!(&out[0], Line::Bad { error, .. } if error.contains("control")));
    }
}
