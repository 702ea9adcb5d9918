//! GS1 element strings as carried by GS1-128, GS1 DataMatrix and GS1 QR symbols, and the GS1
//! mod-10 check digit of GTINs, SSCCs and GLNs.
//!
//! Accepted input forms (what scanners and people actually produce):
//! - raw scanner data, optionally starting with a GS1 symbology identifier (`]C1` GS1-128,
//!   `]d2` GS1 DataMatrix, `]Q3` GS1 QR, `]e0` GS1 DataBar) and/or a leading FNC1 transmitted as
//!   ASCII 29 (GS, `\x1d`); variable-length fields end at GS or at the end of the data;
//! - the human-readable interpretation with parentheses, `(01)09506000134352(10)ABC`.
//!
//! Positions in errors are 0-based byte offsets into the input exactly as given (including any
//! symbology identifier), so an operator can count to the bad character.
//!
//! Supported AIs (GS1 General Specifications §3): 00, 01, 02, 10, 11, 12, 13, 15, 16, 17, 20, 21,
//! 22, 30, 37, 240, 241, 250, 251, 400, 401, 403, 410–415, 420, the fixed-length measures
//! 310n–316n, 320n–337n, 340n–357n, 360n–369n (n = implied decimals 0–5) and the company
//! internal AIs 90–99. Anything else is an error naming the AI: a label we cannot fully
//! understand must not be half-used.

use chrono::{Datelike, NaiveDate, Utc};
use thiserror::Error;

/// ASCII 29, how scanners transmit FNC1 in the middle of GS1 data.
pub const GS: char = '\u{1d}';

/// Why a GS1 element string, Digital Link URI or GS1 key is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Gs1Error {
    #[error("empty GS1 data")]
    Empty,
    #[error("symbology identifier {id} is not a GS1 symbology (expected ]C1, ]d2, ]Q3 or ]e0)")]
    NotGs1Symbology { id: String },
    #[error("unknown or unsupported AI ({ai}) at position {position}")]
    UnknownAi { ai: String, position: usize },
    #[error("expected an AI (digits) at position {position}, found {found:?}")]
    ExpectedAi { position: usize, found: String },
    #[error("AI ({ai}) needs {expected} characters, got {got} at position {position}")]
    Truncated {
        ai: String,
        expected: usize,
        got: usize,
        position: usize,
    },
    #[error("AI ({ai}) allows at most {max} characters, got {got} at position {position}")]
    TooLong {
        ai: String,
        max: usize,
        got: usize,
        position: usize,
    },
    #[error("AI ({ai}) has an empty value at position {position}")]
    EmptyValue { ai: String, position: usize },
    #[error("AI ({ai}) must be digits only, found {ch:?} at position {position}")]
    NotNumeric {
        ai: String,
        ch: char,
        position: usize,
    },
    #[error("AI ({ai}) contains {ch:?} at position {position}, which GS1 does not allow")]
    InvalidCharacter {
        ai: String,
        ch: char,
        position: usize,
    },
    #[error("bad check digit: expected {expected}, got {got} in {what} {value}")]
    BadCheckDigit {
        what: String,
        value: String,
        expected: u8,
        got: u8,
    },
    #[error("AI ({ai}) date {value:?} is not a valid YYMMDD date: {reason}")]
    BadDate {
        ai: String,
        value: String,
        reason: String,
    },
    #[error("{what} must be {allowed} digits, got {value:?}")]
    BadKey {
        what: &'static str,
        allowed: &'static str,
        value: String,
    },
    #[error("AI ({ai}) appears twice with different values {first:?} and {second:?}")]
    Conflicting {
        ai: String,
        first: String,
        second: String,
    },
    #[error("unbalanced parentheses at position {position} (expected \"(AI)value\")")]
    BadParentheses { position: usize },
    #[error("not a GS1 Digital Link URI: {reason}")]
    BadDigitalLink { reason: String },
}

/// One AI and its value, e.g. `{ ai: "01", value: "09506000134352" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gs1Element {
    pub ai: String,
    pub value: String,
}

impl Gs1Element {
    pub fn new(ai: impl Into<String>, value: impl Into<String>) -> Self {
        Gs1Element {
            ai: ai.into(),
            value: value.into(),
        }
    }

