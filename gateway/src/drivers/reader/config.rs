//! One `[[scanner]]`: a barcode / RFID reader on a serial port (`interface = "serial"`, the
//! default; a USB scanner in CDC / virtual-COM mode is one too) or a USB HID scanner in keyboard
//! mode (`interface = "hid"`, read from its evdev node), and the checks of one scanner on its own.
//!
//! Like `[[device]]`, the table is one flat struct with an `interface` field rather than a
//! serde-tagged enum (a tagged enum buffers its content and loses the line and column of every
//! error inside it). The keys of one interface are `Option`s so that a key of the other one is
//! reported where it stands ([`ScannerConfig::check`]); [`ScannerConfig::link`] is the typed
//! view with the defaults applied, which the drivers use.

use serde::{Deserialize, Deserializer};
use threadline_shared::config::Validator;

/// How the reader is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerInterface {
    /// A serial port (RS-232, or USB CDC / virtual COM).
    #[default]
    Serial,
    /// A USB HID keyboard-mode scanner, read through Linux evdev and grabbed exclusively.
    Hid,
}

impl ScannerInterface {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ScannerInterface::Serial => "serial",
            ScannerInterface::Hid => "hid",
        }
    }
}

/// Line framing of a serial reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    Lf,
    #[default]
    Cr,
    Crlf,
}

impl Framing {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Lf => "lf",
            Framing::Cr => "cr",
            Framing::Crlf => "crlf",
        }
    }
}

/// What a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerKind {
    #[default]
    Barcode,
    /// EPC hex per line (SGTIN-96, SSCC-96).
    Rfid,
}

impl ScannerKind {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ScannerKind::Barcode => "barcode",
            ScannerKind::Rfid => "rfid",
        }
    }
}

/// The keyboard country a HID scanner is set to: which key it presses for which character.
/// Must match the scanner's own "keyboard country" setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyboardLayout {
    /// US English (QWERTY).
    #[default]
    Us,
    /// German (QWERTZ): Y and Z swapped, symbols moved, AltGr for `@ [ ] { } \ | ~`.
    De,
    /// French (AZERTY): digits on Shift, AltGr for `@ # [ ] { } \ | ~ ^`.
    Fr,
}

impl KeyboardLayout {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyboardLayout::Us => "us",
            KeyboardLayout::De => "de",
            KeyboardLayout::Fr => "fr",
        }
    }
}

/// The key that ends a code typed by a HID scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminator {
    /// Enter (or keypad Enter).
    #[default]
    Enter,
    Tab,
}

impl Terminator {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Terminator::Enter => "enter",
            Terminator::Tab => "tab",
        }
    }
}

/// `gs_substitute`: what a keyboard-mode scanner types for the GS1 group separator (ASCII 29,
/// FNC1 inside GS1 data). Ctrl+] and ALT+0029 are always understood; a scanner that cannot
/// send either is set to replace GS by a character, named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GsSubstitute {
    /// `"ctrl+]"` (default): no substitute character.
    #[default]
    CtrlBracket,
    /// This character stands for GS (it can then not appear in codes).
    Char(char),
}

impl GsSubstitute {
    /// The substitute character, if one is configured.
    pub fn char(self) -> Option<char> {
        match self {
            GsSubstitute::CtrlBracket => None,
            GsSubstitute::Char(c) => Some(c),
        }
    }
}

impl<'de> Deserialize<'de> for GsSubstitute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GsSubstitute, D::Error> {
        let text = String::deserialize(d)?;
        parse_gs_substitute(&text).map_err(serde::de::Error::custom)
    }
}

/// `"ctrl+]"`, or one printable character that cannot be part of a code's data by accident.
fn parse_gs_substitute(text: &str) -> Result<GsSubstitute, String> {
    if text.eq_ignore_ascii_case("ctrl+]") {
        return Ok(GsSubstitute::CtrlBracket);
    }
    let mut chars = text.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return Err(format!(
            "invalid gs_substitute {text:?}, expected \"ctrl+]\" (the default) or one character such as \"~\" or \"|\""
        ));
    };
    if c.is_alphanumeric() || c.is_whitespace() || c.is_control() {
        return Err(format!(
            "invalid gs_substitute {text:?}: a letter, digit, space or control character would be \
             taken for GS inside codes; expected \"ctrl+]\" (the default) or a symbol the codes \
             never contain, such as \"~\" or \"|\""
        ));
    }
    Ok(GsSubstitute::Char(c))
}

