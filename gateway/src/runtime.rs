//! The daemon: drivers → station engine / deadband (`readings`) → outbox → publisher, plus the health
//! endpoint, wired in one place, and the graceful shutdown order:
//!
//! 1. stop acquisition (drivers and scanners end; their channels close);
//! 2. the pipeline drains what the drivers already sent and commits it to the outbox;
//! 3. the publisher delivers what it can for at most `drain_timeout` (5 s), publishes the
//!    retained offline status and disconnects;
//! 4. the outbox is checkpointed and closed.
//!
//! Queues are bounded everywhere: when the outbox cannot keep up (or its disk fails), the
//! pipeline waits and the drivers' sends wait with it; nothing already accepted is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::drivers::{self, DeviceMetrics, DriverContext, RawScan, TagUpdate};
use crate::failpoint;
use crate::health::{self, DeviceList, HealthState};
use crate::outbox::{NewRecord, Outbox, OutboxOptions};
use crate::publish::{DeviceSource, PublishMetrics, Publisher, PublisherConfig};
use crate::readings::Deadband;
use crate::reload::{DriverId, Reload};
use crate::route::{
    Decided, GateCounters, Interlocks, RouteCache, RouteGate, spawn_holds_listener,
};
use crate::stations::StationEngine;

/// Tag updates buffered between the drivers and the pipeline.
const TAG_QUEUE: usize = 8192;
/// Scans buffered between the readers and the pipeline.
const SCAN_QUEUE: usize = 256;
/// Records buffered between the pipeline and the outbox appender.
const RECORD_QUEUE: usize = 16_384;
/// Records per outbox transaction, at most.
const APPEND_BATCH: usize = 4096;
/// Time the drivers get to stop before they are aborted.
const DRIVER_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Options for tests and benchmarks; `Default` is what `threadline-gateway run` uses.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A synthetic record source (the hidden `--synthetic-rate` flag of `run`): lets the
    /// delivery tests drive the real binary without PLCs.
    pub synthetic: Option<crate::test_support::Synthetic>,
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(cfg: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(cfg, shutdown, RunOptions::default()).await
}

/// [`run`] with test options.
pub async fn run_with(
    cfg: GatewayConfig,
    shutdown: CancellationToken,
    opts: RunOptions,
) -> anyhow::Result<()> {
    run_inner(cfg, None, shutdown, opts, None).await.map(|_| ())
}

/// How [`run_reloadable`] ended.
#[derive(Debug)]
pub enum Ended {
    /// `shutdown` was cancelled: the gateway stopped.
    Stopped,
    /// A reload needs the whole gateway restarted with this config; everything was stopped
    /// and the outbox closed in order, as for a shutdown.
    Restart(Box<Reload>),
}

/// Runs the gateway with `current` until `shutdown` is cancelled, applying the validated
/// configs that arrive on `reloads` (`kill -HUP`): live when only drivers, tags, readings or
/// stations changed, otherwise by returning [`Ended::Restart`] for the caller to run again.
/// The applied config is kept in `data_dir/running.toml`.
pub async fn run_reloadable(
    current: Reload,
    shutdown: CancellationToken,
    opts: RunOptions,
    reloads: &mut mpsc::Receiver<Reload>,
) -> anyhow::Result<Ended> {
    let Reload { cfg, text, source } = current;
    run_inner(cfg, Some((text, source)), shutdown, opts, Some(reloads)).await
}

