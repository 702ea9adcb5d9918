//! One OPC UA device: connect, subscribe (one monitored item per tag), stream data changes,
//! and on connection loss mark the tags bad once, back off with jitter and start over.
//!
//! Reconnect strategy: the async-opcua session can reconnect and transfer subscriptions by
//! itself, but without jitter and with a bounded retry count. We disable its retries
//! (`session_retry_limit(0)`, `recreate_subscriptions(false)`) and own the loop instead: every
//! (re)connect is a fresh session with a freshly created subscription. That is the simple,
//! always-correct path (a restarted server has lost its subscriptions anyway); the initial
//! values of the new monitored items close the gap.
//!
//! The session event loop is polled only by this task (never spawned), so dropping the
//! connection state stops everything, and backpressure is natural: while we wait for the
//! bounded output channel we do not poll the session, so no further publish responses are
//! processed (the server queues, then drops oldest per monitored item).
//!
//! On-disk state: the client's application instance certificate and private key live in
//! `<data_dir>/pki/own/cert.der` and `<data_dir>/pki/private/private.pem` (created on the first
//! start of any OPC UA device — with `security_policy = "None"` too, see `build_client` —
//! and shared by every OPC UA device of the gateway); trusted server
//! certificates in `<data_dir>/pki/trusted/`. With a secure policy only a server certificate
//! found there is accepted (`trust_server_certs = "pinned"`, the default): an unknown one is
//! refused, stored in `<data_dir>/pki/rejected/` by async-opcua, and reported with its SHA-1
//! thumbprint and the `threadline-gateway opcua-trust` command that pins it
//! (`crate::opcua_trust`). `trust_server_certs = "any"` accepts (and stores as trusted) any.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use opcua::client::{
    Client, ClientBuilder, IdentityToken, MonitoredItem, OnSubscriptionNotification, Session,
    SessionPollResult,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, DataValue, DeadbandType, ExtensionObject,
    MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters,
    ReadValueId, StatusChangeNotification, StatusCode, TimestampsToReturn,
};
use rand::Rng;
use threadline_shared::event::Quality;

use super::convert::{TagPlan, status_name, to_update};
use crate::drivers::config::{self, DeviceConfig};
use crate::drivers::{DriverContext, TagUpdate};

const APPLICATION_URI: &str = "urn:threadline:gateway";
const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Monitored items per subscription.
const MAX_ITEMS_PER_SUBSCRIPTION: usize = 1000;
/// Monitored items per CreateMonitoredItems call.
const MAX_ITEMS_PER_CALL: usize = 500;
/// Upper bound of notifications per publish response, hence of the local queue per poll step.
const MAX_NOTIFICATIONS_PER_PUBLISH: u32 = 1000;

/// Why a device cannot run at all (bad settings): reported once, the task then idles.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("opcua device has no endpoint")]
    NoEndpoint,
    /// The policy / mode pair is not one the policy allows (see
    /// [`DeviceConfig::opcua_security`]).
    #[error("{0}")]
    Security(String),
    #[error("cannot create the OPC UA client: {0}")]
    Client(String),
}

/// The config's security settings as the library's types.
pub(crate) fn library_security(
    policy: config::SecurityPolicy,
    mode: config::SecurityMode,
) -> (SecurityPolicy, MessageSecurityMode) {
    let policy = match policy {
        config::SecurityPolicy::None => SecurityPolicy::None,
        config::SecurityPolicy::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
    };
    let mode = match mode {
        config::SecurityMode::None => MessageSecurityMode::None,
        config::SecurityMode::Sign => MessageSecurityMode::Sign,
        config::SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    };
    (policy, mode)
}

/// A failure of one connection attempt or of a running session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The server answered with a bad status (wrong password, unknown endpoint, …).
    #[error("{context}: {}", status_name(*.status))]
    Refused {
        context: &'static str,
        status: StatusCode,
    },
    #[error("{0}")]
    Other(String),
    #[error("shutdown")]
    Shutdown,
}

impl SessionError {
    fn refused(context: &'static str, status: StatusCode) -> Self {
        SessionError::Refused { context, status }
    }
}

/// Settings resolved once at start.
pub(crate) struct Device {
    cfg: DeviceConfig,
    ctx: DriverContext,
    endpoint: String,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    tags: Vec<TagPlan>,
}

