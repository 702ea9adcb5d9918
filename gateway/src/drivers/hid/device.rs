//! The HID scanner task: open the evdev node, grab it, read `input_event` records, decode them,
//! deliver the lines; reopen and re-grab when the device goes away and comes back.
//!
//! The device path is the seam: anything that delivers `input_event` records through `poll`
//! works — the real `/dev/input/event*` node, or a FIFO the tests write records into. A FIFO
//! answers the grab with ENOTTY, which is expected and only logged at debug level; a character
//! device that refuses the grab is an error (another process holds it, or it is no evdev node
//! at all, e.g. a scanner in CDC mode configured as `hid`), reported and retried.

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use super::decode::KeyDecoder;
use super::event::{EVENT_SIZE, InputEvent};
use crate::drivers::DriverContext;
use crate::drivers::config::{HidLink, ScannerConfig, ScannerLink};
use crate::drivers::reader::{Reopen, ScanOutput};

/// Linux errno values the grab can answer (this driver is Linux-only: evdev).
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const ENOTTY: i32 = 25;

/// Records read per system call, at most.
const EVENTS_PER_READ: usize = 64;

/// Reads one HID scanner until `ctx.shutdown`, reopening the device when it goes away.
pub async fn run_scanner(cfg: ScannerConfig, ctx: DriverContext) {
    let Some(ScannerLink::Hid(link)) = cfg.link() else {
        tracing::error!(scanner = %cfg.id, "not a HID scanner (device missing); not started");
        return;
    };
    let mut reopen = Reopen::default();
    let mut output = ScanOutput::new(&cfg);
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let mut device = match open(&cfg.id, &link) {
            Ok(d) => {
                // Open and grabbed: the status shows ok (and the last error cleared) before the
                // first code. The backoff is reset only by data (a FIFO without a writer opens
                // fine and ends at once).
                ctx.metrics.record_open();
                d
            }
            Err(msg) => {
                reopen.failed(&ctx, &cfg.id, msg);
                if !reopen.wait(&ctx.shutdown).await {
                    return;
                }
                continue;
            }
        };
        // Fresh per open: after a replug nothing is held and nothing is half typed.
        let mut decoder = KeyDecoder::new(&link, cfg.max_line_len);
        let Some(why) = read(
            &mut device,
            &mut decoder,
            &mut output,
            &mut reopen,
            &ctx,
            Duration::from_millis(link.char_timeout_ms),
        )
        .await
        else {
            return;
        };
        let mut lines = Vec::new();
        decoder.abandon("the device went away while this code was typed", &mut lines);
        if !output.deliver_all(&mut lines, &ctx).await {
            return;
        }
        reopen.failed(&ctx, &cfg.id, format!("reading {}: {why}", link.device));
        drop(device);
        if !reopen.wait(&ctx.shutdown).await {
            return;
        }
    }
}

/// Opens the device node (non-blocking, registered with the runtime) and grabs it exclusively,
/// so its keystrokes reach nothing else (no console, no login prompt).
fn open(scanner: &str, link: &HidLink<'_>) -> Result<pipe::Receiver, String> {
    let path = link.device;
    let meta = std::fs::metadata(path).map_err(|e| format!("opening {path}: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_char_device() && !kind.is_fifo() {
        return Err(format!(
            "{path} is not an input device node (expected /dev/input/by-id/…-event-kbd or /dev/input/eventN)"
        ));
    }
    // `unchecked`: the node is a character device, not a FIFO; it still supports poll.
    let rx = pipe::OpenOptions::new()
        .unchecked(true)
        .open_receiver(path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (the gateway's user needs read access to the device: group `input` or a udev rule, see docs/scanners.md)"
            } else {
                ""
            };
            format!("opening {path}: {e}{hint}")
        })?;
    match input_linux::EvdevHandle::new(rx.as_fd()).grab(true) {
        Ok(()) => {
            tracing::info!(scanner = %scanner, device = %path, layout = link.layout.as_str(),
                "HID scanner open and grabbed exclusively");
        }
        Err(e) if kind.is_fifo() => {
            tracing::debug!(scanner = %scanner, device = %path, error = %e,
                "HID scanner device is a FIFO (a stand-in for an evdev node): reading without a grab");
        }
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(EBUSY) => " — another process holds it (evtest --grab, a kiosk app, a second gateway?); its keystrokes go there".to_owned(),
                Some(ENOTTY | EINVAL) => " — this is no evdev input device; a scanner in USB CDC / virtual COM mode is a serial port: use interface = \"serial\" with port = …".to_owned(),
                _ => String::new(),
            };
            return Err(format!(
                "cannot grab {path} exclusively (EVIOCGRAB: {e}){why}"
            ));
        }
    }
    Ok(rx)
}

/// Reads and decodes until the device fails (the reason) or the gateway shuts down (`None`).
async fn read(
    device: &mut pipe::Receiver,
    decoder: &mut KeyDecoder,
    output: &mut ScanOutput,
    reopen: &mut Reopen,
    ctx: &DriverContext,
    char_timeout: Duration,
) -> Option<String> {
    let mut buf = vec![0u8; EVENT_SIZE * EVENTS_PER_READ];
    // Bytes of an incomplete record carried to the next read (a FIFO may split records; an
    // evdev node never does).
    let mut filled = 0;
    let mut lines = Vec::new();
    let mut last_input = Instant::now();
    loop {
        let pending = decoder.pending();
        let n = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return None,
            r = device.read(&mut buf[filled..]) => r,
            () = tokio::time::sleep_until(last_input + char_timeout), if pending => {
                decoder.expire(&mut lines);
                if !output.deliver_all(&mut lines, ctx).await {
                    return None;
                }
                continue;
            }
        };
        let n = match n {
            Ok(0) => return Some("end of file (device gone)".to_owned()),
            Ok(n) => n,
            Err(e) => return Some(e.to_string()),
        };
        let started = Instant::now();
        last_input = started;
        reopen.healthy();
        filled += n;
        let whole = filled - filled % EVENT_SIZE;
        for record in buf[..whole].chunks_exact(EVENT_SIZE) {
            if let Ok(record) = <&[u8; EVENT_SIZE]>::try_from(record) {
                decoder.feed(&InputEvent::decode(record), &mut lines);
            }
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
        if !output.deliver_all(&mut lines, ctx).await {
            return None;
        }
        ctx.metrics
            .record_ok(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
}
