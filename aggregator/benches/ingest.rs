//! Sustained ingest into PostgreSQL or SQLite: trace events and readings, (1) fed directly into
//! the ingest writer (the database side), (2) end to end through a local Mosquitto on a free port
//! (publish → ingest → commit → ack), and (3) on PostgreSQL the raw `COPY` rate of the same rows
//! as a ceiling.
//!
//! `cargo bench --workspace --bench ingest` (env: THREADLINE_TEST_DATABASE_URL,
//! TL_BENCH_GATEWAYS (default 4), TL_BENCH_WRITERS (default 4),
//! TL_BENCH_EVENTS, TL_BENCH_READINGS, TL_BENCH_BATCH, TL_BENCH_MOSQUITTO_EXTRA,
//! TL_BENCH_SKIP_MQTT=1, TL_BENCH_ONLY_MQTT=1).
//!
//! SQLite (the embedded default): `TL_BENCH_DB=sqlite` (a file in a temporary directory) or
//! `TL_BENCH_DB=sqlite:///path/x.db` (the file and its `-wal`/`-shm` are replaced). Without
//! `TL_BENCH_SECS` it runs the same fixed sizes as PostgreSQL. With `TL_BENCH_SECS=600` it is the
//! long run: the writer is fed `TL_BENCH_LONG` (`readings`, the default, or `events`) generated on
//! the fly for that many seconds, and every `TL_BENCH_EVERY_S` (10) seconds one line says the
//! rate of that interval, the rows stored so far, the CPU of the process and of the SQLite
//! worker thread (the writer's connection), the database and WAL sizes and the load average —
//! the curve shows whether the rate stays flat as the table grows. `TL_BENCH_TAGS` (100): how
//! many distinct tags the readings cycle through.
//!
//! `TL_BENCH_FACTOR_INDEX=1`: the factor index of common-cause analysis holds an hour before the
//! run, so its triggers record every edge, operation and new unit the run writes (as on a plant
//! whose aggregator keeps the index); alternate with and without for their cost on ingest.
//!
//! `TL_BENCH_SIGNED=1` (MQTT end to end only): every gateway gets a key in a `gateway_keys_dir`,
//! its envelopes are signed (before the clock starts, as a gateway signs them on its own CPU)
//! and the aggregator verifies each and signs each ack; the publisher checks the acks' MACs, as
//! a gateway does. Alternate runs with and without it for the cost of signing on ingest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use threadline_aggregator::ingest::{
    AckSink, DecodeConfig, Incoming, IngestStats, WriterConfig, Writers, decode,
};
use threadline_aggregator::store::Db;
use threadline_shared::signing::{KeyRing, Purpose};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ROOT: &str = "threadline/v1";
const PER_ENVELOPE: usize = 500;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn ts(i: usize) -> String {
    let t = chrono::DateTime::from_timestamp(
        1_795_000_000 + (i / 1000) as i64,
        ((i % 1000) * 1000) as u32 * 1000,
    )
    .unwrap();
    threadline_shared::time::format(&t)
}

/// Trace events of a realistic mix: per unit unit_started, 3 operations (2 parameters, 1 lot),
/// a quality check, a packing.
fn trace_record(seq: usize) -> Value {
    let unit = format!("SN{:010}", seq / 6);
    let lot = format!("LOT-0001-{:06}", seq / 6000);
    let base = json!({"seq": seq, "ts": ts(seq)});
    let mut v = match seq % 6 {
        0 => {
            json!({"type":"unit_started","unit":unit,"part":"P-100","work_order":"WO-1","station":"ST10","operator":"OP0001"})
        }
        1..=3 => {
            json!({"type":"operation_completed","unit":unit,"station":format!("ST{}", seq % 6 * 10),
            "operation":"press","equipment":"PRESS-1","operator":"OP0001","recipe":"7","result":"pass",
            "parameters":[{"name":"press.pressure","value":200.0 + (seq % 50) as f64,"unit":"bar","lsl":180.0,"usl":220.0},
                          {"name":"press.force_peak","value":11.0,"usl":12.5}],
            "environment":[{"name":"hall.temp","value":21.5,"unit":"°C"}],
            "materials":[{"lot":lot,"part":"P-6202","qty":1.0}]})
        }
        4 => {
            json!({"type":"quality_check","unit":unit,"characteristic":"diameter","value":10.01,"lsl":9.9,"usl":10.1,"result":"pass"})
        }
        _ => {
            json!({"type":"packed","container":format!("CASE-{:08}", seq / 60),"level":"case","child":{"kind":"unit","id":unit}})
        }
    };
    let o = v.as_object_mut().unwrap();
    for (k, x) in base.as_object().unwrap() {
        o.insert(k.clone(), x.clone());
    }
    v
}

