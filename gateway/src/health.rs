//! `[health] listen`: `/metrics` (Prometheus text) and `/healthz`, served by a minimal
//! HTTP/1.1 responder on a tokio `TcpListener` (the gateway stays free of an HTTP framework).
//!
//! Every connection answers one request and is closed (`Connection: close`); requests larger
//! than [`MAX_REQUEST`] or slower than [`REQUEST_TIMEOUT`] are dropped, so a misbehaving client
//! cannot hold memory or a task for long.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use threadline_shared::envelope::DeviceHealth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::drivers::DeviceMetrics;
use crate::outbox::Outbox;
use crate::publish::PublishMetrics;

/// Bytes of request head we read at most.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at the same time, at most (more wait in the accept queue).
const MAX_CONNECTIONS: usize = 32;

/// Everything the endpoints report on.
pub struct HealthState {
    pub outbox: Arc<Outbox>,
    pub publish: Arc<PublishMetrics>,
    /// Devices and scanners, by id (replaced when a reload adds or removes one).
    pub devices: DeviceList,
    pub max_device_silence_s: u64,
    pub max_outbox_age_s: u64,
    /// Unix ms when the gateway started (a device never heard from is silent since then).
    pub started_ms: u64,
    /// The route gate's counters (`None` without `[route]`).
    pub route: Option<Arc<crate::route::GateCounters>>,
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The running devices and scanners with their metrics, shared by the health endpoint and the
/// status message; a live reload replaces the list (metrics of a device that stays are kept).
#[derive(Clone, Default)]
pub struct DeviceList(Arc<std::sync::RwLock<Vec<Device>>>);

/// A device or scanner id with its metrics.
pub type Device = (String, Arc<DeviceMetrics>);

impl DeviceList {
    /// The devices now, in config order.
    pub fn snapshot(&self) -> Vec<Device> {
        self.0.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Replaces the list (after a reload).
    pub fn replace(&self, devices: Vec<Device>) {
        if let Ok(mut d) = self.0.write() {
            *d = devices;
        }
    }
}

impl From<Vec<Device>> for DeviceList {
    fn from(devices: Vec<Device>) -> DeviceList {
        DeviceList(Arc::new(std::sync::RwLock::new(devices)))
    }
}

/// The status message's view of each device.
pub fn device_health(devices: &[(String, Arc<DeviceMetrics>)]) -> Vec<DeviceHealth> {
    devices
        .iter()
        .map(|(id, m)| {
            let last_ok_ms = m.last_ok_ms.load(Ordering::Relaxed);
            let error = m.last_error.lock().ok().and_then(|e| e.clone());
            let state = match (&error, last_ok_ms) {
                (Some(_), _) => "down",
                (None, 0) => "starting",
                (None, _) => "ok",
            };
            DeviceHealth {
                id: id.clone(),
                state: state.to_owned(),
                last_ok: (last_ok_ms > 0)
                    .then(|| {
                        chrono::DateTime::from_timestamp_millis(
                            i64::try_from(last_ok_ms).unwrap_or(0),
                        )
                    })
                    .flatten(),
                error,
            }
        })
        .collect()
}

impl HealthState {
    /// Prometheus text exposition.
    pub async fn metrics(&self) -> String {
        let s = self.outbox.stats();
        let p = &self.publish;
        let oldest_age = self.oldest_age_s().await;
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "threadline_outbox_depth",
            "gauge",
            "Records in the outbox (not yet acknowledged).",
            s.depth().to_string(),
        );
        metric(
            "threadline_outbox_readings",
            "gauge",
            "Readings in the outbox.",
            s.readings.to_string(),
        );
        metric(
            "threadline_outbox_events",
            "gauge",
            "Trace events in the outbox.",
            s.events.to_string(),
        );
        metric(
            "threadline_outbox_bytes",
            "gauge",
            "Stored payload bytes (what buffer_max_mb limits).",
            s.bytes.to_string(),
        );
        metric(
            "threadline_outbox_max_bytes",
            "gauge",
            "buffer_max_mb in bytes.",
            s.max_bytes.to_string(),
        );
        metric(
            "threadline_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest record in the outbox (0 when empty).",
            format!("{oldest_age:.3}"),
        );
        metric(
            "threadline_outbox_last_seq",
            "gauge",
            "Last seq given out in this epoch.",
            s.last_seq.to_string(),
        );
        metric(
            "threadline_outbox_appended_total",
            "counter",
            "Records appended since start.",
            s.appended.to_string(),
        );
        metric(
            "threadline_outbox_acked_total",
            "counter",
            "Records deleted after the aggregator's ack since start.",
            s.acked.to_string(),
        );
        metric(
            "threadline_outbox_readings_dropped_total",
            "counter",
            "Stored readings dropped because the outbox was full.",
            s.dropped.to_string(),
        );
        metric(
            "threadline_outbox_readings_refused_total",
            "counter",
            "New readings refused because only trace events filled the outbox.",
            s.refused.to_string(),
        );
        metric(
            "threadline_outbox_full",
            "gauge",
            "1 while the outbox is at buffer_max_mb (alarm).",
            u8::from(s.buffer_full).to_string(),
        );
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "threadline_publish_batches_total",
            "counter",
            "Envelopes published.",
            load(&p.batches),
        );
        metric(
            "threadline_publish_records_total",
            "counter",
            "Records published (re-sends included).",
            load(&p.records),
        );
        metric(
            "threadline_publish_resent_batches_total",
            "counter",
            "Envelopes published again after the ack timeout.",
            load(&p.resent_batches),
        );
        metric(
            "threadline_publish_aggregator_onlines_total",
            "counter",
            "Aggregators seen coming online (each re-sent the envelopes in flight).",
            load(&p.aggregator_onlines),
        );
        metric(
            "threadline_publish_inflight_batches",
            "gauge",
            "Envelopes waiting for the aggregator's ack.",
            load(&p.inflight),
        );
        metric(
            "threadline_publish_pubacks_total",
            "counter",
            "Broker PUBACKs for envelopes.",
            load(&p.pubacks),
        );
        metric(
            "threadline_publish_acks_total",
            "counter",
            "Ack messages from the aggregator.",
            load(&p.acks),
        );
        metric(
            "threadline_gateway_acks_rejected_total",
            "counter",
            "Acks ignored because not signed with this gateway's key (signing_key_file).",
            load(&p.acks_rejected),
        );
        metric(
            "threadline_mqtt_connected",
            "gauge",
            "1 while connected to the broker.",
            u8::from(p.connected.load(Ordering::Relaxed)).to_string(),
        );
        metric(
            "threadline_mqtt_ack_subscribed",
            "gauge",
            "1 while the broker grants the subscription to the ack topic with QoS 1.",
            u8::from(p.ack_subscribed.load(Ordering::Relaxed)).to_string(),
        );
        metric(
            "threadline_mqtt_ack_subscribe_refusals_total",
            "counter",
            "SUBACKs that refused the ack subscription (each retried).",
            load(&p.ack_subscribe_refusals),
        );
        let devices: [DeviceMetric; 5] = [
            (
                "threadline_device_polls_total",
                "counter",
                "Polls (or data changes).",
                |m| m.polls.load(Ordering::Relaxed).to_string(),
            ),
            (
                "threadline_device_errors_total",
                "counter",
                "Failed polls.",
                |m| m.errors.load(Ordering::Relaxed).to_string(),
            ),
            (
                "threadline_device_last_ok_timestamp_seconds",
                "gauge",
                "Unix time of the last good poll (0 = never).",
                |m| {
                    format!(
                        "{:.3}",
                        m.last_ok_ms.load(Ordering::Relaxed) as f64 / 1000.0
                    )
                },
            ),
            (
                "threadline_device_rtt_seconds",
                "gauge",
                "Round-trip time of the last request.",
                |m| format!("{:.6}", m.last_rtt_us.load(Ordering::Relaxed) as f64 / 1e6),
            ),
            (
                "threadline_device_values_total",
                "counter",
                "Values delivered.",
                |m| m.values.load(Ordering::Relaxed).to_string(),
            ),
        ];
        let devices_now = self.devices.snapshot();
        for (name, kind, help, get) in devices {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, m) in &devices_now {
                let _ = writeln!(out, "{name}{{device=\"{}\"}} {}", escape_label(id), get(m));
            }
        }
        if let Some(r) = &self.route {
            route_metrics(&mut out, r);
        }
        out
    }

    async fn oldest_age_s(&self) -> f64 {
        match self.outbox.oldest_ts().await {
            Ok(Some(ts)) => {
                let age = chrono::Utc::now() - ts;
                (age.num_milliseconds().max(0) as f64) / 1000.0
            }
            _ => 0.0,
        }
    }

    /// `Ok(body)` when healthy, `Err(body)` with every reason otherwise.
    pub async fn healthz(&self) -> Result<String, String> {
        let mut problems = Vec::new();
        let now = now_ms();
        let silence_ms = self.max_device_silence_s.saturating_mul(1000);
        for (id, m) in &self.devices.snapshot() {
            if m.open.load(Ordering::Relaxed) {
                // An open scanner nobody uses is idle, not broken.
                continue;
            }
            let last_ok = m.last_ok_ms.load(Ordering::Relaxed);
            let since = if last_ok == 0 {
                self.started_ms
            } else {
                last_ok
            };
            if now.saturating_sub(since) > silence_ms {
                let error = m.last_error.lock().ok().and_then(|e| e.clone());
                problems.push(format!(
                    "device {id}: no good poll for {} s (limit {} s){}",
                    now.saturating_sub(since) / 1000,
                    self.max_device_silence_s,
                    error
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ));
            }
        }
        let p = &self.publish;
        if p.connected.load(Ordering::Relaxed)
            && !p.ack_subscribed.load(Ordering::Relaxed)
            && p.ack_subscribe_refusals.load(Ordering::Relaxed) > 0
        {
            problems.push(format!(
                "mqtt: connected, but the broker refuses the subscription to the ack topic \
                 ({} refusals so far); nothing is published until it is granted, retrying",
                p.ack_subscribe_refusals.load(Ordering::Relaxed)
            ));
        }
        let age = self.oldest_age_s().await;
        if age > self.max_outbox_age_s as f64 {
            problems.push(format!(
                "outbox: oldest record is {age:.0} s old (limit {} s); {} records waiting — is \
                 the broker or the aggregator reachable?",
                self.max_outbox_age_s,
                self.outbox.stats().depth()
            ));
        }
        if self.outbox.stats().buffer_full {
            // Reported, but not a failure by itself: data is still accepted (events at least).
            tracing::debug!("healthz: outbox full");
        }
        if problems.is_empty() {
            Ok("ok\n".to_owned())
        } else {
            Err(problems.join("\n") + "\n")
        }
    }
}