    /// For a measure AI (`310n` … `369n`), the value with its `n` implied decimals applied:
    /// `3103` + `001250` → 1.25. `None` for any other AI.
    pub fn measure(&self) -> Option<f64> {
        if self.ai.len() != 4 || !self.ai.is_ascii() || !is_measure_prefix(&self.ai[..3]) {
            return None;
        }
        let decimals = self.ai[3..].parse::<i32>().ok()?;
        let raw = self.value.parse::<u32>().ok()?;
        Some(f64::from(raw) / 10f64.powi(decimals))
    }
}

/// The elements of one scanned GS1 code, in the order they appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gs1Elements {
    pub elements: Vec<Gs1Element>,
}

impl Gs1Elements {
    /// The value of `ai`, if present.
    pub fn get(&self, ai: &str) -> Option<&str> {
        self.elements
            .iter()
            .find(|e| e.ai == ai)
            .map(|e| e.value.as_str())
    }

    /// AI 01, the GTIN-14 of the trade item.
    pub fn gtin(&self) -> Option<&str> {
        self.get("01")
    }

    /// AI 00, the SSCC-18 of a logistic unit.
    pub fn sscc(&self) -> Option<&str> {
        self.get("00")
    }

    /// AI 10, batch or lot number.
    pub fn lot(&self) -> Option<&str> {
        self.get("10")
    }

    /// AI 21, serial number.
    pub fn serial(&self) -> Option<&str> {
        self.get("21")
    }

    /// AI 37, count of trade items contained in a logistic unit.
    pub fn count(&self) -> Option<u64> {
        self.get("37").and_then(|v| v.parse().ok())
    }

    /// AI 17, expiration date (day `00` = last day of the month; century per GS1's sliding window
    /// relative to the current year).
    pub fn expiry(&self) -> Option<NaiveDate> {
        self.get("17")
            .and_then(|v| resolve_date(v, Utc::now().year()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Gs1Element> {
        self.elements.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The human-readable form, `(01)09506000134352(10)ABC`.
    pub fn to_hri(&self) -> String {
        self.elements
            .iter()
            .map(|e| format!("({}){}", e.ai, e.value))
            .collect()
    }

    /// The data as a scanner transmits it (without symbology identifier): AIs and values
    /// concatenated, a GS after every variable-length value that is not the last one.
    pub fn to_element_string(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.elements.iter().enumerate() {
            out.push_str(&e.ai);
            out.push_str(&e.value);
            let fixed = lookup(&e.ai).is_some_and(|d| matches!(d.length, Length::Fixed(_)));
            if !fixed && i + 1 < self.elements.len() {
                out.push(GS);
            }
        }
        out
    }

    /// Appends an element, refusing a second, different value for the same AI.
    pub(crate) fn push(&mut self, element: Gs1Element) -> Result<(), Gs1Error> {
        if let Some(first) = self.get(&element.ai) {
            if first == element.value {
                return Ok(());
            }
            return Err(Gs1Error::Conflicting {
                ai: element.ai,
                first: first.to_owned(),
                second: element.value,
            });
        }
        self.elements.push(element);
        Ok(())
    }
}

impl std::fmt::Display for Gs1Elements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hri())
    }
}

/// Which characters a value may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Digits only.
    Numeric,
    /// GS1 AI encodable character set 82.
    Alphanumeric,
    /// YYMMDD.
    Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    Fixed(usize),
    Max(usize),
}

/// What the GS1 General Specifications say about one AI.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AiDef {
    pub(crate) title: &'static str,
    pub(crate) format: Format,
    pub(crate) length: Length,
    /// The last digit is a GS1 mod-10 check digit (GTIN, SSCC, GLN).
    pub(crate) check_digit: bool,
}

const fn def(title: &'static str, format: Format, length: Length, check_digit: bool) -> AiDef {
    AiDef {
        title,
        format,
        length,
        check_digit,
    }
}

use Format::{Alphanumeric as X, Date as D, Numeric as N};
use Length::{Fixed, Max};

