//! The aggregator's configuration file (`threadline-aggregator run --config aggregator.toml`).
//! Strict and fully reported, like the gateway's; see `docs/configuration.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use threadline_shared::config::{self, ConfigErrors, Validate, Validator};

pub use crate::ingest::config::MqttSection;

/// The whole aggregator configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    #[serde(default)]
    pub aggregator: AggregatorSection,
    pub mqtt: MqttSection,
    pub database: DatabaseSection,
    #[serde(default)]
    pub http: HttpSection,
    /// `[epcis]`: the EPCIS 2.0 export (see `docs/epcis.md`).
    #[serde(default)]
    pub epcis: crate::epcis::EpcisSection,
    /// `[routing]`: routes loaded at start (see `docs/routing.md`).
    #[serde(default)]
    pub routing: RoutingSection,
}

/// `[routing]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// A TOML file of `[[route]]` tables (part, version, `[[route.operation]]`) stored at start,
    /// for plants that keep their routes in a file rather than send them from the ERP.
    pub routes_file: Option<PathBuf>,
}

/// `[aggregator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSection {
    /// Names this replica (MQTT client id, logs).
    #[serde(default = "default_id")]
    pub id: String,
    /// Records written per database transaction, at most.
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Bytes (of MQTT payloads) per database transaction, at most, in MiB: with
    /// `batch_max_records` it bounds the writer's memory (5,000 records of 4 MiB would not fit).
    #[serde(default = "default_batch_max_mb")]
    pub batch_max_mb: usize,
    /// A partial batch is written after this long.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// MQTT payloads larger than this are refused (dead letter, counted).
    #[serde(default = "default_max_payload_kb")]
    pub max_payload_kb: usize,
    /// Writer tasks (PostgreSQL): gateways are spread over them by id, each writes its own
    /// transactions on its own connection, so several lines' batches commit in parallel. One
    /// gateway is always written by one writer (its hash chain is a sequence). SQLite has one
    /// writer whatever this says (it allows one write transaction at a time). Default: 4, or
    /// half of `database.max_connections` if that is less (the HTTP API needs the rest).
    #[serde(default)]
    pub writers: Option<usize>,
    /// A seq gap (records of a gateway epoch missing below the highest seq stored) open longer
    /// than this makes `/healthz` fail, naming it.
    #[serde(default = "default_gap_alarm_s")]
    pub gap_alarm_s: u64,
    /// A broker that accepts the records subscription but delivers nothing (NATS takes
    /// `$share/…` and sends nothing to it): when gateways report records waiting (their online
    /// status, `buffer_depth` > 0) and none arrived for this long, `/healthz` fails saying so.
    /// 0 = never (e.g. a broker whose shared-subscription strategy is sticky, so that a replica
    /// may legitimately receive nothing).
    #[serde(default = "default_deaf_after_s")]
    pub deaf_after_s: u64,
}

impl Default for AggregatorSection {
    fn default() -> Self {
        AggregatorSection {
            id: default_id(),
            batch_max_records: default_batch_max_records(),
            batch_max_mb: default_batch_max_mb(),
            batch_max_wait_ms: default_batch_max_wait_ms(),
            max_payload_kb: default_max_payload_kb(),
            writers: None,
            gap_alarm_s: default_gap_alarm_s(),
            deaf_after_s: default_deaf_after_s(),
        }
    }
}

fn default_id() -> String {
    "agg-1".to_owned()
}
fn default_batch_max_records() -> usize {
    5000
}
fn default_batch_max_mb() -> usize {
    64
}
fn default_deaf_after_s() -> u64 {
    crate::ingest::deaf::DEFAULT_DEAF_AFTER_S
}
fn default_gap_alarm_s() -> u64 {
    crate::ingest::stats::DEFAULT_GAP_ALARM_S
}
fn default_batch_max_wait_ms() -> u64 {
    50
}
fn default_max_payload_kb() -> usize {
    4096
}

