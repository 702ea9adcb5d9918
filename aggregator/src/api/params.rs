//! Query strings into typed structs, with bad input answered in the API's JSON error shape.
//!
//! Each route declares its query parameters once, as a struct with
//! `#[derive(Deserialize, IntoParams)]` and `#[serde(deny_unknown_fields)]`: its fields are the
//! allow-list, their types parse and check the values, their doc comments are the OpenAPI
//! descriptions. [`Params<T>`] extracts it:
//!
//! - an unknown parameter name is refused with every unknown name and the allowed ones
//!   (`{"error": "unknown parameter out_of_specs", "detail": {"unknown": [..], "allowed": [..]}}`):
//!   a typo such as `out_of_specs=true` would otherwise silently widen a recall-grade query;
//! - a bad value names the parameter, the value and what was expected
//!   (`{"error": "bad parameter limit: expected an integer from 1 to 10000",
//!   "detail": {"parameter", "value", "expected"}}`);
//! - an empty value counts as absent, and the last occurrence of a repeated name wins.
//!
//! axum's plain-text rejections never reach the client.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::json;
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};

use super::ApiError;

/// The query parameters of a route, as the typed struct `T` (see the module doc).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs): Query<Vec<(String, String)>> =
            Query::try_from_uri(&parts.uri).map_err(|e| {
                ApiError::bad_request("malformed query string", json!({"reason": e.body_text()}))
            })?;
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        T::deserialize(QueryString(&map))
            .map(Params)
            .map_err(ApiError::from)
    }
}

/// What a client asked of a route with an id in its path: the path segments as `P` (a
/// `String`, a tuple) and the query parameters as `Q` (see [`Params`]). A malformed path is
/// answered in the API's JSON error shape too.
#[derive(Debug)]
pub struct Asked<P, Q>(pub P, pub Q);

impl<S, P, Q> FromRequestParts<S> for Asked<P, Q>
where
    S: Send + Sync,
    P: DeserializeOwned + Send,
    Q: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let path = match Path::<P>::from_request_parts(parts, state).await {
            Ok(Path(p)) => p,
            Err(e) => {
                return Err(ApiError::bad_request(
                    "malformed path",
                    json!({"reason": e.body_text()}),
                ));
            }
        };
        let Params(q) = Params::<Q>::from_request_parts(parts, state).await?;
        Ok(Asked(path, q))
    }
}

/// Why a query string was refused.
#[derive(Debug)]
pub enum ParamError {
    /// Names the route does not take, sorted, and the ones it does.
    Unknown {
        unknown: Vec<String>,
        allowed: &'static [&'static str],
    },
    /// A value that does not parse.
    Bad {
        name: String,
        value: String,
        expected: String,
    },
    /// Raised inside a value's deserializer, before its parameter is known (see `Bad`).
    Value(String),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Unknown { unknown, .. } => {
                write!(f, "unknown parameter {}", unknown.join(", "))
            }
            ParamError::Bad { name, expected, .. } => {
                write!(f, "bad parameter {name}: expected {expected}")
            }
            ParamError::Value(expected) => write!(f, "expected {expected}"),
        }
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        ParamError::Value(msg.to_string())
    }

    fn invalid_type(_: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        ParamError::Value(exp.to_string())
    }

    fn invalid_value(_: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        ParamError::Value(exp.to_string())
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        ParamError::Value(format!("one of {}", expected.join(", ")))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        ParamError::Unknown {
            unknown: vec![field.to_owned()],
            allowed: expected,
        }
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        let error = e.to_string();
        match e {
            ParamError::Unknown { unknown, allowed } => {
                ApiError::bad_request(error, json!({"unknown": unknown, "allowed": allowed}))
            }
            ParamError::Bad {
                name,
                value,
                expected,
            } => ApiError::bad_request(
                error,
                json!({"parameter": name, "value": value, "expected": expected}),
            ),
            ParamError::Value(_) => ApiError::bad_request(error, json!(null)),
        }
    }
}

/// The query string as a serde map of name → text value.
struct QueryString<'a>(&'a BTreeMap<String, String>);