/// The AIs with a fixed code, as in the GS1 General Specifications' AI table.
const AIS: &[(&str, AiDef)] = &[
    ("00", def("SSCC", N, Fixed(18), true)),
    ("01", def("GTIN", N, Fixed(14), true)),
    ("02", def("CONTENT", N, Fixed(14), true)),
    ("10", def("BATCH/LOT", X, Max(20), false)),
    ("11", def("PROD DATE", D, Fixed(6), false)),
    ("12", def("DUE DATE", D, Fixed(6), false)),
    ("13", def("PACK DATE", D, Fixed(6), false)),
    ("15", def("BEST BEFORE", D, Fixed(6), false)),
    ("16", def("SELL BY", D, Fixed(6), false)),
    ("17", def("USE BY OR EXPIRY", D, Fixed(6), false)),
    ("20", def("VARIANT", N, Fixed(2), false)),
    ("21", def("SERIAL", X, Max(20), false)),
    ("22", def("CPV", X, Max(20), false)),
    ("30", def("VAR. COUNT", N, Max(8), false)),
    ("37", def("COUNT", N, Max(8), false)),
    ("240", def("ADDITIONAL ID", X, Max(30), false)),
    ("241", def("CUST. PART No.", X, Max(30), false)),
    ("250", def("SECONDARY SERIAL", X, Max(30), false)),
    ("251", def("REF. TO SOURCE", X, Max(30), false)),
    ("400", def("ORDER NUMBER", X, Max(30), false)),
    ("401", def("GINC", X, Max(30), false)),
    ("403", def("ROUTE", X, Max(30), false)),
    ("410", def("SHIP TO LOC", N, Fixed(13), true)),
    ("411", def("BILL TO", N, Fixed(13), true)),
    ("412", def("PURCHASE FROM", N, Fixed(13), true)),
    ("413", def("SHIP FOR LOC", N, Fixed(13), true)),
    ("414", def("LOC No.", N, Fixed(13), true)),
    ("415", def("PAY TO", N, Fixed(13), true)),
    ("420", def("SHIP TO POST", X, Max(20), false)),
    ("90", def("INTERNAL", X, Max(30), false)),
    ("91", def("INTERNAL", X, Max(90), false)),
    ("92", def("INTERNAL", X, Max(90), false)),
    ("93", def("INTERNAL", X, Max(90), false)),
    ("94", def("INTERNAL", X, Max(90), false)),
    ("95", def("INTERNAL", X, Max(90), false)),
    ("96", def("INTERNAL", X, Max(90), false)),
    ("97", def("INTERNAL", X, Max(90), false)),
    ("98", def("INTERNAL", X, Max(90), false)),
    ("99", def("INTERNAL", X, Max(90), false)),
];

const MEASURE: AiDef = def("MEASURE", N, Fixed(6), false);

/// `310`–`316`, `320`–`337`, `340`–`357`, `360`–`369`: trade and logistic measures, `N4+N6`.
fn is_measure_prefix(p: &str) -> bool {
    matches!(
        p.parse::<u16>(),
        Ok(310..=316 | 320..=337 | 340..=357 | 360..=369)
    ) && p.len() == 3
}

/// The definition of exactly this AI.
pub(crate) fn lookup(ai: &str) -> Option<AiDef> {
    if let Some((_, d)) = AIS.iter().find(|(a, _)| *a == ai) {
        return Some(*d);
    }
    let b = ai.as_bytes();
    if b.len() == 4 && ai.is_ascii() && is_measure_prefix(&ai[..3]) && (b'0'..=b'5').contains(&b[3])
    {
        return Some(MEASURE);
    }
    None
}

/// How long an AI starting with these two digits is, per the GS1 AI length-by-prefix table;
/// used only to name an unknown AI correctly in an error.
fn ai_len_by_prefix(p: &[u8]) -> usize {
    match p {
        [b'2', b'3'..=b'9'] | [b'4', b'0'..=b'2'] | [b'7', b'1'] => 3,
        [b'3', b'1'..=b'6' | b'9'] | [b'4', b'3'] | [b'7', b'0' | b'2'] | [b'8', _] => 4,
        _ => 2,
    }
}

/// True for the 82 characters of the GS1 AI encodable character set 82.
fn is_cset82(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '"'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | '-'
                | '.'
                | '/'
                | ':'
                | ';'
                | '<'
                | '='
                | '>'
                | '?'
                | '_'
        )
}

