//! Query-string and path extraction that answers bad input in the API's JSON error shape.
//!
//! Handlers take every query parameter as text through [`Params`] and parse it themselves, so
//! the 400 names the parameter, the value and what was expected — axum's plain-text rejections
//! never reach the client. Unknown parameter names are refused too: a typo such as
//! `out_of_specs=true` would otherwise silently widen a recall-grade query.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::ApiError;

/// The query string as name → value (the last occurrence wins).
#[derive(Debug, Default)]
pub struct Params {
    map: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs): Query<Vec<(String, String)>> =
            Query::try_from_uri(&parts.uri).map_err(|e| {
                ApiError::bad_request("malformed query string", json!({"reason": e.body_text()}))
            })?;
        Ok(Params {
            map: pairs.into_iter().collect(),
        })
    }
}

fn bad(name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        format!("bad parameter {name}: expected {expected}"),
        json!({"parameter": name, "value": value, "expected": expected}),
    )
}

impl Params {
    /// Refuses any parameter not in `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        Err(ApiError::bad_request(
            format!("unknown parameter {}", unknown.join(", ")),
            json!({"unknown": unknown, "allowed": allowed}),
        ))
    }

    /// A text parameter; empty counts as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.map.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub fn u32(&self, name: &str, min: u32, max: u32) -> Result<Option<u32>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        let expected = format!("an integer from {min} to {max}");
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad(name, &v, &expected)),
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        v.parse::<i64>()
            .map(Some)
            .map_err(|_| bad(name, &v, "an integer"))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        match v.as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(bad(name, &v, "true or false")),
        }
    }

    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        threadline_shared::time::parse(&v).map(Some).map_err(|_| {
            bad(
                name,
                &v,
                "an RFC 3339 timestamp such as 2026-11-25T10:00:00Z",
            )
        })
    }

    /// One of `choices`.
    pub fn choice(&self, name: &str, choices: &[&str]) -> Result<Option<String>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        if choices.contains(&v.as_str()) {
            Ok(Some(v))
        } else {
            Err(bad(name, &v, &format!("one of {}", choices.join(", "))))
        }
    }
}

/// Response format of routes that render more than JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Params {
    pub fn format(&self, allowed: &[Format]) -> Result<Format, ApiError> {
        let names: Vec<&str> = allowed
            .iter()
            .map(|f| match f {
                Format::Json => "json",
                Format::Csv => "csv",
                Format::Html => "html",
            })
            .collect();
        Ok(match self.choice("format", &names)?.as_deref() {
            Some("csv") => Format::Csv,
            Some("html") => Format::Html,
            _ => Format::Json,
        })
    }
}
