//! Route and hold enforcement at stations with `enforce_route = true` (docs/routing.md,
//! "Enforcement at the gateway").
//!
//! - `gate`: the [`RouteGate`] the pipeline passes scans through before the station engine;
//! - `lookup`: the aggregator's `route-status` and `routes` over HTTP;
//! - `holds`: the retained `{root}/{plant}/holds` topic, on its own MQTT session;
//! - `interlock`: the verdict written to the PLC (`[[station]] interlock`);
//! - `cache`: routes, holds and this line's own operation results, kept in
//!   `data_dir/route_cache.json` so that a gateway restarted with the aggregator and the broker
//!   down still enforces them.
//!
//! # Why a gate in front of the engine
//!
//! The station engine is synchronous and does no I/O (its step and the outbox commit of its
//! events are one unit, see `stations::state`). The lookup is HTTP and may take up to
//! `lookup_timeout_ms`, so it happens *before* the engine sees the scan: the pipeline asks the
//! engine what a scan names ([`StationEngine::route_subject`](crate::stations::StationEngine::route_subject)),
//! the gate starts the lookup in a task and the pipeline keeps feeding every other input; the
//! verdict comes back on a channel and only then is the scan handed to the engine (or refused
//! with [`StationEngine::refuse_scan`](crate::stations::StationEngine::refuse_scan)). Later
//! scans of the *same* station wait behind it, in order (a unit scan followed by the complete
//! code must not overtake it); other stations and every tag update are not delayed. A tag
//! edge of the same station is not held back: the interlock (or the operator waiting for the
//! verdict) is what keeps a PLC from completing a unit the gateway has not accepted yet.

mod cache;
mod gate;
mod holds;
mod interlock;
mod lookup;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use threadline_shared::config::Validator;

pub use cache::RouteCache;
pub use gate::{Decided, GateCounters, RouteGate};
pub use holds::spawn_holds_listener;
pub use interlock::Interlocks;

/// `[route]`: where the gateway asks whether a unit may be worked at a station.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Base URL of the aggregator's HTTP API, e.g. `http://aggregator:8080` (plain HTTP).
    pub aggregator_url: String,
    /// File holding a bearer token sent with every lookup (the API's `[http]` tokens); read at
    /// load, surrounding whitespace trimmed.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A lookup not answered within this time counts as unreachable.
    #[serde(default = "default_lookup_timeout_ms")]
    pub lookup_timeout_ms: u64,
    /// What a station does when the aggregator cannot answer and this line's own history does
    /// not refuse the unit: `block` (refuse, the default) or `allow`.
    #[serde(default)]
    pub when_unreachable: WhenUnreachable,
    /// The token of `token_file`, read once by validation.
    #[serde(skip)]
    token: OnceLock<Result<Option<String>, String>>,
}

fn default_lookup_timeout_ms() -> u64 {
    1000
}

/// `[route] when_unreachable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnreachable {
    Allow,
    #[default]
    Block,
}

impl RouteSection {
    /// The bearer token (`None` without `token_file`): read at the first call (validation),
    /// then kept.
    pub fn token(&self) -> Result<Option<&str>, &str> {
        let loaded = self.token.get_or_init(|| match &self.token_file {
            None => Ok(None),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) if t.trim().is_empty() => Err(format!("{} is empty", p.display())),
                Ok(t) => Ok(Some(t.trim().to_owned())),
                Err(e) => Err(format!("cannot read {}: {e}", p.display())),
            },
        });
        match loaded {
            Ok(t) => Ok(t.as_deref()),
            Err(e) => Err(e.as_str()),
        }
    }
}

/// The checks of `[route]`.
pub(crate) fn validate(r: &RouteSection, v: &mut Validator<'_>) {
    match reqwest::Url::parse(&r.aggregator_url) {
        Ok(u) if u.scheme() == "http" && u.has_host() => {}
        Ok(u) if u.scheme() == "https" => v.error(
            "route.aggregator_url",
            "https is not supported by the gateway's HTTP client yet: use http:// (a TLS proxy \
             on the gateway host, or the aggregator's plain listener)",
        ),
        Ok(_) => v.error(
            "route.aggregator_url",
            "expected http://host:port of the aggregator's API",
        ),
        Err(e) => v.error("route.aggregator_url", format!("not a URL: {e}")),
    }
    if r.lookup_timeout_ms == 0 {
        v.error("route.lookup_timeout_ms", "must be at least 1");
    }
    if let Err(e) = r.token() {
        v.error("route.token_file", e.to_owned());
    }
}
