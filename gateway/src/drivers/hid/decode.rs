//! Key events → lines, the way a keyboard-mode scanner means them.
//!
//! - Shift, Caps Lock (letters only), AltGr (Right Alt on `de` / `fr`, or Ctrl+Left Alt as
//!   Windows scanners send it) select the level; the layout gives the character. Key-up is
//!   tracked for the modifiers; auto-repeat events are ignored (a scanner never holds a key).
//! - The configured terminator (Enter / keypad Enter, or Tab) ends a code; the other one is a
//!   stray framing key and ignored, as a serial reader ignores a stray LF.
//! - The GS1 group separator (ASCII 29) arrives as Ctrl+] — the key right of P
//!   (`KEY_RIGHTBRACE`, `+` on German and `$` on French keyboards, which is the key Windows
//!   maps Ctrl+ to GS in those layouts too) or Ctrl with whatever key types `]` in the layout —,
//!   as ALT+0029 on the keypad, or as the configured `gs_substitute` character. Other Ctrl
//!   combinations become their control characters (Ctrl+A = 1 …), which the line rules reject,
//!   exactly as the same bytes from a serial reader.
//! - ALT+nnnn keypad sequences type ASCII (and, with a leading 0, Latin-1 160–255).
//! - A per-character timeout: when the next key comes more than `char_timeout_ms` after the
//!   previous one (kernel timestamps), or nothing comes for that long (the driver's clock), the
//!   half-typed code is reported as a bad line rather than glued to the next code.
//! - Anything that cannot be text (a key without a character, Alt+letter shortcuts, events the
//!   kernel dropped) marks the line broken: it comes out as a bad line with the reason.
//!
//! Pure and synchronous: events in, lines out; the driver owns the clock and the device.

use super::event::{EV_KEY, EV_SYN, InputEvent, PRESSED, RELEASED, SYN_DROPPED, SYN_REPORT};
use super::keys::{self, *};
use super::layout::{self, Sym};
use crate::drivers::config::{HidLink, KeyboardLayout, Terminator};
use crate::drivers::reader::{Line, LineBuffer};

/// ASCII 29, GS: FNC1 inside GS1 data.
const GS: char = '\u{1d}';

/// Modifier keys held.
#[derive(Debug, Default, Clone, Copy)]
struct Mods {
    lshift: bool,
    rshift: bool,
    lctrl: bool,
    rctrl: bool,
    lalt: bool,
    ralt: bool,
}

impl Mods {
    /// Updates the state for a modifier key; false when `key` is no modifier.
    fn set(&mut self, key: u16, down: bool) -> bool {
        let slot = match key {
            KEY_LEFTSHIFT => &mut self.lshift,
            KEY_RIGHTSHIFT => &mut self.rshift,
            KEY_LEFTCTRL => &mut self.lctrl,
            KEY_RIGHTCTRL => &mut self.rctrl,
            KEY_LEFTALT => &mut self.lalt,
            KEY_RIGHTALT => &mut self.ralt,
            _ => return false,
        };
        *slot = down;
        true
    }

    fn shift(self) -> bool {
        self.lshift || self.rshift
    }

    fn ctrl(self) -> bool {
        self.lctrl || self.rctrl
    }
}

/// Decodes one HID scanner's key events into lines.
#[derive(Debug)]
pub struct KeyDecoder {
    layout: KeyboardLayout,
    terminator: Terminator,
    gs_substitute: Option<char>,
    char_timeout_us: i64,
    char_timeout_ms: u64,
    line: LineBuffer,
    mods: Mods,
    caps_lock: bool,
    /// A dead key's accent waiting for the next key.
    dead: Option<char>,
    /// Keypad digits typed while Alt is held (an ALT+nnnn sequence).
    alt_digits: String,
    /// Kernel time of the last key press, microseconds.
    last_press_us: Option<i64>,
    /// After `SYN_DROPPED`: events are discarded up to the next `SYN_REPORT`.
    dropping: bool,
}

