//! Timestamps on the wire: RFC 3339, UTC, microsecond precision (`2026-11-25T01:18:08.123456Z`).
//!
//! Microseconds because that is what PostgreSQL keeps; a timestamp that went through the database
//! therefore serializes to the same bytes as before, which the hash chain relies on.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// A point in time on the floor, as carried in records.
pub type Timestamp = DateTime<Utc>;

/// Truncates to the canonical (microsecond) precision.
pub fn canonical(ts: Timestamp) -> Timestamp {
    ts.trunc_subsecs(6)
}

/// Now, at canonical precision.
pub fn now() -> Timestamp {
    canonical(Utc::now())
}

/// Formats in the canonical wire form.
pub fn format(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses any RFC 3339 timestamp (any offset) and converts it to canonical UTC.
pub fn parse(s: &str) -> Result<Timestamp, chrono::ParseError> {
    Ok(canonical(
        DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc),
    ))
}

/// `#[serde(with = "threadline_shared::time::rfc3339")]`
pub mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(|e| {
            serde::de::Error::custom(format_args!("bad RFC 3339 timestamp {s:?}: {e}"))
        })
    }
}

/// `#[serde(with = "threadline_shared::time::rfc3339_opt")]`, with `skip_serializing_if = "Option::is_none"`.
pub mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&format(ts)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| {
            parse(&s).map_err(|e| {
                serde::de::Error::custom(format_args!("bad RFC 3339 timestamp {s:?}: {e}"))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_utc_micros() {
        let ts = parse("2026-11-25T02:18:08.123456789+01:00").unwrap();
        assert_eq!(format(&ts), "2026-11-25T01:18:08.123456Z");
        let ts = parse("2026-11-25T01:18:08Z").unwrap();
        assert_eq!(format(&ts), "2026-11-25T01:18:08.000000Z");
    }
}
