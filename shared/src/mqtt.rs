//! The MQTT client setup both daemons share: the `[mqtt]` keys that say how to reach the broker
//! (URL, credentials, TLS, keep-alive) are checked and their files read **once, when the config
//! file is validated**, into a [`ClientSettings`]; that value then gives the `rumqttc` options of
//! every connection. The gateway's publisher and the aggregator's ingest keep their own loops
//! and their own limits (packet sizes, in-flight window, last will); only this part is common.
//!
//! The rules, the same for both daemons (docs/configuration.md, "MQTT connection"):
//!
//! - `url`: `mqtt://HOST[:PORT]` (port 1883 by default) or `mqtts://HOST[:PORT]` (TLS, port
//!   8883); HOST is a name, an IPv4 address or `[IPv6]`; nothing may follow but one `/`.
//!   A URL with credentials (`mqtt://user:pass@host`) is refused: they go in `username` and
//!   `password_file`, so a password never sits in the config file.
//! - `password_file`: read once at load; surrounding whitespace is trimmed (the newline an editor
//!   or `echo` leaves, as for the aggregator's token files), so a password cannot begin or end
//!   with whitespace; it must not be empty, and it needs `username`. `username` without
//!   `password_file` logs in with an empty password.
//! - TLS (`mqtts://`): rustls with the ring provider handed to it explicitly (rumqttc is built
//!   with `use-rustls-no-provider`, so nothing depends on a process-wide default). Trusted roots:
//!   the PEM certificates of `ca_file` (a private CA), or without `ca_file` the system's, as
//!   rustls-native-certs finds them (`SSL_CERT_FILE` / `SSL_CERT_DIR` if set, else the platform
//!   store such as `/etc/ssl/certs`). `client_cert_file` + `client_key_file` (PEM, both or
//!   neither) add a client certificate. These files are read (and parsed) at load, and only
//!   with `mqtts://`.
//! - `keep_alive_s`: 1 to 65535 seconds (an MQTT keep-alive is 16 bits).
//!
//! Every problem is reported as a [`KeyError`] naming the key within `[mqtt]`, so the config
//! loader can place it at its line and column.
//!
//! - `urls = ["mqtt://a:1883", "mqtt://b:1883", …]` instead of `url`: the brokers of a cluster
//!   (NATS, EMQX, HiveMQ, VerneMQ), tried in turn on connect and on every reconnect
//!   ([`Rotation`]); exactly one of `url` and `urls` is set, and every element follows the rules
//!   of `url` (a problem is reported at `urls[i]`). Credentials and the TLS setup are the same
//!   for every broker of the list (one TLS configuration, loaded when any element is
//!   `mqtts://`).
//!
//! Envelope and ack signing keys (`signing_key_file`) are read at load like the password, with
//! [`read_secret_file`] (same trimming rule), and kept in a daemon-side field next to the
//! [`ClientSettings`] of its section.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::Validator;

/// Port of `mqtt://` when the URL names none.
pub const DEFAULT_PORT: u16 = 1883;
/// Port of `mqtts://` when the URL names none.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// One problem with an `[mqtt]` key; `key` is relative to the section (`password_file`), the
/// daemon's loader prefixes it (`mqtt.password_file`) to place it in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    fn new(key: &str, message: impl Into<String>) -> KeyError {
        KeyError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Every problem of one `[mqtt]` section (never empty), as [`ClientSettings::load`] found them;
/// shown as `mqtt.KEY: message`, joined by `; `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyErrors(pub Vec<KeyError>);

impl fmt::Display for KeyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "mqtt.{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KeyErrors {}

impl KeyErrors {
    /// Records every problem with the config validator, at `mqtt.KEY`, so each is shown with
    /// its file, line and column.
    pub fn report(&self, v: &mut Validator<'_>) {
        for e in &self.0 {
            v.error(format!("mqtt.{}", e.key), e.message.clone());
        }
    }
}

