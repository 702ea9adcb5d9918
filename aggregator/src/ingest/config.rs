//! `[mqtt]` of the aggregator: an external broker or the embedded one, the subscriptions, and
//! the broker connection (URL, credentials, TLS, keep-alive; checked and loaded by
//! [`threadline_shared::mqtt`], the same rules as the gateway's).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use threadline_shared::config::Validator;
use threadline_shared::mqtt::{ClientKeys, ClientSettings, KeyError, KeyErrors};

use super::broker_auth::{BrokerAuth, BrokerUsers, INTERNAL_USER, internal_password};

/// `[mqtt]`: an external broker, or the embedded one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// External broker: `mqtt://host:1883` or `mqtts://host:8883`; no credentials in it. With
    /// `embedded = true`, the aggregator connects to its own broker and this is ignored.
    #[serde(default)]
    pub url: Option<String>,
    /// The brokers of a cluster, tried in turn on connect and on every reconnect; either this
    /// or `url` (ignored with `embedded = true`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Run an MQTT broker (rumqttd) in-process, for one-box installs.
    #[serde(default)]
    pub embedded: bool,
    /// The embedded broker's listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The embedded broker's users: a Mosquitto `password_file` (`user:$7$…` lines as
    /// `mosquitto_passwd` writes them), read at load. Clients without a user and password of
    /// this file are refused. Required with `embedded = true` unless `allow_anonymous = true`.
    #[serde(default)]
    pub broker_password_file: Option<PathBuf>,
    /// Let the embedded broker accept clients without a login (the demo, on loopback). An
    /// explicit opt-out: without it and without `broker_password_file` the config is refused.
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// Subscribe as `$share/{group}/…` so that replicas split the load.
    #[serde(default)]
    pub shared_group: Option<String>,
    /// Default: `aggregator.id`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (never inline); read at load, surrounding whitespace trimmed.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) for `mqtts://`; default: the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Directory of the gateways' signing keys, `DIR/{gateway_id}.key` (and `.key.next` during
    /// a roll-over), written by `threadline-aggregator keygen`. With it only envelopes signed
    /// with their gateway's key are ingested (others are dead-lettered, `bad signature`) and
    /// acks are signed (docs/security.md). Without it nothing is signed, as before.
    #[serde(default)]
    pub gateway_keys_dir: Option<PathBuf>,
    /// The connection the keys above describe, loaded once (URL parsed, password and
    /// certificates read) by validation when the file is loaded; see [`MqttSection::client`].
    /// Keys changed after that are not seen: a changed config is loaded anew (`kill -HUP`).
    #[serde(skip)]
    client: OnceLock<Result<ClientSettings, KeyErrors>>,
    /// `broker_password_file`, loaded once (by validation); see [`MqttSection::broker_auth`].
    #[serde(skip)]
    broker_users: OnceLock<Result<Arc<BrokerUsers>, String>>,
}

fn default_listen() -> String {
    "127.0.0.1:1883".to_owned()
}
fn default_topic_root() -> String {
    threadline_shared::topic::DEFAULT_ROOT.to_owned()
}
fn default_keep_alive_s() -> u64 {
    30
}

impl MqttSection {
    /// The broker connection (to the embedded broker with `embedded = true`): loaded at the
    /// first call (validation does it when the file is loaded) and kept, so files are read
    /// once and a loaded config's connection cannot fail.
    pub fn client(&self) -> Result<&ClientSettings, &KeyErrors> {
        self.client
            .get_or_init(|| {
                let url = self.broker_url().map_err(|e| KeyErrors(vec![e]))?;
                let no_urls = Vec::new();
                ClientSettings::load(&ClientKeys {
                    url: url.as_deref(),
                    urls: if self.embedded { &no_urls } else { &self.urls },
                    username: self.username.as_deref(),
                    password_file: self.password_file.as_deref(),
                    ca_file: self.ca_file.as_deref(),
                    client_cert_file: self.client_cert_file.as_deref(),
                    client_key_file: self.client_key_file.as_deref(),
                    keep_alive_s: self.keep_alive_s,
                })
            })
            .as_ref()
    }