impl KeyDecoder {
    pub fn new(link: &HidLink<'_>, max_line_len: usize) -> KeyDecoder {
        KeyDecoder {
            layout: link.layout,
            terminator: link.terminator,
            gs_substitute: link.gs_substitute.char(),
            char_timeout_us: i64::try_from(link.char_timeout_ms)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            char_timeout_ms: link.char_timeout_ms,
            line: LineBuffer::new(max_line_len),
            mods: Mods::default(),
            caps_lock: false,
            dead: None,
            alt_digits: String::new(),
            last_press_us: None,
            dropping: false,
        }
    }

    /// True while a code is half typed (the driver then runs the per-character timer).
    pub fn pending(&self) -> bool {
        !self.line.is_empty() || self.dead.is_some() || !self.alt_digits.is_empty()
    }

    /// The reason of a code cut by the per-character timeout.
    fn timeout_reason(&self) -> String {
        format!(
            "incomplete code: no {} key within {} ms of the last key (half-typed code; check the \
             scanner's terminator and char_timeout_ms)",
            self.terminator.as_str(),
            self.char_timeout_ms
        )
    }

    /// The per-character timeout expired on the driver's clock: the half-typed code comes out
    /// as a bad line.
    pub fn expire(&mut self, out: &mut Vec<Line>) {
        let why = self.timeout_reason();
        self.abandon(&why, out);
    }

    /// The code being typed will never be finished (timeout, device gone): it comes out as a
    /// bad line with `why` (nothing when nothing is pending).
    pub fn abandon(&mut self, why: &str, out: &mut Vec<Line>) {
        self.alt_digits.clear();
        if let Some(accent) = self.dead.take() {
            out.extend(self.line.push_char(accent));
        }
        out.extend(self.line.abandon(why));
    }

    /// Feeds one event; complete (or bad) lines are appended to `out`.
    pub fn feed(&mut self, ev: &InputEvent, out: &mut Vec<Line>) {
        match (ev.kind, ev.code) {
            (EV_SYN, SYN_DROPPED) => {
                // The kernel lost events for us: the code in progress is not trustworthy and the
                // held modifiers are unknown (a scanner releases them after every character).
                self.line.mark_broken(
                    "input events were dropped by the kernel (SYN_DROPPED) while this code was typed",
                );
                self.mods = Mods::default();
                self.dead = None;
                self.alt_digits.clear();
                self.dropping = true;
            }
            (EV_SYN, SYN_REPORT) => self.dropping = false,
            (EV_KEY, code) if !self.dropping => match ev.value {
                PRESSED => self.press(code, ev.time_us(), out),
                RELEASED => self.release(code, out),
                _ => {} // auto-repeat (2): a scanner never means it
            },
            _ => {} // EV_MSC scan codes, LEDs, …
        }
    }

    fn release(&mut self, code: u16, out: &mut Vec<Line>) {
        let was_alt = self.alt_code_modifier(code);
        self.mods.set(code, false);
        if was_alt && !self.alt_digits.is_empty() {
            let digits = std::mem::take(&mut self.alt_digits);
            match alt_code(&digits) {
                Some(c) => self.type_char(c, out),
                None => self.line.mark_broken(format!(
                    "ALT+{digits} is not a supported character code (ASCII 1–127, or 0160–0255)"
                )),
            }
        }
    }

    /// True for the key whose release ends an ALT+nnnn sequence in this layout.
    fn alt_code_modifier(&self, code: u16) -> bool {
        code == KEY_LEFTALT || (code == KEY_RIGHTALT && !layout::has_altgr(self.layout))
    }

    /// Alt (not AltGr, not Ctrl+Alt) is held: keypad digits form an ALT+nnnn sequence.
    fn alt_held(&self) -> bool {
        let m = self.mods;
        let alt = m.lalt || (m.ralt && !layout::has_altgr(self.layout));
        alt && !m.ctrl()
    }

    /// AltGr is held: Right Alt, or Ctrl+Left Alt (as Windows scanners send it).
    fn altgr_held(&self) -> bool {
        let m = self.mods;
        layout::has_altgr(self.layout) && (m.ralt || (m.ctrl() && m.lalt))
    }