/// Checks a value against its AI's definition: characters, length, check digit, date.
/// `position` is where the value starts in the input, for error messages.
pub(crate) fn validate_value(
    ai: &str,
    def: &AiDef,
    value: &str,
    position: usize,
) -> Result<(), Gs1Error> {
    if value.is_empty() {
        return Err(Gs1Error::EmptyValue {
            ai: ai.to_owned(),
            position,
        });
    }
    for (i, c) in value.char_indices() {
        let ok = match def.format {
            Format::Numeric | Format::Date => c.is_ascii_digit(),
            Format::Alphanumeric => is_cset82(c),
        };
        if !ok {
            let position = position + i;
            let ai = ai.to_owned();
            return Err(match def.format {
                Format::Numeric | Format::Date => Gs1Error::NotNumeric {
                    ai,
                    ch: c,
                    position,
                },
                Format::Alphanumeric => Gs1Error::InvalidCharacter {
                    ai,
                    ch: c,
                    position,
                },
            });
        }
    }
    let len = value.len();
    match def.length {
        Length::Fixed(n) if len < n => {
            return Err(Gs1Error::Truncated {
                ai: ai.to_owned(),
                expected: n,
                got: len,
                position,
            });
        }
        Length::Fixed(n) | Length::Max(n) if len > n => {
            return Err(Gs1Error::TooLong {
                ai: ai.to_owned(),
                max: n,
                got: len,
                position,
            });
        }
        _ => {}
    }
    if def.check_digit {
        verify_check_digit(&format!("AI ({ai}) {}", def.title), value)?;
    }
    if def.format == Format::Date {
        validate_date(ai, value)?;
    }
    Ok(())
}

/// YYMMDD with month 01–12 and day 00–31 (00 = end of month), the day within the month's
/// length (29 February only in years divisible by four, which holds for every year GS1's
/// sliding window can produce except 2100).
fn validate_date(ai: &str, value: &str) -> Result<(), Gs1Error> {
    let bad = |reason: String| Gs1Error::BadDate {
        ai: ai.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let num = |r: std::ops::Range<usize>| value.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(yy), Some(mm), Some(dd)) = (num(0..2), num(2..4), num(4..6)) else {
        return Err(bad("expected 6 digits".into()));
    };
    if !(1..=12).contains(&mm) {
        return Err(bad(format!("month {mm:02} is not 01-12")));
    }
    let max = days_in_month(mm, yy % 4 == 0);
    if dd > max {
        return Err(bad(format!("day {dd:02} is past the end of month {mm:02}")));
    }
    Ok(())
}

fn days_in_month(mm: u32, leap: bool) -> u32 {
    match mm {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Resolves a GS1 YYMMDD date to a calendar date, per the GS1 General Specifications' century
/// rule relative to `current_year` (a YY more than 50 years ahead belongs to the previous
/// century, more than 49 years back to the next); day `00` means the last day of the month.
pub fn resolve_date(yymmdd: &str, current_year: i32) -> Option<NaiveDate> {
    if yymmdd.len() != 6 || !yymmdd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let yy: i32 = yymmdd[0..2].parse().ok()?;
    let mm: u32 = yymmdd[2..4].parse().ok()?;
    let dd: u32 = yymmdd[4..6].parse().ok()?;
    let century = current_year.div_euclid(100) * 100;
    let diff = yy - current_year.rem_euclid(100);
    let year = if (51..=99).contains(&diff) {
        century - 100 + yy
    } else if (-99..=-50).contains(&diff) {
        century + 100 + yy
    } else {
        century + yy
    };
    if dd == 0 {
        let first_next = if mm == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(year, mm + 1, 1)?
        };
        return first_next.pred_opt();
    }
    NaiveDate::from_ymd_opt(year, mm, dd)
}

/// The GS1 mod-10 check digit of `body` (the digits before the check digit, any length):
/// weights 3, 1, 3, … from the right. Used for GTIN-8/12/13/14, SSCC, GLN.
pub fn gtin_check_digit(body: &str) -> Result<u8, Gs1Error> {
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Gs1Error::BadKey {
            what: "the data before a check digit",
            allowed: "1 or more",
            value: body.to_owned(),
        });
    }
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    // `(10 - sum % 10) % 10` is at most 9.
    Ok(((10 - sum % 10) % 10) as u8)
}