impl<'de, 'a> Deserializer<'de> for QueryString<'a> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        // Every unknown name at once (serde would stop at the first).
        let unknown: Vec<String> = self
            .0
            .keys()
            .filter(|k| !fields.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ParamError::Unknown {
                unknown,
                allowed: fields,
            });
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_map(Entries {
            // Empty counts as absent.
            iter: self.0.iter().filter(|(_, v)| !v.is_empty()),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

struct Entries<'a, I> {
    iter: I,
    value: Option<(&'a str, &'a str)>,
}

impl<'de, 'a, I> de::MapAccess<'de> for Entries<'a, I>
where
    I: Iterator<Item = (&'a String, &'a String)>,
{
    type Error = ParamError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ParamError> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some((k, v));
        seed.deserialize(k.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ParamError> {
        let Some((name, value)) = self.value.take() else {
            return Err(ParamError::Value("a value after its name".to_owned()));
        };
        // Errors raised inside the value learn which parameter they are about here.
        seed.deserialize(Value(value)).map_err(|e| match e {
            ParamError::Value(expected) => ParamError::Bad {
                name: name.to_owned(),
                value: value.to_owned(),
                expected,
            },
            other => other,
        })
    }
}

/// One parameter's text, parsed by the type that asks for it.
struct Value<'a>(&'a str);

macro_rules! parse_as {
    ($($method:ident => $visit:ident: $t:ty, $expected:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
            match self.0.parse::<$t>() {
                Ok(v) => visitor.$visit(v),
                Err(_) => Err(ParamError::Value($expected.to_owned())),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Value<'_> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0 {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            _ => Err(ParamError::Value("true or false".to_owned())),
        }
    }

    parse_as! {
        deserialize_i64 => visit_i64: i64, "an integer";
        deserialize_u32 => visit_u32: u32, "a non-negative integer";
        deserialize_u64 => visit_u64: u64, "a non-negative integer";
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// An integer from `MIN` to `MAX` (page sizes, depth and node bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(pub u32);

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MIN: u32, const MAX: u32>;
        impl<const MIN: u32, const MAX: u32> Visitor<'_> for V<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer from {MIN} to {MAX}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                match s.parse::<u32>() {
                    Ok(n) if (MIN..=MAX).contains(&n) => Ok(Bounded(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_str(V::<MIN, MAX>)
    }
}

impl<const MIN: u32, const MAX: u32> utoipa::PartialSchema for Bounded<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(MIN))
            .maximum(Some(MAX))
            .into()
    }
}

impl<const MIN: u32, const MAX: u32> utoipa::ToSchema for Bounded<MIN, MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("Integer{MIN}To{MAX}"))
    }
}

/// An RFC 3339 timestamp (any offset), as UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp such as 2026-11-25T10:00:00Z")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
                threadline_shared::time::parse(s)
                    .map(Time)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

impl utoipa::PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Time {}

/// Response format of the unit report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    #[default]
    Json,
    Csv,
    Html,
}

/// Response format of the recall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecallFormat {
    #[default]
    Json,
    Csv,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        name: Option<String>,
        limit: Option<Bounded<1, 100>>,
        flag: Option<bool>,
        at: Option<Time>,
        format: Option<ReportFormat>,
        after: Option<i64>,
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Q, ParamError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Q::deserialize(QueryString(&map))
    }

    fn bad(e: ParamError) -> (String, String, String) {
        match e {
            ParamError::Bad {
                name,
                value,
                expected,
            } => (name, value, expected),
            other => panic!("not a bad value: {other:?}"),
        }
    }

    #[test]
    fn typed_values_and_empty_as_absent() {
        let q = parse(&[
            ("name", "x"),
            ("limit", "100"),
            ("flag", "1"),
            ("at", "2026-01-01T11:00:00+01:00"),
            ("format", "csv"),
            ("after", "-3"),
        ])
        .unwrap();
        assert_eq!(q.name.as_deref(), Some("x"));
        assert_eq!(q.limit, Some(Bounded(100)));
        assert_eq!(q.flag, Some(true));
        assert_eq!(
            q.at.map(|t| threadline_shared::time::format(&t.0)),
            Some("2026-01-01T10:00:00.000000Z".to_owned())
        );
        assert_eq!(q.format, Some(ReportFormat::Csv));
        assert_eq!(q.after, Some(-3));
        let q = parse(&[("name", ""), ("limit", "")]).unwrap();
        assert!(q.name.is_none() && q.limit.is_none());
    }

    #[test]
    fn bad_values_name_parameter_value_and_expectation() {
        for (pairs, want) in [
            (("limit", "0"), "an integer from 1 to 100"),
            (("limit", "abc"), "an integer from 1 to 100"),
            (("flag", "maybe"), "true or false"),
            (
                ("at", "10:00"),
                "an RFC 3339 timestamp such as 2026-11-25T10:00:00Z",
            ),
            (("format", "xml"), "one of json, csv, html"),
            (("after", "x"), "an integer"),
        ] {
            let (name, value, expected) = bad(parse(&[pairs]).unwrap_err());
            assert_eq!((name.as_str(), value.as_str()), pairs);
            assert_eq!(expected, want);
        }
    }

    #[test]
    fn unknown_names_are_all_listed_with_the_allowed_ones() {
        match parse(&[("zeta", "1"), ("name", "x"), ("alpha", "")]).unwrap_err() {
            ParamError::Unknown { unknown, allowed } => {
                assert_eq!(unknown, ["alpha", "zeta"]);
                assert_eq!(allowed, ["name", "limit", "flag", "at", "format", "after"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