fn reading_record(seq: usize) -> Value {
    json!({"seq": seq, "ts": ts(seq), "type":"reading","device":"plc","tag":format!("tag.{}", seq % 100),
           "value": (seq % 1000) as f64 * 0.5, "unit":"bar","quality":"good"})
}

/// Envelopes of `n` records from `gw` (seq from 1).
fn envelopes(gw: &str, n: usize, f: fn(usize) -> Value) -> Vec<(String, Vec<u8>)> {
    let epoch = uuid::Uuid::new_v4();
    (1..=n)
        .collect::<Vec<_>>()
        .chunks(PER_ENVELOPE)
        .map(|c| {
            let payload = serde_json::to_vec(
                &json!({"v":1,"gateway":gw,"plant":"p","line":"l","epoch":epoch,
                "records": c.iter().map(|s| f(*s)).collect::<Vec<_>>()}),
            )
            .unwrap();
            (format!("{ROOT}/p/l/{gw}/records"), payload)
        })
        .collect()
}

/// `n` records in all from `gateways` gateways (`{prefix}-{i}`), their envelopes interleaved
/// as they would arrive from several lines at once.
fn envelopes_multi(
    prefix: &str,
    gateways: usize,
    n: usize,
    f: fn(usize) -> Value,
) -> Vec<(String, Vec<u8>)> {
    let per: Vec<Vec<(String, Vec<u8>)>> = (0..gateways)
        .map(|g| envelopes(&format!("{prefix}-{g}"), n / gateways, f))
        .collect();
    let longest = per.iter().map(Vec::len).max().unwrap_or(0);
    let mut its: Vec<_> = per.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    for _ in 0..longest {
        for it in &mut its {
            out.extend(it.next());
        }
    }
    out
}