/// Checks the last digit of an all-digit `value` against the mod-10 of the rest.
fn verify_check_digit(what: &str, value: &str) -> Result<(), Gs1Error> {
    let (body, last) = value.split_at(value.len().saturating_sub(1));
    let expected = gtin_check_digit(body)?;
    let got = last
        .bytes()
        .next()
        .map(|b| b.wrapping_sub(b'0'))
        .unwrap_or(0);
    if expected != got {
        return Err(Gs1Error::BadCheckDigit {
            what: what.to_owned(),
            value: value.to_owned(),
            expected,
            got,
        });
    }
    Ok(())
}

/// Validates a GTIN-8, -12, -13 or -14: digits only, right length, right check digit.
pub fn validate_gtin(gtin: &str) -> Result<(), Gs1Error> {
    if !matches!(gtin.len(), 8 | 12 | 13 | 14) || !gtin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Gs1Error::BadKey {
            what: "a GTIN",
            allowed: "8, 12, 13 or 14",
            value: gtin.to_owned(),
        });
    }
    verify_check_digit("GTIN", gtin)
}

/// A valid GTIN-8/12/13/14 as a GTIN-14 (left-padded with zeros), the form AI 01 carries.
pub fn gtin14(gtin: &str) -> Result<String, Gs1Error> {
    validate_gtin(gtin)?;
    Ok(format!("{gtin:0>14}"))
}

/// Validates an SSCC: 18 digits with the right check digit.
pub fn validate_sscc(sscc: &str) -> Result<(), Gs1Error> {
    if sscc.len() != 18 || !sscc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Gs1Error::BadKey {
            what: "an SSCC",
            allowed: "18",
            value: sscc.to_owned(),
        });
    }
    verify_check_digit("SSCC", sscc)
}

/// GS1 symbology identifiers that announce GS1 data.
const GS1_SYMBOLOGIES: [&str; 4] = ["]C1", "]d2", "]Q3", "]e0"];

/// Parses a GS1 element string: scanner data (with or without symbology identifier / leading
/// FNC1) or the parenthesized human-readable form. Every value is checked (length, characters,
/// check digits, dates); an AI this module does not know is an error naming it.
pub fn parse_element_string(input: &str) -> Result<Gs1Elements, Gs1Error> {
    let mut start = 0;
    if input.starts_with(']') {
        let id = input.get(..3).unwrap_or(input);
        if !GS1_SYMBOLOGIES.contains(&id) {
            return Err(Gs1Error::NotGs1Symbology { id: id.to_owned() });
        }
        start = 3;
    }
    let rest = &input[start..];
    if rest.trim_start_matches(GS).is_empty() {
        return Err(Gs1Error::Empty);
    }
    if rest.starts_with('(') {
        parse_hri(input, start)
    } else {
        parse_raw(input, start)
    }
}