impl AggregatorConfig {
    /// Writer tasks to run: `aggregator.writers`, or its default (see there).
    pub fn writers(&self) -> usize {
        self.aggregator
            .writers
            .unwrap_or_else(|| (self.database.max_connections as usize / 2).clamp(1, 4))
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://user@host/db` or `sqlite://path/threadline.db`.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Readings older than this many days are removed (hourly); unset = kept forever. Trace
    /// events and the genealogy are never removed.
    #[serde(default)]
    pub readings_retention_days: Option<u32>,
    /// A PostgreSQL read replica (streaming replication) for the query side of the HTTP API:
    /// trace, unit reports, recall, analytics, EPCIS export, web pages. Writes and the reads
    /// that enforcement decides on (route status, holds) stay on `url`. Unset = `url` for all.
    #[serde(default)]
    pub read_url: Option<String>,
    /// Keep the factor index of common-cause analysis (per hour and part: units and their
    /// factors; `analytics::factor_index`), so that a population of millions of units is
    /// counted in a second. `false` empties it and stops its triggers.
    #[serde(default = "default_true")]
    pub factor_index: bool,
}

fn default_true() -> bool {
    true
}

fn default_max_connections() -> u32 {
    8
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// No tokens = no authentication: allowed on a loopback `listen` only, unless
    /// `allow_anonymous = true` (docs/security.md).
    #[serde(default)]
    pub token: Vec<TokenConfig>,
    /// Serve the API without tokens on a non-loopback address (an explicit opt-out, e.g.
    /// behind an authenticating reverse proxy).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// API queries run on their own connection pool; on PostgreSQL each statement is cancelled
    /// after this long (answered 503 with the JSON error shape), so no query can starve ingest.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM, leaf first), with `tls_key_file`; plain
    /// HTTP is then not answered on the port. Read at load.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The TLS config the two keys above describe, loaded once by validation.
    #[serde(skip)]
    tls: std::sync::OnceLock<Result<std::sync::Arc<rustls::ServerConfig>, String>>,
}

impl HttpSection {
    /// The HTTPS server config, `None` without `tls_cert_file` / `tls_key_file` (loaded at the
    /// first call: validation does it when the file is loaded).
    pub fn tls(&self) -> Option<Result<std::sync::Arc<rustls::ServerConfig>, String>> {
        let (cert, key) = (
            self.tls_cert_file.as_deref()?,
            self.tls_key_file.as_deref()?,
        );
        Some(
            self.tls
                .get_or_init(|| crate::api::tls::server_config(cert, key))
                .clone(),
        )
    }
}

fn default_query_timeout_ms() -> u64 {
    30_000
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_http_listen(),
            token: Vec::new(),
            allow_anonymous: false,
            query_timeout_ms: default_query_timeout_ms(),
            tls_cert_file: None,
            tls_key_file: None,
            tls: std::sync::OnceLock::new(),
        }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

/// Token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Write,
}

/// `[[http.token]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// File holding the token (never inline).
    pub token_file: PathBuf,
    pub scope: Scope,
}

impl AggregatorConfig {
    pub fn load(path: &Path) -> Result<AggregatorConfig, ConfigErrors> {
        config::load(path)
    }

    pub fn parse(file: &str, text: &str) -> Result<AggregatorConfig, ConfigErrors> {
        config::parse(file, text)
    }

    /// True when the database is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
    }
}

