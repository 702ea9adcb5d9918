//! The MQTT side of ingest: connect (external broker or the embedded one), subscribe to every
//! gateway's records and status, feed the writer, publish acks. The connection setup (URL,
//! credentials, TLS) is the shared one of [`threadline_shared::mqtt`], loaded with the config.
//!
//! - `urls`: the brokers are tried in turn ([`Rotation`]); every failed connect or lost
//!   connection moves on to the next one.
//! - Records are subscribed as `$share/{shared_group}/…` when replicas split the load; statuses
//!   always without `$share`: a shared subscription gets no retained messages, and every
//!   replica must know every gateway's state (each stores it; the upsert is idempotent).
//! - Every SUBACK is read: a refused filter (0x80, or a QoS below 1) keeps ingest unhealthy and
//!   is asked for again after a short wait; after [`REFUSALS_BEFORE_RECONNECT`] refusals in a
//!   row the connection is dropped and made again (to the next broker of `urls`).
//! - A records subscription that was granted but delivers nothing is told by
//!   [`super::deaf::DeafWatch`] and reported by `/healthz`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use threadline_shared::mqtt::{ClientSettings, Rotation};
use threadline_shared::{GatewayState, Status, Topic, TopicKind};
use tokio::time::Instant;
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
/// Refused SUBACKs of one filter in a row after which the connection is dropped and made again.
pub const REFUSALS_BEFORE_RECONNECT: u32 = 3;
/// The wait before a refused filter is asked for again (times its refusals in a row).
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

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
    Ok(options_for(cfg, client, 0))
}

/// [`options`] for connection attempt `attempt` (the brokers of `urls` in turn).
fn options_for(cfg: &AggregatorConfig, client: &ClientSettings, attempt: usize) -> MqttOptions {
    let client_id = cfg.mqtt.client_id.as_deref().unwrap_or(&cfg.aggregator.id);
    let mut o = client.options_for(attempt, client_id);
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
    o
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

/// Reconnect delays ([`Rotation`]): the next broker of `urls` at once, and after a whole round of
/// failures from `MIN_BACKOFF`, doubling, at most `MAX_BACKOFF` — a broker that comes back is
/// found within a second (the gateways wait for this aggregator to re-send).
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
        // Never shared: a shared subscription gets no retained status (see the module docs).
        Topic::filter(&root, TopicKind::Status, None),
    ];
    let status_topic = Topic::aggregator_status(&root, &cfg.aggregator.id);
    let settings = cfg
        .mqtt
        .client()
        .map_err(|e| anyhow::anyhow!("bad MQTT settings: {e}"))?;
    let mut eventloop = eventloop;
    let res = mqtt_loop(
        &mut eventloop,
        client.clone(),
        Connection {
            cfg,
            settings,
            filters: &filters,
            status_topic: &status_topic,
            rotation: settings.rotation(MIN_BACKOFF, MAX_BACKOFF),
        },
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

/// What the MQTT loop connects to and subscribes.
struct Connection<'a> {
    cfg: &'a AggregatorConfig,
    settings: &'a ClientSettings,
    /// Records (index 0) and status (index 1) filters.
    filters: &'a [String],
    /// This aggregator's status topic ([`Topic::aggregator_status`]).
    status_topic: &'a str,
    rotation: Rotation,
}

impl Connection<'_> {
    fn url(&self) -> String {
        self.settings
            .endpoint_for(self.rotation.attempt())
            .to_string()
    }
}

/// The subscriptions of one connection: which SUBSCRIBE asked for which filter, and how each
/// stands.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Filters asked for, in request order, not yet seen going out (rumqttc gives the packet
    /// id only then).
    requested: VecDeque<usize>,
    /// Packet id of a SUBSCRIBE sent → its filter.
    by_pkid: HashMap<u16, usize>,
    /// Per filter: granted with QoS 1 on this connection.
    granted: Vec<bool>,
    /// Per filter: refusals in a row.
    refusals: Vec<u32>,
    /// Per filter: when to ask again after a refusal.
    retry_at: Vec<Option<Instant>>,
}

impl Subscriptions {
    fn new(n: usize) -> Subscriptions {
        Subscriptions {
            granted: vec![false; n],
            refusals: vec![0; n],
            retry_at: vec![None; n],
            ..Subscriptions::default()
        }
    }

    fn all_granted(&self) -> bool {
        self.granted.iter().all(|g| *g)
    }
}

fn subscribe(client: &AsyncClient, filters: &[String], i: usize, subs: &mut Subscriptions) {
    match client.try_subscribe(filters[i].clone(), QoS::AtLeastOnce) {
        Ok(()) => subs.requested.push_back(i),
        Err(e) => {
            tracing::warn!(error = %e, filter = %filters[i], "subscribe not queued; retrying");
            subs.retry_at[i] = Some(Instant::now() + RESUBSCRIBE_AFTER);
        }
    }
}

