//! The MQTT side of ingest: connect (external broker or the embedded one), subscribe to every
//! gateway's records and status, feed the writer, publish acks. The connection setup (URL,
//! credentials, TLS) is the shared one of [`threadline_shared::mqtt`], loaded with the config.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use threadline_shared::{GatewayState, Status, Topic, TopicKind};
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

/// The client options: the shared connection setup of `[mqtt]` (URL or the embedded broker,
/// credentials, TLS, keep-alive; loaded when the config was validated), then ingest's own:
/// a clean session (subscriptions are re-made on every connect), packet limits and queues.
pub fn options(cfg: &AggregatorConfig) -> anyhow::Result<MqttOptions> {
    let client = cfg
        .mqtt
        .client()
        .map_err(|e| anyhow::anyhow!("bad MQTT settings: {e}"))?;
    let client_id = cfg.mqtt.client_id.as_deref().unwrap_or(&cfg.aggregator.id);
    let mut o = client.options(client_id);
    if let Some((user, password)) = cfg.mqtt.internal_login() {
        o.set_credentials(user, password);
    }
    o.set_clean_session(true);
    // Retained offline status as last will; the online one follows every subscription.
    o.set_last_will(rumqttc::LastWill::new(
        Topic::aggregator_status(&cfg.mqtt.topic_root, &cfg.aggregator.id),
        status_payload(GatewayState::Offline),
        QoS::AtLeastOnce,
        true,
    ));
    let limit = packet_limit(cfg.aggregator.max_payload_kb);
    o.set_max_packet_size(limit, limit);
    o.set_request_channel_capacity(ACK_QUEUE);
    o.set_inflight(1000);
    Ok(o)
}

/// The aggregator's status message ([`Topic::aggregator_status`]).
fn status_payload(state: GatewayState) -> Vec<u8> {
    serde_json::to_vec(&Status {
        state,
        since: threadline_shared::time::now(),
        buffer_depth: 0,
        devices: Vec::new(),
        epoch: None,
        buffer_full: false,
        readings_dropped: 0,
    })
    .unwrap_or_default()
}

/// Reconnect delays: from `MIN_BACKOFF`, doubling, at most `MAX_BACKOFF` — a broker that comes
/// back is found within a second (the gateways wait for this aggregator to re-send).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

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
    let keys = match &cfg.mqtt.gateway_keys_dir {
        None => None,
        Some(dir) => Some(Arc::new(
            super::keys::GatewayKeys::open(dir)
                .map_err(|e| anyhow::anyhow!("[mqtt] gateway_keys_dir: {e}"))?,
        )),
    };
    if let Some(dir) = &cfg.mqtt.gateway_keys_dir {
        tracing::info!(dir = %dir.display(), "envelopes must be signed with their gateway's key; acks are signed");
    }
    // The writers stop on their own token: at shutdown they first write and ack what they hold
    // while the MQTT connection is still served (see `drain`); only a drain that overruns
    // `DRAIN` cancels them.
    let writer_stop = CancellationToken::new();
    let writers = Writers::spawn(
        &db,
        cfg.writers(),
        QUEUE_MESSAGES,
        DecodeConfig {
            root: root.clone(),
            max_payload_bytes: cfg.aggregator.max_payload_kb * 1024,
            keys: keys.clone(),
        },
        &AckSink::Mqtt {
            client: client.clone(),
            root: root.clone(),
            keys,
        },
        &stats,
        &WriterConfig {
            batch_max_records: cfg.aggregator.batch_max_records,
            batch_max_bytes: cfg.aggregator.batch_max_mb << 20,
            batch_max_wait: Duration::from_millis(cfg.aggregator.batch_max_wait_ms),
        },
        &writer_stop,
    );
    tokio::spawn(crate::routing::publish::run(
        db.clone(),
        client.clone(),
        root.clone(),
        stats.clone(),
        cancel.clone(),
    ));
    let filters = vec![
        Topic::filter(&root, TopicKind::Records, cfg.mqtt.shared_group.as_deref()),
        Topic::filter(&root, TopicKind::Status, cfg.mqtt.shared_group.as_deref()),
    ];
    let status_topic = Topic::aggregator_status(&root, &cfg.aggregator.id);
    let mut eventloop = eventloop;
    let res = mqtt_loop(
        &mut eventloop,
        client.clone(),
        &filters,
        &status_topic,
        &writers,
        &stats,
        &cancel,
    )
    .await;
    cancel.cancel();
    drain(
        eventloop,
        &client,
        &filters,
        &status_topic,
        writers,
        writer_stop,
    )
    .await;
    stats.mqtt_state(false, None);
    res
}

/// How long a shutdown waits for the writers to commit and ack what they hold.
const DRAIN: Duration = Duration::from_secs(5);

/// Shutdown: no more records are taken (unsubscribed; anything still arriving is left to the
/// gateways' re-send), the writers commit what they hold and their acks are queued and sent on
/// the still-running event loop, then a clean disconnect. Before this, the event loop was gone
/// while the last batch committed, and every shutdown under load logged `ack not queued` (the
/// records were safe — the gateways re-send — but the warning was noise, and each shutdown
/// cost a window of duplicates).
async fn drain(
    mut eventloop: EventLoop,
    client: &AsyncClient,
    filters: &[String],
    status_topic: &str,
    writers: Writers,
    writer_stop: CancellationToken,
) {
    for f in filters {
        let _ = client.try_unsubscribe(f.clone());
    }
    let join = writers.join();
    tokio::pin!(join);
    let overrun = tokio::time::sleep(DRAIN);
    tokio::pin!(overrun);
    // False once the broker is unreachable: polling would only retry the connection in a loop;
    // acks then stay queued and the gateways re-send.
    let mut polling = true;
    loop {
        tokio::select! {
            () = &mut join => break,
            () = &mut overrun, if !writer_stop.is_cancelled() => {
                tracing::warn!("writers still busy {DRAIN:?} after the shutdown; stopping them (uncommitted batches are not acked, the gateways re-send)");
                writer_stop.cancel();
            }
            ev = eventloop.poll(), if polling => {
                if ev.is_err() {
                    polling = false;
                }
            }
        }
    }
    if !polling {
        return;
    }
    // Send the queued acks, the offline status (a clean disconnect suppresses the will), then
    // the DISCONNECT.
    let _ = client.try_publish(
        status_topic,
        QoS::AtLeastOnce,
        true,
        status_payload(GatewayState::Offline),
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

async fn mqtt_loop(
    eventloop: &mut EventLoop,
    client: AsyncClient,
    filters: &[String],
    status_topic: &str,
    writers: &Writers,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = MIN_BACKOFF;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("MQTT connected; subscribing to {filters:?}");
                stats.mqtt_state(true, None);
                backoff = MIN_BACKOFF;
                // Queued now, sent by the event loop; re-done on every (re)connect because
                // the session is clean.
                for f in filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, filter = %f, "subscribe not queued");
                    }
                }
                // After the subscriptions (the broker handles a client's packets in order):
                // a gateway that sees this knows it is heard, and re-sends what it published
                // while nobody listened.
                if let Err(e) = client.try_publish(
                    status_topic,
                    QoS::AtLeastOnce,
                    true,
                    status_payload(GatewayState::Online),
                ) {
                    tracing::warn!(error = %e, "online status not queued");
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
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