/// One broker address, parsed from an `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `mqtts://`: TLS.
    pub tls: bool,
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (see the module docs); the error
    /// says what is wrong, never repeating a password the URL may hold.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        const FORM: &str = "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]";
        let parsed = url::Url::parse(url).map_err(|e| {
            // Not echoed when it may hold a password (the URL crate's message never shows it).
            if url.contains('@') {
                format!(
                    "not a valid URL ({e}); {FORM} (credentials go in username / password_file)"
                )
            } else {
                format!("{url:?} is not a valid URL ({e}); {FORM}")
            }
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            let shown = format!(
                "{}://…@{}",
                parsed.scheme(),
                &parsed[url::Position::BeforeHost..]
            );
            return Err(format!(
                "{shown:?} has a user name or password in it; credentials do not go in the URL: \
                 set `username` and `password_file` instead"
            ));
        }
        let tls = match parsed.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            other => return Err(format!("{url:?}: scheme {other}:// is not MQTT; {FORM}")),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(format!(
                "{url:?}: nothing may follow HOST[:PORT] (no path, no query); {FORM}"
            ));
        }
        if parsed.fragment().is_some() {
            return Err(format!(
                "{url:?}: nothing may follow HOST[:PORT] (no #…); {FORM}"
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => {
                if tls {
                    // rumqttc connects to `{host}:{port}` and verifies the certificate against
                    // the same string, which an IPv6 address cannot be both of.
                    return Err(format!(
                        "{url:?}: mqtts:// to an IPv6 address is not supported by the MQTT \
                         client; use a host name"
                    ));
                }
                a.to_string()
            }
            _ => return Err(format!("{url:?} names no host; {FORM}")),
        };
        let port = match parsed.port() {
            Some(0) => return Err(format!("{url:?}: port 0 cannot be connected to")),
            Some(p) => p,
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
        };
        Ok(Endpoint { tls, host, port })
    }

    /// The host as rumqttc needs it: it connects to `format!("{host}:{port}")`, so an IPv6
    /// address goes in brackets.
    fn connect_host(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.connect_host(), self.port)
    }
}

/// The `[mqtt]` keys both daemons share, borrowed from a daemon's section. The daemon resolves
/// what is its own first (the aggregator's embedded broker gives `url = "mqtt://LISTEN"`).
#[derive(Debug, Clone, Copy)]
pub struct ClientKeys<'a> {
    /// `url`: one broker.
    pub url: Option<&'a str>,
    /// `urls`: brokers tried in turn (empty when not set); exactly one of `url` and `urls`.
    pub urls: &'a [String],
    pub username: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub client_cert_file: Option<&'a Path>,
    pub client_key_file: Option<&'a Path>,
    pub keep_alive_s: u64,
}

/// Where the trusted roots of TLS came from (for `check` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    CaFile(PathBuf),
    /// The system's store, with this many certificates.
    System(usize),
}

/// The TLS side, shared by every `mqtts://` endpoint.
#[derive(Clone)]
struct Tls {
    config: Arc<ClientConfig>,
    roots: Roots,
    client_cert: Option<PathBuf>,
}

/// One broker with what connecting to it takes: the TLS configuration is part of an `mqtts://`
/// endpoint, so it cannot be reached in the clear by mistake.
#[derive(Clone)]
struct Target {
    endpoint: Endpoint,
    tls: Option<Arc<ClientConfig>>,
}

/// A validated, loaded MQTT connection setup: the endpoints, the credentials (password read),
/// the TLS configuration (certificates read and parsed) and the keep-alive. Building it is the
/// only step that reads files or can fail; [`ClientSettings::options`] cannot.
#[derive(Clone)]
pub struct ClientSettings {
    /// The brokers, in the order they are tried; never empty: `url`, or every element of
    /// `urls`.
    targets: Vec<Target>,
    /// Username and password (empty without `password_file`).
    credentials: Option<(String, String)>,
    /// Loaded when an endpoint is `mqtts://`; shared by every TLS endpoint.
    tls: Option<Tls>,
    keep_alive: Duration,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("ClientSettings")
            .field("endpoints", &self.endpoints().collect::<Vec<_>>())
            .field("username", &self.username())
            .field("tls_roots", &self.tls.as_ref().map(|t| &t.roots))
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ClientSettings {
    /// One line for `check`: `mqtts://h:8883 (TLS trusting ca.pem; user "u"; keep-alive 15 s)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.endpoints().enumerate() {
            write!(f, "{}{e}", if i > 0 { ", " } else { "" })?;
        }
        f.write_str(" (")?;
        if let Some(t) = &self.tls {
            match &t.roots {
                Roots::CaFile(p) => write!(f, "TLS trusting {}", p.display())?,
                Roots::System(n) => write!(f, "TLS trusting the system's {n} CA certificates")?,
            }
            if let Some(c) = &t.client_cert {
                write!(f, ", client certificate {}", c.display())?;
            }
            f.write_str("; ")?;
        }
        match &self.credentials {
            Some((u, p)) if p.is_empty() => write!(f, "user {u:?} without password; ")?,
            Some((u, _)) => write!(f, "user {u:?}; ")?,
            None => f.write_str("anonymous; ")?,
        }
        write!(f, "keep-alive {} s)", self.keep_alive.as_secs())
    }
}

