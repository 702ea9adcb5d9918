//! Which character a key types under a keyboard layout, and back.
//!
//! The tables follow the standard Linux (XKB) and Windows layouts a scanner emulates when its
//! "keyboard country" is set to USA, Germany or France, for the characters barcodes carry: the
//! main block at the levels base, Shift and AltGr, the space bar and the numeric keypad (taken
//! as Num Lock on, which is what scanners that type digits on the keypad assume). Dead keys
//! (German `^ ´ \``, French `^ ¨`) are marked: they type their accent when followed by Space or
//! by themselves; followed by another key they type the accent and then that key (no
//! composition into `â`: GS1 data and serial numbers never contain accented letters).
//!
//! Characters outside these tables (AltGr symbols such as `ł` or `¶`) are not typed by
//! scanners for barcode data; a key without a character is reported by the decoder, not guessed.

use super::keys::*;
use crate::drivers::config::KeyboardLayout;

/// What a key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym {
    Char(char),
    /// A dead key: the accent waits for the next key.
    Dead(char),
}

/// One key press of [`strokes_for`]: the key and the modifiers held for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    pub key: u16,
    pub shift: bool,
    pub altgr: bool,
}

/// "No character at this level" in the row strings below.
const NONE: char = '∅';

const DIGITS: [u16; 13] = [
    KEY_GRAVE, KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_0, KEY_MINUS,
    KEY_EQUAL,
];
const TOP: [u16; 12] = [
    KEY_Q,
    KEY_W,
    KEY_E,
    KEY_R,
    KEY_T,
    KEY_Y,
    KEY_U,
    KEY_I,
    KEY_O,
    KEY_P,
    KEY_LEFTBRACE,
    KEY_RIGHTBRACE,
];
/// `KEY_BACKSLASH` is above Enter on US keyboards and left of Enter on ISO (German, French)
/// ones: the same code.
const HOME: [u16; 12] = [
    KEY_A,
    KEY_S,
    KEY_D,
    KEY_F,
    KEY_G,
    KEY_H,
    KEY_J,
    KEY_K,
    KEY_L,
    KEY_SEMICOLON,
    KEY_APOSTROPHE,
    KEY_BACKSLASH,
];
/// `KEY_102ND` is the extra key left of Z on ISO keyboards (`<>`).
const BOTTOM: [u16; 11] = [
    KEY_102ND, KEY_Z, KEY_X, KEY_C, KEY_V, KEY_B, KEY_N, KEY_M, KEY_COMMA, KEY_DOT, KEY_SLASH,
];

/// One row of keys: its codes and, per level, the characters in the same order (`∅` = none;
/// a short or empty string leaves the rest without a character).
struct Row {
    keys: &'static [u16],
    base: &'static str,
    shift: &'static str,
    altgr: &'static str,
}

struct Table {
    rows: [Row; 4],
    /// (key, shifted) of the dead keys.
    dead: &'static [(u16, bool)],
    /// What the keypad's decimal key types.
    kp_decimal: char,
    /// Right Alt is AltGr (a third level) rather than a second Alt.
    altgr: bool,
}

const US: Table = Table {
    rows: [
        Row {
            keys: &DIGITS,
            base: "`1234567890-=",
            shift: "~!@#$%^&*()_+",
            altgr: "",
        },
        Row {
            keys: &TOP,
            base: "qwertyuiop[]",
            shift: "QWERTYUIOP{}",
            altgr: "",
        },
        Row {
            keys: &HOME,
            base: "asdfghjkl;'\\",
            shift: "ASDFGHJKL:\"|",
            altgr: "",
        },
        Row {
            keys: &BOTTOM,
            base: "∅zxcvbnm,./",
            shift: "∅ZXCVBNM<>?",
            altgr: "",
        },
    ],
    dead: &[],
    kp_decimal: '.',
    altgr: false,
};

const DE: Table = Table {
    rows: [
        Row {
            keys: &DIGITS,
            base: "^1234567890ß´",
            shift: "°!\"§$%&/()=?`",
            altgr: "∅¹²³¼½¬{[]}\\",
        },
        Row {
            keys: &TOP,
            base: "qwertzuiopü+",
            shift: "QWERTZUIOPÜ*",
            altgr: "@∅€∅∅∅∅∅∅∅∅~",
        },
        Row {
            keys: &HOME,
            base: "asdfghjklöä#",
            shift: "ASDFGHJKLÖÄ'",
            altgr: "",
        },
        Row {
            keys: &BOTTOM,
            base: "<yxcvbnm,.-",
            shift: ">YXCVBNM;:_",
            altgr: "|∅∅∅∅∅∅µ",
        },
    ],
    dead: &[(KEY_GRAVE, false), (KEY_EQUAL, false), (KEY_EQUAL, true)],
    kp_decimal: ',',
    altgr: true,
};

