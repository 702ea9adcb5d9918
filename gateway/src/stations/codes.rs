//! Reading codes: GS1 element strings / Digital Link URIs, EPC SGTIN-96 / SSCC-96, and the
//! `[[pattern]]` classification of a scan.
//!
//! GS1 and EPC decoding is `threadline_shared::ids`; this module turns its results into the
//! (AI, value) pairs the classification works with.

use regex::Regex;
use threadline_shared::ids;

use super::config::{CodeKind, PatternConfig};

/// Parses a GS1 element string — parenthesized `(01)…(10)…`, raw with ASCII 29 separators and an
/// optional symbology identifier (`]C1`, `]d2`, `]Q3`, `]e0`, `]J1`), or a GS1 Digital Link URI
/// (`https://id.gs1.org/01/…/10/…`) — into (AI, value) pairs. `None` when the code is not one.
pub(crate) fn parse_gs1(raw: &str) -> Option<Vec<(String, String)>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let parsed = ids::parse_gs1(raw).ok()?;
    let out: Vec<(String, String)> = parsed
        .elements
        .into_iter()
        .map(|e| (e.ai, e.value))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Decodes an EPC (hex, 96 bits) read by an RFID reader into GS1 (AI, value) pairs:
/// SGTIN-96 → (01) GTIN + (21) serial; SSCC-96 → (00) SSCC. `None` for anything else.
pub(crate) fn decode_epc(hex: &str) -> Option<Vec<(String, String)>> {
    match ids::decode_epc_hex(hex.trim()).ok()? {
        ids::Epc::Sgtin96(s) => Some(vec![
            ("01".to_owned(), s.gtin()),
            ("21".to_owned(), s.serial.to_string()),
        ]),
        ids::Epc::Sscc96(s) => Some(vec![("00".to_owned(), s.sscc())]),
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
