//! The delivery loop.
//!
//! - Records are published as JSON envelopes of up to `batch_max_records` on `…/records`, QoS 1.
//! - At most `inflight_batches` envelopes wait for the aggregator's ack at any time.
//! - A record leaves the outbox only when an ack on `…/ack` covers it (the broker's PUBACK is
//!   tracked per packet id for metrics, it deletes nothing).
//! - An envelope not acked within `ack_timeout_ms` is published again, oldest first.
//! - After every (re)connect everything in the outbox is unacked by definition and is sent
//!   again from the oldest record, while records appended after the connect (the *live tail*)
//!   are sent in alternation with that backlog, so that neither starves the other.
//! - With `signing_key_file` every envelope carries an HMAC-SHA256 trailer and an ack is obeyed
//!   only when signed with one of the gateway's keys (`threadline_shared::signing`); any other
//!   ack is ignored, counted (`threadline_gateway_acks_rejected_total`) and logged at most once a
//!   minute — a forged ack must never delete the backlog.
//! - `[mqtt] urls`: the brokers are tried in turn (`threadline_shared::mqtt::Rotation`): every
//!   failed connect or lost connection moves on to the next one.
//! - The subscription to `…/ack` must be granted with QoS 1 before anything is published: a
//!   SUBACK that refuses it (0x80, or a lower QoS) is retried after a short wait, and after
//!   [`REFUSALS_BEFORE_RECONNECT`] refusals in a row the connection is dropped and made again
//!   (with `urls`, to the next broker) — a gateway never sits connected without its acks
//!   (a NATS node may refuse the re-subscription after a cluster change).
//! - A retained `…/status` (online) is published on connect and every `status_interval`; the
//!   last will is the retained offline status; a graceful stop publishes it explicitly.
//! - When an aggregator's online status arrives live (`{root}/_aggregator/{id}/status`, sent
//!   once the broker granted its subscriptions) everything in flight is published again at
//!   once: after a broker restart the gateway may have reconnected first and sent its window to
//!   nobody, and waiting `ack_timeout_ms` for it would delay the whole backlog. That filter is
//!   asked for in the same SUBSCRIBE as `…/ack` (ack first, so the first return code of every
//!   SUBACK is the ack subscription's); its refusal alone is only a warning.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS};
use threadline_shared::envelope::{Ack, DeviceHealth, GatewayState, Status};
use threadline_shared::mqtt::KeyErrors;
use threadline_shared::signing::{KeyRing, Purpose};
use threadline_shared::time::Timestamp;
use threadline_shared::topic::{Topic, TopicKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{GatewayConfig, MqttSection};
use crate::outbox::{Outbox, StoredRecord};

/// Largest envelope we send (Mosquitto's own limit is 256 MiB); rumqttc's default is 10 KiB,
/// far below a batch of records.
pub const MAX_OUTGOING_PACKET: usize = 64 * 1024 * 1024;
/// Largest message we accept (acks; a long list of ranges stays far below this).
pub const MAX_INCOMING_PACKET: usize = 4 * 1024 * 1024;
/// Refused SUBACKs of `…/ack` in a row after which the connection is dropped and made again.
pub const REFUSALS_BEFORE_RECONNECT: u32 = 3;
/// The wait before the subscription to `…/ack` is asked again after a refusal (times the
/// refusals in a row).
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// Gives the current health of every device for the status message.
pub type DeviceSource = Arc<dyn Fn() -> Vec<DeviceHealth> + Send + Sync>;

/// How the publisher talks to the broker.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub gateway: String,
    pub plant: String,
    pub line: String,
    pub client_id: String,
    pub mqtt: MqttSection,
    /// How often the retained online status is refreshed.
    pub status_interval: Duration,
    /// After stop: how long to keep publishing to empty the outbox before giving up.
    pub drain_timeout: Duration,
}