    fn press(&mut self, code: u16, time_us: i64, out: &mut Vec<Line>) {
        if let Some(prev) = self.last_press_us.replace(time_us)
            && time_us.saturating_sub(prev) > self.char_timeout_us
            && self.pending()
        {
            self.expire(out);
        }
        if self.mods.set(code, true) {
            return;
        }
        match code {
            KEY_CAPSLOCK => {
                self.caps_lock = !self.caps_lock;
                return;
            }
            KEY_NUMLOCK | KEY_SCROLLLOCK | KEY_LEFTMETA | KEY_RIGHTMETA => return,
            KEY_ENTER | KEY_KPENTER | KEY_TAB => {
                let ends = match self.terminator {
                    Terminator::Enter => code != KEY_TAB,
                    Terminator::Tab => code == KEY_TAB,
                };
                if ends {
                    self.end_line(out);
                }
                // The other terminator key is a stray framing key, like a stray LF on a
                // serial reader set to CR.
                return;
            }
            _ => {}
        }
        if self.alt_held() {
            match keys::keypad_digit(code) {
                Some(d) if self.alt_digits.len() < 5 => self.alt_digits.push(d),
                Some(_) => self
                    .line
                    .mark_broken("ALT+ sequence longer than 5 digits is no character code"),
                None => self
                    .line
                    .mark_broken(format!("Alt+{} is a shortcut, not text", keys::name(code))),
            }
            return;
        }
        let altgr = self.altgr_held();
        // Ctrl+Left Alt standing for AltGr is not a Ctrl combination; Ctrl with Right Alt is.
        let emulated_altgr = altgr && !self.mods.ralt;
        let ctrl = self.mods.ctrl() && !emulated_altgr;
        let shift = self.mods.shift() ^ (self.caps_lock && layout::is_letter(self.layout, code));
        let sym = layout::symbol(self.layout, code, shift, altgr);
        if ctrl {
            match control_char(code, sym) {
                Some(c) => {
                    self.flush_dead(out);
                    self.type_char(c, out);
                }
                None => self.line.mark_broken(format!(
                    "Ctrl+{} is not text (the GS1 separator is Ctrl+])",
                    keys::name(code)
                )),
            }
            return;
        }
        match sym {
            Some(Sym::Char(c)) => self.type_text(c, out),
            Some(Sym::Dead(accent)) => match self.dead.take() {
                // The same dead key twice types the accent once.
                Some(prev) if prev == accent => self.type_char(accent, out),
                Some(prev) => {
                    self.type_char(prev, out);
                    self.dead = Some(accent);
                }
                None => self.dead = Some(accent),
            },
            None => {
                let level = match (altgr, shift) {
                    (true, _) => " with AltGr",
                    (false, true) => " with Shift",
                    (false, false) => "",
                };
                self.line.mark_broken(format!(
                    "{}{level} types no character in layout {}",
                    keys::name(code),
                    self.layout.as_str()
                ));
            }
        }
    }

    /// A character typed after a possible dead key: Space after a dead key types the accent
    /// alone; another key types the accent, then itself.
    fn type_text(&mut self, c: char, out: &mut Vec<Line>) {
        if let Some(accent) = self.dead.take() {
            self.type_char(accent, out);
            if c == ' ' {
                return;
            }
        }
        self.type_char(c, out);
    }

    fn flush_dead(&mut self, out: &mut Vec<Line>) {
        if let Some(accent) = self.dead.take() {
            self.type_char(accent, out);
        }
    }

    /// Appends one character of the code (the GS substitute becomes GS).
    fn type_char(&mut self, c: char, out: &mut Vec<Line>) {
        let c = if self.gs_substitute == Some(c) { GS } else { c };
        out.extend(self.line.push_char(c));
    }

    fn end_line(&mut self, out: &mut Vec<Line>) {
        self.flush_dead(out);
        if !self.alt_digits.is_empty() {
            self.alt_digits.clear();
            self.line
                .mark_broken("ALT+ sequence not finished (Alt still held) when the code ended");
        }
        out.extend(self.line.end());
    }
}

