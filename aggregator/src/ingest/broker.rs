//! The embedded MQTT broker (rumqttd) for one-box installs.
//!
//! rumqttd has no shutdown API and panics on some config errors, so: the listen address is
//! checked by binding it first (a busy port is a clear error, not a panic or a hang), the broker
//! runs on its own OS thread for the life of the process, and we wait until it accepts TCP
//! connections before connecting to it.
//!
//! Clients log in with a user of `[mqtt] broker_password_file` (checked by [`super::broker_auth`]
//! in rumqttd's auth hook; a refused client gets no CONNACK, its connection is closed) unless
//! `allow_anonymous = true`. rumqttd has no ACLs: with the embedded broker a logged-in gateway
//! can still publish on another's topics, which signed envelopes and acks
//! (`gateway_keys_dir`) make harmless (docs/security.md).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::broker_auth::{self, BrokerAuth};

/// Starts rumqttd on `listen` (one MQTT 3.1.1 server; gateways and the aggregator speak 3.1.1)
/// admitting clients as `auth` says, and returns once it accepts connections.
pub fn start_embedded(
    listen: SocketAddr,
    max_packet_bytes: usize,
    auth: BrokerAuth,
) -> anyhow::Result<()> {
    // Bind first: rumqttd would only log (or panic in its thread) on a busy port.
    match TcpListener::bind(listen) {
        Ok(l) => drop(l),
        Err(e) => anyhow::bail!(
            "embedded MQTT broker cannot listen on {listen}: {e} \
             (another broker there? set [mqtt] listen = \"127.0.0.1:PORT\" to another port, \
             or use an external broker with [mqtt] url)"
        ),
    }
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: max_packet_bytes,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let BrokerAuth::Users(users) = auth {
        connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let users = Arc::clone(&users);
            async move {
                let ok = users.verify(&user, &pass);
                if !ok {
                    broker_auth::log_refused(&client_id, &user);
                }
                ok
            }
        });
    }
    let server = ServerSettings {
        name: "v4-embedded".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("rumqttd".to_owned())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("spawning the embedded broker thread")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    loop {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("embedded MQTT broker did not start listening on {listen} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