impl ClientSettings {
    /// Checks the keys and reads their files; every problem is reported, each on its key.
    pub fn load(keys: &ClientKeys<'_>) -> Result<ClientSettings, KeyErrors> {
        let mut errors = Vec::new();
        // (key, URL) of every broker, in the order they are tried.
        let named: Vec<(String, &str)> = match (keys.url, keys.urls) {
            (Some(_), [_, ..]) => {
                errors.push(KeyError::new(
                    "urls",
                    "set either `url` (one broker) or `urls` (brokers tried in turn), not both",
                ));
                Vec::new()
            }
            (Some(url), []) => vec![("url".to_owned(), url)],
            (None, []) => {
                errors.push(KeyError::new(
                    "url",
                    "no broker: set `url` (one broker) or `urls` (brokers tried in turn)",
                ));
                Vec::new()
            }
            (None, urls) => urls
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("urls[{i}]"), u.as_str()))
                .collect(),
        };
        let endpoints: Vec<Endpoint> = named
            .iter()
            .filter_map(|(key, url)| {
                Endpoint::parse(url)
                    .map_err(|m| errors.push(KeyError::new(key, m)))
                    .ok()
            })
            .collect();
        if let Some(dup) = endpoints
            .iter()
            .enumerate()
            .find_map(|(i, e)| endpoints[..i].contains(e).then_some(e))
        {
            errors.push(KeyError::new(
                "urls",
                format!("{dup} is listed twice; every broker once"),
            ));
        }
        if !(1..=u64::from(u16::MAX)).contains(&keys.keep_alive_s) {
            errors.push(KeyError::new(
                "keep_alive_s",
                format!("{}: expected 1 to 65535 seconds", keys.keep_alive_s),
            ));
        }
        let credentials = match (keys.username, keys.password_file) {
            (Some(""), _) => {
                errors.push(KeyError::new(
                    "username",
                    "is empty: leave it out to connect anonymously",
                ));
                None
            }
            (Some(user), Some(path)) => match read_secret_file(path) {
                Ok(password) => Some((user.to_owned(), password)),
                Err(m) => {
                    errors.push(KeyError::new("password_file", m));
                    None
                }
            },
            (Some(user), None) => Some((user.to_owned(), String::new())),
            (None, Some(_)) => {
                errors.push(KeyError::new(
                    "password_file",
                    "is set but `username` is not, so the password would never be sent; \
                     set username",
                ));
                None
            }
            (None, None) => None,
        };
        if keys.client_cert_file.is_some() != keys.client_key_file.is_some() {
            errors.push(KeyError::new(
                "client_cert_file",
                "client_cert_file and client_key_file go together",
            ));
        }
        let tls = if endpoints.iter().any(|e| e.tls) {
            tls(keys).map_err(|mut e| errors.append(&mut e)).ok()
        } else {
            None
        };
        if !errors.is_empty() || endpoints.len() != named.len() || endpoints.is_empty() {
            return Err(KeyErrors(errors));
        }
        let targets = endpoints
            .into_iter()
            .map(|endpoint| Target {
                // Some whenever an endpoint is TLS (else `tls` failed and returned above).
                tls: endpoint
                    .tls
                    .then(|| tls.as_ref().map(|t| t.config.clone()))
                    .flatten(),
                endpoint,
            })
            .collect();
        Ok(ClientSettings {
            targets,
            credentials,
            tls,
            keep_alive: Duration::from_secs(keys.keep_alive_s),
        })
    }

    /// The brokers in the order they are tried.
    pub fn endpoints(&self) -> impl ExactSizeIterator<Item = &Endpoint> {
        self.targets.iter().map(|t| &t.endpoint)
    }

    /// The broker tried first.
    pub fn primary(&self) -> &Endpoint {
        &self.target(0).endpoint
    }

    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(u, _)| u.as_str())
    }

    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The options for the primary broker: client id, address, keep-alive, credentials and,
    /// for `mqtts://`, the TLS transport. The daemon adds its own limits (packet sizes,
    /// in-flight window, clean session, last will) before connecting.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        self.options_for(0, client_id)
    }

    /// [`ClientSettings::options`] for connection attempt `attempt` (0, 1, 2, …): the brokers
    /// are taken in turn, starting over after the last. With one broker, always that one.
    pub fn options_for(&self, attempt: usize, client_id: &str) -> MqttOptions {
        let t = self.target(attempt);
        let mut o = MqttOptions::new(client_id, t.endpoint.connect_host(), t.endpoint.port);
        o.set_keep_alive(self.keep_alive);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        if let Some(config) = &t.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        o
    }

    /// The broker of connection attempt `attempt` (see [`ClientSettings::options_for`]).
    pub fn endpoint_for(&self, attempt: usize) -> &Endpoint {
        &self.target(attempt).endpoint
    }

    /// A fresh [`Rotation`] over these brokers.
    pub fn rotation(&self, min_wait: Duration, max_wait: Duration) -> Rotation {
        Rotation::new(self.targets.len(), min_wait, max_wait)
    }

    fn target(&self, attempt: usize) -> &Target {
        // `targets` is never empty (`load` builds it with one endpoint at least).
        &self.targets[attempt % self.targets.len()]
    }
}