    /// How the embedded broker admits clients: anonymous with `allow_anonymous = true`, else
    /// the users of `broker_password_file` (loaded at the first call, by validation).
    pub fn broker_auth(&self) -> Result<BrokerAuth, String> {
        if self.allow_anonymous {
            return Ok(BrokerAuth::Anonymous);
        }
        let Some(path) = &self.broker_password_file else {
            return Err(ANONYMOUS_REFUSED.to_owned());
        };
        self.broker_users
            .get_or_init(|| BrokerUsers::load(path).map(Arc::new))
            .clone()
            .map(BrokerAuth::Users)
    }

    /// The login of the ingest client of this process on its own embedded broker (the random
    /// internal one), or `None` (external broker, or an anonymous embedded one).
    pub fn internal_login(&self) -> Option<(&'static str, &'static str)> {
        (self.embedded && !self.allow_anonymous).then(|| (INTERNAL_USER, internal_password()))
    }

    /// `url` (`None` when `urls` names the brokers), or with `embedded = true` the embedded
    /// broker's listener (over loopback when it listens on every address).
    fn broker_url(&self) -> Result<Option<String>, KeyError> {
        if self.embedded {
            let addr: SocketAddr = self.listen.parse().map_err(|_| KeyError {
                key: "listen".to_owned(),
                message: format!(
                    "{:?} is not a socket address like 127.0.0.1:1883",
                    self.listen
                ),
            })?;
            let ip = if addr.ip().is_unspecified() {
                [127, 0, 0, 1].into()
            } else {
                addr.ip()
            };
            return Ok(Some(format!("mqtt://{}", SocketAddr::new(ip, addr.port()))));
        }
        Ok(self.url.clone())
    }
}

const ANONYMOUS_REFUSED: &str = "the embedded broker would accept any client on the network: \
     set [mqtt] broker_password_file (a Mosquitto password_file, see docs/security.md) \
     or allow_anonymous = true";

