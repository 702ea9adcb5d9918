//! Building the rumqttc options from `[mqtt]`: URL, TLS, credentials, last will.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::MqttSection;

/// A bundle of the system's trusted roots, used for `mqtts://` without `ca_file`.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Largest envelope we send (Mosquitto's own limit is 256 MiB); rumqttc's default is 10 KiB,
/// far below a batch of records.
pub const MAX_OUTGOING_PACKET: usize = 64 * 1024 * 1024;
/// Largest message we accept (acks; a long list of ranges stays far below this).
pub const MAX_INCOMING_PACKET: usize = 4 * 1024 * 1024;

/// Why the MQTT client could not be set up (all are configuration problems).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("mqtt.url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "mqtts:// without mqtt.ca_file and no system CA bundle found (looked at {0}); set ca_file"
    )]
    NoSystemRoots(String),
}

/// Installs rustls' ring provider once per process (rumqttc is built without one).
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, MqttSetupError> {
    std::fs::read(path).map_err(|source| MqttSetupError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Parses `mqtt://host[:port]` / `mqtts://host[:port]` into (tls, host, port).
fn parse_url(url: &str) -> Result<(bool, String, u16), MqttSetupError> {
    let bad = |why: &str| MqttSetupError::Url {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad("must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(bad(
            "expected only host[:port] after the scheme (credentials go in username / password_file)",
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(h) = rest.strip_prefix('[') {
        // [ipv6]:port
        let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        (h.to_owned(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
            None => (rest.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((tls, host, port))
}

/// The client options: TLS, credentials (password read from its file and trimmed), keep-alive,
/// packet sizes, and `will` as a retained QoS 1 last will on `will_topic`.
pub fn mqtt_options(
    mqtt: &MqttSection,
    client_id: &str,
    will_topic: &str,
    will: Vec<u8>,
) -> Result<MqttOptions, MqttSetupError> {
    let (tls, host, port) = parse_url(&mqtt.url)?;
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(mqtt.keep_alive_s.max(1)));
    opts.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    // The outbox is the source of truth and everything unacked is re-sent after a reconnect,
    // so a persistent broker session would add nothing but duplicates.
    opts.set_clean_session(true);
    opts.set_inflight(u16::try_from(mqtt.inflight_batches.saturating_add(8)).unwrap_or(u16::MAX));
    opts.set_request_channel_capacity(mqtt.inflight_batches.saturating_mul(2).max(16));
    opts.set_last_will(LastWill::new(will_topic, will, QoS::AtLeastOnce, true));
    if let Some(user) = &mqtt.username {
        let password = match &mqtt.password_file {
            Some(p) => String::from_utf8_lossy(&read("mqtt.password_file", p)?)
                .trim()
                .to_owned(),
            None => String::new(),
        };
        opts.set_credentials(user.clone(), password);
    }
    if tls {
        install_crypto_provider();
        let ca = match &mqtt.ca_file {
            Some(p) => read("mqtt.ca_file", p)?,
            None => {
                let found = SYSTEM_CA_BUNDLES.iter().find(|p| Path::new(p).exists());
                match found {
                    Some(p) => read("system CA bundle", Path::new(p))?,
                    None => {
                        return Err(MqttSetupError::NoSystemRoots(SYSTEM_CA_BUNDLES.join(", ")));
                    }
                }
            }
        };
        let client_auth = match (&mqtt.client_cert_file, &mqtt.client_key_file) {
            (Some(c), Some(k)) => Some((
                read("mqtt.client_cert_file", c)?,
                read("mqtt.client_key_file", k)?,
            )),
            _ => None,
        };
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtts://broker.example").unwrap(),
            (true, "broker.example".into(), 8883)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1999").unwrap(),
            (false, "::1".into(), 1999)
        );
        assert!(parse_url("mqtt://u:p@host").is_err());
        assert!(parse_url("http://host").is_err());
        assert!(parse_url("mqtt://host:x").is_err());
    }
}