async fn run_inner(
    mut cfg: GatewayConfig,
    mut applied: Option<(String, std::path::PathBuf)>,
    shutdown: CancellationToken,
    opts: RunOptions,
    mut reloads: Option<&mut mpsc::Receiver<Reload>>,
) -> anyhow::Result<Ended> {
    // Loaded when the config was validated; a gateway that cannot publish must not acquire.
    if let Err(e) = cfg.mqtt.client() {
        anyhow::bail!("bad MQTT settings: {e}");
    }
    // Bound before anything else starts: a config whose endpoint cannot listen fails cleanly
    // (after a reload, the daemon goes back to the previous config).
    let health_listener = match &cfg.health {
        Some(h) => Some(
            tokio::net::TcpListener::bind(&h.listen)
                .await
                .with_context(|| format!("health.listen {}: cannot listen", h.listen))?,
        ),
        None => None,
    };
    let data_dir = cfg.gateway.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let outbox = Arc::new(
        Outbox::open(OutboxOptions::new(&data_dir, cfg.gateway.buffer_max_mb))
            .await
            .context("cannot open the outbox")?,
    );
    let saved = crate::stations::load_committed(&outbox, &data_dir)
        .await
        .context("cannot start the stations")?;
    let engine = StationEngine::new(&cfg, saved);
    // Route enforcement: the cache (with its saver and the holds listener) and the gate.
    let route_stop = CancellationToken::new();
    let mut route_tasks: Vec<JoinHandle<()>> = Vec::new();
    let route_counters = cfg
        .route
        .as_ref()
        .map(|_| Arc::new(GateCounters::default()));
    let gate = match (&cfg.route, &route_counters) {
        (Some(r), Some(counters)) => {
            let cache = RouteCache::load(&data_dir);
            let stations = cfg.station.iter().map(|s| s.id.clone()).collect();
            let mut gate = RouteGate::new(r, cache.clone(), stations, counters.clone())
                .context("cannot start the route check")?;
            gate.set_interlocks(Interlocks::start(&cfg, counters.clone()));
            let parts: std::collections::BTreeSet<String> = cfg
                .station
                .iter()
                .flat_map(|s| s.part.iter().chain(s.work_order_parts.values()))
                .cloned()
                .collect();
            gate.prefetch(parts.into_iter().collect());
            route_tasks.push(tokio::spawn(cache.clone().run_saver(route_stop.clone())));
            if let Some(t) = spawn_holds_listener(&cfg, cache, route_stop.clone()) {
                route_tasks.push(t);
            }
            Some(gate)
        }
        _ => None,
    };

    // Acquisition has its own token: it stops first, the publisher later. Each driver runs
    // under a child token of it, so that a reload can stop one alone.
    let acquisition = CancellationToken::new();
    let (tag_tx, tag_rx) = mpsc::channel(TAG_QUEUE);
    let (scan_tx, scan_rx) = mpsc::channel(SCAN_QUEUE);
    let mut drivers = Drivers {
        tag_tx: Some(tag_tx),
        scan_tx: Some(scan_tx),
        acquisition: acquisition.clone(),
        data_dir: data_dir.clone(),
        running: BTreeMap::new(),
        list: DeviceList::default(),
    };
    for id in driver_ids(&cfg) {
        drivers.start(&cfg, &id, None);
    }
    drivers.publish_list(&cfg);
    let devices = drivers.list.clone();
    let (control_tx, control_rx) = mpsc::channel(1);

    let (rec_tx, rec_rx) = mpsc::channel(RECORD_QUEUE);
    let synthetic_task = opts
        .synthetic
        .clone()
        .map(|syn| tokio::spawn(syn.run(rec_tx.clone(), acquisition.clone())));
    let appender = tokio::spawn(appender(outbox.clone(), rec_rx, acquisition.clone()));
    // Sparkplug: its own session, fed the recorded readings; stops with the publisher.
    let sparkplug_stop = CancellationToken::new();
    let sparkplug = crate::publish::sparkplug::spawn(&cfg, sparkplug_stop.clone());
    let pipeline = tokio::spawn(pipeline(
        Deadband::new(&cfg),
        control_rx,
        sparkplug.as_ref().map(|(tx, _, _)| tx.clone()),
        engine,
        gate,
        outbox.clone(),
        tag_rx,
        scan_rx,
        rec_tx,
        acquisition.clone(),
    ));

    let publish_metrics = Arc::new(PublishMetrics::default());
    let device_source: DeviceSource = {
        let devices = devices.clone();
        Arc::new(move || health::device_health(&devices.snapshot()))
    };
    let publisher = Publisher::new(
        PublisherConfig::from_gateway(&cfg),
        outbox.clone(),
        device_source,
        publish_metrics.clone(),
    )
    .context("bad MQTT topic levels")?;
    let publisher_stop = CancellationToken::new();
    let publisher_task = tokio::spawn(publisher.run(publisher_stop.clone()));

    let health_stop = CancellationToken::new();
    let health_task = match (&cfg.health, health_listener) {
        (Some(h), Some(listener)) => {
            tracing::info!(listen = %listener.local_addr()?, "serving /metrics and /healthz");
            let state = Arc::new(HealthState {
                outbox: outbox.clone(),
                publish: publish_metrics.clone(),
                devices: devices.clone(),
                max_device_silence_s: h.max_device_silence_s,
                max_outbox_age_s: h.max_outbox_age_s,
                started_ms: u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0),
                route: route_counters.clone(),
            });
            Some(tokio::spawn(health::serve(
                listener,
                state,
                health_stop.clone(),
            )))
        }
        _ => None,
    };

    tracing::info!(
        gateway = %cfg.gateway.id, epoch = %outbox.epoch(),
        devices = cfg.device.len(), scanners = cfg.scanner.len(),
        "gateway running"
    );
    if let Some((text, source)) = &applied {
        record_running(&data_dir, source, text);
    }
    let ended = loop {
        let reload = tokio::select! {
            _ = shutdown.cancelled() => break Ended::Stopped,
            r = next_reload(&mut reloads) => r,
        };
        let Some(next) = reload else {
            reloads = None; // the sender is gone: only a shutdown ends the gateway now
            continue;
        };
        let Some((old_text, _)) = &applied else {
            continue;
        };
        let plan = crate::reload::plan(&cfg, old_text, &next.cfg, &next.text);
        for line in plan.lines() {
            tracing::info!("reload: {line}");
        }
        if plan.is_empty() {
            tracing::info!(file = %next.source.display(), "config reloaded: no changes");
            continue;
        }
        if !plan.refused.is_empty() {
            tracing::error!(
                file = %next.source.display(),
                "reload refused, the running config stays: {}",
                plan.refused.join("; ")
            );
            continue;
        }
        if !plan.restart.is_empty() {
            tracing::info!("restarting the gateway in place for the new config");
            break Ended::Restart(Box::new(next));
        }
        let mut kept = BTreeMap::new();
        for id in &plan.stop {
            if let Some(m) = drivers.stop(id).await {
                kept.insert(id.clone(), m);
            }
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let reconfigure = Control::Reconfigure {
            cfg: Box::new(next.cfg.clone()),
            stations: plan.stations,
            done: done_tx,
        };
        if control_tx.send(reconfigure).await.is_ok() {
            let _ = done_rx.await;
        }
        for id in &plan.start {
            drivers.start(&next.cfg, id, kept.remove(id));
        }
        drivers.publish_list(&next.cfg);
        record_running(&data_dir, &next.source, &next.text);
        tracing::info!(
            file = %next.source.display(),
            restarted = plan.start.len(), stopped = plan.stop.len(),
            untouched = plan.untouched.len(),
            "config reloaded"
        );
        applied = Some((next.text, next.source));
        cfg = next.cfg;
    };
    drop(control_tx);
    tracing::info!("shutting down: stopping acquisition");

    // 1. acquisition
    drivers.stop_all().await;
    if let Some(t) = synthetic_task {
        let _ = t.await;
    }
    // 2. pipeline and appender flush (their inputs are closed now).
    if let Err(e) = pipeline.await {
        tracing::error!(error = %e, "pipeline task failed");
    }
    match appender.await {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "outbox appender failed"),
    }
    // The gate's lookups ended with the pipeline: the cache is written one last time.
    route_stop.cancel();
    for t in route_tasks {
        let _ = t.await;
    }
    let stats = outbox.stats();
    tracing::info!(
        depth = stats.depth(),
        last_seq = stats.last_seq,
        "outbox flushed"
    );
    // 3. delivery
    publisher_stop.cancel();
    match publisher_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "publisher failed"),
        Err(e) => tracing::error!(error = %e, "publisher task failed"),
    }
    sparkplug_stop.cancel();
    if let Some((_, m, t)) = sparkplug {
        let _ = t.await;
        tracing::info!(
            messages = m.messages.load(std::sync::atomic::Ordering::Relaxed),
            dropped = m.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "sparkplug stopped"
        );
    }
    health_stop.cancel();
    if let Some(t) = health_task {
        let _ = t.await;
    }
    // 4. close
    match Arc::try_unwrap(outbox) {
        Ok(outbox) => outbox.close().await.context("closing the outbox")?,
        Err(_) => tracing::warn!("outbox still referenced at exit; not checkpointed"),
    }
    tracing::info!("gateway stopped");
    Ok(ended)
}