/// True when a SUBACK grants every filter with QoS 1 or more.
fn granted(codes: &[rumqttc::SubscribeReasonCode]) -> bool {
    use rumqttc::SubscribeReasonCode::Success;
    !codes.is_empty()
        && codes
            .iter()
            .all(|c| matches!(c, Success(QoS::AtLeastOnce | QoS::ExactlyOnce)))
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
    // Until the broker closes the connection: it does so after reading the DISCONNECT, which
    // follows the last acks on the stream. Returning at `Outgoing::Disconnect` could drop the
    // event loop before its write buffer — the last acks with it — reached the socket.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

async fn mqtt_loop(
    eventloop: &mut EventLoop,
    client: AsyncClient,
    mut conn: Connection<'_>,
    writers: &Writers,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let filters = conn.filters;
    let status_suffix = format!("/{}", TopicKind::Status.as_str());
    let mut subs = Subscriptions::new(filters.len());
    let mut deaf = super::deaf::DeafWatch::new(conn.cfg.aggregator.deaf_after_s, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let now = Instant::now();
                for i in 0..filters.len() {
                    if subs.retry_at[i].is_some_and(|t| now >= t) {
                        subs.retry_at[i] = None;
                        subscribe(&client, filters, i, &mut subs);
                    }
                }
                if subs.all_granted() {
                    stats.set_deaf(deaf.deaf(now));
                }
                continue;
            }
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                conn.rotation.connected();
                tracing::info!(url = %conn.url(), "MQTT connected; subscribing to {filters:?}");
                stats.mqtt_state(
                    false,
                    Some("connected; waiting for the broker to grant the subscriptions".into()),
                );
                // Re-done on every (re)connect because the session is clean.
                subs = Subscriptions::new(filters.len());
                for i in 0..filters.len() {
                    subscribe(&client, filters, i, &mut subs);
                }
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                if let Some(i) = subs.requested.pop_front() {
                    subs.by_pkid.insert(pkid, i);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let Some(i) = subs.by_pkid.remove(&ack.pkid) else {
                    continue;
                };
                if granted(&ack.return_codes) {
                    if subs.refusals[i] > 0 {
                        tracing::info!(filter = %filters[i], refusals = subs.refusals[i],
                            "the broker granted the subscription at last");
                    }
                    subs.granted[i] = true;
                    subs.refusals[i] = 0;
                    if subs.all_granted() {
                        stats.mqtt_state(true, None);
                        deaf.subscribed(Instant::now());
                        // Only now: a gateway that sees this knows it is heard, and re-sends
                        // what it published while nobody listened (or while a subscription was
                        // refused).
                        publish_online(&client, conn.status_topic);
                    }
                    continue;
                }
                subs.granted[i] = false;
                subs.refusals[i] += 1;
                // Connected but deaf: unhealthy rather than looking fine.
                let msg = format!(
                    "the broker refused the subscription {:?} ({:?}; {} time(s) in a row)",
                    filters[i], ack.return_codes, subs.refusals[i]
                );
                stats.mqtt_state(false, Some(msg.clone()));
                if subs.refusals[i] >= REFUSALS_BEFORE_RECONNECT {
                    tracing::error!("{msg}; dropping the connection to make it again");
                    eventloop.clean();
                    let _ = conn.rotation.failed();
                    eventloop.mqtt_options =
                        options_for(conn.cfg, conn.settings, conn.rotation.attempt());
                } else {
                    tracing::error!("{msg}; asking again");
                    subs.retry_at[i] = Some(Instant::now() + RESUBSCRIBE_AFTER * subs.refusals[i]);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                stats
                    .messages_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if p.topic.ends_with(&status_suffix) {
                    // Statuses are few; the watch needs only state and depth (the writer
                    // decodes and stores it again, dead-lettering a malformed one).
                    if let Ok(s) = serde_json::from_slice::<Status>(&p.payload) {
                        deaf.status(&p.topic, &s, Instant::now());
                        stats
                            .gateways_online
                            .store(deaf.online() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                } else {
                    deaf.record(Instant::now());
                    stats.set_deaf(None);
                }
                // Decoded by the gateway's writer, not here: this loop stays free to poll.
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = writers.send_raw(p.topic, p.payload) => if r.is_err() { return Ok(()) },
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                let url = conn.url();
                let wait = conn.rotation.failed();
                eventloop.mqtt_options =
                    options_for(conn.cfg, conn.settings, conn.rotation.attempt());
                tracing::warn!(error = %msg, %url, next = %conn.url(),
                    retry_in_ms = wait.as_millis() as u64, "MQTT connection error");
                stats.mqtt_state(false, Some(format!("{url}: {msg}")));
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// This aggregator's retained online status (the offline one is the last will, or sent by
/// [`drain`]).
fn publish_online(client: &AsyncClient, status_topic: &str) {
    if let Err(e) = client.try_publish(
        status_topic,
        QoS::AtLeastOnce,
        true,
        status_payload(GatewayState::Online),
    ) {
        tracing::warn!(error = %e, "online status not queued");
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::SubscribeReasonCode::{Failure, Success};

    use super::*;

    #[test]
    fn only_qos_1_or_2_is_a_grant() {
        assert!(granted(&[Success(QoS::AtLeastOnce)]));
        assert!(granted(&[Success(QoS::ExactlyOnce)]));
        assert!(!granted(&[Failure]));
        assert!(!granted(&[Success(QoS::AtMostOnce)]));
        assert!(!granted(&[]));
    }
}
