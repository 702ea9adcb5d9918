//! The Sparkplug MQTT session: its own connection (so the NDEATH will and the Threadline
//! status will stay separate), a new `bdSeq` per session (the will is fixed when connecting),
//! NCMD rebirth, the primary host's STATE, and store-and-forward while that host is offline.
//!
//! Readings arrive on a bounded channel from the pipeline ([`Sender::offer`]); the pipeline
//! never waits for Sparkplug: when the channel is full the value is counted as dropped and a
//! rebirth (births carry every metric's latest value) is sent once the backlog is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, QoS};
use threadline_shared::event::Reading;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::SparkplugSection;
use super::node::{EdgeNode, Outgoing, is_rebirth_request};
use crate::config::GatewayConfig;

/// Readings buffered between the pipeline and the Sparkplug session.
const QUEUE: usize = 16_384;
/// Readings folded into one flush (one DDATA per device), at most.
const FLUSH_BATCH: usize = 2048;
/// How long changed values are collected before their DDATA goes out: a scan's values arrive
/// one by one from the pipeline, and without this window the publisher, woken for each, sent
/// a DDATA per value. 20 ms adds at most that much to Sparkplug's data age.
const FLUSH_WINDOW: Duration = Duration::from_millis(20);
/// Historical metrics per DDATA.
const HISTORICAL_CHUNK: usize = 500;

/// Counters shown in the log at exit and used by tests.
#[derive(Debug, Default)]
pub struct SparkplugMetrics {
    pub messages: AtomicU64,
    pub births: AtomicU64,
    pub dropped: AtomicU64,
    pub connected: AtomicBool,
}

/// The pipeline's end of the channel.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<(Reading, u64)>,
    metrics: Arc<SparkplugMetrics>,
}

impl Sender {
    /// Offers a recorded reading; never waits (full queue: counted in `dropped`).
    pub fn offer(&self, r: &Reading, ts_ms: u64) {
        if self.tx.try_send((r.clone(), ts_ms)).is_err() {
            let n = self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            if n == 0 || (n + 1).is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "sparkplug: publishing cannot keep up; values skipped (a rebirth with the \
                     latest values follows)"
                );
            }
        }
    }
}

