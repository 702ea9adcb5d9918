//! The SQLite side of the ingest benchmark (`TL_BENCH_DB=sqlite…`; see the bench's doc).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use threadline_aggregator::ingest::{
    AckSink, DecodeConfig, Incoming, IngestStats, WriterConfig, Writers,
};
use threadline_aggregator::store::Db;
use tokio_util::sync::CancellationToken;

use super::{
    PER_ENVELOPE, ROOT, decode_all, env_usize, envelopes_multi, mqtt_rate, reading_record,
    trace_record, writer_rate,
};

/// Where the database file goes: `sqlite` → a temporary directory (kept alive by the guard),
/// `sqlite:///path` or `sqlite://path` → that file.
fn location(spec: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    match spec.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        Some(p) => (PathBuf::from(p), None),
        None => {
            let dir = tempfile::tempdir().unwrap();
            (dir.path().join("bench.db"), Some(dir))
        }
    }
}

/// Removes the database file and its WAL and shared-memory files.
fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Closes the pool (its connections checkpoint the WAL as they close).
async fn close(db: Db) {
    if let Db::Sqlite(p) = db {
        p.close().await;
    }
}

fn url_of(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// CPU seconds (user + system) of this process and of its SQLite worker threads (sqlx runs
/// each connection on a thread named `sqlx-sqlite-worker-N`, shown truncated as
/// `sqlx-sqlite-wor`).
fn cpu_seconds() -> (f64, f64) {
    // Clock ticks per second: 100 on Linux (USER_HZ), which procfs always reports in.
    const TICKS: f64 = 100.0;
    let ticks = |stat: &str| -> f64 {
        // Fields after the `(comm)`: state is the 3rd field, utime the 14th, stime the 15th.
        let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
        let f: Vec<&str> = after.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        n(11) + n(12)
    };
    let process = std::fs::read_to_string("/proc/self/stat")
        .map(|s| ticks(&s))
        .unwrap_or(0.0);
    let mut sqlite = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with("sqlx-sqlite") {
                sqlite += std::fs::read_to_string(t.path().join("stat"))
                    .map(|s| ticks(&s))
                    .unwrap_or(0.0);
            }
        }
    }
    (process / TICKS, sqlite / TICKS)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn file_mb(path: &Path, suffix: &str) -> f64 {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    std::fs::metadata(PathBuf::from(p)).map_or(0.0, |m| m.len() as f64 / 1e6)
}

/// The fixed sizes (as on PostgreSQL), then the MQTT end-to-end rates, each on a fresh file.
async fn fixed(path: &Path) {
    let n_events = env_usize("TL_BENCH_EVENTS", 300_000);
    let n_readings = env_usize("TL_BENCH_READINGS", 1_500_000);
    let gateways = env_usize("TL_BENCH_GATEWAYS", 4);
    println!(
        "SQLite ingest benchmark ({}): {n_events} trace events, {n_readings} readings, \
         {PER_ENVELOPE} records/envelope, batches of ≤ 5000, {gateways} gateways, 1 writer \
         (SQLite has one write lock), load average {} at start",
        path.display(),
        load_average()
    );
    if std::env::var("TL_BENCH_ONLY_MQTT").is_err() {
        remove_db(path);
        let db = Db::connect(&url_of(path), 8).await.unwrap();
        super::factor_index_on(&db).await;
        for (what, raw, n) in [
            (
                "trace events",
                envelopes_multi("gw-bench-ev", gateways, n_events, trace_record),
                n_events,
            ),
            (
                "readings    ",
                envelopes_multi("gw-bench-rd", gateways, n_readings, reading_record),
                n_readings,
            ),
        ] {
            let msgs = decode_all(&raw);
            drop(raw);
            let (p0, s0) = cpu_seconds();
            let secs = writer_rate(&db, 1, msgs).await;
            let (p1, s1) = cpu_seconds();
            println!(
                "writer (DB side)  {what}: {:>9.0} /s  ({n} in {secs:.2} s; CPU: process {:.0} %, \
                 SQLite worker {:.0} % of a core; load {})",
                n as f64 / secs,
                100.0 * (p1 - p0) / secs,
                100.0 * (s1 - s0) / secs,
                load_average()
            );
        }
        assert!(db.verify_chains().await.unwrap().ok);
        close(db).await;
    }
    if std::env::var("TL_BENCH_SKIP_MQTT").is_err() {
        for (what, raw, n) in [
            (
                "trace events",
                envelopes_multi("gw-mq-ev", gateways, n_events, trace_record),
                n_events,
            ),
            (
                "readings    ",
                envelopes_multi("gw-mq-rd", gateways, n_readings, reading_record),
                n_readings,
            ),
        ] {
            remove_db(path);
            let (p0, _) = cpu_seconds();
            let started = Instant::now();
            match mqtt_rate(&url_of(path), 1, raw, n).await {
                Some(secs) => {
                    let (p1, _) = cpu_seconds();
                    println!(
                        "MQTT end to end   {what}: {:>9.0} /s  ({n} acked in {secs:.2} s; {gateways} \
                         gateways; CPU of the process (aggregator + publisher) {:.0} %; load {})",
                        n as f64 / secs,
                        100.0 * (p1 - p0) / started.elapsed().as_secs_f64(),
                        load_average()
                    )
                }
                None => {
                    println!("MQTT end to end   {what}: FAILED (not all acked within the timeout)")
                }
            }
        }
    }
}

