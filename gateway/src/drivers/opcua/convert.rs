//! Pure pieces of the OPC UA driver: the tag plan (node ids validated up front) and the mapping
//! of an OPC UA `DataValue` to a [`TagUpdate`] (value, quality, timestamp).

use std::str::FromStr;

use opcua::types::{DataValue, NodeId, StatusCode, Variant};
use threadline_shared::event::{Quality, TagValue};
use threadline_shared::time::Timestamp;

use crate::drivers::TagUpdate;
use crate::drivers::config::TagConfig;

/// One configured tag, ready for a monitored item.
#[derive(Debug, Clone)]
pub(crate) struct TagPlan {
    pub(crate) name: String,
    /// `Err` holds the reason the configured node id is unusable; such a tag is reported bad
    /// once and never subscribed, the other tags still flow.
    pub(crate) node: Result<NodeId, String>,
    pub(crate) sampling_ms: u64,
    pub(crate) scale: f64,
    pub(crate) offset: f64,
}

impl TagPlan {
    pub(crate) fn new(t: &TagConfig) -> TagPlan {
        let node = match t.node_id.as_deref() {
            None => Err("invalid node id: missing node_id".to_owned()),
            Some(s) => parse_node_id(s),
        };
        TagPlan {
            name: t.name.clone(),
            node,
            sampling_ms: t.sampling_ms,
            scale: t.scale,
            offset: t.offset,
        }
    }
}

/// Parses `ns=2;s=Name`, `i=2258`, `ns=1;g=…`, `ns=1;b=…`; the error text starts with
/// "invalid node id" (the contract the tests and plant engineers see).
pub(crate) fn parse_node_id(s: &str) -> Result<NodeId, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("invalid node id: empty".to_owned());
    }
    NodeId::from_str(trimmed).map_err(|_| {
        format!(
            "invalid node id {s:?} (expected e.g. \"ns=2;s=Oven.Zone1.Temperature\" or \"i=2258\")"
        )
    })
}

/// The symbolic name of a status code, e.g. `BadNodeIdUnknown`.
pub(crate) fn status_name(status: StatusCode) -> String {
    let name = status.sub_code().name();
    if name == "Invalid" {
        format!("{status}")
    } else {
        name.to_owned()
    }
}

/// Maps one data change of `tag` to the update the gateway sees.
pub(crate) fn to_update(device: &str, tag: &TagPlan, dv: DataValue) -> TagUpdate {
    let ts = timestamp(&dv);
    let status = dv.status.unwrap_or(StatusCode::Good);
    let (value, quality, error) = if status.is_bad() {
        (None, Quality::Bad, Some(status_name(status)))
    } else {
        match dv.value.as_ref().map(|v| convert(v, tag.scale, tag.offset)) {
            Some(Ok(v)) if status.is_uncertain() => {
                (Some(v), Quality::Uncertain, Some(status_name(status)))
            }
            Some(Ok(v)) => (Some(v), Quality::Good, None),
            Some(Err(e)) => (None, Quality::Bad, Some(e)),
            None => (None, Quality::Bad, Some("no value".to_owned())),
        }
    };
    TagUpdate {
        device: device.to_owned(),
        tag: tag.name.clone(),
        value,
        quality,
        error,
        ts,
    }
}

/// Source timestamp, else server timestamp, else now (a null OPC UA time counts as absent).
fn timestamp(dv: &DataValue) -> Timestamp {
    [dv.source_timestamp, dv.server_timestamp]
        .into_iter()
        .flatten()
        .find(|t| !t.is_null() && t.ticks() > 0)
        .map(|t| threadline_shared::time::canonical(t.as_chrono()))
        .unwrap_or_else(threadline_shared::time::now)
}