/// Starts the Sparkplug session when `[sparkplug]` is present and enabled.
pub fn spawn(
    cfg: &GatewayConfig,
    stop: CancellationToken,
) -> Option<(Sender, Arc<SparkplugMetrics>, JoinHandle<()>)> {
    let sp = cfg.sparkplug.as_ref().filter(|s| s.enabled)?.clone();
    let opts = match cfg.mqtt.client() {
        Ok(c) => c.options(
            &sp.client_id
                .clone()
                .unwrap_or_else(|| format!("{}-spb", cfg.client_id())),
        ),
        Err(_) => return None, // refused earlier by validation
    };
    let edge = sp.edge_node_id(&cfg.gateway.id).to_owned();
    let node = EdgeNode::new(cfg, &sp.group_id, &edge, sp.historical_max);
    let (devices, metrics_n) = node.size();
    tracing::info!(
        group = %sp.group_id, edge = %edge, devices, metrics = metrics_n,
        primary_host = ?sp.primary_host_id, "sparkplug edge node"
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    let metrics = Arc::new(SparkplugMetrics::default());
    let bdseq_file = cfg.gateway.data_dir.join("sparkplug.bdseq");
    let task = tokio::spawn(run(sp, node, opts, bdseq_file, rx, metrics.clone(), stop));
    Some((
        Sender {
            tx,
            metrics: metrics.clone(),
        },
        metrics,
        task,
    ))
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The `bdSeq` of the next session: one more than the last one used (kept in `data_dir`, so a
/// restarted gateway does not reuse the number its previous NDEATH carried).
fn next_bdseq(file: &PathBuf) -> u8 {
    let last: Option<u8> = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let next = last.map_or(0, |b| b.wrapping_add(1));
    if let Err(e) = std::fs::write(file, next.to_string()) {
        tracing::warn!(error = %e, file = %file.display(), "sparkplug: cannot keep bdSeq");
    }
    next
}

/// What the session loop is waiting for.
struct Session {
    bd_seq: u8,
    connected: bool,
    /// Births published in this session.
    born: bool,
    /// The primary host is online (always true without `primary_host_id`).
    host_online: bool,
    /// Values were dropped: a rebirth is due once the queue is drained.
    dropped_seen: u64,
}

async fn run(
    sp: SparkplugSection,
    mut node: EdgeNode,
    base: MqttOptions,
    bdseq_file: PathBuf,
    mut rx: mpsc::Receiver<(Reading, u64)>,
    metrics: Arc<SparkplugMetrics>,
    stop: CancellationToken,
) {
    let ncmd = node.topic("NCMD", None);
    let dcmd = format!("{}/+", node.topic("DCMD", None));
    let state_topic = sp
        .primary_host_id
        .as_ref()
        .map(|h| format!("spBv1.0/STATE/{h}"));
    let mut rx_open = true;
    // The timestamp of the last STATE of the primary host (kept across sessions).
    let mut last_state_ts: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    'sessions: loop {
        let bd_seq = next_bdseq(&bdseq_file);
        let mut opts = base.clone();
        let will = node.ndeath(bd_seq, now_ms());
        opts.set_last_will(LastWill::new(
            will.topic,
            will.payload,
            QoS::AtLeastOnce,
            false,
        ));
        opts.set_clean_session(true);
        opts.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        opts.set_request_channel_capacity(1024);
        let (client, mut el) = AsyncClient::new(opts, 1024);
        let mut s = Session {
            bd_seq,
            connected: false,
            born: false,
            host_online: state_topic.is_none(),
            dropped_seen: metrics.dropped.load(Ordering::Relaxed),
        };
        let mut batch = Vec::with_capacity(FLUSH_BATCH);
        // When the values collected since the last DDATA are due (None: nothing pending).
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            // Births as soon as connected and the host is there.
            if s.connected && !s.born && s.host_online {
                let now = now_ms();
                let mut out = node.births(s.bd_seq, now);
                out.extend(node.historical(now, HISTORICAL_CHUNK));
                if node.historical_dropped > 0 {
                    tracing::warn!(
                        dropped = node.historical_dropped,
                        "sparkplug: historical values given up (historical_max reached)"
                    );
                    node.historical_dropped = 0;
                }
                metrics.births.fetch_add(1, Ordering::Relaxed);
                s.born = true;
                if publish_all(&client, &mut el, out, &metrics).await.is_err() {
                    break;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    if s.connected {
                        // A clean disconnect suppresses the will: publish NDEATH ourselves.
                        let death = node.ndeath(s.bd_seq, now_ms());
                        let _ = client.try_publish(death.topic, QoS::AtLeastOnce, false, death.payload);
                        let _ = client.try_disconnect();
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Ok(ev) = el.poll().await {
                                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                                    break;
                                }
                            }
                        }).await;
                    }
                    metrics.connected.store(false, Ordering::Relaxed);
                    return;
                }
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        s.connected = true;
                        backoff = Duration::from_millis(100);
                        metrics.connected.store(true, Ordering::Relaxed);
                        let _ = client.try_subscribe(&ncmd, QoS::AtLeastOnce);
                        let _ = client.try_subscribe(&dcmd, QoS::AtLeastOnce);
                        if let Some(t) = &state_topic {
                            let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        if p.topic == ncmd {
                            match is_rebirth_request(&p.payload) {
                                Ok(true) => {
                                    tracing::info!("sparkplug: rebirth requested");
                                    s.born = false;
                                }
                                Ok(false) => tracing::debug!("sparkplug: NCMD without rebirth ignored"),
                                Err(e) => tracing::warn!(error = %e, "sparkplug: undecodable NCMD ignored"),
                            }
                        } else if state_topic.as_deref() == Some(p.topic.as_str()) {
                            let (online, ts) = host_state(&p.payload);
                            // Sparkplug 3.0: a STATE older than the last one seen is stale.
                            if let (Some(ts), Some(last)) = (ts, last_state_ts)
                                && ts < last
                            {
                                tracing::debug!(ts, last, "sparkplug: stale STATE ignored");
                                continue;
                            }
                            last_state_ts = ts.or(last_state_ts);
                            if online != s.host_online {
                                tracing::info!(online, "sparkplug: primary host state");
                            }
                            if online && !s.host_online {
                                s.born = false;
                            }
                            let went_offline = !online && s.host_online && s.born;
                            s.host_online = online;
                            if went_offline {
                                // Sparkplug 3.0: the edge node dies (NDEATH) and reconnects; the
                                // new session holds values until the host is back.
                                let death = node.ndeath(s.bd_seq, now_ms());
                                let _ = client.try_publish(death.topic, QoS::AtLeastOnce, false, death.payload);
                                let _ = client.try_disconnect();
                                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                    while let Ok(ev) = el.poll().await {
                                        if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                                            break;
                                        }
                                    }
                                }).await;
                                metrics.connected.store(false, Ordering::Relaxed);
                                break;
                            }
                        } else {
                            tracing::debug!(topic = %p.topic, "sparkplug: command ignored (no writable metrics)");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if s.connected {
                            tracing::warn!(error = %e, "sparkplug: connection lost; reconnecting with a new bdSeq");
                        } else {
                            tracing::debug!(error = %e, "sparkplug: cannot connect");
                        }
                        metrics.connected.store(false, Ordering::Relaxed);
                        break;
                    }
                },
                // Not while connecting: rumqttc's poll is not cancel-safe before the CONNACK — a
                // value arriving then would drop the half-open connection, the next poll would
                // connect again with the same client id, and the broker would publish the
                // first connection's will (an NDEATH) on the takeover. Values wait in the queue.
                n = rx.recv_many(&mut batch, FLUSH_BATCH), if rx_open && s.connected => {
                    if n == 0 {
                        rx_open = false;
                        continue;
                    }
                    // Offline or host away: values are kept (latest in the node; held for
                    // historical while the host is offline), births later carry them.
                    let live = s.connected && s.born && s.host_online;
                    let hold = !s.host_online;
                    for (r, ts) in batch.drain(..) {
                        node.update(&r, ts, hold);
                    }
                    if !live {
                        continue;
                    }
                    let dropped = metrics.dropped.load(Ordering::Relaxed);
                    if node.rebirth_due() || (dropped != s.dropped_seen && rx.is_empty()) {
                        s.dropped_seen = dropped;
                        s.born = false;
                        continue;
                    }
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_WINDOW);
                }
                () = sleep_until_some(flush_at) => {
                    flush_at = None;
                    if !(s.connected && s.born && s.host_online) {
                        continue;
                    }
                    let out = node.flush(now_ms());
                    if publish_all(&client, &mut el, out, &metrics).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The session ended: wait, then a new one with the next bdSeq.
        drop(client);
        tokio::select! {
            _ = stop.cancelled() => break 'sessions,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Sleeps until `at`; never returns without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Queues `out` (QoS 0, as the spec has births and data), polling the event loop while the
/// request queue is full so the publish cannot deadlock against it.
async fn publish_all(
    client: &AsyncClient,
    el: &mut rumqttc::EventLoop,
    out: Vec<Outgoing>,
    metrics: &SparkplugMetrics,
) -> Result<(), ()> {
    for o in out {
        let mut msg = Some(o);
        while let Some(o) = msg.take() {
            match client.try_publish(&o.topic, QoS::AtMostOnce, false, o.payload.clone()) {
                Ok(()) => {
                    metrics.messages.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    msg = Some(o);
                    if el.poll().await.is_err() {
                        return Err(());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sparkplug 3.0 STATE payload: JSON `{"online": bool, "timestamp": ms}` → (online, timestamp);
/// anything else (including the 2.x plain `OFFLINE`) is offline, `ONLINE` (2.x) is accepted.
fn host_state(payload: &[u8]) -> (bool, Option<u64>) {
    if payload == b"ONLINE" {
        return (true, None);
    }
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok();
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k).cloned());
    (
        field("online").and_then(|o| o.as_bool()).unwrap_or(false),
        field("timestamp").and_then(|t| t.as_u64()),
    )
}

#[cfg(test)]
pub(super) fn host_state_for_test(p: &[u8]) -> (bool, Option<u64>) {
    host_state(p)
}