impl Device {
    /// The device and, when its settings are unusable, why (the driver then only reports it).
    pub(crate) fn new(cfg: DeviceConfig, ctx: DriverContext) -> (Device, Option<SetupError>) {
        let tags: Vec<TagPlan> = cfg.tag.iter().map(TagPlan::new).collect();
        let mut dev = Device {
            endpoint: cfg.endpoint.clone().unwrap_or_default(),
            policy: SecurityPolicy::None,
            mode: MessageSecurityMode::None,
            tags,
            cfg,
            ctx,
        };
        let problem = match dev.resolve_security() {
            Ok(()) if dev.endpoint.is_empty() => Some(SetupError::NoEndpoint),
            Ok(()) => None,
            Err(e) => Some(e),
        };
        (dev, problem)
    }

    fn resolve_security(&mut self) -> Result<(), SetupError> {
        let (policy, mode) = self
            .cfg
            .opcua_security()
            .map(|(policy, mode)| library_security(policy, mode))
            .map_err(SetupError::Security)?;
        self.policy = policy;
        self.mode = mode;
        Ok(())
    }

    /// Sends one update; false when shutting down (a full channel never blocks shutdown).
    async fn emit(&self, update: TagUpdate) -> bool {
        tokio::select! {
            biased;
            _ = self.ctx.shutdown.cancelled() => false,
            r = self.ctx.out.send(update) => r.is_ok() || !self.ctx.shutdown.is_cancelled(),
        }
    }

    async fn emit_bad(&self, tag: &TagPlan, error: String) -> bool {
        self.emit(TagUpdate {
            device: self.cfg.id.clone(),
            tag: tag.name.clone(),
            value: None,
            quality: Quality::Bad,
            error: Some(error),
            ts: threadline_shared::time::now(),
        })
        .await
    }

    /// Every subscribable tag goes bad with `reason` (used once per outage).
    async fn all_bad(&self, reason: &str) -> bool {
        for t in self.tags.iter().filter(|t| t.node.is_ok()) {
            if !self.emit_bad(t, reason.to_owned()).await {
                return false;
            }
        }
        true
    }

    /// Reports a device-level problem that stops the driver (bad settings), then idles.
    pub(crate) async fn idle_with_error(self, err: SetupError) {
        let msg = err.to_string();
        tracing::error!(device = %self.cfg.id, "{msg}");
        self.ctx.metrics.record_error(msg.clone());
        for t in &self.tags {
            if !self.emit_bad(t, msg.clone()).await {
                return;
            }
        }
        self.ctx.shutdown.cancelled().await;
    }

    /// The device's life: runs until shutdown.
    pub(crate) async fn run(self) {
        for t in &self.tags {
            if let Err(e) = &t.node {
                tracing::warn!(device = %self.cfg.id, tag = %t.name, "{e}");
                if !self.emit_bad(t, e.clone()).await {
                    return;
                }
            }
        }
        if self.tags.iter().all(|t| t.node.is_err()) {
            tracing::warn!(device = %self.cfg.id, "no usable tags; not connecting");
            self.ctx.shutdown.cancelled().await;
            return;
        }

        let mut client = match self.build_client().await {
            Ok(c) => c,
            Err(e) => return self.idle_with_error(e).await,
        };

        let mut backoff = BACKOFF_INITIAL;
        // Set while the device is unreachable: the start of the current gap.
        let mut down_since: Option<Instant> = None;
        let mut failed_attempts: u64 = 0;
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return;
            }
            match self.connect_and_stream(&mut client, &mut down_since).await {
                Err(SessionError::Shutdown) | Ok(()) => return,
                Err(e) => {
                    let msg = match &e {
                        SessionError::Refused { status, .. }
                            if status.sub_code()
                                == StatusCode::BadCertificateUntrusted.sub_code() =>
                        {
                            self.untrusted_hint(&client).await
                        }
                        _ => e.to_string(),
                    };
                    self.ctx.metrics.record_error(msg.clone());
                    if down_since.is_none() {
                        // Start of a gap (or of the first connection attempts): tags go bad
                        // once, not at every failed attempt.
                        backoff = BACKOFF_INITIAL;
                        failed_attempts = 0;
                        down_since = Some(Instant::now());
                        if !self.all_bad(&msg).await {
                            return;
                        }
                    }
                    failed_attempts += 1;
                    // Bounded volume: at most one line per backoff period (≤ 2 per minute).
                    tracing::warn!(device = %self.cfg.id, endpoint = %self.endpoint, attempt = failed_attempts, "OPC UA device unavailable: {msg}");
                }
            }
            // Jittered exponential backoff: sleep in [backoff/2, backoff].
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered) => {}
            }
        }
    }

    async fn build_client(&self) -> Result<Client, SetupError> {
        build_client(&self.ctx.data_dir, &self.cfg).await
    }

    /// Why the server's certificate was refused, with its thumbprint and the command that pins
    /// it (asks the server for its endpoints to see the certificate).
    async fn untrusted_hint(&self, client: &Client) -> String {
        let command = format!(
            "threadline-gateway opcua-trust --config {} --device {}",
            crate::config::config_path_for_messages(),
            self.cfg.id
        );
        let cert = server_certificate(client, &self.endpoint, self.policy, self.mode).await;
        match cert {
            Ok(c) => format!(
                "the server certificate of {} is not trusted (SHA-1 thumbprint {}, subject {}): \
                 if it is your PLC's, pin it with `{command}`; \
                 or set trust_server_certs = \"any\" on the device",
                self.endpoint,
                c.thumbprint().as_hex_string(),
                c.subject_name()
            ),
            Err(e) => format!(
                "the server certificate of {} is not trusted ({e}); pin it with `{command}`",
                self.endpoint
            ),
        }
    }
}