/// The checks of `[mqtt]`: a broker is named, and its connection loads (every problem on its
/// key).
pub(crate) fn validate(mqtt: &MqttSection, v: &mut Validator<'_>) {
    if mqtt.url.is_none() && mqtt.urls.is_empty() && !mqtt.embedded {
        v.error(
            "mqtt",
            "set `url` (an external broker), `urls` (brokers tried in turn) or `embedded = true`",
        );
        return;
    }
    if let Err(errors) = mqtt.client() {
        errors.report(v);
    }
    if mqtt.embedded {
        if mqtt.allow_anonymous && mqtt.broker_password_file.is_some() {
            v.error(
                "mqtt.allow_anonymous",
                "allow_anonymous = true and broker_password_file exclude each other \
                 (the embedded broker checks every client or none)",
            );
        } else if let Err(e) = mqtt.broker_auth() {
            let key = if mqtt.broker_password_file.is_some() {
                "mqtt.broker_password_file"
            } else {
                "mqtt.embedded"
            };
            v.error(key, e);
        }
    }
    if let Some(dir) = &mqtt.gateway_keys_dir
        && let Err(e) = super::keys::GatewayKeys::open(dir)
    {
        v.error("mqtt.gateway_keys_dir", e);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AggregatorConfig;

    fn config(mqtt: &str) -> String {
        format!("[mqtt]\n{mqtt}\n\n[database]\nurl = \"sqlite://unused.db\"\n")
    }

    #[test]
    fn the_embedded_broker_is_reached_over_loopback() {
        let cfg = AggregatorConfig::parse(
            "agg.toml",
            &config("embedded = true\nallow_anonymous = true\nlisten = \"0.0.0.0:18830\""),
        )
        .unwrap();
        let client = cfg.mqtt.client().unwrap();
        assert_eq!(client.primary().to_string(), "mqtt://127.0.0.1:18830");
        assert_eq!(client.keep_alive(), std::time::Duration::from_secs(30));
        let cfg = AggregatorConfig::parse(
            "agg.toml",
            &config(
                "embedded = true\nallow_anonymous = true\nlisten = \"[::1]:18830\"\nurl = \"ignored\"",
            ),
        )
        .unwrap();
        assert_eq!(
            cfg.mqtt.client().unwrap().primary().to_string(),
            "mqtt://[::1]:18830"
        );
    }

    #[test]
    fn connection_problems_are_placed_at_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let text = config(&format!(
            "url = \"mqtts://agg:s3cret@broker\"\nca_file = \"{}\"\n\
             password_file = \"/nonexistent/agg.pass\"",
            ca.display()
        ));
        let errs = AggregatorConfig::parse("agg.toml", &text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{shown:#?}");
        assert!(
            shown[0].starts_with("agg.toml:2:1: mqtt.url:") && !shown[0].contains("s3cret"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("agg.toml:4:1: mqtt.password_file:")
                && shown[1].contains("set username"),
            "{shown:#?}"
        );
        // With a good URL, the CA file is read at load and its absence reported with its path.
        let text = config(&format!(
            "url = \"mqtts://broker\"\nca_file = \"{}\"",
            ca.display()
        ));
        let errs = AggregatorConfig::parse("agg.toml", &text).unwrap_err().0;
        assert!(
            errs.len() == 1
                && errs[0]
                    .to_string()
                    .starts_with("agg.toml:3:1: mqtt.ca_file: cannot read ")
                && errs[0].message.contains(&ca.display().to_string()),
            "{errs:#?}"
        );
        let errs = AggregatorConfig::parse(
            "agg.toml",
            &config("embedded = true\nallow_anonymous = true\nlisten = \"x\""),
        )
        .unwrap_err()
        .0;
        assert!(
            errs.len() == 1
                && errs[0]
                    .to_string()
                    .starts_with("agg.toml:4:1: mqtt.listen:"),
            "{errs:#?}"
        );
    }

    #[test]
    fn an_embedded_broker_needs_users_or_an_explicit_anonymous() {
        let errs = AggregatorConfig::parse("agg.toml", &config("embedded = true"))
            .unwrap_err()
            .0;
        assert!(
            errs.len() == 1
                && errs[0]
                    .to_string()
                    .starts_with("agg.toml:2:1: mqtt.embedded: ")
                && errs[0].message.contains("broker_password_file")
                && errs[0].message.contains("allow_anonymous = true"),
            "{errs:#?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, "gw-a:plain\n").unwrap();
        let text = config(&format!(
            "embedded = true\nbroker_password_file = \"{}\"",
            file.display()
        ));
        let errs = AggregatorConfig::parse("agg.toml", &text).unwrap_err().0;
        assert!(
            errs.len() == 1
                && errs[0]
                    .to_string()
                    .starts_with("agg.toml:3:1: mqtt.broker_password_file: ")
                && errs[0]
                    .message
                    .contains("line 1: user \"gw-a\": not a hashed password"),
            "{errs:#?}"
        );
        let both = config(&format!(
            "embedded = true\nallow_anonymous = true\nbroker_password_file = \"{}\"",
            file.display()
        ));
        let errs = AggregatorConfig::parse("agg.toml", &both).unwrap_err().0;
        assert!(
            errs.len() == 1 && errs[0].to_string().contains("mqtt.allow_anonymous: "),
            "{errs:#?}"
        );
        let cfg = AggregatorConfig::parse(
            "agg.toml",
            &config("embedded = true\nallow_anonymous = true"),
        )
        .unwrap();
        assert!(cfg.mqtt.internal_login().is_none());
    }

    #[test]
    fn urls_is_a_list_tried_in_turn_and_excludes_url() {
        let cfg = AggregatorConfig::parse(
            "agg.toml",
            &config("urls = [\"mqtt://a:1883\", \"mqtt://b:1884\"]"),
        )
        .unwrap();
        let c = cfg.mqtt.client().unwrap();
        assert_eq!(c.endpoints().len(), 2);
        assert_eq!(c.endpoint_for(1).to_string(), "mqtt://b:1884");
        let errs = AggregatorConfig::parse(
            "agg.toml",
            &config("url = \"mqtt://a\"\nurls = [\"mqtt://b\"]"),
        )
        .unwrap_err()
        .0;
        assert!(
            errs.len() == 1
                && errs[0].to_string().starts_with("agg.toml:3:1: mqtt.urls:")
                && errs[0].message.contains("not both"),
            "{errs:#?}"
        );
        // The embedded broker wins over both, as over `url`.
        let cfg = AggregatorConfig::parse(
            "agg.toml",
            &config(
                "embedded = true\nallow_anonymous = true\nlisten = \"127.0.0.1:18831\"\nurls = [\"mqtt://b\"]",
            ),
        )
        .unwrap();
        assert_eq!(
            cfg.mqtt.client().unwrap().primary().to_string(),
            "mqtt://127.0.0.1:18831"
        );
    }
}