/// Which broker to try next and how long to wait first, for a daemon's connection loop: every
/// failure (a connect refused or timed out, or a connection lost) moves on to the next broker
/// of the list, at once while some broker of the round has not been tried yet; a whole round
/// of failures waits (from `min_wait`, doubling up to `max_wait`), so a dead cluster is not
/// hammered; a successful connection resets the wait and stays on that broker. With one broker
/// this is a plain doubling back-off on the same broker.
#[derive(Debug, Clone)]
pub struct Rotation {
    brokers: usize,
    /// The attempt number, for [`ClientSettings::options_for`].
    attempt: usize,
    /// Failures since the last successful connection.
    failures: usize,
    min_wait: Duration,
    max_wait: Duration,
    /// The wait after the next whole round of failures.
    wait: Duration,
}

impl Rotation {
    /// A rotation over `brokers` brokers (at least one), starting with the first.
    pub fn new(brokers: usize, min_wait: Duration, max_wait: Duration) -> Rotation {
        Rotation {
            brokers: brokers.max(1),
            attempt: 0,
            failures: 0,
            min_wait,
            max_wait,
            wait: min_wait,
        }
    }

    /// The current attempt: give it to [`ClientSettings::options_for`].
    pub fn attempt(&self) -> usize {
        self.attempt
    }

    /// The index (in the list) of the broker of the current attempt.
    pub fn broker(&self) -> usize {
        self.attempt % self.brokers
    }

    /// Connected: the next failure starts a new round with the shortest wait.
    pub fn connected(&mut self) {
        self.failures = 0;
        self.wait = self.min_wait;
    }

    /// The current attempt failed (or its connection was lost): moves on to the next broker
    /// and returns how long to wait before trying it.
    pub fn failed(&mut self) -> Duration {
        self.attempt = self.attempt.wrapping_add(1);
        self.failures += 1;
        if !self.failures.is_multiple_of(self.brokers) {
            // Another broker of this round has not been tried yet.
            return self.min_wait;
        }
        let wait = self.wait;
        self.wait = (self.wait * 2).min(self.max_wait);
        wait
    }
}