/// One envelope of `gw` (epoch `epoch`), records `first..first + PER_ENVELOPE`.
fn envelope(kind: &str, gw: &str, epoch: uuid::Uuid, first: usize, tags: usize) -> Incoming {
    let f = if kind == "events" {
        trace_record
    } else {
        reading_record
    };
    let records: Vec<serde_json::Value> = (first..first + PER_ENVELOPE)
        .map(|s| {
            let mut r = f(s);
            if kind != "events" && tags != 100 {
                r["tag"] = format!("tag.{}", s % tags).into();
            }
            r
        })
        .collect();
    let payload = serde_json::to_vec(&serde_json::json!({"v":1,"gateway":gw,"plant":"p",
        "line":"l","epoch":epoch,"records": records}))
    .unwrap();
    threadline_aggregator::ingest::decode(
        ROOT,
        &format!("{ROOT}/p/l/{gw}/records"),
        &payload,
        64 << 20,
    )
}

/// The long run: the writer is fed for `secs` seconds; one line per `every` seconds.
async fn long(path: &Path, secs: u64) {
    let kind = std::env::var("TL_BENCH_LONG").unwrap_or_else(|_| "readings".to_owned());
    let every = env_usize("TL_BENCH_EVERY_S", 10) as u64;
    let gateways = env_usize("TL_BENCH_GATEWAYS", 4);
    let tags = env_usize("TL_BENCH_TAGS", 100);
    remove_db(path);
    let db = Db::connect(&url_of(path), 8).await.unwrap();
    super::factor_index_on(&db).await;
    println!(
        "SQLite long run ({}): {kind} for {secs} s, {gateways} gateways, {tags} tags, \
         {PER_ENVELOPE} records/envelope, batches of ≤ 5000, 1 writer; load average {} at start",
        path.display(),
        load_average()
    );
    println!(
        "{:>6} {:>10} {:>12} {:>8} {:>8} {:>9} {:>8} {:>6}",
        "t s", "rate /s", "stored", "proc %", "sqlite %", "db MB", "wal MB", "load"
    );
    let stats = Arc::new(IngestStats::default());
    let cfg = WriterConfig {
        batch_max_records: env_usize("TL_BENCH_BATCH", 5000),
        batch_max_bytes: 64 << 20,
        batch_max_wait: Duration::from_millis(50),
    };
    let writers = Arc::new(Writers::spawn(
        &db,
        1,
        256,
        DecodeConfig {
            root: ROOT.to_owned(),
            max_payload_bytes: 64 << 20,
            keys: None,
        },
        &AckSink::None,
        &stats,
        &cfg,
        &CancellationToken::new(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    // The producer: envelopes generated on the fly, the gateways in turn (waits while the
    // writer's queue is full, so it runs at the writer's pace).
    let producer = {
        let (w, stop, kind) = (writers.clone(), stop.clone(), kind.clone());
        tokio::spawn(async move {
            let gws: Vec<(String, uuid::Uuid)> = (0..gateways)
                .map(|g| (format!("gw-long-{g}"), uuid::Uuid::new_v4()))
                .collect();
            let mut first = 1;
            while !stop.load(Ordering::Relaxed) {
                for (gw, epoch) in &gws {
                    let m = envelope(&kind, gw, *epoch, first, tags);
                    if w.send(m).await.is_err() {
                        return;
                    }
                }
                first += PER_ENVELOPE;
            }
        })
    };
    let counted = |s: &IngestStats| {
        if kind == "events" {
            [
                "unit_started",
                "operation_completed",
                "quality_check",
                "packed",
            ]
            .iter()
            .map(|t| s.records_of(t))
            .sum::<u64>()
        } else {
            s.records_of("reading")
        }
    };
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64, cpu_seconds());
    let mut ticker = tokio::time::interval(Duration::from_secs(every));
    ticker.tick().await;
    let mut rates = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        ticker.tick().await;
        let now = Instant::now();
        let n = counted(&stats);
        let cpu = cpu_seconds();
        let dt = now.duration_since(last.0).as_secs_f64();
        let rate = (n - last.1) as f64 / dt;
        rates.push(rate);
        println!(
            "{:>6.0} {:>10.0} {:>12} {:>8.0} {:>8.0} {:>9.0} {:>8.1} {:>6}",
            start.elapsed().as_secs_f64(),
            rate,
            n,
            100.0 * (cpu.0 - last.2.0) / dt,
            100.0 * (cpu.1 - last.2.1) / dt,
            file_mb(path, ""),
            file_mb(path, "-wal"),
            load_average()
        );
        last = (now, n, cpu);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    let writers = Arc::try_unwrap(writers).expect("the producer has ended");
    writers.join().await;
    let total = start.elapsed().as_secs_f64();
    let n = counted(&stats);
    let table = if kind == "events" {
        "events"
    } else {
        "readings"
    };
    let stored = db.count(table).await.unwrap();
    let third = rates.len() / 3;
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len().max(1) as f64;
    println!(
        "total: {n} {kind} committed in {total:.1} s = {:.0} /s; {table} rows stored: {stored}; \
         first third {:.0} /s, last third {:.0} /s; load average {} at the end",
        n as f64 / total,
        mean(&rates[..third]),
        mean(&rates[rates.len() - third..]),
        load_average()
    );
    close(db).await;
}

pub(super) async fn main(spec: &str) {
    let (path, _dir) = location(spec);
    match std::env::var("TL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(secs) => long(&path, secs).await,
        None => fixed(&path).await,
    }
    if _dir.is_none() {
        println!("(database left at {})", path.display());
    }
}
