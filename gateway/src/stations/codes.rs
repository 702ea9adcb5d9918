//! Reading codes: GS1 element strings / Digital Link URIs, EPC SGTIN-96 / SSCC-96, and the
//! `[[pattern]]` classification of a scan.
//!
//! TODO(after merge): [`parse_gs1`] and [`decode_epc`] are small private stand-ins for
//! `threadline_shared::ids`, which is being written on another branch; swap their bodies for
//! calls into it (everything else calls only these two functions), e.g.
//! `ids::gs1::parse_gs1(raw).ok().map(|e| e.elements.into_iter().map(|e| (e.ai, e.value)).collect())`
//! and `match ids::epc::decode_epc_hex(hex).ok()? { Epc::Sgtin96(s) => [("01", s.gtin()),
//! ("21", s.serial)], Epc::Sscc96(s) => [("00", s.sscc())] }`; keep the tests below passing
//! (a plain serial such as `SN0000000042` must not parse as GS1).

use regex::Regex;

use super::config::{CodeKind, PatternConfig};

/// The ASCII group separator that ends a variable-length GS1 field (FNC1 in the symbol).
const GS: char = '\u{1d}';

/// (AI, fixed value length or None for variable, maximum length).
fn ai_spec(digits: &str) -> Option<(usize, Option<usize>, usize)> {
    let two = digits.get(..2)?;
    let fixed2 = |n| Some((2, Some(n), n));
    let var2 = |n| Some((2, None, n));
    match two {
        "00" => return fixed2(18),
        "01" | "02" => return fixed2(14),
        "10" | "21" | "22" => return var2(20),
        "11" | "12" | "13" | "15" | "16" | "17" => return fixed2(6),
        "20" => return fixed2(2),
        "30" | "37" => return var2(8),
        "90" => return var2(30),
        "91" | "92" | "93" | "94" | "95" | "96" | "97" | "98" | "99" => return var2(90),
        _ => {}
    }
    let three = digits.get(..3)?;
    match three {
        "240" | "241" | "250" | "251" | "253" | "400" | "401" | "403" => {
            return Some((3, None, 30));
        }
        "242" => return Some((3, None, 6)),
        "254" | "420" => return Some((3, None, 20)),
        "402" => return Some((3, Some(17), 17)),
        "410" | "411" | "412" | "413" | "414" | "415" | "416" | "417" => {
            return Some((3, Some(13), 13));
        }
        "421" => return Some((3, None, 12)),
        "422" | "424" | "426" => return Some((3, Some(3), 3)),
        _ => {}
    }
    let first = digits.as_bytes()[0];
    if (first == b'3' || first == b'7' || first == b'8') && digits.len() >= 4 {
        let four = &digits[..4];
        if four.bytes().all(|b| b.is_ascii_digit()) {
            let n: u32 = four.parse().ok()?;
            if (3100..=3699).contains(&n) {
                return Some((4, Some(6), 6));
            }
            return Some((4, None, 30));
        }
    }
    None
}

/// GS1 mod-10 check digit over all digits but the last.
fn check_digit_ok(digits: &str) -> bool {
    let b = digits.as_bytes();
    if b.len() < 2 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let body = &b[..b.len() - 1];
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    (10 - sum % 10) % 10 == u32::from(b[b.len() - 1] - b'0')
}

fn valid_value(ai: &str, value: &str) -> bool {
    match ai {
        "00" | "01" | "02" | "410" | "411" | "412" | "413" | "414" | "415" | "416" | "417" => {
            check_digit_ok(value)
        }
        _ => !value.is_empty(),
    }
}

/// Parses a GS1 element string — parenthesized `(01)…(10)…`, raw with ASCII 29 separators and an
/// optional symbology identifier (`]C1`, `]d2`, `]Q3`, `]e0`, `]J1`), or a GS1 Digital Link URI
/// (`https://id.gs1.org/01/…/10/…`) — into (AI, value) pairs. `None` when the code is not one.
///
/// TODO(after merge): replace with `threadline_shared::ids`.
pub(crate) fn parse_gs1(raw: &str) -> Option<Vec<(String, String)>> {
    let raw = raw.trim();
    if raw.starts_with("http://") || raw.starts_with("https://") {
        return parse_digital_link(raw);
    }
    if raw.starts_with('(') {
        return parse_parenthesized(raw);
    }
    let body = ["]C1", "]d2", "]Q3", "]e0", "]J1"]
        .iter()
        .find_map(|p| raw.strip_prefix(p))
        .unwrap_or(raw);
    let body = body.trim_start_matches(GS);
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (ai_len, fixed, max) = ai_spec(rest)?;
        let ai = &rest[..ai_len];
        let after = &rest[ai_len..];
        let (value, next) = match fixed {
            Some(n) => {
                let v = after.get(..n)?;
                (v, after[n..].trim_start_matches(GS))
            }
            None => match after.find(GS) {
                Some(p) => (&after[..p], &after[p + 1..]),
                None => (after, ""),
            },
        };
        if value.len() > max || !valid_value(ai, value) || value.contains(GS) {
            return None;
        }
        out.push((ai.to_owned(), value.to_owned()));
        rest = next;
    }
    (!out.is_empty()).then_some(out)
}

