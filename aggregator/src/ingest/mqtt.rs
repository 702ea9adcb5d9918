//! The MQTT side of ingest: connect (external broker or the embedded one), subscribe to every
//! gateway's records and status, feed the writer, publish acks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use threadline_shared::{Topic, TopicKind};
use tokio_util::sync::CancellationToken;

use super::stats::IngestStats;
use super::writer::{AckSink, DecodeConfig, WriterConfig, Writers};
use crate::config::AggregatorConfig;
use crate::store::Db;

/// Messages queued between the MQTT loop and the writers, in all (each writer holds its share).
/// Bounded: when a writer's queue is full, the MQTT loop stops reading and the broker buffers
/// (back-pressure). With payloads up to `max_payload_kb`, this and `batch_max_records` bound the
/// ingest side's memory.
const QUEUE_MESSAGES: usize = 256;
/// Acks the MQTT client can queue; acks are few (one per gateway and batch).
const ACK_QUEUE: usize = 10_000;

/// The MQTT packet limit: big enough that an oversized payload still arrives (to be refused,
/// counted and dead-lettered) instead of killing the connection.
pub fn packet_limit(max_payload_kb: usize) -> usize {
    (max_payload_kb * 1024 * 4).max(1 << 20)
}

/// Builds the client options from the config.
pub fn options(cfg: &AggregatorConfig) -> anyhow::Result<MqttOptions> {
    let m = &cfg.mqtt;
    let client_id = m
        .client_id
        .clone()
        .unwrap_or_else(|| cfg.aggregator.id.clone());
    let (tls, host, port) = if m.embedded {
        let addr: std::net::SocketAddr = m.listen.parse().context("mqtt.listen")?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        (false, host, addr.port())
    } else {
        let url = m.url.as_deref().context("mqtt.url is not set")?;
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            anyhow::bail!("mqtt.url {url:?} must start with mqtt:// or mqtts://");
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>()
                    .with_context(|| format!("port of {url:?}"))?,
            ),
            None => (rest.to_owned(), if tls { 8883 } else { 1883 }),
        };
        (
            tls,
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        )
    };
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    let limit = packet_limit(cfg.aggregator.max_payload_kb);
    o.set_max_packet_size(limit, limit);
    o.set_request_channel_capacity(ACK_QUEUE);
    o.set_inflight(1000);
    if let Some(user) = &m.username {
        let password = match &m.password_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading mqtt.password_file {}", p.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_file = m.ca_file.as_ref().context("mqtts:// needs mqtt.ca_file")?;
        let ca =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let client_auth = match (&m.client_cert_file, &m.client_key_file) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("reading {}", k.display()))?,
            )),
            (None, None) => None,
            _ => anyhow::bail!("mqtt.client_cert_file and mqtt.client_key_file go together"),
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Runs ingest until `cancel`: the MQTT loop here, the writer on its own task.
pub async fn run(
    cfg: &AggregatorConfig,
    db: Db,
    stats: Arc<IngestStats>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let opts = options(cfg)?;
    let (client, eventloop) = AsyncClient::new(opts, ACK_QUEUE);
    stats
        .ingest_enabled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let root = cfg.mqtt.topic_root.clone();
    let writers = Writers::spawn(
        &db,
        cfg.writers(),
        QUEUE_MESSAGES,
        DecodeConfig {
            root: root.clone(),
            max_payload_bytes: cfg.aggregator.max_payload_kb * 1024,
        },
        &AckSink::Mqtt {
            client: client.clone(),
            root: root.clone(),
        },
        &stats,
        &WriterConfig {
            batch_max_records: cfg.aggregator.batch_max_records,
            batch_max_wait: Duration::from_millis(cfg.aggregator.batch_max_wait_ms),
        },
        &cancel,
    );
    let filters = vec![
        Topic::filter(&root, TopicKind::Records, cfg.mqtt.shared_group.as_deref()),
        Topic::filter(&root, TopicKind::Status, cfg.mqtt.shared_group.as_deref()),
    ];
    let res = mqtt_loop(
        eventloop,
        client.clone(),
        &filters,
        &writers,
        &stats,
        &cancel,
    )
    .await;
    let _ = client.try_disconnect();
    cancel.cancel();
    writers.join().await;
    stats.mqtt_state(false, None);
    res
}

async fn mqtt_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: &[String],
    writers: &Writers,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("MQTT connected; subscribing to {filters:?}");
                stats.mqtt_state(true, None);
                backoff = Duration::from_millis(200);
                // Queued now, sent by the event loop; re-done on every (re)connect because
                // the session is clean.
                for f in filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, filter = %f, "subscribe not queued");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                stats
                    .messages_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Decoded by the gateway's writer, not here: this loop stays free to poll.
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = writers.send_raw(p.topic, p.payload) => if r.is_err() { return Ok(()) },
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    // Connected but deaf: report it as unhealthy rather than look fine.
                    let msg = format!("broker refused a subscription of {filters:?}");
                    tracing::error!("{msg}");
                    stats.mqtt_state(false, Some(msg));
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, retry_in_ms = backoff.as_millis() as u64, "MQTT connection error");
                stats.mqtt_state(false, Some(msg));
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