/// Name, type, help and value of one per-device metric.
type DeviceMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DeviceMetrics) -> String,
);

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<HealthState>, shutdown: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &state)).await;
                });
            }
            Err(e) => {
                // E.g. too many open files: back off instead of spinning.
                tracing::warn!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, state: &HealthState) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            let body = state.metrics().await;
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => match state.healthz().await {
            Ok(body) => respond(&mut stream, 200, "text/plain", &body).await,
            Err(body) => respond(&mut stream, 503, "text/plain", &body).await,
        },
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /metrics or /healthz\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The route gate's and the interlocks' counters (`[route]`).
fn route_metrics(out: &mut String, r: &crate::route::GateCounters) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "threadline_route_lookups_total",
        "counter",
        "route-status lookups of enforcing stations.",
        load(&r.lookups),
    );
    metric(
        "threadline_route_unreachable_total",
        "counter",
        "Lookups without a usable answer (unreachable, timeout, error status).",
        load(&r.unreachable),
    );
    metric(
        "threadline_route_refused_total",
        "counter",
        "Scans refused by the route check (holds, routes, when_unreachable).",
        load(&r.refused),
    );
    metric(
        "threadline_interlock_writes_total",
        "counter",
        "Interlock writes the device confirmed.",
        load(&r.interlock_writes),
    );
    metric(
        "threadline_interlock_failures_total",
        "counter",
        "Interlock writes that failed (refused, timed out, no connection).",
        load(&r.interlock_failures),
    );
}
