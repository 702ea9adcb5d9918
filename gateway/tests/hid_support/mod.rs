//! A simulated USB HID keyboard-mode scanner for tests: a FIFO standing in for its evdev node
//! (the device path is the driver's seam), and a typist that turns codes into the `input_event`
//! records such a scanner produces — key press / release with Shift and AltGr under a layout,
//! `EV_MSC` scan codes and `SYN_REPORT`s as the kernel interleaves them, the GS1 separator in
//! the form the scanner is set to, and a terminator key. Timestamps come from a clock the test
//! controls (`step_us` per event, `pause_us` between codes).

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use threadline_gateway::config::KeyboardLayout;
use threadline_gateway::drivers::hid::InputEvent;
use threadline_gateway::drivers::hid::event::{PRESSED, RELEASED, SYN_REPORT};
use threadline_gateway::drivers::hid::keys::*;
use threadline_gateway::drivers::hid::layout::strokes_for;

/// `EV_MSC` / `MSC_SCAN`: the HID usage a real keyboard reports before each key event.
const EV_MSC: u16 = 4;
const MSC_SCAN: u16 = 4;

/// How the simulated scanner types the GS1 group separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsAs {
    /// Ctrl+] (the key right of P, whatever the layout prints on it).
    CtrlBracket,
    /// Alt held, 0 0 2 9 on the keypad, Alt released.
    AltCode,
    /// A substitute character (the scanner's "replace GS with" setting).
    Substitute(char),
}

pub struct HidSim {
    path: PathBuf,
    writer: Option<File>,
    pub layout: KeyboardLayout,
    pub gs: GsAs,
    /// The key that ends a code.
    pub terminator: u16,
    /// Kernel time of the next event, microseconds.
    pub clock_us: i64,
    /// Time between two events.
    pub step_us: i64,
}

/// Creates a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
}

impl HidSim {
    /// A scanner "plugged in" at `dir/usb-Threadline_Sim_HID-event-kbd`.
    pub fn new(dir: &Path, layout: KeyboardLayout) -> HidSim {
        let mut sim = HidSim {
            path: dir.join("usb-Threadline_Sim_HID-event-kbd"),
            writer: None,
            layout,
            gs: GsAs::CtrlBracket,
            terminator: KEY_ENTER,
            clock_us: 1_700_000_000_000_000,
            step_us: 2_000,
        };
        sim.replug();
        sim
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    fn tick(&mut self) -> i64 {
        let t = self.clock_us;
        self.clock_us += self.step_us;
        t
    }

    /// Lets `us` microseconds pass on the kernel clock.
    pub fn pause_us(&mut self, us: i64) {
        self.clock_us += us;
    }

    /// One key event as the kernel reports it: scan code, key, sync.
    fn key(&mut self, code: u16, value: i32, out: &mut Vec<InputEvent>) {
        let t = self.tick();
        out.push(InputEvent {
            kind: EV_MSC,
            code: MSC_SCAN,
            value: 0x70000 + i32::from(code),
            ..InputEvent::key(code, value, t)
        });
        out.push(InputEvent::key(code, value, t));
        out.push(InputEvent::syn(SYN_REPORT, t));
    }

    /// Press and release `key` with `mods` held around it.
    pub fn tap(&mut self, mods: &[u16], key: u16, out: &mut Vec<InputEvent>) {
        for &m in mods {
            self.key(m, PRESSED, out);
        }
        self.key(key, PRESSED, out);
        self.key(key, RELEASED, out);
        for &m in mods.iter().rev() {
            self.key(m, RELEASED, out);
        }
    }

    /// The events that type `text` (no terminator); ASCII 29 in `text` is typed as [`GsAs`].
    pub fn type_text(&mut self, text: &str, out: &mut Vec<InputEvent>) {
        for c in text.chars() {
            if c == '\u{1d}' {
                match self.gs {
                    GsAs::CtrlBracket => self.tap(&[KEY_LEFTCTRL], KEY_RIGHTBRACE, out),
                    GsAs::AltCode => {
                        self.key(KEY_LEFTALT, PRESSED, out);
                        for k in [KEY_KP0, KEY_KP0, KEY_KP2, KEY_KP9] {
                            self.tap(&[], k, out);
                        }
                        self.key(KEY_LEFTALT, RELEASED, out);
                    }
                    GsAs::Substitute(s) => self.type_char(s, out),
                }
                continue;
            }
            self.type_char(c, out);
        }
    }

    fn type_char(&mut self, c: char, out: &mut Vec<InputEvent>) {
        let strokes = strokes_for(self.layout, c)
            .unwrap_or_else(|| panic!("no key for {c:?} in {:?}", self.layout));
        for s in strokes {
            let mut mods = Vec::new();
            if s.shift {
                mods.push(KEY_LEFTSHIFT);
            }
            if s.altgr {
                mods.push(KEY_RIGHTALT);
            }
            self.tap(&mods, s.key, out);
        }
    }

    /// The events of one scan: the code and the terminator.
    pub fn scan_events(&mut self, code: &str) -> Vec<InputEvent> {
        let mut out = Vec::new();
        self.type_text(code, &mut out);
        let t = self.terminator;
        self.tap(&[], t, &mut out);
        out
    }

    /// Writes `events` in one write.
    pub fn write(&mut self, events: &[InputEvent]) {
        let bytes: Vec<u8> = events.iter().flat_map(|e| e.encode()).collect();
        self.write_bytes(&bytes);
    }

    /// Writes raw bytes (records may be split anywhere).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let w = self.writer.as_mut().expect("plugged in");
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    /// Writes `bytes` from a thread of its own, in writes of `chunk` bytes (records split
    /// anywhere): a test on a single-threaded runtime would otherwise block in a write to a
    /// full FIFO while the reader it waits for cannot run.
    pub fn write_in_background(&self, bytes: Vec<u8>, chunk: usize) -> std::thread::JoinHandle<()> {
        let mut w = self
            .writer
            .as_ref()
            .expect("plugged in")
            .try_clone()
            .unwrap();
        std::thread::spawn(move || {
            for part in bytes.chunks(chunk) {
                w.write_all(part).unwrap();
            }
        })
    }

    /// Types one code and its terminator.
    pub fn scan(&mut self, code: &str) {
        let events = self.scan_events(code);
        self.write(&events);
    }

    /// Unplugged: the reader sees the end of the stream and the node disappears.
    pub fn unplug(&mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.path);
    }

    /// Plugged (back) in: the node exists and has a writer (opened read-write, so the open
    /// neither blocks nor needs the reader to be there yet).
    pub fn replug(&mut self) {
        mkfifo(&self.path);
        self.writer = Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .unwrap(),
        );
    }
}
