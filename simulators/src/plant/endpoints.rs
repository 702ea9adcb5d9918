//! Where the simulated devices and scanners of a running plant are, and gateway configs
//! rewritten to point at them.
//!
//! `threadline-sim --ready-file F` writes [`Endpoints`] as JSON once every simulator is up;
//! `threadline-demo` and the end-to-end tests then call [`rewrite_gateway_config`] on the line
//! configs so that each simulated device's `address` and each scanner's `port` is where the
//! simulator actually listens (free ports and `/dev/pts/N` paths are only known at start).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Addresses of a running plant simulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Modbus TCP device id → `host:port`.
    pub devices: BTreeMap<String, String>,
    /// OPC UA device id → `opc.tcp://…` endpoint.
    #[serde(default)]
    pub opcua: BTreeMap<String, String>,
    /// Scanner id → the pseudo-terminal (or link) the gateway opens.
    pub scanners: BTreeMap<String, String>,
}

/// What else to change in a gateway config besides the endpoints.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub mqtt_url: Option<String>,
    pub data_dir: Option<String>,
    /// `[route] aggregator_url` (the aggregator's HTTP address), when the config has `[route]`.
    pub aggregator_url: Option<String>,
}

/// Why a config could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[error("gateway config is not valid TOML: {0}")]
pub struct RewriteError(#[from] toml::de::Error);

/// The gateway config `text` with every simulated device's address / endpoint and every
/// simulated scanner's port replaced (comments are not kept: the result is a generated file).
pub fn rewrite_gateway_config(
    text: &str,
    endpoints: &Endpoints,
    overrides: &Overrides,
) -> Result<String, RewriteError> {
    let mut doc: toml::Table = text.parse()?;
    if let Some(gw) = doc.get_mut("gateway").and_then(|v| v.as_table_mut())
        && let Some(d) = &overrides.data_dir
    {
        gw.insert("data_dir".into(), toml::Value::String(d.clone()));
    }
    if let Some(m) = doc.get_mut("mqtt").and_then(|v| v.as_table_mut())
        && let Some(u) = &overrides.mqtt_url
    {
        m.insert("url".into(), toml::Value::String(u.clone()));
    }
    if let Some(r) = doc.get_mut("route").and_then(|v| v.as_table_mut())
        && let Some(u) = &overrides.aggregator_url
    {
        r.insert("aggregator_url".into(), toml::Value::String(u.clone()));
    }
    set_by_id(&mut doc, "device", "address", &endpoints.devices);
    set_by_id(&mut doc, "device", "endpoint", &endpoints.opcua);
    set_by_id(&mut doc, "scanner", "port", &endpoints.scanners);
    Ok(toml::to_string(&doc).unwrap_or_default())
}

/// Sets `key` in every `[[section]]` table whose `id` has an entry in `values`.
fn set_by_id(doc: &mut toml::Table, section: &str, key: &str, values: &BTreeMap<String, String>) {
    let Some(tables) = doc.get_mut(section).and_then(|v| v.as_array_mut()) else {
        return;
    };
    for t in tables.iter_mut().filter_map(|t| t.as_table_mut()) {
        let id = t.get("id").and_then(|v| v.as_str()).unwrap_or("");
        if let Some(v) = values.get(id) {
            t.insert(key.into(), toml::Value::String(v.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use threadline_gateway::config::GatewayConfig;

    #[test]
    fn rewritten_demo_config_points_at_the_simulators() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo/line-1.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let mut e = Endpoints::default();
        e.devices.insert("l1-plc".into(), "127.0.0.1:40001".into());
        e.scanners
            .insert("st10-scanner".into(), "/dev/pts/77".into());
        let out = rewrite_gateway_config(
            &text,
            &e,
            &Overrides {
                mqtt_url: Some("mqtt://127.0.0.1:1999".into()),
                data_dir: Some("/tmp/x".into()),
                aggregator_url: Some("http://127.0.0.1:1998".into()),
            },
        )
        .unwrap();
        let cfg = GatewayConfig::parse("rewritten.toml", &out).unwrap();
        assert_eq!(cfg.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1999"));
        assert_eq!(cfg.gateway.data_dir, std::path::PathBuf::from("/tmp/x"));
        let d = cfg.device.iter().find(|d| d.id == "l1-plc").unwrap();
        assert_eq!(d.address.as_deref(), Some("127.0.0.1:40001"));
        let hall = cfg.device.iter().find(|d| d.id == "hall-env").unwrap();
        assert_eq!(hall.address.as_deref(), Some("127.0.0.1:15022"));
        let s = cfg.scanner.iter().find(|s| s.id == "st10-scanner").unwrap();
        assert_eq!(s.port.as_deref(), Some("/dev/pts/77"));
        assert_eq!(cfg.station.len(), 4);
    }

    #[test]
    fn the_route_lookups_of_line_2_go_to_the_given_aggregator() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo/line-2.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let out = rewrite_gateway_config(
            &text,
            &Endpoints::default(),
            &Overrides {
                aggregator_url: Some("http://127.0.0.1:1998".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        let cfg = GatewayConfig::parse("rewritten.toml", &out).unwrap();
        let route = cfg.route.as_ref().unwrap();
        assert_eq!(route.aggregator_url, "http://127.0.0.1:1998");
        let st130 = cfg.station.iter().find(|s| s.id == "ST130").unwrap();
        assert!(st130.enforce_route);
    }
}