impl Validate for AggregatorConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.database.readings_retention_days == Some(0) {
            v.error(
                "database.readings_retention_days",
                "0 would remove every reading: expected at least 1 (or leave it out to keep them)",
            );
        }
        if let Some(w) = self.aggregator.writers {
            if !(1..=64).contains(&w) {
                v.error("aggregator.writers", format!("{w}: expected 1 to 64"));
            } else if w as u64 >= u64::from(self.database.max_connections) {
                v.error(
                    "aggregator.writers",
                    format!(
                        "{w} writers hold {w} database connections while writing; \
                         database.max_connections is {}, which leaves none for the HTTP API \
                         (raise max_connections or lower writers)",
                        self.database.max_connections
                    ),
                );
            }
        }
        let url = &self.database.url;
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            v.error(
                "database.url",
                format!("{url:?}: expected postgres://… or sqlite://…"),
            );
        }
        if let Some(read) = &self.database.read_url {
            if !self.is_postgres() {
                v.error(
                    "database.read_url",
                    "a read replica needs PostgreSQL: database.url is SQLite (leave read_url out)",
                );
            } else if !(read.starts_with("postgres://") || read.starts_with("postgresql://")) {
                v.error(
                    "database.read_url",
                    format!("{read:?}: expected postgres://… (a read replica of database.url)"),
                );
            }
        }
        crate::ingest::config::validate(&self.mqtt, v);
        match self.http.listen.parse::<std::net::SocketAddr>() {
            Err(_) => v.error(
                "http.listen",
                format!(
                    "{:?} is not a socket address like 127.0.0.1:8080",
                    self.http.listen
                ),
            ),
            // Anyone who reaches the port could read the genealogy (customers included).
            Ok(addr)
                if !addr.ip().is_loopback()
                    && self.http.token.is_empty()
                    && !self.http.allow_anonymous =>
            {
                v.error(
                    "http.listen",
                    format!(
                        "{addr} is reachable from other machines and no token is configured: \
                         set [[http.token]] or [http] allow_anonymous = true"
                    ),
                );
            }
            Ok(_) => {}
        }
        match (&self.http.tls_cert_file, &self.http.tls_key_file) {
            (Some(_), None) => v.error("http.tls_cert_file", "set tls_key_file too"),
            (None, Some(_)) => v.error("http.tls_key_file", "set tls_cert_file too"),
            _ => {
                if let Some(Err(e)) = self.http.tls() {
                    v.error("http.tls_cert_file", e);
                }
            }
        }
        if self.aggregator.batch_max_records == 0 {
            v.error("aggregator.batch_max_records", "must be at least 1");
        }
        if let Some(problem) = self.epcis.check() {
            v.error("epcis.id_base", problem);
        }
        if let Some(f) = &self.routing.routes_file
            && let Err(e) = std::fs::metadata(f)
        {
            v.error(
                "routing.routes_file",
                format!("cannot read {}: {e}", f.display()),
            );
        }
        if self.aggregator.gap_alarm_s == 0 {
            v.error("aggregator.gap_alarm_s", "must be at least 1 (seconds)");
        }
        if self.aggregator.batch_max_mb == 0 {
            v.error("aggregator.batch_max_mb", "must be at least 1");
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.http.token.iter().enumerate() {
            if !names.insert(t.name.as_str()) {
                v.error(
                    format!("http.token[{i}].name"),
                    format!("duplicate token name {:?}", t.name),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_listen_without_tokens_is_refused_unless_anonymous_is_explicit() {
        let base = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[database]\nurl = \"sqlite://t.db\"\n[http]\n";
        let errs =
            AggregatorConfig::parse("agg.toml", &format!("{base}listen = \"0.0.0.0:8080\"\n"))
                .expect_err("refused")
                .0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1, "{shown:#?}");
        assert!(
            shown[0].starts_with("agg.toml:6:1: http.listen: 0.0.0.0:8080 is reachable")
                && shown[0].ends_with("set [[http.token]] or [http] allow_anonymous = true"),
            "{shown:#?}"
        );
        for ok in [
            "listen = \"0.0.0.0:8080\"\nallow_anonymous = true\n",
            "listen = \"127.0.0.1:8080\"\n",
            "listen = \"[::1]:8080\"\n",
            "listen = \"0.0.0.0:8080\"\n[[http.token]]\nname = \"erp\"\ntoken_file = \"/etc/erp.token\"\nscope = \"read\"\n",
        ] {
            AggregatorConfig::parse("agg.toml", &format!("{base}{ok}")).expect(ok);
        }
    }

    #[test]
    fn a_wrong_type_an_unknown_enum_value_and_an_unknown_key_are_all_reported() {
        let text = "[aggregator]\nbatch_max_recrods = 10\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\n\
                    [database]\nurl = \"sqlite://data/t.db\"\nmax_connections = \"eight\"\n\n\
                    [[http.token]]\nname = \"erp\"\ntoken_file = \"/etc/erp.token\"\nscope = \"writ\"\n";
        let errs = AggregatorConfig::parse("agg.toml", text)
            .expect_err("three mistakes")
            .0;
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("agg.toml:2:1: aggregator.batch_max_recrods: unknown field"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("agg.toml:9:19: database.max_connections: invalid type"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with(
                "agg.toml:14:9: http.token[0].scope: unknown variant `writ`, expected `read` or `write`"
            ),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_read_url_needs_postgresql_on_both_sides() {
        let with = |url: &str, read: &str| {
            AggregatorConfig::parse(
                "agg.toml",
                &format!(
                    "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[database]\nurl = \"{url}\"\n\
                     read_url = \"{read}\"\n[http]\n"
                ),
            )
        };
        let pg = "postgres://app@db-primary/threadline";
        let ok = with(pg, "postgres://reader@db-replica/threadline").expect("both PostgreSQL");
        assert_eq!(
            ok.database.read_url.as_deref(),
            Some("postgres://reader@db-replica/threadline")
        );
        for (url, read, says) in [
            (
                "sqlite://t.db",
                "postgres://r/t",
                "a read replica needs PostgreSQL",
            ),
            (
                pg,
                "sqlite://copy.db",
                "\"sqlite://copy.db\": expected postgres://",
            ),
        ] {
            let shown: Vec<String> = with(url, read)
                .expect_err(read)
                .0
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(shown.len(), 1, "{shown:#?}");
            assert!(
                shown[0].starts_with("agg.toml:5:1: database.read_url: ")
                    && shown[0].contains(says),
                "{shown:#?}"
            );
        }
    }
}