/// One `[[scanner]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// Unique scanner id.
    pub id: String,
    /// `serial` (default) or `hid`.
    #[serde(default)]
    pub interface: ScannerInterface,
    /// serial: the port; prefer the stable `/dev/serial/by-id/…` path.
    pub port: Option<String>,
    /// serial: line speed (default 9600).
    pub baud: Option<u32>,
    /// serial: the terminator that ends a code (default `cr`).
    pub framing: Option<Framing>,
    /// hid: the evdev node; prefer the stable `/dev/input/by-id/…-event-kbd` path.
    pub device: Option<String>,
    /// hid: the scanner's keyboard country (default `us`).
    pub layout: Option<KeyboardLayout>,
    /// hid: the key that ends a code (default `enter`).
    pub terminator: Option<Terminator>,
    /// hid: the character the scanner types for the GS1 group separator (default `"ctrl+]"`).
    pub gs_substitute: Option<GsSubstitute>,
    /// hid: a code whose next key does not come within this time is incomplete (default 50).
    pub char_timeout_ms: Option<u64>,
    /// Barcodes or RFID EPCs.
    #[serde(default)]
    pub kind: ScannerKind,
    /// The station whose logic receives the scans.
    pub station: String,
    /// The same code again within this window is one scan.
    #[serde(default = "default_dedup_ms")]
    pub dedup_ms: u64,
    /// A longer line is rejected (`scan_rejected`), not buffered without end (bytes of UTF-8).
    #[serde(default = "default_max_line_len")]
    pub max_line_len: usize,
}

fn default_dedup_ms() -> u64 {
    500
}
fn default_max_line_len() -> usize {
    512
}
const DEFAULT_BAUD: u32 = 9600;
const DEFAULT_CHAR_TIMEOUT_MS: u64 = 50;

/// A serial reader's link, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialLink<'a> {
    pub port: &'a str,
    pub baud: u32,
    pub framing: Framing,
}

/// A HID scanner's link, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HidLink<'a> {
    pub device: &'a str,
    pub layout: KeyboardLayout,
    pub terminator: Terminator,
    pub gs_substitute: GsSubstitute,
    pub char_timeout_ms: u64,
}