/// The server certificate of the endpoint of `url` with `policy` and `mode` (or of any endpoint
/// with a certificate, if none matches), as the server publishes it in GetEndpoints.
pub(crate) async fn server_certificate(
    client: &Client,
    url: &str,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
) -> Result<opcua::crypto::X509, String> {
    let endpoints = client
        .get_server_endpoints_from_url(url)
        .await
        .map_err(|e| format!("GetEndpoints of {url} failed: {e}"))?;
    let matching = endpoints
        .iter()
        .find(|e| e.security_policy_uri.as_ref() == policy.to_uri() && e.security_mode == mode)
        .or_else(|| endpoints.iter().find(|e| !e.server_certificate.is_null()))
        .ok_or_else(|| format!("{url} publishes no endpoint with a certificate"))?;
    opcua::crypto::X509::from_byte_string(&matching.server_certificate)
        .map_err(|e| format!("the server certificate of {url} cannot be read: {e}"))
}

/// The OPC UA client of a device: the gateway's application identity and PKI under
/// `data_dir/pki` (shared by all its devices), server certificates trusted as the device says.
pub(crate) async fn build_client(
    data_dir: &std::path::Path,
    cfg: &DeviceConfig,
) -> Result<Client, SetupError> {
    // Two devices must not create the shared key pair at the same time.
    static PKI_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = PKI_LOCK.lock().await;
    let pki = data_dir.join("pki");
    let timeout = Duration::from_millis(cfg.timeout_ms.max(100));
    let builder = ClientBuilder::new()
        .application_name("Threadline gateway")
        .application_uri(APPLICATION_URI)
        .product_uri(APPLICATION_URI)
        .pki_dir(pki)
        // Also for `security_policy = "None"`: async-opcua reads the client's certificate
        // and key when it builds the client and on every connect (0.19 has no switch to
        // skip that) and logs an ERROR each time they are missing — five per connect of a
        // perfectly normal configuration. The key pair is made once per data_dir (RSA
        // generation, a moment on first start) and kept; a secure device needs it anyway.
        .create_sample_keypair(true)
        .trust_server_certs(cfg.trust_server_certs == config::TrustServerCerts::Any)
        .session_retry_limit(0)
        .recreate_subscriptions(false)
        .request_timeout(timeout)
        .keep_alive_interval(Duration::from_secs(5))
        .max_failed_keep_alive_count(3)
        .session_timeout(60_000);
    // Key generation and file I/O are blocking.
    tokio::task::spawn_blocking(move || builder.client())
        .await
        .map_err(|e| SetupError::Client(e.to_string()))?
        .map_err(|e| SetupError::Client(e.join("; ")))
}