/// `AI value [GS] AI value …` from byte `pos` of `input`.
fn parse_raw(input: &str, mut pos: usize) -> Result<Gs1Elements, Gs1Error> {
    let bytes = input.as_bytes();
    let mut out = Gs1Elements::default();
    loop {
        while bytes.get(pos) == Some(&0x1d) {
            pos += 1;
        }
        if pos >= bytes.len() {
            return Ok(out);
        }
        let ai_start = pos;
        let digits = bytes[pos..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits < 2 {
            return Err(Gs1Error::ExpectedAi {
                position: pos,
                found: input[pos..].chars().take(4).collect(),
            });
        }
        // The AI table is prefix-free, so the first length that matches is the AI.
        let Some((ai, def)) = (2..=digits).find_map(|n| {
            let ai = &input[pos..pos + n];
            lookup(ai).map(|d| (ai, d))
        }) else {
            let n = ai_len_by_prefix(&bytes[pos..pos + 2]).min(digits);
            return Err(Gs1Error::UnknownAi {
                ai: input[pos..pos + n].to_owned(),
                position: ai_start,
            });
        };
        pos += ai.len();
        // A value ends at GS or at the end; a fixed-length one also after its length.
        let end_of_field = bytes[pos..]
            .iter()
            .position(|&b| b == 0x1d)
            .map_or(bytes.len(), |i| pos + i);
        let end = match def.length {
            Length::Fixed(n) => {
                if end_of_field - pos < n {
                    return Err(Gs1Error::Truncated {
                        ai: ai.to_owned(),
                        expected: n,
                        got: end_of_field - pos,
                        position: pos,
                    });
                }
                pos + n
            }
            Length::Max(_) => end_of_field,
        };
        let Some(value) = input.get(pos..end) else {
            // Cut inside a multi-byte character: report that character.
            let ch = input[pos..].chars().find(|c| !c.is_ascii()).unwrap_or('?');
            return Err(Gs1Error::InvalidCharacter {
                ai: ai.to_owned(),
                ch,
                position: pos,
            });
        };
        validate_value(ai, &def, value, pos)?;
        out.push(Gs1Element::new(ai, value))?;
        pos = end;
    }
}

/// `(AI)value(AI)value…` from byte `pos` of `input`. A value runs to the next `(` or the end,
/// so values containing `(` cannot be written in this form (GS1 allows it; labels avoid it).
fn parse_hri(input: &str, mut pos: usize) -> Result<Gs1Elements, Gs1Error> {
    let mut out = Gs1Elements::default();
    while pos < input.len() {
        let rest = &input[pos..];
        if !rest.starts_with('(') {
            return Err(Gs1Error::BadParentheses { position: pos });
        }
        let Some(close) = rest.find(')') else {
            return Err(Gs1Error::BadParentheses { position: pos });
        };
        let ai = &rest[1..close];
        if ai.is_empty() || !ai.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Gs1Error::ExpectedAi {
                position: pos + 1,
                found: ai.to_owned(),
            });
        }
        let Some(def) = lookup(ai) else {
            return Err(Gs1Error::UnknownAi {
                ai: ai.to_owned(),
                position: pos + 1,
            });
        };
        let value_start = pos + close + 1;
        let value_end = input[value_start..]
            .find('(')
            .map_or(input.len(), |i| value_start + i);
        let value = &input[value_start..value_end];
        validate_value(ai, &def, value, value_start)?;
        out.push(Gs1Element::new(ai, value))?;
        pos = value_end;
    }
    Ok(out)
}

/// Parses any GS1 form a scanner may deliver: a Digital Link URI (`http://` or `https://`)
/// or an element string (raw or human-readable).
pub fn parse_gs1(input: &str) -> Result<Gs1Elements, Gs1Error> {
    let lower = input.get(..8).unwrap_or(input).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        super::digital_link::parse_digital_link(input)
    } else {
        parse_element_string(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_examples() {
        // GS1 General Specifications examples.
        assert_eq!(gtin_check_digit("0950600013435").unwrap(), 2);
        assert_eq!(gtin_check_digit("10614141123456789").unwrap(), 7);
        assert_eq!(gtin_check_digit("8061414112345").unwrap(), 8);
        assert!(gtin_check_digit("12a").is_err());
        validate_gtin("09506000134352").unwrap();
        validate_gtin("9506000134352").unwrap();
        validate_gtin("96385074").unwrap();
        validate_gtin("614141000036").unwrap();
        validate_sscc("106141411234567897").unwrap();
        assert_eq!(gtin14("96385074").unwrap(), "00000096385074");
    }

    #[test]
    fn dates_resolve_with_the_sliding_window() {
        let d = |s, y| resolve_date(s, y).map(|d| d.to_string());
        assert_eq!(d("141120", 2026).as_deref(), Some("2014-11-20"));
        assert_eq!(d("990101", 2026).as_deref(), Some("1999-01-01"));
        assert_eq!(d("760101", 2026).as_deref(), Some("2076-01-01"));
        assert_eq!(d("770101", 2026).as_deref(), Some("1977-01-01"));
        assert_eq!(d("240200", 2026).as_deref(), Some("2024-02-29"));
        assert_eq!(d("231200", 2026).as_deref(), Some("2023-12-31"));
        assert_eq!(d("231301", 2026), None);
    }

    #[test]
    fn measures_apply_decimals() {
        let e = Gs1Element::new("3103", "001250");
        assert_eq!(e.measure(), Some(1.25));
        assert_eq!(Gs1Element::new("01", "09506000134352").measure(), None);
        assert!(lookup("3106").is_none());
        assert!(lookup("3170").is_none());
    }
}