/// Writes `running.toml`; a failure only costs `check --against running` its answer.
fn record_running(data_dir: &std::path::Path, source: &std::path::Path, text: &str) {
    if let Err(e) = crate::reload::running::write(data_dir, source, text) {
        tracing::warn!(error = %e, "cannot write data_dir/running.toml (check --against running will not work)");
    }
}

async fn next_reload(reloads: &mut Option<&mut mpsc::Receiver<Reload>>) -> Option<Reload> {
    match reloads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Every driver of `cfg`, devices then scanners, in config order.
fn driver_ids(cfg: &GatewayConfig) -> Vec<DriverId> {
    let devices = cfg.device.iter().map(|d| DriverId {
        kind: "device",
        id: d.id.clone(),
    });
    let scanners = cfg.scanner.iter().map(|s| DriverId {
        kind: "scanner",
        id: s.id.clone(),
    });
    devices.chain(scanners).collect()
}

/// A running driver task.
struct DriverTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<DeviceMetrics>,
}

/// The running drivers, each stoppable on its own (a reload), all at once (a shutdown).
struct Drivers {
    /// Kept to start drivers after a reload; dropped by [`Drivers::stop_all`] so that the
    /// pipeline sees its inputs close.
    tag_tx: Option<mpsc::Sender<TagUpdate>>,
    scan_tx: Option<mpsc::Sender<RawScan>>,
    acquisition: CancellationToken,
    data_dir: std::path::PathBuf,
    running: BTreeMap<DriverId, DriverTask>,
    /// What the health endpoint and the status message list.
    list: DeviceList,
}