/// Typed view of a scanner's link for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScannerLink<'a> {
    Serial(SerialLink<'a>),
    Hid(HidLink<'a>),
}

/// The keys only one interface has, with that interface.
const SERIAL_KEYS: [&str; 3] = ["port", "baud", "framing"];
const HID_KEYS: [&str; 5] = [
    "device",
    "layout",
    "terminator",
    "gs_substitute",
    "char_timeout_ms",
];

impl ScannerConfig {
    /// A serial reader with every default (for tests and tools).
    pub fn serial(id: &str, port: &str, station: &str) -> ScannerConfig {
        ScannerConfig {
            port: Some(port.to_owned()),
            ..ScannerConfig::bare(id, ScannerInterface::Serial, station)
        }
    }

    /// A HID scanner with every default (for tests and tools).
    pub fn hid(id: &str, device: &str, station: &str) -> ScannerConfig {
        ScannerConfig {
            device: Some(device.to_owned()),
            ..ScannerConfig::bare(id, ScannerInterface::Hid, station)
        }
    }

    fn bare(id: &str, interface: ScannerInterface, station: &str) -> ScannerConfig {
        ScannerConfig {
            id: id.to_owned(),
            interface,
            port: None,
            baud: None,
            framing: None,
            device: None,
            layout: None,
            terminator: None,
            gs_substitute: None,
            char_timeout_ms: None,
            kind: ScannerKind::default(),
            station: station.to_owned(),
            dedup_ms: default_dedup_ms(),
            max_line_len: default_max_line_len(),
        }
    }

    /// The typed link; `None` only for a config that failed validation (no port / device).
    pub fn link(&self) -> Option<ScannerLink<'_>> {
        match self.interface {
            ScannerInterface::Serial => self.port.as_deref().map(|port| {
                ScannerLink::Serial(SerialLink {
                    port,
                    baud: self.baud.unwrap_or(DEFAULT_BAUD),
                    framing: self.framing.unwrap_or_default(),
                })
            }),
            ScannerInterface::Hid => self.device.as_deref().map(|device| {
                ScannerLink::Hid(HidLink {
                    device,
                    layout: self.layout.unwrap_or_default(),
                    terminator: self.terminator.unwrap_or_default(),
                    gs_substitute: self.gs_substitute.unwrap_or_default(),
                    char_timeout_ms: self.char_timeout_ms.unwrap_or(DEFAULT_CHAR_TIMEOUT_MS),
                })
            }),
        }
    }

    /// Which of `keys` are set.
    fn present(&self, keys: &[&'static str]) -> Vec<&'static str> {
        keys.iter()
            .copied()
            .filter(|k| match *k {
                "port" => self.port.is_some(),
                "baud" => self.baud.is_some(),
                "framing" => self.framing.is_some(),
                "device" => self.device.is_some(),
                "layout" => self.layout.is_some(),
                "terminator" => self.terminator.is_some(),
                "gs_substitute" => self.gs_substitute.is_some(),
                "char_timeout_ms" => self.char_timeout_ms.is_some(),
                _ => false,
            })
            .collect()
    }

    /// The checks of this scanner on its own; `at` is its path (`scanner[1]`).
    pub(crate) fn check(&self, at: &str, v: &mut Validator<'_>) {
        let (required, own, foreign) = match self.interface {
            ScannerInterface::Serial => ("port", "serial", &HID_KEYS[..]),
            ScannerInterface::Hid => ("device", "hid", &SERIAL_KEYS[..]),
        };
        if self.link().is_none() {
            let hint = match self.interface {
                ScannerInterface::Serial => "e.g. \"/dev/serial/by-id/usb-…-if00\"",
                ScannerInterface::Hid => "e.g. \"/dev/input/by-id/usb-…-event-kbd\"",
            };
            v.error(
                format!("{at}.{required}"),
                format!("missing field `{required}`, required for interface = \"{own}\" ({hint})"),
            );
        }
        for key in self.present(foreign) {
            let other = match self.interface {
                ScannerInterface::Serial => "hid",
                ScannerInterface::Hid => "serial",
            };
            v.error(
                format!("{at}.{key}"),
                format!(
                    "`{key}` is a setting of interface = \"{other}\" scanners; this one is interface = \"{own}\""
                ),
            );
        }
        if self.char_timeout_ms == Some(0) {
            v.error(format!("{at}.char_timeout_ms"), "must be at least 1");
        }
        if self.max_line_len == 0 {
            v.error(format!("{at}.max_line_len"), "must be at least 1");
        }
    }

    /// One line describing the scanner's wiring, for `threadline-gateway check`.
    pub fn wiring(&self) -> String {
        let link = match self.link() {
            Some(ScannerLink::Serial(s)) => format!(
                "serial {} at {} baud, framing {}",
                s.port,
                s.baud,
                s.framing.as_str()
            ),
            Some(ScannerLink::Hid(h)) => {
                let gs = match h.gs_substitute {
                    GsSubstitute::CtrlBracket => "Ctrl+] or ALT+0029".to_owned(),
                    GsSubstitute::Char(c) => format!("{c:?}, Ctrl+] or ALT+0029"),
                };
                format!(
                    "hid {} (exclusive grab), layout {}, terminator {}, GS as {gs}, char timeout {} ms",
                    h.device,
                    h.layout.as_str(),
                    h.terminator.as_str(),
                    h.char_timeout_ms
                )
            }
            None => format!("{} (no port / device)", self.interface.as_str()),
        };
        format!(
            "{}: {link} → station {} ({}, dedup {} ms, max {} bytes)",
            self.id,
            self.station,
            self.kind.as_str(),
            self.dedup_ms,
            self.max_line_len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs_substitute_forms() {
        assert_eq!(
            parse_gs_substitute("ctrl+]").unwrap(),
            GsSubstitute::CtrlBracket
        );
        assert_eq!(
            parse_gs_substitute("Ctrl+]").unwrap(),
            GsSubstitute::CtrlBracket
        );
        assert_eq!(parse_gs_substitute("~").unwrap(), GsSubstitute::Char('~'));
        assert_eq!(parse_gs_substitute("§").unwrap(), GsSubstitute::Char('§'));
        for bad in ["", "~~", "A", "5", " ", "\t"] {
            assert!(parse_gs_substitute(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_applies_the_defaults() {
        let s = ScannerConfig::serial("s", "/dev/ttyUSB0", "ST10");
        assert_eq!(
            s.link(),
            Some(ScannerLink::Serial(SerialLink {
                port: "/dev/ttyUSB0",
                baud: 9600,
                framing: Framing::Cr
            }))
        );
        let h = ScannerConfig::hid("h", "/dev/input/event3", "ST10");
        assert_eq!(
            h.link(),
            Some(ScannerLink::Hid(HidLink {
                device: "/dev/input/event3",
                layout: KeyboardLayout::Us,
                terminator: Terminator::Enter,
                gs_substitute: GsSubstitute::CtrlBracket,
                char_timeout_ms: 50,
            }))
        );
    }
}
