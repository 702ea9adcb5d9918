//! What a search box input may be: a raw GS1 element string from a scanner (with or without
//! the symbology identifier `]d2` / `]C1` / `]Q3` and FNC1 / GS separators), a parenthesized
//! GS1 string, a GS1 Digital Link URI, a bare SSCC, or a plain id (serial, lot, container,
//! shipment, work order). [`interpret`] turns it into the ids to look up, each with the kind it
//! names when the input says so (AI 21 = serial, AI 10 = lot, AI 00 = SSCC, …).

use threadline_shared::ids::{parse_gs1, validate_sscc};

/// An id to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// unit | lot | container | shipment | work_order; `None`: any kind.
    pub kind: Option<&'static str>,
    pub id: String,
    /// How the input was read, shown to the user (`"GS1 AI (21) serial"`).
    pub how: String,
}

/// Scanner keyboard wedges often send FNC1 as GS (0x1D) but some as a visible placeholder;
/// these are the usual ones.
fn normalize(input: &str) -> String {
    input
        .trim_matches(|c: char| c.is_whitespace() && c != '\u{1d}')
        .replace("<GS>", "\u{1d}")
        .replace("\\x1d", "\u{1d}")
        .replace("\\u001d", "\u{1d}")
}

/// The candidates for `input`, most specific first. Never empty for non-empty input: when
/// nothing GS1 is recognised the text itself is a candidate of any kind.
pub fn interpret(input: &str) -> Vec<Candidate> {
    let s = normalize(input);
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let looks_gs1 = s.starts_with(']')
        || s.starts_with('(')
        || s.contains('\u{1d}')
        || s.to_ascii_lowercase().starts_with("http://")
        || s.to_ascii_lowercase().starts_with("https://")
        || (s.len() >= 16 && s.len() != 18 && s.as_bytes()[..2].iter().all(u8::is_ascii_digit));
    if looks_gs1 && let Ok(el) = parse_gs1(&s) {
        let push = |out: &mut Vec<Candidate>, kind, id: &str, how: &str| {
            out.push(Candidate {
                kind: Some(kind),
                id: id.to_owned(),
                how: how.to_owned(),
            })
        };
        if let Some(v) = el.serial() {
            push(&mut out, "unit", v, "GS1 AI (21) serial");
        }
        if let Some(v) = el.sscc() {
            push(&mut out, "container", v, "GS1 AI (00) SSCC");
            push(&mut out, "shipment", v, "GS1 AI (00) SSCC");
        }
        if let Some(v) = el.lot() {
            push(&mut out, "lot", v, "GS1 AI (10) batch/lot");
        }
        for e in el.iter() {
            match e.ai.as_str() {
                "400" => push(
                    &mut out,
                    "work_order",
                    &e.value,
                    "GS1 AI (400) order number",
                ),
                "401" | "402" => push(&mut out, "shipment", &e.value, "GS1 consignment / shipment"),
                _ => {}
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    // A bare 18-digit SSCC, also with its AI "00" in front.
    let digits = s.strip_prefix("00").filter(|d| d.len() == 18).unwrap_or(&s);
    if digits.len() == 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && validate_sscc(digits).is_ok()
    {
        out.push(Candidate {
            kind: Some("container"),
            id: digits.to_owned(),
            how: "SSCC".to_owned(),
        });
    }
    out.push(Candidate {
        kind: None,
        id: s.trim().to_owned(),
        how: "id".to_owned(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(input: &str) -> (Option<&'static str>, String) {
        let c = interpret(input).into_iter().next().expect("a candidate");
        (c.kind, c.id)
    }

    #[test]
    fn reads_scanner_forms() {
        let serial = (Some("unit"), "SN0000000042".to_owned());
        // raw with symbology identifier and GS separator
        assert_eq!(first("]d20109506000134352\u{1d}21SN0000000042"), serial);
        assert_eq!(first("]C10109506000134352\u{1d}21SN0000000042"), serial);
        assert_eq!(first("]Q30109506000134352\u{1d}21SN0000000042"), serial);
        // raw, serial last: no separator needed
        assert_eq!(
            first("0109506000134352"),
            (None, "0109506000134352".to_owned())
        );
        assert_eq!(first("010950600013435221SN0000000042"), serial);
        // human-readable and visible-GS forms
        assert_eq!(first("(01)09506000134352(21)SN0000000042"), serial);
        assert_eq!(first("]d20109506000134352<GS>21SN0000000042"), serial);
        // Digital Link
        assert_eq!(
            first("https://id.gs1.org/01/09506000134352/21/SN0000000042"),
            serial
        );
        // lot
        assert_eq!(
            first("]d2010950600013435210LOT-7"),
            (Some("lot"), "LOT-7".to_owned())
        );
        // SSCC with and without AI
        assert_eq!(
            first("00106141411234567897"),
            (Some("container"), "106141411234567897".to_owned())
        );
        assert_eq!(
            first("106141411234567897"),
            (Some("container"), "106141411234567897".to_owned())
        );
        // plain ids
        assert_eq!(first("  WO-2026-001 "), (None, "WO-2026-001".to_owned()));
        assert!(interpret("   ").is_empty());
    }
}
