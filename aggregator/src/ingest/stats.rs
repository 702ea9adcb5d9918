//! Ingest health and counters, shared with the API (`/healthz`, `/metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use threadline_shared::time::Timestamp;

use super::gaps::{GatewayGaps, SeqGaps};
use crate::store::BatchOutcome;

/// `[aggregator] gap_alarm_s` when not set.
pub const DEFAULT_GAP_ALARM_S: u64 = 300;

/// Upper bounds (seconds) of the batch latency histogram.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Health and counters of the ingest pipeline. All fields are cheap to update from the writer
/// and the MQTT loop; the mutexes are never held across an `.await`.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// True while the MQTT client holds a session with the broker.
    pub mqtt_connected: AtomicBool,
    /// Set when ingest is configured to run at all (an API-only process reports no MQTT).
    pub ingest_enabled: AtomicBool,
    /// True while the database fails writes; cleared by the next successful commit.
    pub db_down: AtomicBool,
    /// The last MQTT / database error, for `/healthz`.
    pub last_mqtt_error: Mutex<Option<String>>,
    pub last_db_error: Mutex<Option<String>>,
    /// Set while the records subscription looks deaf (see [`super::deaf`]), with the reason.
    deaf: Mutex<Option<String>>,
    pub batches: AtomicU64,
    pub batch_failures: AtomicU64,
    pub duplicates: AtomicU64,
    pub acks_sent: AtomicU64,
    /// Acks that could not be queued (the MQTT client's queue was full); the gateway re-sends,
    /// the duplicate is absorbed and acked again.
    pub acks_dropped: AtomicU64,
    pub messages_received: AtomicU64,
    /// Gateways whose last status this process received says online (every replica receives
    /// every status, retained ones included).
    pub gateways_online: AtomicU64,
    /// Batch commit latency histogram: counts per bucket of [`LATENCY_BUCKETS`] (+Inf last).
    latency: Mutex<Latency>,
    /// New rows by record type.
    records: Mutex<BTreeMap<&'static str, u64>>,
    dead_letters: Mutex<BTreeMap<&'static str, u64>>,
    /// Newest record floor time per gateway (lag = now − this).
    newest: Mutex<BTreeMap<String, Timestamp>>,
    /// Seq gaps per gateway and epoch (see [`super::gaps`]).
    gaps: Mutex<SeqGaps>,
    /// Set for `shared_group` replicas: each sees only part of a gateway's stream.
    gaps_off: AtomicBool,
    /// `[aggregator] gap_alarm_s` (0 = the default).
    gap_alarm_s: AtomicU64,
    /// Woken when holds change (or the MQTT session is new): the holds publisher re-publishes
    /// the retained `{root}/{plant}/holds` messages.
    pub holds_changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Latency {
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned counter mutex only means a panic elsewhere; the counters are still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IngestStats {
    /// Records a committed batch.
    pub fn committed(&self, out: &BatchOutcome, seconds: f64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.duplicates.fetch_add(out.duplicates, Ordering::Relaxed);
        self.db_down.store(false, Ordering::Relaxed);
        {
            let mut l = lock(&self.latency);
            let i = LATENCY_BUCKETS
                .iter()
                .position(|b| seconds <= *b)
                .unwrap_or(LATENCY_BUCKETS.len());
            l.buckets[i] += 1;
            l.sum += seconds;
            l.count += 1;
        }
        {
            let mut r = lock(&self.records);
            for (t, n) in &out.new_by_type {
                *r.entry(t).or_default() += n;
            }
        }
        {
            let mut d = lock(&self.dead_letters);
            for (k, n) in &out.dead_letters {
                *d.entry(k.as_str()).or_default() += n;
            }
        }
        if !self.gaps_off.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut g = lock(&self.gaps);
            for ((gw, _, _, epoch), seqs) in &out.committed {
                g.stored(gw, *epoch, seqs, now);
            }
        }
        let mut nw = lock(&self.newest);
        for (gw, ts) in &out.newest_ts {
            let e = nw.entry(gw.clone()).or_insert(*ts);
            if *ts > *e {
                *e = *ts;
            }
        }
    }

    /// Seq gap tracking: the alarm age, and whether to track at all (not for `shared_group`
    /// replicas, which each see part of every gateway's stream).
    pub fn configure_gaps(&self, alarm_s: u64, track: bool) {
        self.gap_alarm_s.store(alarm_s, Ordering::Relaxed);
        self.gaps_off.store(!track, Ordering::Relaxed);
    }

    fn gap_alarm(&self) -> Duration {
        match self.gap_alarm_s.load(Ordering::Relaxed) {
            0 => Duration::from_secs(DEFAULT_GAP_ALARM_S),
            s => Duration::from_secs(s),
        }
    }

    /// Open seq gaps per gateway (empty when tracking is off).
    pub fn gaps(&self) -> BTreeMap<String, GatewayGaps> {
        lock(&self.gaps).by_gateway(Instant::now())
    }

    /// Records a failed batch write (the database is treated as down until the next commit).
    pub fn write_failed(&self, error: &str) {
        self.batch_failures.fetch_add(1, Ordering::Relaxed);
        self.db_down.store(true, Ordering::Relaxed);
        *lock(&self.last_db_error) = Some(error.to_owned());
    }

    pub fn mqtt_state(&self, connected: bool, error: Option<String>) {
        self.mqtt_connected.store(connected, Ordering::Relaxed);
        if error.is_some() {
            *lock(&self.last_mqtt_error) = error;
        }
    }

    /// The records subscription looks deaf (`Some(reason)`) or hears again (`None`); logged
    /// when that changes.
    pub fn set_deaf(&self, reason: Option<String>) {
        let mut d = lock(&self.deaf);
        match (&*d, &reason) {
            (None, Some(why)) => tracing::error!("ingest is deaf: {why}"),
            (Some(_), None) => tracing::info!("ingest hears again: records are arriving"),
            _ => {}
        }
        *d = reason;
    }

    /// Total new rows of a record type.
    pub fn records_of(&self, ty: &str) -> u64 {
        lock(&self.records).get(ty).copied().unwrap_or(0)
    }

    /// Dead letters of a kind.
    pub fn dead_letters_of(&self, kind: &str) -> u64 {
        lock(&self.dead_letters).get(kind).copied().unwrap_or(0)
    }

    /// Why ingest is unhealthy, if it is (database reachability is checked by the caller).
    pub fn unhealthy_reason(&self) -> Option<String> {
        if self.db_down.load(Ordering::Relaxed) {
            let e = lock(&self.last_db_error).clone().unwrap_or_default();
            return Some(format!("database unavailable: {e}"));
        }
        if self.ingest_enabled.load(Ordering::Relaxed)
            && !self.mqtt_connected.load(Ordering::Relaxed)
        {
            let e = lock(&self.last_mqtt_error)
                .clone()
                .unwrap_or_else(|| "connecting".to_owned());
            return Some(format!("MQTT broker not connected: {e}"));
        }
        lock(&self.deaf).clone()
    }

    /// Seq gaps open longer than `gap_alarm_s`, for `/healthz` (ingest itself still works).
    pub fn gap_alarm_reason(&self) -> Option<String> {
        let alarms = lock(&self.gaps).alarms(Instant::now(), self.gap_alarm());
        (!alarms.is_empty()).then(|| alarms.join("; "))
    }

    /// Prometheus text exposition of every counter.
    pub fn render_prometheus(&self, now: Timestamp) -> String {
        let mut s = String::new();
        let counters: [(&str, &str, &AtomicU64); 6] = [
            ("batches", "Batches committed.", &self.batches),
            (
                "batch_failures",
                "Batch writes that failed (retried).",
                &self.batch_failures,
            ),
            (
                "duplicates",
                "Records received again after they were stored (ignored, acked).",
                &self.duplicates,
            ),
            ("acks", "Ack messages published.", &self.acks_sent),
            (
                "acks_dropped",
                "Acks not queued because the MQTT client queue was full.",
                &self.acks_dropped,
            ),
            (
                "messages",
                "MQTT messages received.",
                &self.messages_received,
            ),
        ];
        for (name, help, v) in counters {
            let name = format!("threadline_ingest_{name}_total");
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP threadline_ingest_records_total New records stored, by type.\n# TYPE threadline_ingest_records_total counter"
        );
        for (t, n) in lock(&self.records).iter() {
            let _ = writeln!(s, "threadline_ingest_records_total{{type=\"{t}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP threadline_ingest_dead_letters_total Dead letters written, by reason.\n# TYPE threadline_ingest_dead_letters_total counter"
        );
        {
            let d = lock(&self.dead_letters);
            for k in crate::store::DeadLetterKind::ALL {
                let n = d.get(k.as_str()).copied().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "threadline_ingest_dead_letters_total{{reason=\"{}\"}} {n}",
                    k.as_str()
                );
            }
        }
        {
            let l = lock(&self.latency);
            let _ = writeln!(
                s,
                "# HELP threadline_ingest_batch_seconds Batch write+commit latency.\n# TYPE threadline_ingest_batch_seconds histogram"
            );
            let mut cum = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                cum += l.buckets[i];
                let _ = writeln!(
                    s,
                    "threadline_ingest_batch_seconds_bucket{{le=\"{b}\"}} {cum}"
                );
            }
            cum += l.buckets[LATENCY_BUCKETS.len()];
            let _ = writeln!(
                s,
                "threadline_ingest_batch_seconds_bucket{{le=\"+Inf\"}} {cum}"
            );
            let _ = writeln!(s, "threadline_ingest_batch_seconds_sum {}", l.sum);
            let _ = writeln!(s, "threadline_ingest_batch_seconds_count {}", l.count);
        }
        let _ = writeln!(
            s,
            "# HELP threadline_ingest_lag_seconds Now minus the newest record's floor time, per gateway.\n# TYPE threadline_ingest_lag_seconds gauge"
        );
        for (gw, ts) in lock(&self.newest).iter() {
            let lag = (now - *ts).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            let _ = writeln!(
                s,
                "threadline_ingest_lag_seconds{{gateway=\"{}\"}} {lag}",
                escape(gw)
            );
        }
        let _ = writeln!(
            s,
            "# HELP threadline_ingest_seq_gap_records Seqs missing below the highest seen, per gateway (all epochs).\n# TYPE threadline_ingest_seq_gap_records gauge"
        );
        for (gw, g) in self.gaps() {
            let _ = writeln!(
                s,
                "threadline_ingest_seq_gap_records{{gateway=\"{}\"}} {}",
                escape(&gw),
                g.count
            );
        }
        let _ = writeln!(
            s,
            "# HELP threadline_ingest_gateways_online Gateways whose last status received by this process says online.\n# TYPE threadline_ingest_gateways_online gauge\nthreadline_ingest_gateways_online {}",
            self.gateways_online.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP threadline_ingest_up 1 when MQTT is connected and the database accepts writes.\n# TYPE threadline_ingest_up gauge\nthreadline_ingest_up {}",
            u8::from(self.unhealthy_reason().is_none())
        );
        s
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