/// The user identity of a device: anonymous, or `username` with the password of
/// `password_file` (read at every connect, so a fixed file is picked up without a restart).
fn identity_of(cfg: &DeviceConfig) -> Result<IdentityToken, String> {
    let Some(user) = &cfg.username else {
        return Ok(IdentityToken::Anonymous);
    };
    let Some(path) = &cfg.password_file else {
        return Err("username is set but password_file is missing".to_owned());
    };
    let pass = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
    let pass = pass.trim_end_matches(['\r', '\n']).to_owned();
    Ok(IdentityToken::UserName(user.clone(), pass.into()))
}

/// A session of its own for interlock writes (`route::interlock`), with the device's endpoint,
/// security, trust and identity; the caller owns the event loop task and aborts it when done.
pub(crate) async fn write_session(
    data_dir: &std::path::Path,
    cfg: &DeviceConfig,
) -> Result<(Arc<Session>, tokio::task::JoinHandle<StatusCode>), String> {
    let (policy, mode) = cfg
        .opcua_security()
        .map(|(policy, mode)| library_security(policy, mode))?;
    let endpoint = cfg.endpoint.clone().unwrap_or_default();
    let mut client = build_client(data_dir, cfg)
        .await
        .map_err(|e| e.to_string())?;
    let identity = identity_of(cfg)?;
    let timeout = Duration::from_millis(cfg.timeout_ms.max(100) * 5);
    let (session, event_loop) = tokio::time::timeout(
        timeout,
        client.connect_to_matching_endpoint((endpoint.as_str(), policy.to_str(), mode), identity),
    )
    .await
    .map_err(|_| format!("no answer from {endpoint} within {timeout:?}"))?
    .map_err(|e| format!("connect to {endpoint}: {}", status_name(e.status())))?;
    let task = event_loop.spawn();
    match tokio::time::timeout(timeout, session.wait_for_connection()).await {
        Ok(true) => Ok((session, task)),
        Ok(false) => {
            task.abort();
            Err(format!(
                "session to {endpoint} refused (certificate, user or endpoint)"
            ))
        }
        Err(_) => {
            task.abort();
            Err(format!(
                "session to {endpoint} not activated within {timeout:?}"
            ))
        }
    }
}

impl Device {
    fn identity(&self) -> Result<IdentityToken, SessionError> {
        identity_of(&self.cfg).map_err(SessionError::Other)
    }

    /// One session: connect, subscribe, stream until it fails (Err) or shutdown (Ok).
    async fn connect_and_stream(
        &self,
        client: &mut Client,
        down_since: &mut Option<Instant>,
    ) -> Result<(), SessionError> {
        let identity = self.identity()?;
        let endpoint = (self.endpoint.as_str(), self.policy.to_str(), self.mode);
        let connect_timeout = Duration::from_millis(self.cfg.timeout_ms.max(100) * 5);
        let (session, event_loop) = tokio::select! {
            _ = self.ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
            r = tokio::time::timeout(connect_timeout, client.connect_to_matching_endpoint(endpoint, identity)) => match r {
                Err(_) => return Err(SessionError::Other(format!("no answer from {} within {connect_timeout:?}", self.endpoint))),
                Ok(Err(e)) => return Err(SessionError::refused("connect to endpoint", e.status())),
                Ok(Ok(s)) => s,
            },
        };
        let stream = event_loop.enter();
        tokio::pin!(stream);

        // Phase 1: the event loop opens the channel and activates the session.
        let deadline = tokio::time::sleep(connect_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
                _ = &mut deadline => {
                    return Err(SessionError::Other(format!("session to {} not activated within {connect_timeout:?}", self.endpoint)));
                }
                ev = stream.next() => match ev {
                    Some(Ok(SessionPollResult::Reconnected(_))) => break,
                    Some(Ok(_)) => {}
                    Some(Err(status)) => return Err(SessionError::refused("connect", status)),
                    None => return Err(SessionError::Other("session closed while connecting".into())),
                },
            }
        }