/// Reads a secret from its file (a password; later the signing key): the file's text with
/// surrounding whitespace trimmed (so the newline an editor or `echo` leaves is not part of it).
/// An unreadable, non-UTF-8 or empty file is an error naming the file.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = read_file(path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The PEM certificates of a file: at least one, all well-formed.
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a valid PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls client configuration of `mqtts://`, with the ring provider.
fn tls(keys: &ClientKeys<'_>) -> Result<Tls, Vec<KeyError>> {
    let mut errors = Vec::new();
    let mut store = RootCertStore::empty();
    let roots = match keys.ca_file {
        Some(path) => {
            match pem_certs(path) {
                Ok(certs) => {
                    if store.add_parsable_certificates(certs).0 == 0 {
                        errors.push(KeyError::new(
                            "ca_file",
                            format!("{}: none of its certificates can be used", path.display()),
                        ));
                    }
                }
                Err(m) => errors.push(KeyError::new("ca_file", m)),
            }
            Roots::CaFile(path.to_owned())
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                errors.push(KeyError::new(
                    "ca_file",
                    format!(
                        "mqtts:// without ca_file trusts the system's CA certificates, and none \
                         were found{why}; install them (Debian: ca-certificates) or set ca_file"
                    ),
                ));
            }
            Roots::System(added)
        }
    };
    let client_auth = match (keys.client_cert_file, keys.client_key_file) {
        (Some(cert), Some(key)) => {
            let certs =
                pem_certs(cert).map_err(|m| errors.push(KeyError::new("client_cert_file", m)));
            let key_der = read_file(key)
                .and_then(|pem| {
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                        format!(
                            "{}: no private key found (expected PEM: PKCS#8, PKCS#1 or SEC1): {e}",
                            key.display()
                        )
                    })
                })
                .map_err(|m| errors.push(KeyError::new("client_key_file", m)));
            certs.ok().zip(key_der.ok())
        }
        // Half a pair is reported by the caller.
        _ => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![KeyError::new("url", format!("TLS setup failed: {e}"))])?
            .with_root_certificates(store);
    let config = match client_auth {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
            vec![KeyError::new(
                "client_key_file",
                format!(
                    "{} does not go with client_cert_file {}: {e}",
                    keys.client_key_file
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    keys.client_cert_file
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                ),
            )]
        })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Tls {
        config: Arc::new(config),
        roots,
        client_cert: keys.client_cert_file.map(Path::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(url: &str) -> ClientKeys<'_> {
        ClientKeys {
            url: Some(url),
            urls: &[],
            username: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_s: 15,
        }
    }

    fn errors(k: &ClientKeys<'_>) -> Vec<KeyError> {
        ClientSettings::load(k).expect_err("a problem").0
    }

    fn endpoint(url: &str) -> (bool, String, u16) {
        let e = Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (e.tls, e.host, e.port)
    }

    #[test]
    fn url_forms_and_default_ports() {
        assert_eq!(
            endpoint("mqtt://127.0.0.1:1884"),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(endpoint("mqtt://broker"), (false, "broker".into(), 1883));
        assert_eq!(
            endpoint("mqtts://broker.example"),
            (true, "broker.example".into(), 8883)
        );
        assert_eq!(
            endpoint("mqtts://broker.example:9883/"),
            (true, "broker.example".into(), 9883)
        );
        assert_eq!(endpoint("MQTT://Broker"), (false, "Broker".into(), 1883));
        assert_eq!(endpoint("mqtt://[::1]:1999"), (false, "::1".into(), 1999));
        assert_eq!(endpoint("mqtt://[::1]"), (false, "::1".into(), 1883));
    }

    #[test]
    fn endpoints_show_and_connect_with_brackets_for_ipv6() {
        let e = Endpoint::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!(e.to_string(), "mqtt://[::1]:1999");
        let s = ClientSettings::load(&keys("mqtt://[::1]:1999")).unwrap();
        // rumqttc connects to "{host}:{port}", which needs the brackets.
        assert_eq!(s.options("c").broker_address(), ("[::1]".into(), 1999));
        assert_eq!(
            Endpoint::parse("mqtts://h").unwrap().to_string(),
            "mqtts://h:8883"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://host", "scheme http:// is not MQTT"),
            ("http://u:p4ssw0rd@host", "password_file"),
            ("tcp://host:1883", "scheme tcp:// is not MQTT"),
            ("host:1883", "scheme host:// is not MQTT"),
            ("127.0.0.1:1883", "not a valid URL"),
            ("mqtt://host:x", "not a valid URL"),
            ("mqtt://host:70000", "not a valid URL"),
            ("mqtt://host:0", "port 0"),
            ("mqtt://", "names no host"),
            ("mqtt://host/topic", "no path"),
            ("mqtt://host?x=1", "no query"),
            ("mqtt://host#x", "no #"),
            ("mqtts://[::1]:8883", "IPv6"),
        ] {
            let e = Endpoint::parse(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(
                e.contains("mqtt") || e.contains("IPv6") || e.contains("password_file"),
                "{url}: {e}"
            );
            assert!(!e.contains("p4ssw0rd"), "{url}: {e}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        for url in [
            "mqtt://u:p4ssw0rd@host",
            "mqtts://u:p4ssw0rd@host:8883",
            "mqtt://u@host",
            "mqtt://:p4ssw0rd@host",
        ] {
            let errs = errors(&keys(url));
            assert_eq!(errs.len(), 1, "{url}: {errs:?}");
            assert_eq!(errs[0].key, "url");
            let m = &errs[0].message;
            assert!(
                m.contains("`username` and `password_file`") && m.contains("host"),
                "{url}: {m}"
            );
            assert!(!m.contains("p4ssw0rd"), "{url}: the password is shown: {m}");
        }
        // Also when the rest of the URL is broken.
        let m = Endpoint::parse("mqtt://u:p4ssw0rd@host:x").unwrap_err();
        assert!(
            !m.contains("p4ssw0rd") && m.contains("password_file"),
            "{m}"
        );
    }

    #[test]
    fn password_file_is_read_once_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("  s3cret \n\n", "s3cret"),
            ("two words\n", "two words"),
            ("s3cret", "s3cret"),
        ] {
            let path = dir.path().join("pass");
            std::fs::write(&path, text).unwrap();
            let k = ClientKeys {
                username: Some("gw"),
                password_file: Some(&path),
                ..keys("mqtt://host")
            };
            let s = ClientSettings::load(&k).unwrap();
            // Read at load: the file can go away afterwards.
            std::fs::remove_file(&path).unwrap();
            let login = s.options("gw-1").credentials().expect("credentials");
            assert_eq!(
                (login.username.as_str(), login.password.as_str()),
                ("gw", expected),
                "{text:?}"
            );
            assert!(
                !format!("{s:?}").contains(expected),
                "Debug shows the password"
            );
        }
        assert!(read_secret_file(&dir.path().join("none")).is_err());
    }

    #[test]
    fn username_alone_logs_in_with_an_empty_password() {
        let k = ClientKeys {
            username: Some("gw"),
            ..keys("mqtt://host")
        };
        let login = ClientSettings::load(&k)
            .unwrap()
            .options("c")
            .credentials()
            .unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("gw", "")
        );
        assert!(
            ClientSettings::load(&keys("mqtt://host"))
                .unwrap()
                .options("c")
                .credentials()
                .is_none()
        );
    }

    #[test]
    fn unusable_password_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pass");
        let empty = dir.path().join("empty.pass");
        std::fs::write(&empty, " \n").unwrap();
        let binary = dir.path().join("binary.pass");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        for (path, says) in [
            (&missing, "cannot read"),
            (&empty, "is empty"),
            (&binary, "not UTF-8"),
        ] {
            let k = ClientKeys {
                username: Some("gw"),
                password_file: Some(path),
                ..keys("mqtt://host")
            };
            let errs = errors(&k);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].key, "password_file");
            assert!(
                errs[0].message.contains(&path.display().to_string())
                    && errs[0].message.contains(says),
                "{}",
                errs[0].message
            );
        }
        let k = ClientKeys {
            password_file: Some(&empty),
            ..keys("mqtt://host")
        };
        let errs = errors(&k);
        assert!(
            errs[0].key == "password_file" && errs[0].message.contains("set username"),
            "{errs:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_on_its_key() {
        let k = ClientKeys {
            username: Some("gw"),
            password_file: Some(Path::new("/nonexistent/gw.pass")),
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            client_cert_file: Some(Path::new("/nonexistent/c.pem")),
            keep_alive_s: 0,
            ..keys("mqtts://host")
        };
        let errs = errors(&k);
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "keep_alive_s",
                "password_file",
                "client_cert_file",
                "ca_file"
            ],
            "{errs:?}"
        );
        assert!(errs[3].message.contains("/nonexistent/ca.pem"), "{errs:?}");
        let shown = KeyErrors(errs).to_string();
        assert!(
            shown.starts_with("mqtt.keep_alive_s: 0: expected 1 to 65535"),
            "{shown}"
        );
    }

    #[test]
    fn tls_files_are_only_read_for_mqtts() {
        let k = ClientKeys {
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            ..keys("mqtt://host")
        };
        let s = ClientSettings::load(&k).expect("plain MQTT needs no CA");
        assert!(matches!(s.options("c").transport(), Transport::Tcp));
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let k = ClientKeys {
            ca_file: Some(&ca),
            ..keys("mqtts://host")
        };
        let errs = errors(&k);
        assert!(
            errs.len() == 1
                && errs[0].key == "ca_file"
                && errs[0].message.contains("holds no certificate")
                && errs[0].message.contains(&ca.display().to_string()),
            "{errs:?}"
        );
    }

    #[test]
    fn private_ca_and_client_certificate_are_loaded_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if !crate::testing::make_tls_certs(d) {
            eprintln!("SKIPPED: openssl not available");
            return;
        }
        let (ca, cert, key, wrong_key) = (
            d.join("ca.pem"),
            d.join("server.pem"),
            d.join("server.key"),
            d.join("ca.key"),
        );
        let k = ClientKeys {
            ca_file: Some(&ca),
            ..keys("mqtts://127.0.0.1:8884")
        };
        let s = ClientSettings::load(&k).unwrap();
        let o = s.options("agg-1");
        assert_eq!(o.broker_address(), ("127.0.0.1".into(), 8884));
        assert!(
            matches!(o.transport(), Transport::Tls(TlsConfiguration::Rustls(_))),
            "TLS transport"
        );
        assert!(
            s.to_string().starts_with(&format!(
                "mqtts://127.0.0.1:8884 (TLS trusting {}",
                ca.display()
            )),
            "{s}"
        );
        let with_client = ClientKeys {
            client_cert_file: Some(&cert),
            client_key_file: Some(&key),
            ..k
        };
        let s = ClientSettings::load(&with_client).unwrap();
        assert!(s.to_string().contains("client certificate"), "{s}");
        // A key that is not the certificate's is found at load, not at the first handshake.
        let mismatched = ClientKeys {
            client_key_file: Some(&wrong_key),
            ..with_client
        };
        let errs = errors(&mismatched);
        assert!(
            errs.len() == 1
                && errs[0].key == "client_key_file"
                && errs[0].message.contains("does not go with"),
            "{errs:?}"
        );
        let not_a_key = ClientKeys {
            client_key_file: Some(&ca),
            ..with_client
        };
        let errs = errors(&not_a_key);
        assert!(
            errs.len() == 1
                && errs[0].key == "client_key_file"
                && errs[0].message.contains("no private key"),
            "{errs:?}"
        );
    }

    #[test]
    fn mqtts_without_ca_file_trusts_the_system_roots() {
        let k = keys("mqtts://broker.example");
        match ClientSettings::load(&k) {
            Ok(s) => {
                assert!(s.to_string().contains("TLS trusting the system's"), "{s}");
                assert!(matches!(s.options("c").transport(), Transport::Tls(_)));
            }
            // A machine without a CA store: the problem is named, with the way out.
            Err(KeyErrors(errs)) => {
                assert!(
                    !Path::new("/etc/ssl/certs/ca-certificates.crt").exists(),
                    "the system bundle exists but was not used: {errs:?}"
                );
                assert!(
                    errs[0].key == "ca_file" && errs[0].message.contains("set ca_file"),
                    "{errs:?}"
                );
            }
        }
    }

    #[test]
    fn options_carry_client_id_and_keep_alive() {
        let s = ClientSettings::load(&ClientKeys {
            keep_alive_s: 30,
            ..keys("mqtt://broker:1884")
        })
        .unwrap();
        let o = s.options("gw-line-1");
        assert_eq!(o.client_id(), "gw-line-1");
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert_eq!(o.broker_address(), ("broker".into(), 1884));
        // One broker: every attempt goes to it.
        assert_eq!(
            s.options_for(3, "x").broker_address(),
            ("broker".into(), 1884)
        );
        assert_eq!(s.endpoints().len(), 1);
        assert_eq!(
            s.to_string(),
            "mqtt://broker:1884 (anonymous; keep-alive 30 s)"
        );
    }

    fn list(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn urls_are_tried_in_turn_and_start_over() {
        let urls = list(&["mqtt://a:1883", "mqtt://b:1884", "mqtt://[::1]:1885"]);
        let s = ClientSettings::load(&ClientKeys {
            url: None,
            urls: &urls,
            ..keys("unused")
        })
        .unwrap();
        assert_eq!(s.endpoints().len(), 3);
        let addr = |n| s.options_for(n, "c").broker_address();
        assert_eq!(addr(0), ("a".into(), 1883));
        assert_eq!(addr(1), ("b".into(), 1884));
        assert_eq!(addr(2), ("[::1]".into(), 1885));
        assert_eq!(addr(3), ("a".into(), 1883));
        assert_eq!(s.endpoint_for(4).to_string(), "mqtt://b:1884");
        assert_eq!(s.primary().to_string(), "mqtt://a:1883");
        assert!(
            s.to_string()
                .starts_with("mqtt://a:1883, mqtt://b:1884, mqtt://[::1]:1885 ("),
            "{s}"
        );
    }

    #[test]
    fn rotation_moves_on_at_once_and_waits_after_a_whole_round() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(350));
        let mut r = Rotation::new(3, min, max);
        assert_eq!((r.attempt(), r.broker()), (0, 0));
        // Broker 0 fails: 1 and 2 are tried at once (the shortest wait) ...
        assert_eq!(r.failed(), min);
        assert_eq!(r.broker(), 1);
        assert_eq!(r.failed(), min);
        assert_eq!(r.broker(), 2);
        // ... a whole round failed: wait, back to broker 0, doubling up to max per round.
        assert_eq!(r.failed(), min);
        assert_eq!(r.broker(), 0);
        let round: Vec<Duration> = (0..3).map(|_| r.failed()).collect();
        assert_eq!(round, [min, min, min * 2]);
        let round: Vec<Duration> = (0..3).map(|_| r.failed()).collect();
        assert_eq!(round, [min, min, max]);
        assert_eq!(r.failed(), min);
        assert_eq!(r.failed(), min);
        assert_eq!(r.failed(), max, "capped");
        // Connected to broker 1: a lost connection moves on to broker 2 at once, and the
        // waits start over.
        r.failed();
        assert_eq!(r.broker(), 1);
        r.connected();
        assert_eq!(r.failed(), min);
        assert_eq!(r.broker(), 2);
        assert_eq!(r.failed(), min);
        assert_eq!(r.failed(), min);
        assert_eq!(r.failed(), min);
        assert_eq!(r.failed(), min);
        assert_eq!(r.failed(), min * 2);
        assert_eq!(r.broker(), 1, "six failures after broker 1");
    }

    #[test]
    fn one_broker_is_a_plain_back_off() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(300));
        let mut r = Rotation::new(1, min, max);
        let waits: Vec<Duration> = (0..4).map(|_| r.failed()).collect();
        assert_eq!(waits, [min, min * 2, max, max]);
        assert_eq!(r.broker(), 0);
        r.connected();
        assert_eq!(r.failed(), min);
    }

    #[test]
    fn url_or_urls_exactly_one_and_each_element_checked() {
        let errs = errors(&ClientKeys {
            url: None,
            ..keys("unused")
        });
        assert!(
            errs.len() == 1 && errs[0].key == "url" && errs[0].message.contains("`urls`"),
            "{errs:?}"
        );
        let urls = list(&["mqtt://a"]);
        let errs = errors(&ClientKeys {
            urls: &urls,
            ..keys("mqtt://b")
        });
        assert!(
            errs.len() == 1 && errs[0].key == "urls" && errs[0].message.contains("not both"),
            "{errs:?}"
        );
        let urls = list(&[
            "mqtt://a",
            "http://b",
            "mqtt://u:p4ssw0rd@c",
            "mqtt://a:1883",
        ]);
        let errs = errors(&ClientKeys {
            url: None,
            urls: &urls,
            ..keys("unused")
        });
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("urls[1]: ") && shown[0].contains("http://"));
        assert!(shown[1].starts_with("urls[2]: ") && !shown[1].contains("p4ssw0rd"));
        assert!(
            shown[2].starts_with("urls: mqtt://a:1883 is listed twice"),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_list_with_tls_shares_one_tls_setup() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if !crate::testing::make_tls_certs(d) {
            eprintln!("SKIPPED: openssl not available");
            return;
        }
        let ca = d.join("ca.pem");
        let urls = list(&["mqtts://127.0.0.1:8884", "mqtt://127.0.0.1:1883"]);
        let s = ClientSettings::load(&ClientKeys {
            url: None,
            urls: &urls,
            ca_file: Some(&ca),
            ..keys("unused")
        })
        .unwrap();
        assert!(matches!(
            s.options_for(0, "c").transport(),
            Transport::Tls(_)
        ));
        assert!(matches!(s.options_for(1, "c").transport(), Transport::Tcp));
        // A TLS element needs the TLS files, wherever it is in the list.
        let urls = list(&["mqtt://127.0.0.1:1883", "mqtts://127.0.0.1:8884"]);
        let errs = errors(&ClientKeys {
            url: None,
            urls: &urls,
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            ..keys("unused")
        });
        assert!(errs.len() == 1 && errs[0].key == "ca_file", "{errs:?}");
    }
}