const FR: Table = Table {
    rows: [
        Row {
            keys: &DIGITS,
            base: "²&é\"'(-è_çà)=",
            shift: "∅1234567890°+",
            altgr: "∅∅~#{[|`\\^@]}",
        },
        Row {
            keys: &TOP,
            base: "azertyuiop^$",
            shift: "AZERTYUIOP¨£",
            altgr: "∅∅€∅∅∅∅∅∅∅∅¤",
        },
        Row {
            keys: &HOME,
            base: "qsdfghjklmù*",
            shift: "QSDFGHJKLM%µ",
            altgr: "",
        },
        Row {
            keys: &BOTTOM,
            base: "<wxcvbn,;:!",
            shift: ">WXCVBN?./§",
            altgr: "",
        },
    ],
    dead: &[(KEY_LEFTBRACE, false), (KEY_LEFTBRACE, true)],
    kp_decimal: '.',
    altgr: true,
};

fn table(layout: KeyboardLayout) -> &'static Table {
    match layout {
        KeyboardLayout::Us => &US,
        KeyboardLayout::De => &DE,
        KeyboardLayout::Fr => &FR,
    }
}

/// Right Alt is AltGr in this layout (and Ctrl+Left Alt stands for it, as on Windows).
pub fn has_altgr(layout: KeyboardLayout) -> bool {
    table(layout).altgr
}

/// The character of `key` at one level of the main block, before dead-key marking.
fn main_block(t: &Table, key: u16, shift: bool, altgr: bool) -> Option<char> {
    let row = t.rows.iter().find(|r| r.keys.contains(&key))?;
    let i = row.keys.iter().position(|&k| k == key)?;
    let level = match (altgr, shift) {
        (true, _) => row.altgr,
        (false, true) => row.shift,
        (false, false) => row.base,
    };
    level.chars().nth(i).filter(|&c| c != NONE)
}

/// What `key` types in `layout` with Shift and AltGr as given (Caps Lock already applied to
/// `shift` by the caller, see [`is_letter`]); `None` when it types no character.
pub fn symbol(layout: KeyboardLayout, key: u16, shift: bool, altgr: bool) -> Option<Sym> {
    let t = table(layout);
    let keypad = match key {
        KEY_SPACE => Some(' '),
        KEY_KPASTERISK => Some('*'),
        KEY_KPMINUS => Some('-'),
        KEY_KPPLUS => Some('+'),
        KEY_KPSLASH => Some('/'),
        KEY_KPDOT => Some(t.kp_decimal),
        k => keypad_digit(k),
    };
    if let Some(c) = keypad {
        return Some(Sym::Char(c));
    }
    let altgr = altgr && t.altgr;
    let c = main_block(t, key, shift, altgr)?;
    let dead = !altgr && t.dead.contains(&(key, shift));
    Some(if dead { Sym::Dead(c) } else { Sym::Char(c) })
}

/// True for a letter key (Caps Lock inverts Shift on it): its base character is a lower-case
/// letter whose upper case is its shifted character (`ü`/`Ü` yes, French `é`/`2` no).
pub fn is_letter(layout: KeyboardLayout, key: u16) -> bool {
    let t = table(layout);
    match (
        main_block(t, key, false, false),
        main_block(t, key, true, false),
    ) {
        (Some(lower), Some(upper)) => {
            lower.is_lowercase() && lower.to_uppercase().eq(std::iter::once(upper))
        }
        _ => false,
    }
}