async fn fresh_db(admin: &str) -> (Db, String, String) {
    let pool = sqlx::PgPool::connect(admin)
        .await
        .expect("PostgreSQL reachable (THREADLINE_TEST_DATABASE_URL)");
    let name = format!("tl_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let db = Db::connect(&url, 8).await.unwrap();
    factor_index_on(&db).await;
    (db, url, name)
}

/// `TL_BENCH_FACTOR_INDEX=1`: one (empty) hour in the factor index, so its triggers record.
/// `TL_BENCH_FACTOR_INDEX=none`: its triggers dropped (the write path before the index existed).
async fn factor_index_on(db: &Db) {
    let sql = match std::env::var("TL_BENCH_FACTOR_INDEX").as_deref() {
        Ok("1") => "INSERT INTO factor_index_hours (hour) VALUES ('1970-01-01T00')",
        Ok("none") => {
            "DROP TRIGGER edges_factor_changes ON edges; \
             DROP TRIGGER operations_factor_changes ON operations; \
             DROP TRIGGER items_factor_changes ON items; \
             DROP TRIGGER item_factor_changes ON items"
        }
        _ => return,
    };
    match db {
        Db::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        Db::Sqlite(p) => {
            let sql = sql
                .replace(" ON edges", "")
                .replace(" ON operations", "")
                .replace(" ON items", "");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(|_| ())
        }
    }
    .expect("factor index setting");
    println!("factor index: {sql}");
}

async fn drop_db(admin: &str, name: &str) {
    let pool = sqlx::PgPool::connect(admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}

/// Feeds decoded messages to `writers` writers as fast as they take them; returns seconds.
async fn writer_rate(db: &Db, writers: usize, msgs: Vec<Incoming>) -> f64 {
    let stats = Arc::new(IngestStats::default());
    let cfg = WriterConfig {
        batch_max_records: 5000,
        batch_max_bytes: 64 << 20,
        batch_max_wait: Duration::from_millis(50),
    };
    let start = Instant::now();
    let w = Writers::spawn(
        db,
        writers,
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
    );
    for m in msgs {
        w.send(m).await.unwrap();
    }
    w.join().await;
    start.elapsed().as_secs_f64()
}

fn decode_all(raw: &[(String, Vec<u8>)]) -> Vec<Incoming> {
    raw.iter()
        .map(|(t, p)| decode(ROOT, t, p, 64 << 20))
        .collect()
}

/// `COPY … FROM STDIN` of the rows the writer stored, into empty copies of the tables.
async fn copy_rate(db: &Db, table: &str) -> (u64, f64) {
    let Db::Postgres(pool) = db else {
        unreachable!()
    };
    let mut conn = pool.acquire().await.unwrap();
    let cols = if table == "events" {
        "gateway, epoch, seq, ts, type, body, received_at, prev_hash, hash"
    } else {
        "gateway, epoch, seq, ts, device, tag, value_num, value_text, unit, quality, error"
    };
    // Export first (not timed), then time the import into a fresh table with the same indexes.
    let mut out = conn
        .copy_out_raw(&format!("COPY (SELECT {cols} FROM {table}) TO STDOUT"))
        .await
        .unwrap();
    let mut data = Vec::new();
    use futures::StreamExt as _;
    while let Some(chunk) = out.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    drop(out);
    let copy = format!("{table}_copy");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let rows = data.iter().filter(|b| **b == b'\n').count() as u64;
    let start = Instant::now();
    let mut cin = conn
        .copy_in_raw(&format!("COPY {copy} ({cols}) FROM STDIN"))
        .await
        .unwrap();
    for chunk in data.chunks(1 << 20) {
        cin.send(chunk).await.unwrap();
    }
    cin.finish().await.unwrap();
    (rows, start.elapsed().as_secs_f64())
}

#[path = "ingest/sqlite.rs"]
mod sqlite;

async fn mqtt_rate(
    url: &str,
    writers: usize,
    raw: Vec<(String, Vec<u8>)>,
    records: usize,
) -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n{}",
            std::env::var("TL_BENCH_MOSQUITTO_EXTRA")
                .unwrap_or_default()
                .replace(';', "\n")
        ),
    )
    .ok()?;
    let mut child = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let signed = std::env::var("TL_BENCH_SIGNED").is_ok_and(|v| v == "1");
    let (raw, keys, keys_line) = if signed {
        let (raw, keys) = sign_all(raw, &dir.path().join("keys"));
        let line = format!(
            "gateway_keys_dir = \"{}\"\n",
            dir.path().join("keys").display()
        );
        (raw, keys, line)
    } else {
        (raw, Default::default(), String::new())
    };
    let cfg = threadline_aggregator::config::AggregatorConfig::parse("bench.toml", &format!(
        "[aggregator]\nid = \"agg-bench\"\nwriters = {writers}\nbatch_max_records = {}\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n{keys_line}\n[database]\nurl = \"{url}\"\n", env_usize("TL_BENCH_BATCH", 5000))).ok()?;
    let db = Db::connect(url, 8).await.ok()?;
    let stats = Arc::new(IngestStats::default());
    let cancel = CancellationToken::new();
    let (s2, c2, db2) = (stats.clone(), cancel.clone(), db.clone());
    let task =
        tokio::spawn(async move { threadline_aggregator::ingest::run(&cfg, db2, s2, c2).await });
    while !stats
        .mqtt_connected
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Publisher: a gateway-like client that counts acked seqs.
    let mut o = rumqttc::MqttOptions::new("bench-gw", "127.0.0.1", port);
    o.set_max_packet_size(64 << 20, 64 << 20);
    o.set_inflight(200);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<u64>();
    let (sub_tx, mut sub_rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let body = match gateway_of(&p.topic).and_then(|g| keys.get(g).map(|k| (g, k)))
                    {
                        // Signed: only an ack whose MAC verifies counts.
                        Some((gw, ring)) => match ring.verify(Purpose::Ack, gw, &p.payload) {
                            Ok(body) => body,
                            Err(_) => continue,
                        },
                        None => &p.payload[..],
                    };
                    if let Ok(a) = serde_json::from_slice::<threadline_shared::Ack>(body) {
                        let _ = acked_tx.send(a.count());
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = sub_tx.send(());
                }
                _ => {}
            }
        }
    });
    client
        .subscribe(format!("{ROOT}/+/+/+/ack"), rumqttc::QoS::AtLeastOnce)
        .await
        .ok()?;
    sub_rx.recv().await?;
    let start = Instant::now();
    let pubc = client.clone();
    tokio::spawn(async move {
        for (t, p) in raw {
            pubc.publish(t, rumqttc::QoS::AtLeastOnce, false, p)
                .await
                .unwrap();
        }
    });
    let mut acked = 0u64;
    while acked < records as u64 {
        match tokio::time::timeout(Duration::from_secs(60), acked_rx.recv()).await {
            Ok(Some(n)) => acked += n,
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = task.await;
    let _ = child.kill();
    let _ = child.wait();
    (acked >= records as u64).then_some(secs)
}

/// Key rings by gateway id.
type Rings = std::collections::HashMap<String, KeyRing>;

/// The gateway id of a `{ROOT}/{plant}/{line}/{gateway}/…` topic.
fn gateway_of(topic: &str) -> Option<&str> {
    topic.split('/').nth(4)
}

/// Signs every envelope with its gateway's new key, written to `dir/{gateway}.key`; the rings
/// by gateway, for checking the acks.
fn sign_all(raw: Vec<(String, Vec<u8>)>, dir: &std::path::Path) -> (Vec<(String, Vec<u8>)>, Rings) {
    std::fs::create_dir_all(dir).unwrap();
    let mut keys = std::collections::HashMap::new();
    let raw = raw
        .into_iter()
        .map(|(topic, payload)| {
            let gw = gateway_of(&topic).unwrap().to_owned();
            let ring = keys.entry(gw.clone()).or_insert_with(|| {
                let key = threadline_shared::signing::generate_key().unwrap();
                std::fs::write(dir.join(format!("{gw}.key")), &key).unwrap();
                KeyRing::parse(&key).unwrap()
            });
            let signed = ring.sign(Purpose::Envelope, &gw, &payload);
            (topic, signed)
        })
        .collect();
    (raw, keys)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(db) = std::env::var("TL_BENCH_DB")
        .ok()
        .filter(|d| d.starts_with("sqlite"))
    {
        rt.block_on(sqlite::main(&db));
        return;
    }
    rt.block_on(async {
        let admin = std::env::var("THREADLINE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let n_events = env_usize("TL_BENCH_EVENTS", 300_000);
        let n_readings = env_usize("TL_BENCH_READINGS", 1_500_000);
        println!("ingest benchmark: {n_events} trace events, {n_readings} readings, {PER_ENVELOPE} records/envelope, batches of ≤ 5000");

        let gateways = env_usize("TL_BENCH_GATEWAYS", 4);
        let writers = env_usize("TL_BENCH_WRITERS", 4);
        let db_side: &[(usize, usize)] = if std::env::var("TL_BENCH_ONLY_MQTT").is_ok() {
            &[]
        } else {
            &[(1, 1), (gateways, writers)]
        };
        for &(gws, ws) in db_side {
            let (db, url, name) = fresh_db(&admin).await;
            let label = format!("{gws} gateway(s), {ws} writer(s)");
            let ev = decode_all(&envelopes_multi("gw-bench-ev", gws, n_events, trace_record));
            let secs = writer_rate(&db, ws, ev).await;
            println!("writer (DB side)  trace events: {:>9.0} /s  ({n_events} in {secs:.2} s; {label})", n_events as f64 / secs);
            let rd = decode_all(&envelopes_multi("gw-bench-rd", gws, n_readings, reading_record));
            let secs = writer_rate(&db, ws, rd).await;
            println!("writer (DB side)  readings:     {:>9.0} /s  ({n_readings} in {secs:.2} s; {label})", n_readings as f64 / secs);
            assert!(db.verify_chains().await.unwrap().ok);
            if gws == 1 {
                let (rows, secs) = copy_rate(&db, "events").await;
                println!("COPY ceiling      events rows:  {:>9.0} /s  ({rows} in {secs:.2} s)", rows as f64 / secs);
                let (rows, secs) = copy_rate(&db, "readings").await;
                println!("COPY ceiling      readings:     {:>9.0} /s  ({rows} in {secs:.2} s)", rows as f64 / secs);
            }
            drop(db);
            drop_db(&admin, &name).await;
            let _ = url;
        }

        if std::env::var("TL_BENCH_SKIP_MQTT").is_err() {
            for (what, raw, n) in [
                ("trace events", envelopes_multi("gw-mq-ev", gateways, n_events, trace_record), n_events),
                ("readings    ", envelopes_multi("gw-mq-rd", gateways, n_readings, reading_record), n_readings),
            ] {
                let (db, url, name) = fresh_db(&admin).await;
                drop(db);
                match mqtt_rate(&url, writers, raw, n).await {
                    Some(secs) => println!("MQTT end to end   {what}: {:>9.0} /s  ({n} acked in {secs:.2} s; {gateways} gateways, {writers} writers)", n as f64 / secs),
                    None => println!("MQTT end to end   {what}: FAILED (not all acked within the timeout)"),
                }
                drop_db(&admin, &name).await;
            }
        }
    });
}