        // Phase 2: subscription + one monitored item per tag (polling the loop meanwhile).
        let queue = Arc::new(Mutex::new(Notifications::default()));
        let started = Instant::now();
        let setup = self.subscribe(&session, queue.clone());
        tokio::pin!(setup);
        let results = loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => {
                    close(&session, stream.as_mut()).await;
                    return Err(SessionError::Shutdown);
                }
                r = &mut setup => break r?,
                ev = stream.next() => check_event(ev)?,
            }
        };
        // Not `record_ok`: `polls` counts data changes only, not (re)connects.
        let m = &self.ctx.metrics;
        let rtt_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        m.last_rtt_us
            .store(rtt_us, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut e) = m.last_error.lock() {
            *e = None;
        }
        if let Some(since) = down_since.take() {
            tracing::info!(device = %self.cfg.id, gap_ms = since.elapsed().as_millis() as u64, "OPC UA device reconnected; subscriptions recreated");
        } else {
            tracing::info!(device = %self.cfg.id, endpoint = %self.endpoint, "OPC UA device connected");
        }
        for (idx, status) in results {
            if let Some(tag) = self.tags.get(idx) {
                tracing::warn!(device = %self.cfg.id, tag = %tag.name, "monitored item refused: {}", status_name(status));
                if !self.emit_bad(tag, status_name(status)).await {
                    return Err(SessionError::Shutdown);
                }
            }
        }

        // Phase 3: stream data changes.
        loop {
            let batch = {
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *q)
            };
            if let Some(status) = batch.subscription_status {
                return Err(SessionError::refused("subscription ended", status));
            }
            for (handle, dv) in batch.values {
                let Some(tag) = handle
                    .checked_sub(1)
                    .and_then(|i| self.tags.get(i as usize))
                else {
                    continue;
                };
                let m = &self.ctx.metrics;
                m.polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                m.values.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
                m.last_ok_ms
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                if !self.emit(to_update(&self.cfg.id, tag, dv)).await {
                    close(&session, stream.as_mut()).await;
                    return Err(SessionError::Shutdown);
                }
            }
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => {
                    close(&session, stream.as_mut()).await;
                    return Ok(());
                }
                ev = stream.next() => check_event(ev)?,
            }
        }
    }

    /// Creates the subscription and the monitored items; returns the tags whose item the
    /// server refused (tag index, status).
    async fn subscribe(
        &self,
        session: &Arc<Session>,
        queue: Arc<Mutex<Notifications>>,
    ) -> Result<Vec<(usize, StatusCode)>, SessionError> {
        let usable: Vec<(usize, &TagPlan)> = self
            .tags
            .iter()
            .enumerate()
            .filter(|(_, t)| t.node.is_ok())
            .collect();
        let publish_ms = usable
            .iter()
            .map(|(_, t)| t.sampling_ms.max(1))
            .min()
            .unwrap_or(1000);
        // Keep-alive roughly every 5 s; lifetime must be ≥ 3 × keep-alive (OPC UA Part 4).
        let keep_alive = u32::try_from((5000 / publish_ms).clamp(3, 10_000)).unwrap_or(3);
        let mut refused = Vec::new();
        // Servers cap items per subscription (async-opcua: 1000): one subscription per group.
        for group in usable.chunks(MAX_ITEMS_PER_SUBSCRIPTION) {
            let sub_id = session
                .create_subscription(
                    Duration::from_millis(publish_ms),
                    keep_alive * 3,
                    keep_alive,
                    MAX_NOTIFICATIONS_PER_PUBLISH,
                    0,
                    true,
                    Collector(queue.clone()),
                )
                .await
                .map_err(|e| SessionError::refused("create subscription", e.status()))?;
            refused.extend(self.create_items(session, sub_id, group).await?);
        }
        Ok(refused)
    }

    /// Creates the monitored items of one subscription; returns the refused ones.
    async fn create_items(
        &self,
        session: &Arc<Session>,
        sub_id: u32,
        group: &[(usize, &TagPlan)],
    ) -> Result<Vec<(usize, StatusCode)>, SessionError> {
        let requests: Vec<MonitoredItemCreateRequest> = group
            .iter()
            .filter_map(|(idx, t)| {
                let node = t.node.as_ref().ok()?.clone();
                // The publishing interval is the smallest sampling interval, so one sample per
                // publish is the norm; 10 absorbs bursts and a server-revised (longer) interval.
                let queue_size = 10;
                Some(MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId {
                        node_id: node,
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    },
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        // Client handle = tag index + 1 (0 means "assign one" to the library).
                        client_handle: u32::try_from(idx + 1).ok()?,
                        sampling_interval: t.sampling_ms as f64,
                        queue_size,
                        discard_oldest: true,
                        // Explicit: a status change with an unchanged value (sensor failed,
                        // value frozen) must be reported; async-opcua's server compares only
                        // values when no filter is given.
                        filter: ExtensionObject::from_message(DataChangeFilter {
                            trigger: DataChangeTrigger::StatusValue,
                            deadband_type: DeadbandType::None as u32,
                            deadband_value: 0.0,
                        }),
                    },
                })
            })
            .collect();
        // Servers cap items per call (MaxMonitoredItemsPerCall, often 1000): send in chunks.
        let mut refused = Vec::new();
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<_> = requests.by_ref().take(MAX_ITEMS_PER_CALL).collect();
            let created = session
                .create_monitored_items(sub_id, TimestampsToReturn::Both, chunk)
                .await
                .map_err(|e| SessionError::refused("create monitored items", e.status()))?;
            refused.extend(
                created
                    .iter()
                    .filter(|c| c.result.status_code.is_bad())
                    .filter_map(|c| {
                        let idx = c.requested_parameters.client_handle.checked_sub(1)? as usize;
                        Some((idx, c.result.status_code))
                    }),
            );
        }
        Ok(refused)
    }
}