impl PublisherConfig {
    pub fn from_gateway(cfg: &GatewayConfig) -> PublisherConfig {
        PublisherConfig {
            gateway: cfg.gateway.id.clone(),
            plant: cfg.gateway.plant.clone(),
            line: cfg.gateway.line.clone(),
            client_id: cfg.client_id().to_owned(),
            mqtt: cfg.mqtt.clone(),
            status_interval: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Delivery counters, exported as metrics.
#[derive(Debug, Default)]
pub struct PublishMetrics {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    /// Envelopes published again (ack timeout).
    pub resent_batches: AtomicU64,
    /// Envelopes waiting for the aggregator's ack.
    pub inflight: AtomicU64,
    /// Broker PUBACKs for our envelopes.
    pub pubacks: AtomicU64,
    /// Ack messages from the aggregator.
    pub acks: AtomicU64,
    /// Acks ignored because unsigned or not signed with our key (signing configured).
    pub acks_rejected: AtomicU64,
    pub connects: AtomicU64,
    pub connected: AtomicBool,
    /// Live online statuses of an aggregator, each of which re-sent the window.
    pub aggregator_onlines: AtomicU64,
    /// True while the broker has granted the subscription to `…/ack` with QoS 1.
    pub ack_subscribed: AtomicBool,
    /// SUBACKs that refused the subscription to `…/ack` (each is retried).
    pub ack_subscribe_refusals: AtomicU64,
}

/// What the event-loop task reports.
#[derive(Debug)]
enum MqttEvent {
    /// Connected to this broker.
    Connected(String),
    /// Lost (or could not make) the connection to this broker.
    Disconnected(String, String),
    /// A SUBACK: per filter of the SUBSCRIBE (the ack topic first, see
    /// [`Publisher::subscribe_acks`]), true when granted QoS 1 (or 2).
    SubAck(Vec<bool>),
    Published(u16),
    PubAck(u16),
    /// Topic, payload, and whether the broker sent it as a retained message (on subscribing)
    /// rather than live.
    Message(String, Bytes, bool),
    DisconnectSent,
}

/// One envelope waiting for the aggregator's ack.
#[derive(Debug)]
struct Inflight {
    last: u64,
    /// Seqs of the envelope not yet acked.
    remaining: Vec<u64>,
    sent_at: Instant,
    pkid: Option<u16>,
}

/// The publisher (see the module docs).
pub struct Publisher {
    cfg: PublisherConfig,
    outbox: Arc<Outbox>,
    devices: DeviceSource,
    metrics: Arc<PublishMetrics>,
    records_topic: String,
    status_topic: String,
    ack_topic: String,
    /// `{"v":1,…,"records":[` — everything of an envelope before the records.
    envelope_prefix: String,
    /// `signing_key_file`'s keys: sign envelopes, verify acks; `None` = unsigned (as before).
    keys: Option<Arc<KeyRing>>,
    /// When a rejected ack was last logged (at most one line a minute: a flood of forged acks
    /// must not flood the log).
    rejected_logged: std::sync::Mutex<Option<Instant>>,
}

/// The loop's mutable state.
struct State {
    connected: bool,
    connected_since: Timestamp,
    inflight: BTreeMap<u64, Inflight>,
    /// Our publishes in request order, to pair `Outgoing::Publish(pkid)` with the envelope
    /// (`None` = a status message).
    requested: VecDeque<Option<u64>>,
    by_pkid: HashMap<u16, u64>,
    /// Backlog: records with `cursor_old < seq <= live_start` not yet sent since the connect.
    cursor_old: u64,
    live_start: u64,
    /// Live tail: records with `seq > cursor_live` not yet sent.
    cursor_live: u64,
    old_turn: bool,
    last_status: Instant,
    warned_down: bool,
    /// The broker granted `…/ack` with QoS 1 on this connection; nothing is published before.
    subscribed: bool,
    /// Refused SUBACKs in a row on this connection.
    refusals: u32,
    /// When to ask for `…/ack` again after a refusal.
    resubscribe_at: Option<Instant>,
}

impl Publisher {
    pub fn new(
        cfg: PublisherConfig,
        outbox: Arc<Outbox>,
        devices: DeviceSource,
        metrics: Arc<PublishMetrics>,
    ) -> Result<Publisher, threadline_shared::topic::TopicError> {
        let topic = Topic::new(
            &cfg.mqtt.topic_root,
            &cfg.plant,
            &cfg.line,
            &cfg.gateway,
            TopicKind::Records,
        )?;
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let envelope_prefix = format!(
            "{{\"v\":{},\"gateway\":{},\"plant\":{},\"line\":{},\"epoch\":\"{}\",\"records\":[",
            threadline_shared::envelope::ENVELOPE_VERSION,
            json(&cfg.gateway),
            json(&cfg.plant),
            json(&cfg.line),
            outbox.epoch()
        );
        // Validation loaded the key file; a config built without validation (tests) loads here.
        let keys = cfg.mqtt.signing().ok().flatten().cloned();
        Ok(Publisher {
            keys,
            rejected_logged: std::sync::Mutex::new(None),
            records_topic: topic.to_string(),
            status_topic: topic.with_kind(TopicKind::Status).to_string(),
            ack_topic: topic.with_kind(TopicKind::Ack).to_string(),
            envelope_prefix,
            cfg,
            outbox,
            devices,
            metrics,
        })
    }

    fn status(&self, state: GatewayState, since: Timestamp) -> Vec<u8> {
        let stats = self.outbox.stats();
        let status = Status {
            state,
            since,
            buffer_depth: stats.depth(),
            devices: (self.devices)(),
            epoch: Some(self.outbox.epoch()),
            buffer_full: stats.buffer_full,
            readings_dropped: stats.dropped + stats.refused,
        };
        serde_json::to_vec(&status).unwrap_or_default()
    }

    /// The envelope of `records` as sent: the JSON, signed when a key is configured.
    fn envelope(&self, records: &[StoredRecord]) -> Vec<u8> {
        let len: usize = records.iter().map(|r| r.payload.len() + 1).sum();
        let mut s = Vec::with_capacity(
            self.envelope_prefix.len() + len + 2 + threadline_shared::signing::TRAILER_LEN,
        );
        s.extend_from_slice(self.envelope_prefix.as_bytes());
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                s.push(b',');
            }
            s.extend_from_slice(r.payload.as_bytes());
        }
        s.extend_from_slice(b"]}");
        if let Some(k) = &self.keys {
            k.sign_into(Purpose::Envelope, &self.cfg.gateway, &mut s);
        }
        s
    }

    /// Counts a rejected ack and logs it, at most once a minute.
    fn reject_ack(&self, why: &str) {
        let n = self.metrics.acks_rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .rejected_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                rejected_total = n,
                "ignoring an ack that is {why}; nothing deleted (is the aggregator's \
                 gateway_keys_dir key the same as signing_key_file? see docs/security.md)"
            );
        }
    }

    /// Runs until `stop`, then keeps delivering for at most `drain_timeout` (until the outbox is
    /// empty), publishes the offline status and disconnects.
    pub async fn run(self, stop: CancellationToken) -> Result<(), KeyErrors> {
        let options = self.options()?;
        let cap = self.cfg.mqtt.inflight_batches.saturating_mul(2).max(16);
        let (client, eventloop) = AsyncClient::new(options.make(0), cap);
        let (ev_tx, mut ev_rx) = mpsc::channel(256);
        let ev_stop = CancellationToken::new();
        let reconnect = Arc::new(tokio::sync::Notify::new());
        let ev_task = tokio::spawn(poll_loop(
            eventloop,
            options,
            ev_tx,
            reconnect.clone(),
            ev_stop.clone(),
        ));
        let appended = self.outbox.appended_notify();
        let ack_timeout = Duration::from_millis(self.cfg.mqtt.ack_timeout_ms.max(1));
        let mut st = State {
            connected: false,
            connected_since: threadline_shared::time::now(),
            inflight: BTreeMap::new(),
            requested: VecDeque::new(),
            by_pkid: HashMap::new(),
            cursor_old: 0,
            live_start: 0,
            cursor_live: 0,
            old_turn: true,
            last_status: Instant::now(),
            warned_down: false,
            subscribed: false,
            refusals: 0,
            resubscribe_at: None,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_until: Option<Instant> = None;
        loop {
            if st.connected
                && st.subscribed
                && let Err(e) = self.fill_window(&client, &mut st).await
            {
                tracing::warn!(error = %e, "publisher: outbox read failed; retrying");
            }
            if let Some(until) = drain_until
                && (self.outbox.stats().depth() == 0 || Instant::now() >= until)
            {
                break;
            }
            tokio::select! {
                _ = stop.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + self.cfg.drain_timeout);
                    tracing::info!(
                        depth = self.outbox.stats().depth(),
                        "publisher stopping: delivering what it can for at most {:?}",
                        self.cfg.drain_timeout
                    );
                }
                ev = ev_rx.recv() => match ev {
                    Some(ev) => self.on_event(ev, &client, &mut st, &reconnect).await,
                    None => break,
                },
                _ = appended.notified() => {}
                _ = tick.tick() => {
                    if st.connected
                        && !st.subscribed
                        && st.resubscribe_at.is_some_and(|t| Instant::now() >= t)
                    {
                        st.resubscribe_at = None;
                        self.subscribe_acks(&client);
                    }
                    if st.connected && st.subscribed {
                        self.resend_expired(&client, &mut st, ack_timeout).await;
                        if st.last_status.elapsed() >= self.cfg.status_interval {
                            self.publish_status(&client, &mut st, GatewayState::Online);
                        }
                    }
                }
            }
        }
        let depth = self.outbox.stats().depth();
        if depth > 0 {
            tracing::warn!(
                depth,
                "publisher stopped with records not yet acknowledged; they stay in the outbox \
                 and are sent at the next start"
            );
        }
        // Offline status, then a clean disconnect (which suppresses the will).
        if st.connected {
            self.publish_status(&client, &mut st, GatewayState::Offline);
            let _ = client.try_disconnect();
            let wait = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(ev) = ev_rx.recv().await {
                    if matches!(ev, MqttEvent::DisconnectSent | MqttEvent::Disconnected(..)) {
                        break;
                    }
                }
            });
            let _ = wait.await;
        }
        ev_stop.cancel();
        let _ = ev_task.await;
        self.metrics.connected.store(false, Ordering::Relaxed);
        self.metrics.inflight.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The client options of every connection attempt: the shared connection setup of
    /// `[mqtt]` (the broker of the attempt, credentials, TLS, keep-alive), then the publisher's
    /// own: packet sizes, the in-flight window, a clean session, and the retained offline status
    /// as last will.
    fn options(&self) -> Result<Options, KeyErrors> {
        let mqtt = &self.cfg.mqtt;
        let settings = mqtt.client().map_err(Clone::clone)?.clone();
        let will = LastWill::new(
            &self.status_topic,
            self.status(GatewayState::Offline, threadline_shared::time::now()),
            QoS::AtLeastOnce,
            true,
        );
        Ok(Options {
            rotation: settings.rotation(MIN_BACKOFF, MAX_BACKOFF),
            settings,
            client_id: self.cfg.client_id.clone(),
            inflight_batches: mqtt.inflight_batches,
            will,
        })
    }

    /// Asks for `…/ack` (again), and in the same SUBSCRIBE for the aggregators' status: one
    /// packet, the ack topic first, so that the first return code of every SUBACK is the ack
    /// subscription's.
    fn subscribe_acks(&self, client: &AsyncClient) {
        let filters = [
            self.ack_topic.clone(),
            Topic::aggregator_status_filter(&self.cfg.mqtt.topic_root),
        ]
        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        if let Err(e) = client.try_subscribe_many(filters) {
            tracing::warn!(error = %e, "cannot subscribe to the ack topic");
        }
    }

    fn publish_status(&self, client: &AsyncClient, st: &mut State, state: GatewayState) {
        let since = match state {
            GatewayState::Online => st.connected_since,
            GatewayState::Offline => threadline_shared::time::now(),
        };
        let payload = self.status(state, since);
        match client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, payload) {
            Ok(()) => st.requested.push_back(None),
            Err(e) => tracing::debug!(error = %e, "status not published (client queue full)"),
        }
        st.last_status = Instant::now();
    }

    async fn on_event(
        &self,
        ev: MqttEvent,
        client: &AsyncClient,
        st: &mut State,
        reconnect: &tokio::sync::Notify,
    ) {
        match ev {
            MqttEvent::Connected(url) => {
                let depth = self.outbox.stats().depth();
                tracing::info!(
                    %url, depth,
                    "connected to the broker; re-sending everything unacknowledged, oldest first"
                );
                st.connected = true;
                st.warned_down = false;
                st.connected_since = threadline_shared::time::now();
                st.inflight.clear();
                st.requested.clear();
                st.by_pkid.clear();
                st.cursor_old = 0;
                st.live_start = self.outbox.last_seq();
                st.cursor_live = st.live_start;
                st.old_turn = true;
                self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                self.metrics.connected.store(true, Ordering::Relaxed);
                self.metrics.inflight.store(0, Ordering::Relaxed);
                st.subscribed = false;
                st.refusals = 0;
                st.resubscribe_at = None;
                self.subscribe_acks(client);
                self.publish_status(client, st, GatewayState::Online);
            }
            MqttEvent::SubAck(codes) if codes.first() == Some(&true) => {
                if codes.contains(&false) {
                    tracing::warn!(
                        "the broker refused the subscription to the aggregators' status; \
                         after an aggregator restart the window is re-sent only after \
                         ack_timeout_ms"
                    );
                }
                if st.refusals > 0 {
                    tracing::info!(
                        refusals = st.refusals,
                        "the broker granted the ack subscription at last; publishing"
                    );
                }
                st.subscribed = true;
                st.refusals = 0;
                self.metrics.ack_subscribed.store(true, Ordering::Relaxed);
            }
            MqttEvent::SubAck(_) => {
                st.subscribed = false;
                st.refusals += 1;
                self.metrics.ack_subscribed.store(false, Ordering::Relaxed);
                self.metrics
                    .ack_subscribe_refusals
                    .fetch_add(1, Ordering::Relaxed);
                if st.refusals >= REFUSALS_BEFORE_RECONNECT {
                    tracing::warn!(
                        topic = %self.ack_topic, refusals = st.refusals,
                        "the broker keeps refusing the ack subscription; dropping the \
                         connection to make it again"
                    );
                    st.resubscribe_at = None;
                    reconnect.notify_one();
                } else {
                    tracing::warn!(
                        topic = %self.ack_topic, refusals = st.refusals,
                        "the broker refused the ack subscription (SUBACK failure); nothing is \
                         published without it, asking again"
                    );
                    st.resubscribe_at = Some(Instant::now() + RESUBSCRIBE_AFTER * st.refusals);
                }
            }
            MqttEvent::Disconnected(url, why) => {
                if st.connected || !st.warned_down {
                    tracing::warn!(%url, error = %why,
                        "broker connection lost; records stay in the outbox, retrying");
                    st.warned_down = true;
                } else {
                    tracing::debug!(error = %why, "broker still unreachable");
                }
                st.connected = false;
                st.subscribed = false;
                self.metrics.connected.store(false, Ordering::Relaxed);
                self.metrics.ack_subscribed.store(false, Ordering::Relaxed);
            }
            MqttEvent::Published(pkid) => {
                if let Some(Some(first)) = st.requested.pop_front()
                    && let Some(b) = st.inflight.get_mut(&first)
                {
                    b.pkid = Some(pkid);
                    st.by_pkid.insert(pkid, first);
                }
            }
            MqttEvent::PubAck(pkid) => {
                if let Some(first) = st.by_pkid.remove(&pkid) {
                    self.metrics.pubacks.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(pkid, first, "broker accepted envelope");
                }
            }
            MqttEvent::Message(topic, payload, retained) => {
                if topic == self.ack_topic {
                    self.on_ack(&payload, st).await;
                } else if !retained
                    && Topic::is_aggregator_status(&self.cfg.mqtt.topic_root, &topic)
                {
                    self.on_aggregator_status(&topic, &payload, client, st)
                        .await;
                }
            }
            MqttEvent::DisconnectSent => {}
        }
    }

    /// An aggregator's online status, arrived live: it has just (re)subscribed, so envelopes
    /// published before may have reached nobody (after a broker restart the gateway often
    /// reconnects first). Everything in flight is published again now instead of after
    /// `ack_timeout_ms`; duplicates are absorbed by the aggregator. A retained status (sent on
    /// our own subscribe) is ignored: that aggregator was subscribed before our window went out.
    async fn on_aggregator_status(
        &self,
        topic: &str,
        payload: &[u8],
        client: &AsyncClient,
        st: &mut State,
    ) {
        let Ok(status) = serde_json::from_slice::<Status>(payload) else {
            tracing::debug!(topic, "ignoring a malformed aggregator status");
            return;
        };
        if status.state != GatewayState::Online || !st.connected || !st.subscribed {
            return;
        }
        let timeout = Duration::from_millis(self.cfg.mqtt.ack_timeout_ms.max(1));
        tracing::info!(
            topic,
            inflight = st.inflight.len(),
            "an aggregator came online; publishing the envelopes in flight again"
        );
        let now = Instant::now();
        for b in st.inflight.values_mut() {
            b.sent_at = now.checked_sub(timeout).unwrap_or(b.sent_at);
        }
        self.metrics
            .aggregator_onlines
            .fetch_add(1, Ordering::Relaxed);
        self.resend_expired(client, st, timeout).await;
    }

    async fn on_ack(&self, payload: &[u8], st: &mut State) {
        let payload = match &self.keys {
            None => payload,
            Some(k) => match k.verify(Purpose::Ack, &self.cfg.gateway, payload) {
                Ok(body) => body,
                Err(e) => {
                    self.reject_ack(&e.to_string());
                    return;
                }
            },
        };
        let ack: Ack = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed ack message");
                return;
            }
        };
        self.metrics.acks.fetch_add(1, Ordering::Relaxed);
        if ack.epoch != self.outbox.epoch() {
            tracing::debug!(epoch = %ack.epoch, "ignoring an ack for another outbox epoch");
            return;
        }
        // Delete first: if this fails the records simply stay and are re-sent (duplicates are
        // ignored by the aggregator); nothing is lost.
        let mut ranges = ack.ranges.clone();
        ranges.sort_unstable();
        if let Err(e) = self.outbox.ack(&ranges).await {
            tracing::warn!(error = %e, "cannot delete acknowledged records; they will be re-sent");
            return;
        }
        st.inflight.retain(|_, b| {
            b.remaining.retain(|s| !ack.contains(*s));
            !b.remaining.is_empty()
        });
        self.metrics
            .inflight
            .store(st.inflight.len() as u64, Ordering::Relaxed);
    }

    /// Publishes `records` as one envelope; false when the client queue is full.
    fn send(&self, client: &AsyncClient, st: &mut State, records: &[StoredRecord]) -> bool {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return true;
        };
        let body = self.envelope(records);
        if let Err(e) = client.try_publish(&self.records_topic, QoS::AtLeastOnce, false, body) {
            tracing::debug!(error = %e, "client queue full; retrying shortly");
            return false;
        }
        st.requested.push_back(Some(first.seq));
        st.inflight.insert(
            first.seq,
            Inflight {
                last: last.seq,
                remaining: records.iter().map(|r| r.seq).collect(),
                sent_at: Instant::now(),
                pkid: None,
            },
        );
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.metrics
            .inflight
            .store(st.inflight.len() as u64, Ordering::Relaxed);
        true
    }

    /// Sends new envelopes while the in-flight window has room, alternating between the
    /// backlog (oldest first) and the live tail.
    async fn fill_window(
        &self,
        client: &AsyncClient,
        st: &mut State,
    ) -> Result<(), crate::outbox::OutboxError> {
        let max = self.cfg.mqtt.batch_max_records;
        while st.inflight.len() < self.cfg.mqtt.inflight_batches {
            let backlog_open = st.cursor_old < st.live_start;
            let live_waiting = self.outbox.last_seq() > st.cursor_live;
            if backlog_open && (st.old_turn || !live_waiting) {
                let recs = self
                    .outbox
                    .read(st.cursor_old, Some(st.live_start), max)
                    .await?;
                match recs.last() {
                    None => st.cursor_old = st.live_start,
                    Some(last) => {
                        let last = last.seq;
                        if !self.send(client, st, &recs) {
                            return Ok(());
                        }
                        st.cursor_old = last;
                        st.old_turn = false;
                    }
                }
            } else if live_waiting {
                let recs = self.outbox.read(st.cursor_live, None, max).await?;
                match recs.last() {
                    None => st.cursor_live = self.outbox.last_seq(),
                    Some(last) => {
                        let last = last.seq;
                        if !self.send(client, st, &recs) {
                            return Ok(());
                        }
                        st.cursor_live = last;
                        st.old_turn = true;
                    }
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Publishes again, oldest first, every envelope whose ack is overdue.
    async fn resend_expired(&self, client: &AsyncClient, st: &mut State, timeout: Duration) {
        let expired: Vec<(u64, u64)> = st
            .inflight
            .iter()
            .filter(|(_, b)| b.sent_at.elapsed() >= timeout)
            .map(|(first, b)| (*first, b.last))
            .collect();
        for (first, last) in expired {
            let recs = match self
                .outbox
                .read(first.saturating_sub(1), Some(last), usize::MAX / 2)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-read an overdue envelope");
                    return;
                }
            };
            if recs.is_empty() {
                // Acked meanwhile (or its readings were dropped when the outbox was full).
                st.inflight.remove(&first);
                continue;
            }
            tracing::debug!(first, last, "no ack in time; publishing the envelope again");
            st.inflight.remove(&first);
            if !self.send(client, st, &recs) {
                // Put it back as overdue so that the next tick tries again.
                st.inflight.insert(
                    first,
                    Inflight {
                        last,
                        remaining: recs.iter().map(|r| r.seq).collect(),
                        sent_at: Instant::now() - timeout,
                        pkid: None,
                    },
                );
                return;
            }
            self.metrics.resent_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics
            .inflight
            .store(st.inflight.len() as u64, Ordering::Relaxed);
    }
}

/// The first wait before connecting again (after a whole round of `urls` failed), doubling up
/// to `MAX_BACKOFF`: capped at a second, so a broker that comes back is found within a second.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Everything the poll loop needs to make the options of any connection attempt.
struct Options {
    settings: threadline_shared::mqtt::ClientSettings,
    rotation: threadline_shared::mqtt::Rotation,
    client_id: String,
    inflight_batches: usize,
    will: LastWill,
}

impl Options {
    /// The options of connection attempt `attempt` (its broker is the rotation's).
    fn make(&self, attempt: usize) -> MqttOptions {
        let mut opts = self.settings.options_for(attempt, &self.client_id);
        opts.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        // The outbox is the source of truth and everything unacked is re-sent after a reconnect,
        // so a persistent broker session would add nothing but duplicates.
        opts.set_clean_session(true);
        opts.set_inflight(
            u16::try_from(self.inflight_batches.saturating_add(8)).unwrap_or(u16::MAX),
        );
        opts.set_request_channel_capacity(self.inflight_batches.saturating_mul(2).max(16));
        opts.set_last_will(self.will.clone());
        opts
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

/// Drives rumqttc's event loop (which also reconnects), moves on to the next broker of `urls`
/// after every failure, drops the connection when asked (`reconnect`), and reports what matters.
async fn poll_loop(
    mut el: EventLoop,
    mut options: Options,
    tx: mpsc::Sender<MqttEvent>,
    reconnect: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let url = |o: &Options| o.settings.endpoint_for(o.rotation.attempt()).to_string();
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            _ = reconnect.notified() => {
                // Dropped without DISCONNECT: the will tells the others we are gone for now.
                el.clean();
                let _ = options.rotation.failed();
                el.mqtt_options = options.make(options.rotation.attempt());
                if tx
                    .send(MqttEvent::Disconnected(url(&options), "dropped on purpose".into()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            ev = el.poll() => ev,
        };
        let out = match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                options.rotation.connected();
                Some(MqttEvent::Connected(url(&options)))
            }
            Ok(Event::Incoming(Incoming::SubAck(s))) => Some(MqttEvent::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| granted(std::slice::from_ref(c)))
                    .collect(),
            )),
            Ok(Event::Incoming(Incoming::PubAck(p))) => Some(MqttEvent::PubAck(p.pkid)),
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                Some(MqttEvent::Message(p.topic.clone(), p.payload, p.retain))
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Some(MqttEvent::Published(pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Some(MqttEvent::DisconnectSent),
            Ok(_) => None,
            Err(e) => {
                if tx
                    .send(MqttEvent::Disconnected(url(&options), e.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                let wait = options.rotation.failed();
                el.mqtt_options = options.make(options.rotation.attempt());
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                None
            }
        };
        if let Some(out) = out
            && tx.send(out).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::SubscribeReasonCode::{Failure, Success};

    use super::*;

    #[test]
    fn only_qos_1_or_2_for_every_filter_is_a_grant() {
        assert!(granted(&[Success(QoS::AtLeastOnce)]));
        assert!(granted(&[Success(QoS::ExactlyOnce)]));
        assert!(!granted(&[Failure]));
        assert!(!granted(&[Success(QoS::AtMostOnce)]));
        assert!(!granted(&[Success(QoS::AtLeastOnce), Failure]));
        assert!(!granted(&[]));
    }
}