/// The control character of Ctrl+`key` (`sym` is what the key types at the current level):
/// Ctrl+] (the US `]` position, or the layout's `]`) is GS; Ctrl+letter, `[`, `\`, `^`, `_`
/// follow ASCII.
fn control_char(key: u16, sym: Option<Sym>) -> Option<char> {
    match key {
        KEY_RIGHTBRACE => return Some(GS),
        KEY_LEFTBRACE => return Some('\u{1b}'),
        KEY_BACKSLASH => return Some('\u{1c}'),
        _ => {}
    }
    let c = match sym? {
        Sym::Char(c) | Sym::Dead(c) => c,
    };
    match c {
        ']' => Some(GS),
        '[' => Some('\u{1b}'),
        '\\' => Some('\u{1c}'),
        '^' => Some('\u{1e}'),
        '_' => Some('\u{1f}'),
        c if c.is_ascii_alphabetic() => {
            char::from_u32(u32::from(c.to_ascii_lowercase()) - u32::from('a') + 1)
        }
        _ => None,
    }
}

/// The character of an ALT+nnnn keypad sequence: 1–127 are ASCII (29 = GS), and 0160–0255
/// (with the leading 0 of the Windows "ANSI" form) Latin-1.
fn alt_code(digits: &str) -> Option<char> {
    let n: u32 = digits.parse().ok()?;
    match n {
        1..=127 => char::from_u32(n),
        160..=255 if digits.starts_with('0') => char::from_u32(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::config::GsSubstitute;

    fn link(layout: KeyboardLayout) -> HidLink<'static> {
        HidLink {
            device: "/dev/null",
            layout,
            terminator: Terminator::Enter,
            gs_substitute: GsSubstitute::CtrlBracket,
            char_timeout_ms: 50,
        }
    }

    /// Presses and releases `key` with the modifiers in `held` at time `t`.
    fn tap(d: &mut KeyDecoder, held: &[u16], key: u16, t: i64, out: &mut Vec<Line>) {
        for &m in held {
            d.feed(&InputEvent::key(m, PRESSED, t), out);
        }
        d.feed(&InputEvent::key(key, PRESSED, t), out);
        d.feed(&InputEvent::key(key, RELEASED, t), out);
        for &m in held.iter().rev() {
            d.feed(&InputEvent::key(m, RELEASED, t), out);
        }
    }

    fn code(s: &str) -> Line {
        Line::Code(s.to_owned())
    }

    #[test]
    fn shift_caps_lock_and_repeats() {
        let mut d = KeyDecoder::new(&link(KeyboardLayout::Us), 64);
        let mut out = Vec::new();
        tap(&mut d, &[KEY_LEFTSHIFT], KEY_S, 0, &mut out);
        tap(&mut d, &[KEY_RIGHTSHIFT], KEY_N, 1, &mut out);
        d.feed(&InputEvent::key(KEY_1, PRESSED, 2), &mut out);
        d.feed(&InputEvent::key(KEY_1, 2, 3), &mut out); // auto-repeat: ignored
        d.feed(&InputEvent::key(KEY_1, RELEASED, 4), &mut out);
        tap(&mut d, &[], KEY_CAPSLOCK, 5, &mut out);
        tap(&mut d, &[], KEY_A, 6, &mut out); // caps: A
        tap(&mut d, &[], KEY_2, 7, &mut out); // caps does not shift digits
        tap(&mut d, &[KEY_LEFTSHIFT], KEY_B, 8, &mut out); // caps + shift: b
        tap(&mut d, &[], KEY_ENTER, 9, &mut out);
        assert_eq!(out, vec![code("SN1A2b")]);
    }

    #[test]
    fn gs_as_ctrl_bracket_alt_0029_and_substitute() {
        for layout in [KeyboardLayout::Us, KeyboardLayout::De, KeyboardLayout::Fr] {
            let mut l = link(layout);
            l.gs_substitute = GsSubstitute::Char('~');
            let mut d = KeyDecoder::new(&l, 64);
            let mut out = Vec::new();
            tap(&mut d, &[], KEY_KP1, 0, &mut out);
            tap(&mut d, &[KEY_LEFTCTRL], KEY_RIGHTBRACE, 1, &mut out);
            tap(&mut d, &[], KEY_KP2, 2, &mut out);
            d.feed(&InputEvent::key(KEY_LEFTALT, PRESSED, 3), &mut out);
            for k in [KEY_KP0, KEY_KP0, KEY_KP2, KEY_KP9] {
                tap(&mut d, &[], k, 3, &mut out);
            }
            d.feed(&InputEvent::key(KEY_LEFTALT, RELEASED, 4), &mut out);
            tap(&mut d, &[], KEY_KP3, 5, &mut out);
            for s in layout::strokes_for(layout, '~').unwrap() {
                let mut held = Vec::new();
                if s.shift {
                    held.push(KEY_LEFTSHIFT);
                }
                if s.altgr {
                    held.push(KEY_RIGHTALT);
                }
                tap(&mut d, &held, s.key, 6, &mut out);
            }
            tap(&mut d, &[], KEY_KP4, 7, &mut out);
            tap(&mut d, &[], KEY_KPENTER, 8, &mut out);
            assert_eq!(out, vec![code("1\u{1d}2\u{1d}3\u{1d}4")], "{layout:?}");
        }
    }

    #[test]
    fn ctrl_with_the_layouts_bracket_and_altgr_as_ctrl_alt() {
        // German: `]` is AltGr+9; Ctrl+AltGr+9 is GS too, and Ctrl+Left Alt+Q is AltGr+Q = @.
        let mut d = KeyDecoder::new(&link(KeyboardLayout::De), 64);
        let mut out = Vec::new();
        tap(&mut d, &[], KEY_A, 0, &mut out);
        tap(&mut d, &[KEY_LEFTCTRL, KEY_RIGHTALT], KEY_9, 1, &mut out);
        tap(&mut d, &[KEY_LEFTCTRL, KEY_LEFTALT], KEY_Q, 2, &mut out);
        tap(&mut d, &[], KEY_ENTER, 3, &mut out);
        assert_eq!(out, vec![code("a\u{1d}@")]);
    }

    #[test]
    fn dead_keys() {
        let mut d = KeyDecoder::new(&link(KeyboardLayout::De), 64);
        let mut out = Vec::new();
        tap(&mut d, &[], KEY_GRAVE, 0, &mut out); // ^ (dead)
        tap(&mut d, &[], KEY_SPACE, 1, &mut out); // → ^
        tap(&mut d, &[], KEY_GRAVE, 2, &mut out);
        tap(&mut d, &[], KEY_GRAVE, 3, &mut out); // ^^ → ^
        tap(&mut d, &[KEY_LEFTSHIFT], KEY_EQUAL, 4, &mut out); // ` (dead)
        tap(&mut d, &[], KEY_1, 5, &mut out); // → `1
        tap(&mut d, &[], KEY_ENTER, 6, &mut out);
        assert_eq!(out, vec![code("^^`1")]);
    }

    #[test]
    fn terminator_tab_and_stray_enter() {
        let mut l = link(KeyboardLayout::Us);
        l.terminator = Terminator::Tab;
        let mut d = KeyDecoder::new(&l, 64);
        let mut out = Vec::new();
        tap(&mut d, &[], KEY_A, 0, &mut out);
        tap(&mut d, &[], KEY_ENTER, 1, &mut out); // stray: ignored
        tap(&mut d, &[], KEY_B, 2, &mut out);
        tap(&mut d, &[], KEY_TAB, 3, &mut out);
        assert_eq!(out, vec![code("ab")]);
    }

    #[test]
    fn timestamp_gap_splits_half_codes() {
        let mut d = KeyDecoder::new(&link(KeyboardLayout::Us), 64);
        let mut out = Vec::new();
        tap(&mut d, &[], KEY_A, 0, &mut out);
        tap(&mut d, &[], KEY_B, 50_000, &mut out); // exactly the timeout: still the same code
        assert!(out.is_empty());
        tap(&mut d, &[], KEY_C, 100_001, &mut out); // > 50 ms later
        assert!(
            matches!(&out[..], [Line::Bad { raw, error }] if raw == "ab" && error.contains("no enter key within 50 ms")),
            "{out:?}"
        );
        tap(&mut d, &[], KEY_ENTER, 100_002, &mut out);
        assert_eq!(out[1], code("c"));
    }

    #[test]
    fn what_is_not_text_is_reported() {
        let mut d = KeyDecoder::new(&link(KeyboardLayout::Us), 64);
        let mut out = Vec::new();
        tap(&mut d, &[], KEY_A, 0, &mut out);
        tap(&mut d, &[], KEY_ESC, 1, &mut out);
        tap(&mut d, &[], KEY_ENTER, 2, &mut out);
        tap(&mut d, &[KEY_LEFTALT], KEY_F, 3, &mut out);
        tap(&mut d, &[], KEY_ENTER, 4, &mut out);
        tap(&mut d, &[KEY_LEFTCTRL], KEY_1, 5, &mut out);
        tap(&mut d, &[], KEY_ENTER, 6, &mut out);
        // Ctrl+D is EOT, a control character: rejected like the same byte from a serial port.
        tap(&mut d, &[KEY_LEFTCTRL], KEY_D, 7, &mut out);
        tap(&mut d, &[], KEY_ENTER, 8, &mut out);
        d.feed(&InputEvent::key(KEY_LEFTALT, PRESSED, 9), &mut out);
        tap(&mut d, &[], KEY_KP9, 9, &mut out);
        tap(&mut d, &[], KEY_KP9, 9, &mut out);
        tap(&mut d, &[], KEY_KP9, 9, &mut out);
        d.feed(&InputEvent::key(KEY_LEFTALT, RELEASED, 9), &mut out);
        tap(&mut d, &[], KEY_ENTER, 10, &mut out);
        let errors: Vec<&str> = out
            .iter()
            .map(|l| match l {
                Line::Bad { error, .. } => error.as_str(),
                Line::Code(c) => panic!("unexpected code {c:?}"),
            })
            .collect();
        assert!(
            errors[0].contains("KEY_ESC types no character"),
            "{errors:?}"
        );
        assert!(errors[1].contains("Alt+KEY_F is a shortcut"), "{errors:?}");
        assert!(errors[2].contains("Ctrl+KEY_1 is not text"), "{errors:?}");
        assert_eq!(errors[3], "control characters in the code");
        assert!(errors[4].contains("ALT+999"), "{errors:?}");
        assert_eq!(errors.len(), 5);
    }

    #[test]
    fn syn_dropped_breaks_the_code_in_progress() {
        let mut d = KeyDecoder::new(&link(KeyboardLayout::Us), 64);
        let mut out = Vec::new();
        tap(&mut d, &[], KEY_A, 0, &mut out);
        d.feed(&InputEvent::key(KEY_LEFTSHIFT, PRESSED, 1), &mut out);
        d.feed(&InputEvent::syn(SYN_DROPPED, 1), &mut out);
        tap(&mut d, &[], KEY_B, 1, &mut out); // discarded up to SYN_REPORT
        d.feed(&InputEvent::syn(SYN_REPORT, 1), &mut out);
        tap(&mut d, &[], KEY_C, 2, &mut out); // shift state was reset
        tap(&mut d, &[], KEY_ENTER, 3, &mut out);
        assert!(
            matches!(&out[..], [Line::Bad { raw, error }] if raw == "ac" && error.contains("SYN_DROPPED")),
            "{out:?}"
        );
        tap(&mut d, &[], KEY_D, 4, &mut out);
        tap(&mut d, &[], KEY_ENTER, 5, &mut out);
        assert_eq!(out[1], code("d"));
    }

    #[test]
    fn alt_codes() {
        assert_eq!(alt_code("0029"), Some(GS));
        assert_eq!(alt_code("29"), Some(GS));
        assert_eq!(alt_code("65"), Some('A'));
        assert_eq!(alt_code("0228"), Some('ä'));
        assert_eq!(alt_code("228"), None, "OEM code page: not supported");
        assert_eq!(alt_code("0"), None);
        assert_eq!(alt_code("0300"), None);
    }
}