/// Variant → tag value; numerics get `raw * scale + offset` (an integer stays an integer when
/// scale is 1 and offset 0, so counters are not turned into floats).
pub(crate) fn convert(v: &Variant, scale: f64, offset: f64) -> Result<TagValue, String> {
    let identity = scale == 1.0 && offset == 0.0;
    let scaled = |x: f64| TagValue::Float(x * scale + offset);
    let int = |i: i64| {
        if identity {
            TagValue::Int(i)
        } else {
            scaled(i as f64)
        }
    };
    let uint = |u: u64| {
        if identity {
            TagValue::UInt(u)
        } else {
            scaled(u as f64)
        }
    };
    Ok(match v {
        Variant::Boolean(b) => TagValue::Bool(*b),
        Variant::SByte(i) => int(i64::from(*i)),
        Variant::Int16(i) => int(i64::from(*i)),
        Variant::Int32(i) => int(i64::from(*i)),
        Variant::Int64(i) => int(*i),
        Variant::Byte(u) => uint(u64::from(*u)),
        Variant::UInt16(u) => uint(u64::from(*u)),
        Variant::UInt32(u) => uint(u64::from(*u)),
        Variant::UInt64(u) => uint(*u),
        Variant::Float(f) => scaled(crate::drivers::f32_to_f64(*f)),
        Variant::Double(d) => scaled(*d),
        Variant::String(s) => TagValue::Text(s.as_ref().to_owned()),
        Variant::LocalizedText(t) => TagValue::Text(t.text.as_ref().to_owned()),
        Variant::Empty => return Err("no value".to_owned()),
        other => {
            return Err(format!(
                "unsupported OPC UA data type {:?}",
                other.type_id()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::DateTime;

    fn plan(scale: f64, offset: f64) -> TagPlan {
        TagPlan {
            name: "t".into(),
            node: parse_node_id("ns=2;s=A"),
            sampling_ms: 100,
            scale,
            offset,
        }
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(parse_node_id("ns=2;s=Oven.Zone1.Temperature").is_ok());
        assert!(parse_node_id("i=2258").is_ok());
        let e = parse_node_id("Oven.Temp").unwrap_err();
        assert!(e.starts_with("invalid node id"), "{e}");
        assert!(
            parse_node_id("")
                .unwrap_err()
                .starts_with("invalid node id")
        );
    }

    #[test]
    fn values_convert_with_scale() {
        assert_eq!(
            convert(&Variant::Int32(-5), 1.0, 0.0),
            Ok(TagValue::Int(-5))
        );
        assert_eq!(
            convert(&Variant::UInt16(7), 1.0, 0.0),
            Ok(TagValue::UInt(7))
        );
        assert_eq!(
            convert(&Variant::UInt16(7), 2.0, 1.0),
            Ok(TagValue::Float(15.0))
        );
        assert_eq!(
            convert(&Variant::Double(1.5), 2.0, 0.0),
            Ok(TagValue::Float(3.0))
        );
        assert_eq!(
            convert(&Variant::Boolean(true), 2.0, 0.0),
            Ok(TagValue::Bool(true))
        );
        assert_eq!(
            convert(&Variant::String("x".into()), 1.0, 0.0),
            Ok(TagValue::Text("x".into()))
        );
        assert!(convert(&Variant::Empty, 1.0, 0.0).is_err());
        // A Float is carried as the decimal the server's engineer wrote, not widened.
        assert_eq!(
            convert(&Variant::Float(21.7), 1.0, 0.0),
            Ok(TagValue::Float(21.7))
        );
    }

    #[test]
    fn quality_and_timestamps_follow_the_status() {
        let src = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let dv = DataValue {
            value: Some(Variant::Float(2.5)),
            status: Some(StatusCode::Good),
            source_timestamp: Some(DateTime::from(src)),
            server_timestamp: Some(DateTime::now()),
            ..Default::default()
        };
        let u = to_update("d", &plan(1.0, 0.0), dv);
        assert_eq!(u.quality, Quality::Good);
        assert_eq!(u.value, Some(TagValue::Float(2.5)));
        assert_eq!(u.ts, src);

        let dv = DataValue {
            value: None,
            status: Some(StatusCode::BadNodeIdUnknown),
            ..Default::default()
        };
        let u = to_update("d", &plan(1.0, 0.0), dv);
        assert_eq!(u.quality, Quality::Bad);
        assert_eq!(u.error.as_deref(), Some("BadNodeIdUnknown"));

        let dv = DataValue {
            value: Some(Variant::Int32(1)),
            status: Some(StatusCode::UncertainLastUsableValue),
            ..Default::default()
        };
        let u = to_update("d", &plan(1.0, 0.0), dv);
        assert_eq!(u.quality, Quality::Uncertain);
        assert_eq!(u.error.as_deref(), Some("UncertainLastUsableValue"));
    }
}
