//! `[mqtt]` of the gateway: the broker connection (URL, credentials, TLS, keep-alive; checked
//! and loaded by [`threadline_shared::mqtt`], the same rules as the aggregator's) and the
//! delivery limits of the publisher.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use threadline_shared::config::Validator;
use threadline_shared::mqtt::{ClientKeys, ClientSettings, KeyErrors};
use threadline_shared::signing::KeyRing;

/// `[mqtt]`: the broker the gateway publishes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host:1883` or `mqtts://host:8883`; no credentials in it. Either this or `urls`.
    #[serde(default)]
    pub url: Option<String>,
    /// The brokers of a cluster, tried in turn on connect and on every reconnect
    /// (`["mqtt://a:1883", "mqtt://b:1883"]`); either this or `url`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Default: `gateway.id`.
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
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// Records per published envelope.
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Envelopes published but not yet acked by the aggregator, at most.
    #[serde(default = "default_inflight_batches")]
    pub inflight_batches: usize,
    /// An envelope not acked by the aggregator within this time is published again.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Key file of this gateway (written by `threadline-aggregator keygen`): with it every
    /// envelope is signed and only acks signed with one of its keys are obeyed
    /// (docs/security.md). Read at load; the first key signs, every key verifies acks.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// The connection the keys above describe, loaded once (URL parsed, password and
    /// certificates read) by validation when the file is loaded; see [`MqttSection::client`].
    /// Keys changed after that are not seen: a changed config is loaded anew (`kill -HUP`).
    #[serde(skip)]
    client: OnceLock<Result<ClientSettings, KeyErrors>>,
    /// The keys of `signing_key_file`, read once by validation like the password.
    #[serde(skip)]
    signing: OnceLock<Result<Option<Arc<KeyRing>>, String>>,
}

fn default_topic_root() -> String {
    threadline_shared::topic::DEFAULT_ROOT.to_owned()
}
fn default_batch_max_records() -> usize {
    500
}
fn default_inflight_batches() -> usize {
    16
}
fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_keep_alive_s() -> u64 {
    15
}

impl MqttSection {
    /// The broker connection: loaded at the first call (validation does it when the file is
    /// loaded) and kept, so files are read once and a loaded config's connection cannot fail.
    pub fn client(&self) -> Result<&ClientSettings, &KeyErrors> {
        self.client
            .get_or_init(|| {
                ClientSettings::load(&ClientKeys {
                    url: self.url.as_deref(),
                    urls: &self.urls,
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

    /// The signing keys (`None` without `signing_key_file`): read at the first call
    /// (validation), then kept.
    pub fn signing(&self) -> Result<Option<&Arc<KeyRing>>, &str> {
        let loaded = self.signing.get_or_init(|| match &self.signing_key_file {
            None => Ok(None),
            Some(p) => KeyRing::read(&[p.as_path()]).map(|k| Some(Arc::new(k))),
        });
        match loaded {
            Ok(k) => Ok(k.as_ref()),
            Err(e) => Err(e.as_str()),
        }
    }
}

/// The checks of `[mqtt]`: the connection (every problem on its key) and the delivery limits.
pub(crate) fn validate(mqtt: &MqttSection, v: &mut Validator<'_>) {
    if let Err(errors) = mqtt.client() {
        errors.report(v);
    }
    if let Err(e) = mqtt.signing() {
        v.error("mqtt.signing_key_file", e.to_owned());
    }
    if mqtt.batch_max_records == 0 {
        v.error("mqtt.batch_max_records", "must be at least 1");
    }
    if mqtt.inflight_batches == 0 {
        v.error("mqtt.inflight_batches", "must be at least 1");
    }
}

#[cfg(test)]
mod tests {
    use crate::config::GatewayConfig;

    fn config(mqtt: &str) -> String {
        format!(
            "[gateway]\nid = \"gw-1\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"/tmp/unused\"\n\n\
             [mqtt]\n{mqtt}\n"
        )
    }

    #[test]
    fn connection_problems_are_placed_at_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gw.pass");
        let text = config(&format!(
            "url = \"mqtt://gw:s3cret@broker:1883\"\nusername = \"gw\"\n\
             password_file = \"{}\"\nkeep_alive_s = 0",
            missing.display()
        ));
        let errs = GatewayConfig::parse("gw.toml", &text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("gw.toml:8:1: mqtt.url:")
                && shown[0].contains("set `username` and `password_file`")
                && !shown[0].contains("s3cret"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("gw.toml:10:1: mqtt.password_file: cannot read ")
                && shown[1].contains(&missing.display().to_string()),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("gw.toml:11:1: mqtt.keep_alive_s:"),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_loaded_config_holds_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("gw.pass");
        std::fs::write(&pass, "s3cret\n").unwrap();
        let text = config(&format!(
            "url = \"mqtt://broker\"\nusername = \"gw\"\npassword_file = \"{}\"",
            pass.display()
        ));
        let cfg = GatewayConfig::parse("gw.toml", &text).unwrap();
        // Read once, at load.
        std::fs::remove_file(&pass).unwrap();
        let o = cfg.mqtt.client().unwrap().options(cfg.client_id());
        assert_eq!(o.broker_address(), ("broker".into(), 1883));
        assert_eq!(o.client_id(), "gw-1");
        assert_eq!(o.keep_alive(), std::time::Duration::from_secs(15));
        assert_eq!(o.credentials().unwrap().password, "s3cret");
        // A clone (the publisher's copy) carries the loaded connection along.
        let copy = cfg.mqtt.clone();
        assert!(copy.client().is_ok());
    }

    #[test]
    fn urls_is_a_list_tried_in_turn_and_excludes_url() {
        let text = config("urls = [\"mqtt://a:1883\", \"mqtt://b:1884\"]");
        let cfg = GatewayConfig::parse("gw.toml", &text).unwrap();
        let c = cfg.mqtt.client().unwrap();
        assert_eq!(c.endpoints().len(), 2);
        assert_eq!(c.options_for(1, "x").broker_address(), ("b".into(), 1884));

        let text = config("url = \"mqtt://a\"\nurls = [\"mqtt://b\"]");
        let errs = GatewayConfig::parse("gw.toml", &text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            shown.len() == 1
                && shown[0].starts_with("gw.toml:9:1: mqtt.urls:")
                && shown[0].contains("not both"),
            "{shown:#?}"
        );
        let text = config("keep_alive_s = 5");
        let errs = GatewayConfig::parse("gw.toml", &text).unwrap_err().0;
        assert!(
            errs.len() == 1 && errs[0].to_string().contains("mqtt.url: no broker"),
            "{errs:#?}"
        );
        let text = config("urls = [\"mqtt://a\", \"ftp://b\"]");
        let errs = GatewayConfig::parse("gw.toml", &text).unwrap_err().0;
        assert!(
            errs.len() == 1 && errs[0].to_string().starts_with("gw.toml:8:"),
            "{errs:#?}"
        );
        assert!(errs[0].to_string().contains("mqtt.urls[1]: "), "{errs:#?}");
    }
}
