//! The retained `{root}/{plant}/holds` topic (QoS 1), on an MQTT session of its own (client id
//! `{client_id}-holds`, clean session): every message replaces the cached holds. The session
//! reconnects by itself; while the broker is away the cached holds stay in force.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cache::{Hold, RouteCache};
use crate::config::GatewayConfig;

#[derive(Debug, Deserialize)]
struct HoldsMessage {
    v: u32,
    #[serde(default)]
    chain_seq: i64,
    holds: Vec<Hold>,
}

/// The holds topic of the gateway's plant.
pub(crate) fn holds_topic(cfg: &GatewayConfig) -> String {
    format!("{}/{}/holds", cfg.mqtt.topic_root, cfg.gateway.plant)
}

/// Starts listening to the holds topic (a validated config's MQTT settings).
pub fn spawn_holds_listener(
    cfg: &GatewayConfig,
    cache: Arc<RouteCache>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    let mut opts = cfg
        .mqtt
        .client()
        .ok()?
        .options(&format!("{}-holds", cfg.client_id()));
    opts.set_clean_session(true);
    opts.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
    let topic = holds_topic(cfg);
    Some(tokio::spawn(run(opts, topic, cache, stop)))
}

async fn run(
    opts: rumqttc::MqttOptions,
    topic: String,
    cache: Arc<RouteCache>,
    stop: CancellationToken,
) {
    let (client, mut el) = AsyncClient::new(opts, 16);
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = client.try_disconnect();
                return;
            }
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(%topic, "holds: subscribed");
                    let _ = client.try_subscribe(&topic, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == topic => {
                    match serde_json::from_slice::<HoldsMessage>(&p.payload) {
                        Ok(m) if m.v == 1 => {
                            tracing::info!(holds = m.holds.len(), chain_seq = m.chain_seq, "holds received");
                            cache.set_holds(m.chain_seq, m.holds);
                        }
                        Ok(m) => tracing::warn!(v = m.v, "holds message of an unknown version ignored"),
                        Err(e) => tracing::warn!(error = %e, "undecodable holds message ignored"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "holds: broker connection lost; cached holds stay in force");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
