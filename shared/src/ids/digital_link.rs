//! GS1 Digital Link URIs (GS1 Digital Link standard, uncompressed form), e.g.
//! `https://id.gs1.org/01/09506000134352/10/ABC/21/12345?17=261231`.
//!
//! Any host is accepted (brands resolve on their own domains) and so is a path prefix before
//! the primary key (`https://example.com/products/01/…`). The path holds AI/value pairs starting
//! with a primary key (00, 01, 401, 414, or the legacy aliases `sscc`, `gtin`, `ginc`, `gln`);
//! query parameters whose name is numeric are AIs too, other parameters (`linkType`, …) are
//! ignored. Values are percent-decoded and then checked exactly like element-string values
//! (characters, length, check digits, dates); a GTIN-8/12/13 in AI 01 is padded to GTIN-14, as
//! the standard requires. Positions in errors are byte offsets of the (still encoded) segment in
//! the input.

use super::gs1::{Gs1Element, Gs1Elements, Gs1Error, lookup, validate_value};

/// Primary keys this parser starts the AI path at.
const PRIMARY_KEYS: [&str; 4] = ["00", "01", "401", "414"];

/// The short names of the first Digital Link version, still printed on some labels.
fn alias(segment: &str) -> &str {
    match segment {
        "gtin" => "01",
        "sscc" => "00",
        "ginc" => "401",
        "gln" => "414",
        "cpv" => "22",
        "lot" => "10",
        "ser" => "21",
        other => other,
    }
}

fn bad(reason: impl Into<String>) -> Gs1Error {
    Gs1Error::BadDigitalLink {
        reason: reason.into(),
    }
}

/// Parses a GS1 Digital Link URI into its elements (path AIs first, then query AIs).
pub fn parse_digital_link(uri: &str) -> Result<Gs1Elements, Gs1Error> {
    let parsed = url::Url::parse(uri).map_err(|e| bad(format!("{uri:?} is not a URI: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    // Work on the input itself (not the normalized URL) so positions point into what was given.
    let after_scheme = uri.find("://").map_or(0, |i| i + 3);
    let path_start = uri[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(uri.len(), |i| after_scheme + i);
    let path_end = uri[path_start..]
        .find(['?', '#'])
        .map_or(uri.len(), |i| path_start + i);
    let query = if uri[path_end..].starts_with('?') {
        let q_start = path_end + 1;
        let q_end = uri[q_start..].find('#').map_or(uri.len(), |i| q_start + i);
        Some((q_start, &uri[q_start..q_end]))
    } else {
        None
    };

    // (position, raw segment), empty segments (`//`, trailing `/`) skipped.
    let mut segments: Vec<(usize, &str)> = Vec::new();
    let mut pos = path_start;
    for seg in uri[path_start..path_end].split('/') {
        if !seg.is_empty() {
            segments.push((pos, seg));
        }
        pos += seg.len() + 1;
    }
    let Some(first) = segments
        .iter()
        .position(|(_, s)| PRIMARY_KEYS.contains(&alias(s)))
    else {
        return Err(bad(format!(
            "no primary key (AI 01, 00, 414 or 401) in the path of {uri:?}"
        )));
    };

    let mut out = Gs1Elements::default();
    let pairs = &segments[first..];
    for pair in pairs.chunks(2) {
        let (ai_pos, raw_ai) = pair[0];
        let ai = alias(raw_ai);
        let Some(&(value_pos, raw_value)) = pair.get(1) else {
            return Err(Gs1Error::EmptyValue {
                ai: ai.to_owned(),
                position: ai_pos + raw_ai.len(),
            });
        };
        let value = percent_decode(raw_value, value_pos)?;
        push_checked(&mut out, ai, ai_pos, value, value_pos)?;
    }

    if let Some((q_start, q)) = query {
        let mut pos = q_start;
        for param in q.split('&') {
            let param_pos = pos;
            pos += param.len() + 1;
            let (key, raw_value) = param.split_once('=').unwrap_or((param, ""));
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
                continue; // linkType, context, … are not AIs
            }
            let value_pos = param_pos + key.len() + 1;
            let value = percent_decode(raw_value, value_pos)?;
            push_checked(&mut out, key, param_pos, value, value_pos)?;
        }
    }
    Ok(out)
}

fn push_checked(
    out: &mut Gs1Elements,
    ai: &str,
    ai_pos: usize,
    mut value: String,
    value_pos: usize,
) -> Result<(), Gs1Error> {
    if !ai.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Gs1Error::ExpectedAi {
            position: ai_pos,
            found: ai.to_owned(),
        });
    }
    let Some(def) = lookup(ai) else {
        return Err(Gs1Error::UnknownAi {
            ai: ai.to_owned(),
            position: ai_pos,
        });
    };
    if ai == "01" && matches!(value.len(), 8 | 12 | 13) && value.bytes().all(|b| b.is_ascii_digit())
    {
        value = format!("{value:0>14}");
    }
    validate_value(ai, &def, &value, value_pos)?;
    out.push(Gs1Element::new(ai, value))
}

/// Decodes `%XX` escapes (no `+` → space: `+` is a legal GS1 character).
fn percent_decode(s: &str, position: usize) -> Result<String, Gs1Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Err(bad(format!(
                    "bad percent escape at position {}",
                    position + i
                )));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        bad(format!(
            "percent escapes at position {position} are not UTF-8"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_plus() {
        assert_eq!(percent_decode("AB%2F1+2", 0).unwrap(), "AB/1+2");
        assert!(percent_decode("AB%2", 0).is_err());
        assert!(percent_decode("%zz", 0).is_err());
    }
}