impl Drivers {
    /// Starts driver `id` of `cfg` (metrics carried over from its previous run, if any).
    fn start(&mut self, cfg: &GatewayConfig, id: &DriverId, metrics: Option<Arc<DeviceMetrics>>) {
        let (Some(out), Some(scans)) = (self.tag_tx.clone(), self.scan_tx.clone()) else {
            return;
        };
        let metrics = metrics.unwrap_or_default();
        let stop = self.acquisition.child_token();
        let ctx = DriverContext {
            out,
            scans,
            shutdown: stop.clone(),
            metrics: metrics.clone(),
            data_dir: self.data_dir.clone(),
        };
        let task = match id.kind {
            "device" => cfg
                .device
                .iter()
                .find(|d| d.id == id.id)
                .map(|d| drivers::spawn_device(d, ctx)),
            _ => cfg
                .scanner
                .iter()
                .find(|s| s.id == id.id)
                .map(|s| drivers::spawn_scanner(s, ctx)),
        };
        if let Some(task) = task {
            self.running.insert(
                id.clone(),
                DriverTask {
                    stop,
                    task,
                    metrics,
                },
            );
        }
    }

    /// Stops driver `id` (a reload removes or changes it) and returns its metrics, for a
    /// restart to continue its counters.
    async fn stop(&mut self, id: &DriverId) -> Option<Arc<DeviceMetrics>> {
        let d = self.running.remove(id)?;
        d.stop.cancel();
        join_or_abort(d.task).await;
        tracing::info!(driver = %id, "driver stopped for the new config");
        Some(d.metrics)
    }

    /// Publishes the running drivers, in config order, to the health endpoint and status.
    fn publish_list(&self, cfg: &GatewayConfig) {
        let list = driver_ids(cfg)
            .into_iter()
            .filter_map(|id| {
                let m = self.running.get(&id)?.metrics.clone();
                Some((id.id, m))
            })
            .collect();
        self.list.replace(list);
    }

    /// Stops every driver and closes the pipeline's inputs.
    async fn stop_all(&mut self) {
        self.acquisition.cancel();
        self.tag_tx = None;
        self.scan_tx = None;
        for (_, d) in std::mem::take(&mut self.running) {
            join_or_abort(d.task).await;
        }
    }
}

