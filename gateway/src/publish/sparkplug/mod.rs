//! Sparkplug B 3.0 edge node for readings (`[sparkplug]`), alongside — not instead of — the
//! Threadline records: every recorded tag (`record = true`) is a metric of the Sparkplug device
//! named after its Threadline device; the values the deadband lets through are published as
//! DDATA. See `docs/sparkplug.md`.
//!
//! - [`proto`]: the `sparkplug_b.proto` messages (prost derive, hand-written);
//! - [`node`]: aliases, datatypes, `seq`, the payloads (pure, unit-tested);
//! - [`client`]: its own MQTT session (NDEATH as will, a new `bdSeq` per session), NCMD
//!   rebirth, the primary host's STATE and store-and-forward.

pub mod client;
pub mod node;
pub mod proto;

use serde::Deserialize;
use threadline_shared::config::Validator;

pub use client::{SparkplugMetrics, spawn};

/// `[sparkplug]`: the gateway as a Sparkplug B edge node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugSection {
    /// `false` keeps the section but publishes nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sparkplug group id (one topic level).
    pub group_id: String,
    /// Edge node id (one topic level); default: `gateway.id`.
    #[serde(default)]
    pub edge_node_id: Option<String>,
    /// The primary host application's id: births wait for its `spBv1.0/STATE/{id}` to be
    /// online; while it is offline values are held and sent later with `is_historical`.
    #[serde(default)]
    pub primary_host_id: Option<String>,
    /// Values held at most while the primary host is offline (oldest given up first, counted).
    #[serde(default = "default_historical_max")]
    pub historical_max: usize,
    /// MQTT client id of the Sparkplug session; default: the gateway's client id + `-spb`.
    #[serde(default)]
    pub client_id: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_historical_max() -> usize {
    100_000
}

impl SparkplugSection {
    pub fn edge_node_id<'a>(&'a self, gateway_id: &'a str) -> &'a str {
        self.edge_node_id.as_deref().unwrap_or(gateway_id)
    }
}

pub(crate) fn validate(sp: &SparkplugSection, v: &mut Validator<'_>) {
    let levels = [
        ("sparkplug.group_id", Some(&sp.group_id)),
        ("sparkplug.edge_node_id", sp.edge_node_id.as_ref()),
        ("sparkplug.primary_host_id", sp.primary_host_id.as_ref()),
    ];
    for (key, value) in levels {
        if let Some(value) = value
            && let Err(e) = threadline_shared::topic::check_level("id", value)
        {
            v.error(key, e.to_string());
        }
    }
    if sp.historical_max == 0 {
        v.error("sparkplug.historical_max", "must be at least 1");
    }
}

#[cfg(test)]
mod tests;