fn parse_parenthesized(raw: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')')?;
        let ai = &r[..close];
        let after = &r[close + 1..];
        let end = after.find('(').unwrap_or(after.len());
        let value = after[..end].trim_end_matches(GS);
        let (_, fixed, max) = ai_spec(ai)?;
        if ai_spec(ai)?.0 != ai.len()
            || fixed.is_some_and(|n| n != value.len())
            || value.len() > max
            || !valid_value(ai, value)
        {
            return None;
        }
        out.push((ai.to_owned(), value.to_owned()));
        rest = &after[end..];
    }
    (rest.is_empty() && !out.is_empty()).then_some(out)
}

fn parse_digital_link(raw: &str) -> Option<Vec<(String, String)>> {
    let after_scheme = raw.split_once("://")?.1;
    let path_and_query = after_scheme.split_once('/').map_or("", |(_, p)| p);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The primary key (01, 00, 414, …) is the first numeric segment followed by its value.
    let start = segs.iter().position(|s| {
        s.bytes().all(|b| b.is_ascii_digit()) && ai_spec(s).is_some_and(|(l, _, _)| l == s.len())
    })?;
    let mut out = Vec::new();
    let mut it = segs[start..].chunks(2);
    for pair in &mut it {
        let [ai, value] = pair else { return None };
        let value = percent_decode(value)?;
        if ai_spec(ai)?.0 != ai.len() || !valid_value(ai, &value) {
            return None;
        }
        out.push(((*ai).to_owned(), value));
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        if let Some((k, v)) = kv.split_once('=')
            && k.bytes().all(|b| b.is_ascii_digit())
            && ai_spec(k).is_some_and(|(l, _, _)| l == k.len())
        {
            out.push((k.to_owned(), percent_decode(v)?));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Company prefix bits / digits by partition value (SGTIN-96 and SSCC-96 share them).
const PARTITIONS: [(u32, usize); 7] = [
    (40, 12),
    (37, 11),
    (34, 10),
    (30, 9),
    (27, 8),
    (24, 7),
    (20, 6),
];

fn with_check_digit(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Decodes an EPC (hex, 96 bits) read by an RFID reader into GS1 (AI, value) pairs:
/// SGTIN-96 → (01) GTIN + (21) serial; SSCC-96 → (00) SSCC. `None` for anything else.
///
/// TODO(after merge): replace with `threadline_shared::ids`.
pub(crate) fn decode_epc(hex: &str) -> Option<Vec<(String, String)>> {
    let hex = hex.trim();
    if hex.len() != 24 {
        return None;
    }
    let v = u128::from_str_radix(hex, 16).ok()?;
    let bits = |from: u32, len: u32| -> u128 { (v >> (96 - from - len)) & ((1u128 << len) - 1) };
    let header = bits(0, 8);
    let partition = usize::try_from(bits(11, 3)).ok()?;
    let (cp_bits, cp_digits) = *PARTITIONS.get(partition)?;
    let company = bits(14, cp_bits);
    let company = format!("{company:0cp_digits$}");
    if company.len() != cp_digits {
        return None;
    }
    match header {
        0x30 => {
            let ir_bits = 44 - cp_bits;
            let ir_digits = 13 - cp_digits;
            let item = format!("{:0ir_digits$}", bits(14 + cp_bits, ir_bits));
            if item.len() != ir_digits {
                return None;
            }
            let serial = bits(58, 38);
            let gtin = with_check_digit(&format!("{}{company}{}", &item[..1], &item[1..]));
            Some(vec![
                ("01".to_owned(), gtin),
                ("21".to_owned(), serial.to_string()),
            ])
        }
        0x31 => {
            let sr_bits = 58 - cp_bits;
            let sr_digits = 17 - cp_digits;
            let serial = format!("{:0sr_digits$}", bits(14 + cp_bits, sr_bits));
            if serial.len() != sr_digits {
                return None;
            }
            let sscc = with_check_digit(&format!("{}{company}{}", &serial[..1], &serial[1..]));
            Some(vec![("00".to_owned(), sscc)])
        }
        _ => None,
    }
}

/// A scan classified by the first matching pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Classified {
    pub kind: CodeKind,
    /// The item's id (named group `id`, the whole code, or the value of the pattern's AI).
    pub id: String,
    /// Part learned from the label (named group `part`, GS1 AI 01 or 240).
    pub part_hint: Option<PartHint>,
    /// Quantity from the label (named group `qty`, GS1 AI 37 or 30).
    pub qty: Option<f64>,
    /// Customer (named group `customer`).
    pub customer: Option<String>,
    /// Supplier (named group `supplier`, GS1 AI 412).
    pub supplier: Option<String>,
    /// Supplier batch (GS1 AI 10).
    pub batch: Option<String>,
}

/// Where a part number came from (a GTIN may need mapping to the plant's part number).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PartHint {
    Part(String),
    Gtin(String),
}

/// A compiled `[[pattern]]`.
pub(crate) struct Pattern {
    kind: CodeKind,
    regex: Option<Regex>,
    gs1_ai: Option<String>,
    stations: Vec<String>,
}

impl Pattern {
    /// Compiles the patterns of a validated config (an invalid regex is skipped with an error
    /// log — validation refuses such a config before it gets here).
    pub(crate) fn compile(cfg: &[PatternConfig]) -> Vec<Pattern> {
        cfg.iter()
            .filter_map(|p| {
                let regex = match &p.regex {
                    Some(r) => match Regex::new(r) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::error!(regex = %r, error = %e, "pattern skipped");
                            return None;
                        }
                    },
                    None => None,
                };
                Some(Pattern {
                    kind: p.kind,
                    regex,
                    gs1_ai: p.gs1_ai.clone(),
                    stations: p.stations.clone(),
                })
            })
            .collect()
    }
}