async fn join_or_abort(mut task: JoinHandle<()>) {
    if tokio::time::timeout(DRIVER_STOP_TIMEOUT, &mut task)
        .await
        .is_err()
    {
        tracing::warn!("a driver did not stop in time; aborting it");
        task.abort();
    }
}

/// Messages from the daemon to the pipeline.
enum Control {
    /// Take the reading rules of a reloaded config and, when `stations`, rebuild the station
    /// logic from its committed state; `done` once applied.
    Reconfigure {
        cfg: Box<GatewayConfig>,
        stations: bool,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// How long appends are still retried after shutdown began (then the records are given up,
/// loudly, rather than hanging the shutdown forever on a dead disk).
const APPEND_RETRY_AFTER_STOP: Duration = Duration::from_secs(5);

/// Appends `records` (with the stations' new context, for a station step) until it works: an
/// I/O error (disk full, …) is logged and retried with backoff; what the caller accepted is
/// never given up while the gateway runs. Once `stop` is cancelled, retries continue for
/// [`APPEND_RETRY_AFTER_STOP`] only.
async fn append_retrying(
    outbox: &Outbox,
    records: &[NewRecord],
    station_state: Option<&str>,
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        match outbox.append_step(records, station_state).await {
            Ok(report) => {
                if failures > 0 {
                    tracing::info!(failures, "outbox writable again");
                }
                if report.refused > 0 {
                    tracing::debug!(refused = report.refused, "readings refused (outbox full)");
                }
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::error!(
                        error = %e, records = records.len(), failures,
                        "cannot write to the outbox; holding the records and retrying \
                         (acquisition slows down until it works)"
                    );
                }
                if stop.is_cancelled() {
                    let at = *give_up_at.get_or_insert_with(|| {
                        tokio::time::Instant::now() + APPEND_RETRY_AFTER_STOP
                    });
                    if tokio::time::Instant::now() >= at {
                        tracing::error!(
                            error = %e, records = records.len(),
                            "LOST: shutting down and the outbox is still not writable; these \
                             records were never committed"
                        );
                        return;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    // Shutdown started: re-evaluate the give-up time now.
                    _ = stop.cancelled(), if give_up_at.is_none() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Batches records from the pipeline into outbox transactions until the channel closes.
async fn appender(outbox: Arc<Outbox>, mut rx: mpsc::Receiver<NewRecord>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < APPEND_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        append_retrying(&outbox, &batch, None, &stop).await;
        batch.clear();
    }
}

/// Tag updates → station engine and deadband readings; scans → the route gate (when
/// `[route]` is configured) → station engine.
#[allow(clippy::too_many_arguments)]
async fn pipeline(
    mut deadband: Deadband,
    mut control: mpsc::Receiver<Control>,
    sparkplug: Option<crate::publish::sparkplug::client::Sender>,
    mut engine: StationEngine,
    mut gate: Option<RouteGate>,
    outbox: Arc<Outbox>,
    mut tags: mpsc::Receiver<TagUpdate>,
    mut scans: mpsc::Receiver<RawScan>,
    records: mpsc::Sender<NewRecord>,
    stop: CancellationToken,
) {
    let (mut tags_open, mut scans_open) = (true, true);
    let mut verdicts = gate.as_mut().map(RouteGate::take_verdicts);
    // Inputs end when the drivers have stopped; lookups in flight finish first (each within
    // `lookup_timeout_ms`), so that no scan is lost at shutdown.
    let mut control_open = true;
    while tags_open || scans_open || gate.as_ref().is_some_and(|g| g.in_flight() > 0) {
        let in_flight = gate.as_ref().is_some_and(|g| g.in_flight() > 0);
        tokio::select! {
            c = control.recv(), if control_open => match c {
                Some(Control::Reconfigure { cfg, stations, done }) => {
                    deadband.reconfigure(&cfg);
                    if stations {
                        engine = rebuilt_engine(&cfg, &outbox).await.unwrap_or(engine);
                    }
                    let _ = done.send(());
                }
                None => control_open = false,
            },
            u = tags.recv(), if tags_open => match u {
                Some(u) => {
                    let events = engine.on_tag(&u);
                    if let Some(r) = deadband.filter(&u) {
                        if let (Some(sp), threadline_shared::event::RecordBody::Reading(reading)) =
                            (&sparkplug, &r.body)
                        {
                            sp.offer(reading, u64::try_from(r.ts.timestamp_millis()).unwrap_or(0));
                        }
                        if records.send(r).await.is_err() {
                            return;
                        }
                    }
                    commit_step(&mut engine, gate.as_ref(), events, &outbox, &stop).await;
                }
                None => tags_open = false,
            },
            s = scans.recv(), if scans_open => match s {
                Some(s) => match gate.as_mut() {
                    None => {
                        let events = engine.on_scan(&s);
                        commit_step(&mut engine, None, events, &outbox, &stop).await;
                    }
                    Some(g) => {
                        if let Some(d) = g.offer(s, &engine) {
                            decided_step(&mut engine, g, d, &outbox, &stop).await;
                        }
                    }
                },
                None => scans_open = false,
            },
            Some(d) = recv_verdict(&mut verdicts), if in_flight => {
                if let Some(g) = gate.as_mut() {
                    decided_step(&mut engine, g, d, &outbox, &stop).await;
                }
            }
        }
    }
}

/// The station logic of a reloaded config, from the context committed with the last step
/// (each step commits its context before the next input, so nothing is lost); `None`, logged,
/// keeps the running logic when the outbox cannot be read.
async fn rebuilt_engine(cfg: &GatewayConfig, outbox: &Outbox) -> Option<StationEngine> {
    match crate::stations::load_committed(outbox, &cfg.gateway.data_dir).await {
        Ok(saved) => {
            tracing::info!("station logic restarted for the new config");
            Some(StationEngine::new(cfg, saved))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the committed station context; the station logic stays as it was");
            None
        }
    }
}

async fn recv_verdict(rx: &mut Option<mpsc::UnboundedReceiver<Decided>>) -> Option<Decided> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A scan with its verdict through the engine, then the scans of its station that waited
/// behind it, until one waits for a lookup of its own.
async fn decided_step(
    engine: &mut StationEngine,
    gate: &mut RouteGate,
    first: Decided,
    outbox: &Outbox,
    stop: &CancellationToken,
) {
    let mut d = first;
    loop {
        let events = match &d.refused {
            Some(why) => engine.refuse_scan(&d.scan, why.clone(), d.unit_scan),
            None => engine.on_scan(&d.scan),
        };
        // Accepted: the gate let it through and the station used it.
        let accepted = d.refused.is_none()
            && !events.iter().any(|e| {
                matches!(
                    e.body,
                    threadline_shared::event::RecordBody::ScanRejected(_)
                )
            });
        gate.signal(&d, accepted);
        commit_step(engine, Some(gate), events, outbox, stop).await;
        let Some(next) = gate.next_queued(&d) else {
            return;
        };
        match gate.offer(next, engine) {
            Some(n) => d = n,
            None => return,
        }
    }
}

/// Commits one station step: its events and the context they leave behind, in one
/// transaction, before the next input reaches the engine (after a crash both exist or
/// neither does; an uncommitted tag edge fires again after the restart, see
/// `stations::state`). The gate learns this line's results from the events.
async fn commit_step(
    engine: &mut StationEngine,
    gate: Option<&RouteGate>,
    events: Vec<crate::stations::StationEvent>,
    outbox: &Outbox,
    stop: &CancellationToken,
) {
    let state = engine.take_state();
    if events.is_empty() && state.is_none() {
        return;
    }
    if let Some(g) = gate {
        g.observe(&events);
    }
    let recs: Vec<NewRecord> = events
        .into_iter()
        .map(|e| NewRecord {
            ts: e.ts,
            body: e.body,
        })
        .collect();
    let types = || recs.iter().map(|r| r.body.type_name());
    failpoint::hit(failpoint::BEFORE_STATION_COMMIT, types());
    append_retrying(outbox, &recs, state.as_deref(), stop).await;
    failpoint::hit(failpoint::AFTER_STATION_COMMIT, types());
}
