//! Simulated barcode / RFID reader on a pseudo-terminal.
//!
//! The gateway opens the pty's slave side like any serial port, by a path this simulator
//! controls: a symlink in a temporary directory, the way `/dev/serial/by-id/…` points at the
//! current `/dev/ttyUSBn`. [`SimScanner::unplug`] closes the pty and removes the link (the
//! gateway's reads fail, reopening finds no device); [`SimScanner::replug`] opens a new pty
//! and points the link at it atomically.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// Line terminator the simulated reader sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFraming {
    Cr,
    Lf,
    CrLf,
}

impl SimFraming {
    fn bytes(self) -> &'static [u8] {
        match self {
            SimFraming::Cr => b"\r",
            SimFraming::Lf => b"\n",
            SimFraming::CrLf => b"\r\n",
        }
    }
}

struct Pty {
    master: File,
    /// Held open so the master never sees a hang-up while the gateway reconnects.
    _slave: OwnedFd,
}

/// A simulated reader.
pub struct SimScanner {
    /// Holds the link; removed with the simulator.
    dir: PathBuf,
    link: PathBuf,
    framing: SimFraming,
    pty: Option<Pty>,
}

fn open_pty() -> std::io::Result<(Pty, PathBuf)> {
    let p = openpty(None, None).map_err(std::io::Error::from)?;
    for fd in [&p.master, &p.slave] {
        let mut t = tcgetattr(fd).map_err(std::io::Error::from)?;
        cfmakeraw(&mut t);
        tcsetattr(fd, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    }
    let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", p.slave.as_raw_fd()))?;
    Ok((
        Pty {
            master: File::from(p.master),
            _slave: p.slave,
        },
        slave_path,
    ))
}

fn point_link(link: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

impl SimScanner {
    /// A plugged-in reader with CR framing; returns it and the (stable, symlink) port path.
    pub fn new() -> std::io::Result<(SimScanner, PathBuf)> {
        Self::with_framing(SimFraming::Cr)
    }

    pub fn with_framing(framing: SimFraming) -> std::io::Result<(SimScanner, PathBuf)> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("threadline-sim-scanner-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let link = dir.join("usb-Threadline_Sim_Scanner-if00");
        let (pty, slave) = open_pty()?;
        point_link(&link, &slave)?;
        let sim = SimScanner {
            dir,
            link: link.clone(),
            framing,
            pty: Some(pty),
        };
        Ok((sim, link))
    }

    /// The stable port path (the symlink).
    pub fn path(&self) -> &Path {
        &self.link
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.pty {
            Some(p) => {
                p.master.write_all(bytes)?;
                p.master.flush()
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the simulated scanner is unplugged",
            )),
        }
    }

    /// Sends one code with the framing.
    pub fn scan(&mut self, code: &str) -> std::io::Result<()> {
        let mut b = code.as_bytes().to_vec();
        b.extend_from_slice(self.framing.bytes());
        self.write(&b)
    }

    /// Sends raw bytes as they are (partial lines, several lines at once).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write(bytes)
    }

    /// Sends a garbled line (not UTF-8, as from a bad cable or baud mismatch).
    pub fn garbled(&mut self) -> std::io::Result<()> {
        let mut b = vec![0xff, 0xfe, 0x80, 0x81, b'?', 0xc3];
        b.extend_from_slice(self.framing.bytes());
        self.write(&b)
    }

    /// Unplugs the reader: the pty closes and the link disappears, as udev removes the
    /// `/dev/serial/by-id/…` link. (A dangling link would be wrong: the kernel reuses pty
    /// numbers, so it could soon point at somebody else's terminal.)
    pub fn unplug(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        self.pty = None;
    }

    /// Plugs it back in: a new pty, the link re-pointed at it.
    pub fn replug(&mut self) -> std::io::Result<()> {
        let (pty, slave) = open_pty()?;
        point_link(&self.link, &slave)?;
        self.pty = Some(pty);
        Ok(())
    }

    /// Whether it is plugged in.
    pub fn is_plugged(&self) -> bool {
        self.pty.is_some()
    }

    /// The temporary directory holding the link.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SimScanner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
