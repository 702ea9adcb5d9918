//! Serial barcode / RFID reader driver.
//!
//! A reader is a line-oriented device: every code ends with the configured terminator (`cr`,
//! `lf` or `crlf`). The driver turns lines into [`RawScan`](crate::drivers::RawScan)s for the station of the scanner:
//! - a line longer than `max_line_len` is emitted once with `error` set (the station logic turns
//!   it into `scan_rejected`), and the bytes up to the next terminator are discarded (resync);
//!   a line that is not UTF-8 is emitted with `error` as well — nothing is dropped silently;
//! - the same code again within `dedup_ms` is one scan (readers in continuous mode repeat);
//! - the port is opened by its (stable, `/dev/serial/by-id/…`) path and reopened when it goes
//!   away (USB unplugged): open failures and I/O errors are retried with a capped exponential
//!   backoff, counted in the metrics, and logged once per outage (not once per retry).
//!
//! The line rules, de-duplication and delivery are `drivers::reader`'s, shared with HID
//! scanners; this module only frames bytes.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_serial::SerialPortBuilderExt;

use crate::drivers::DriverContext;
use crate::drivers::config::{Framing, ScannerConfig, ScannerLink};
pub use crate::drivers::reader::Line;
use crate::drivers::reader::{LineBuffer, Reopen, ScanOutput};

/// Splits a byte stream into lines by the reader's framing, bounded by `max_len`.
#[derive(Debug)]
pub struct LineSplitter {
    framing: Framing,
    line: LineBuffer,
    /// `crlf`: a CR was read and the next byte decides whether it ends the line.
    cr_pending: bool,
}

impl LineSplitter {
    pub fn new(framing: Framing, max_len: usize) -> LineSplitter {
        LineSplitter {
            framing,
            line: LineBuffer::new(max_len),
            cr_pending: false,
        }
    }

    /// Feeds bytes; returns the complete lines they finish (and over-long lines, once).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            // `crlf` ends a line at LF and drops the CR before it (a CR elsewhere stays in the
            // line); `cr` and `lf` end at their byte, and a stray other terminator byte (a
            // reader set to crlf) is dropped.
            match (self.framing, b) {
                (Framing::Cr, b'\r') | (Framing::Lf, b'\n') => out.extend(self.line.end()),
                (Framing::Cr, b'\n') | (Framing::Lf, b'\r') => {}
                (Framing::Crlf, b'\n') => {
                    self.cr_pending = false;
                    out.extend(self.line.end());
                }
                (Framing::Crlf, _) => {
                    if std::mem::replace(&mut self.cr_pending, b == b'\r') {
                        out.extend(self.line.push(b'\r'));
                    }
                    if b != b'\r' {
                        out.extend(self.line.push(b));
                    }
                }
                _ => out.extend(self.line.push(b)),
            }
        }
        out
    }
}

/// Reads one scanner until `ctx.shutdown`, reopening the port when it goes away.
pub async fn run_scanner(cfg: ScannerConfig, ctx: DriverContext) {
    let Some(ScannerLink::Serial(link)) = cfg.link() else {
        tracing::error!(scanner = %cfg.id, "not a serial scanner (port missing); not started");
        return;
    };
    let mut reopen = Reopen::default();
    let mut output = ScanOutput::new(&cfg);
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let opened = tokio_serial::new(link.port, link.baud)
            .timeout(Duration::from_millis(100))
            .open_native_async();
        let mut port = match opened {
            Ok(p) => {
                tracing::info!(scanner = %cfg.id, port = %link.port, "scanner port open");
                reopen.healthy();
                // The reader is back: its status shows ok (and the last error cleared) even
                // before the first code.
                ctx.metrics.record_open();
                p
            }
            Err(e) => {
                reopen.failed(&ctx, &cfg.id, format!("opening {}: {e}", link.port));
                if !reopen.wait(&ctx.shutdown).await {
                    return;
                }
                continue;
            }
        };
        let mut splitter = LineSplitter::new(link.framing, cfg.max_line_len);
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
            let mut lines = splitter.push(&buf[..n]);
            if !output.deliver_all(&mut lines, &ctx).await {
                return;
            }
            ctx.metrics
                .record_ok(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        };
        reopen.failed(&ctx, &cfg.id, format!("reading {}: {why}", link.port));
        drop(port);
        if !reopen.wait(&ctx.shutdown).await {
            return;
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
        // crlf: a CR split from its LF by a read still ends the line; a CR inside is data.
        let mut s = LineSplitter::new(Framing::Crlf, 32);
        assert_eq!(s.push(b"A1\r"), vec![]);
        assert_eq!(
            s.push(b"\nB\rC\r\n"),
            vec![
                code("A1"),
                Line::Bad {
                    raw: "B\\rC".into(),
                    error: "control characters in the code".into()
                }
            ]
        );
        let mut s = LineSplitter::new(Framing::Crlf, 4);
        assert_eq!(
            s.push(b"ABCD\r\n"),
            vec![code("ABCD")],
            "the CR is not counted"
        );
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