/// Turns an event of the session loop into "keep going" or the reason the session is over.
fn check_event(ev: Option<Result<SessionPollResult, StatusCode>>) -> Result<(), SessionError> {
    match ev {
        Some(Ok(SessionPollResult::ConnectionLost(status))) => {
            Err(SessionError::refused("connection lost", status))
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(status)) => Err(SessionError::refused("session failed", status)),
        None => Err(SessionError::Other("session closed".into())),
    }
}

/// Closes the session cleanly (CloseSession needs the event loop polled), bounded in time.
async fn close<S>(session: &Arc<Session>, mut stream: std::pin::Pin<&mut S>)
where
    S: Stream<Item = Result<SessionPollResult, StatusCode>>,
{
    let drive = async {
        let disconnect = session.disconnect();
        tokio::pin!(disconnect);
        let mut done = false;
        loop {
            tokio::select! {
                _ = &mut disconnect, if !done => done = true,
                ev = stream.next() => if matches!(ev, None | Some(Err(_))) { break },
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drive).await;
}

/// Data changes collected by the subscription callback (which runs inside the session event
/// loop and cannot await); drained by the device task after each poll step.
#[derive(Default)]
struct Notifications {
    values: Vec<(u32, DataValue)>,
    /// Set when the server reports the subscription gone (e.g. BadTimeout).
    subscription_status: Option<StatusCode>,
}

struct Collector(Arc<Mutex<Notifications>>);

impl OnSubscriptionNotification for Collector {
    fn on_data_value(&mut self, notification: DataValue, item: &MonitoredItem) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.values.push((item.client_handle(), notification));
    }

    fn on_subscription_status_change(&mut self, notification: StatusChangeNotification) {
        if notification.status.is_bad() {
            let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
            q.subscription_status = Some(notification.status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The security of an opcua device with these settings, as the driver resolves it; a
    /// setting the config parser refuses is an error too.
    fn security(
        policy: Option<&str>,
        mode: Option<&str>,
    ) -> Result<(SecurityPolicy, MessageSecurityMode), String> {
        let mut text = "id = \"d\"\nprotocol = \"opcua\"\n".to_owned();
        for (key, value) in [("security_policy", policy), ("security_mode", mode)] {
            if let Some(value) = value {
                text.push_str(&format!("{key} = {value:?}\n"));
            }
        }
        let cfg: DeviceConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        let (policy, mode) = cfg.opcua_security()?;
        Ok(library_security(policy, mode))
    }

    #[test]
    fn security_settings_map_and_reject() {
        assert!(matches!(
            security(None, None),
            Ok((SecurityPolicy::None, MessageSecurityMode::None))
        ));
        assert!(matches!(
            security(Some("Basic256Sha256"), None),
            Ok((
                SecurityPolicy::Basic256Sha256,
                MessageSecurityMode::SignAndEncrypt
            ))
        ));
        assert!(matches!(
            security(Some("Basic256Sha256"), Some("Sign")),
            Ok((SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign))
        ));
        assert!(security(Some("Basic128Rsa15"), None).is_err());
        assert!(security(Some("None"), Some("Sign")).is_err());
        assert!(security(Some("Basic256Sha256"), Some("Encrypt")).is_err());
    }
}