/// Classifies a code for `station`: the first pattern that matches wins. `gs1` is the code's
/// element string (parsed from a barcode or decoded from an EPC), if it is one; for RFID scans
/// regexes see the parenthesized form `(01)…(21)…`.
pub(crate) fn classify(
    patterns: &[Pattern],
    station: &str,
    text: &str,
    gs1: Option<&[(String, String)]>,
) -> Option<Classified> {
    let ai = |k: &str| gs1.and_then(|g| g.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone()));
    for p in patterns {
        if !p.stations.is_empty() && !p.stations.iter().any(|s| s == station) {
            continue;
        }
        let mut c = if let Some(re) = &p.regex {
            let Some(caps) = re.captures(text) else {
                continue;
            };
            let g = |n: &str| caps.name(n).map(|m| m.as_str().to_owned());
            Classified {
                kind: p.kind,
                id: g("id").unwrap_or_else(|| text.to_owned()),
                part_hint: g("part").map(PartHint::Part),
                qty: g("qty").and_then(|q| q.parse().ok()),
                customer: g("customer"),
                supplier: g("supplier"),
                batch: g("batch"),
            }
        } else if let Some(want) = &p.gs1_ai {
            let Some(id) = ai(want) else {
                continue;
            };
            Classified {
                kind: p.kind,
                id,
                part_hint: None,
                qty: None,
                customer: None,
                supplier: None,
                batch: None,
            }
        } else {
            continue;
        };
        if c.part_hint.is_none() {
            c.part_hint = ai("240")
                .map(PartHint::Part)
                .or_else(|| ai("01").map(PartHint::Gtin));
        }
        if c.qty.is_none() {
            c.qty = ai("37").or_else(|| ai("30")).and_then(|q| q.parse().ok());
        }
        if c.supplier.is_none() {
            c.supplier = ai("412");
        }
        if c.batch.is_none() {
            c.batch = ai("10");
        }
        return Some(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn gs1_forms() {
        let want = pairs(&[("01", "09506000134352"), ("10", "LOT42"), ("37", "250")]);
        assert_eq!(parse_gs1("(01)09506000134352(10)LOT42(37)250"), want);
        assert_eq!(parse_gs1("]C1010950600013435210LOT42\u{1d}37250"), want);
        assert_eq!(
            parse_gs1("0109506000134352" /* no GS needed after fixed */),
            pairs(&[("01", "09506000134352")])
        );
        assert_eq!(
            parse_gs1("https://id.gs1.org/01/09506000134352/10/LOT42?37=250"),
            want
        );
        assert_eq!(
            parse_gs1("00106141411234567897"),
            pairs(&[("00", "106141411234567897")])
        );
        assert_eq!(
            parse_gs1("(240)P-6202(10)L1"),
            pairs(&[("240", "P-6202"), ("10", "L1")])
        );
        let with_date = pairs(&[
            ("01", "09506000134352"),
            ("17", "261231"),
            ("400", "PO-1"),
            ("21", "S1"),
        ]);
        assert_eq!(
            parse_gs1("(01)09506000134352(17)261231(400)PO-1(21)S1"),
            with_date
        );
        assert_eq!(
            parse_gs1("]d2010950600013435217261231400PO-1\u{1d}21S1"),
            with_date
        );
        // Bad check digit, not GS1 at all.
        assert_eq!(parse_gs1("(01)09506000134353"), None);
        assert_eq!(parse_gs1("SN0000000042"), None);
        assert_eq!(parse_gs1("LOT-2026-000001"), None);
    }

    #[test]
    fn epc_sgtin_and_sscc() {
        // GS1 EPC TDS example: urn:epc:id:sgtin:0614141.812345.6789 → GTIN 80614141123458.
        assert_eq!(
            decode_epc("3074257BF7194E4000001A85"),
            pairs(&[("01", "80614141123458"), ("21", "6789")])
        );
        // SSCC-96 of urn:epc:id:sscc:0614141.1234567890 → SSCC 106141412345678908.
        assert_eq!(
            decode_epc("3114257BF4499602D2000000"),
            pairs(&[("00", "106141412345678908")])
        );
        assert_eq!(decode_epc("E2801160600002054C4B3C2E"), None);
        assert_eq!(decode_epc("zz"), None);
    }
}