/// The key presses that type `ch` in `layout` on the main block (a dead accent is followed
/// by Space), preferring the base level, then Shift, then AltGr; `None` when the layout has no
/// key for it. What a scanner set to this layout sends, and what the tests type.
pub fn strokes_for(layout: KeyboardLayout, ch: char) -> Option<Vec<Stroke>> {
    let t = table(layout);
    if ch == ' ' {
        return Some(vec![Stroke {
            key: KEY_SPACE,
            shift: false,
            altgr: false,
        }]);
    }
    for (shift, altgr) in [(false, false), (true, false), (false, true)] {
        if altgr && !t.altgr {
            continue;
        }
        for row in &t.rows {
            for &key in row.keys {
                match symbol(layout, key, shift, altgr) {
                    Some(Sym::Char(c)) if c == ch => {
                        return Some(vec![Stroke { key, shift, altgr }]);
                    }
                    Some(Sym::Dead(c)) if c == ch => {
                        let space = Stroke {
                            key: KEY_SPACE,
                            shift: false,
                            altgr: false,
                        };
                        return Some(vec![Stroke { key, shift, altgr }, space]);
                    }
                    _ => {}
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyboardLayout::{De, Fr, Us};

    fn ch(layout: KeyboardLayout, key: u16, shift: bool, altgr: bool) -> Option<char> {
        match symbol(layout, key, shift, altgr) {
            Some(Sym::Char(c)) => Some(c),
            _ => None,
        }
    }

    #[test]
    fn rows_have_one_character_per_key() {
        for t in [&US, &DE, &FR] {
            for row in &t.rows {
                assert_eq!(row.base.chars().count(), row.keys.len(), "{}", row.base);
                assert_eq!(row.shift.chars().count(), row.keys.len(), "{}", row.shift);
                assert!(row.altgr.chars().count() <= row.keys.len(), "{}", row.altgr);
            }
        }
    }

    #[test]
    fn us_keys() {
        assert_eq!(ch(Us, KEY_A, false, false), Some('a'));
        assert_eq!(ch(Us, KEY_A, true, false), Some('A'));
        assert_eq!(ch(Us, KEY_RIGHTBRACE, false, false), Some(']'));
        assert_eq!(ch(Us, KEY_2, true, false), Some('@'));
        assert_eq!(ch(Us, KEY_MINUS, true, false), Some('_'));
        assert_eq!(ch(Us, KEY_Y, false, false), Some('y'));
        assert_eq!(ch(Us, KEY_Z, false, false), Some('z'));
        assert_eq!(ch(Us, KEY_102ND, false, false), None);
        // No AltGr level on US: Right Alt is Alt.
        assert_eq!(ch(Us, KEY_Q, false, true), Some('q'));
        assert!(!has_altgr(Us));
    }

    #[test]
    fn german_swaps_y_and_z_and_moves_symbols() {
        assert_eq!(ch(De, KEY_Y, false, false), Some('z'));
        assert_eq!(ch(De, KEY_Z, false, false), Some('y'));
        assert_eq!(ch(De, KEY_Z, true, false), Some('Y'));
        assert_eq!(ch(De, KEY_7, true, false), Some('/'));
        assert_eq!(ch(De, KEY_SLASH, false, false), Some('-'));
        assert_eq!(ch(De, KEY_SLASH, true, false), Some('_'));
        assert_eq!(ch(De, KEY_0, true, false), Some('='));
        assert_eq!(ch(De, KEY_8, true, false), Some('('));
        assert_eq!(ch(De, KEY_RIGHTBRACE, false, false), Some('+'));
        assert_eq!(ch(De, KEY_RIGHTBRACE, true, false), Some('*'));
        assert_eq!(ch(De, KEY_Q, false, true), Some('@'));
        assert_eq!(ch(De, KEY_8, false, true), Some('['));
        assert_eq!(ch(De, KEY_9, false, true), Some(']'));
        assert_eq!(ch(De, KEY_MINUS, false, true), Some('\\'));
        assert_eq!(ch(De, KEY_102ND, false, true), Some('|'));
        assert_eq!(ch(De, KEY_SEMICOLON, false, false), Some('ö'));
        assert_eq!(ch(De, KEY_KPDOT, false, false), Some(','));
        assert_eq!(symbol(De, KEY_GRAVE, false, false), Some(Sym::Dead('^')));
        assert!(is_letter(De, KEY_LEFTBRACE), "ü");
        assert!(!is_letter(De, KEY_1));
    }

    #[test]
    fn french_azerty_has_digits_on_shift() {
        assert_eq!(ch(Fr, KEY_Q, false, false), Some('a'));
        assert_eq!(ch(Fr, KEY_A, false, false), Some('q'));
        assert_eq!(ch(Fr, KEY_W, false, false), Some('z'));
        assert_eq!(ch(Fr, KEY_Z, false, false), Some('w'));
        assert_eq!(ch(Fr, KEY_SEMICOLON, false, false), Some('m'));
        assert_eq!(ch(Fr, KEY_M, false, false), Some(','));
        assert_eq!(ch(Fr, KEY_1, false, false), Some('&'));
        assert_eq!(ch(Fr, KEY_1, true, false), Some('1'));
        assert_eq!(ch(Fr, KEY_0, true, false), Some('0'));
        assert_eq!(ch(Fr, KEY_6, false, false), Some('-'));
        assert_eq!(ch(Fr, KEY_8, false, false), Some('_'));
        assert_eq!(ch(Fr, KEY_DOT, true, false), Some('/'));
        assert_eq!(ch(Fr, KEY_COMMA, true, false), Some('.'));
        assert_eq!(ch(Fr, KEY_0, false, true), Some('@'));
        assert_eq!(ch(Fr, KEY_MINUS, false, true), Some(']'));
        assert_eq!(ch(Fr, KEY_3, false, true), Some('#'));
        assert_eq!(
            symbol(Fr, KEY_LEFTBRACE, false, false),
            Some(Sym::Dead('^'))
        );
        assert!(!is_letter(Fr, KEY_2), "é/2 is not a letter pair");
        assert!(is_letter(Fr, KEY_Q));
    }

    #[test]
    fn every_printable_ascii_character_has_strokes_and_they_type_it() {
        for layout in [Us, De, Fr] {
            for c in (0x20u8..0x7f).map(char::from) {
                let strokes = strokes_for(layout, c)
                    .unwrap_or_else(|| panic!("{layout:?} has no key for {c:?}"));
                let first = strokes[0];
                let sym = symbol(layout, first.key, first.shift, first.altgr);
                assert!(
                    matches!(sym, Some(Sym::Char(x) | Sym::Dead(x)) if x == c),
                    "{layout:?} {c:?}: {strokes:?} types {sym:?}"
                );
            }
        }
    }
}
