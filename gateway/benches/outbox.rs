//! Outbox benchmarks (run: `cargo bench -p threadline-gateway --bench outbox`):
//!
//! 1. append rate of readings in batches of 4096 (what the runtime's appender does), and of
//!    trace events (committed with `synchronous = FULL`);
//! 2. bytes per record on disk;
//! 3. replay of the whole backlog (default 1,000,000 records) to a local Mosquitto on a free
//!    port, with a fast stand-in aggregator that acks every envelope: time until the outbox
//!    is empty, and a check that every seq arrived.
//!
//! `THREADLINE_BENCH_RECORDS` changes the backlog size. `THREADLINE_BENCH_SIGNED=1` replays with
//! a signing key (`[mqtt] signing_key_file`): the gateway signs every envelope and checks every
//! ack's signature, and the stand-in aggregator verifies each envelope and signs its acks, as the
//! real one does — the difference to an unsigned run is the cost of signing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/delivery_support/mod.rs"]
mod delivery_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde::Deserialize;
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::outbox::{NewRecord, Outbox, OutboxOptions};
use threadline_gateway::publish::{PublishMetrics, Publisher, PublisherConfig};
use threadline_shared::envelope::Ack;
use threadline_shared::event::{Quality, Reading, RecordBody, ScanRejected, TagValue};
use threadline_shared::signing::{self, KeyRing, Purpose};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn reading(i: u64) -> NewRecord {
    NewRecord {
        ts: threadline_shared::time::now(),
        body: RecordBody::Reading(Reading {
            device: "press-plc".into(),
            tag: "press.pressure".into(),
            value: Some(TagValue::Float(200.0 + (i % 100) as f64 * 0.25)),
            unit: Some("bar".into()),
            quality: Quality::Good,
            error: None,
        }),
    }
}

fn event(i: u64) -> NewRecord {
    NewRecord {
        ts: threadline_shared::time::now(),
        body: RecordBody::ScanRejected(ScanRejected {
            station: Some("ST10".into()),
            scanner: "st10-scanner".into(),
            raw: format!("SN{i:010}"),
            reason: "no current unit".into(),
        }),
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

#[derive(Deserialize)]
struct EnvelopeSeqs {
    epoch: Uuid,
    records: Vec<SeqOnly>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("THREADLINE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let opts = OutboxOptions {
        path: path.clone(),
        max_bytes: u64::MAX,
    };

    // 1. append
    let outbox = Outbox::open(opts.clone()).await.unwrap();
    const BATCH: u64 = 4096;
    let batches: Vec<Vec<NewRecord>> = (0..n.div_ceil(BATCH))
        .map(|b| (b * BATCH..((b + 1) * BATCH).min(n)).map(reading).collect())
        .collect();
    let t = Instant::now();
    for b in &batches {
        outbox.append(b).await.unwrap();
    }
    let dt = t.elapsed();
    println!(
        "append readings: {n} records in {:.2} s = {:.0} records/s (batches of {BATCH})",
        dt.as_secs_f64(),
        n as f64 / dt.as_secs_f64()
    );
    drop(batches);
    let file = threadline_gateway::outbox::read_file_stats(&path)
        .await
        .unwrap();
    println!(
        "on disk after the readings: {} bytes (db + WAL) for {n} readings = {:.1} bytes/record \
         (accounted: payload + {} overhead = {:.1} bytes/record)",
        file.file_bytes,
        file.file_bytes as f64 / n as f64,
        threadline_gateway::outbox::ROW_OVERHEAD,
        file.bytes as f64 / n as f64
    );
    let ev_n = 100_000u64;
    let ev_batches: Vec<Vec<NewRecord>> = (0..ev_n.div_ceil(BATCH))
        .map(|b| {
            (b * BATCH..((b + 1) * BATCH).min(ev_n))
                .map(event)
                .collect()
        })
        .collect();
    let t = Instant::now();
    for b in &ev_batches {
        outbox.append(b).await.unwrap();
    }
    let dt = t.elapsed();
    println!(
        "append events:   {ev_n} records in {:.2} s = {:.0} records/s (batches of {BATCH}, synchronous=FULL)",
        dt.as_secs_f64(),
        ev_n as f64 / dt.as_secs_f64()
    );
    let small = 10_000u64;
    let t = Instant::now();
    for i in 0..small {
        outbox.append(&[reading(i)]).await.unwrap();
    }
    let dt = t.elapsed();
    println!(
        "append readings one per transaction: {:.0} records/s",
        small as f64 / dt.as_secs_f64()
    );
    // Only the readings backlog is replayed below: ack the events and the singles.
    let stats = outbox.stats();
    outbox.ack(&[[n + 1, stats.last_seq]]).await.unwrap();

    outbox.close().await.unwrap();

    // 3. replay
    if !delivery_support::have_mosquitto() {
        return;
    }
    let broker = delivery_support::Mosquitto::start().await;
    let signed = std::env::var("THREADLINE_BENCH_SIGNED").is_ok_and(|v| v == "1");
    let key_file = dir.path().join("gw-test.key");
    std::fs::write(&key_file, signing::generate_key().unwrap()).unwrap();
    let ring: Option<Arc<KeyRing>> =
        signed.then(|| Arc::new(KeyRing::read(&[key_file.as_path()]).unwrap()));
    let outbox = Arc::new(Outbox::open(opts).await.unwrap());
    let epoch = outbox.epoch();
    let first_seq = 1u64;
    // A lean acker: decodes only the seqs, acks each envelope, counts distinct seqs.
    let mut mo = MqttOptions::new("bench-acker", "127.0.0.1", broker.port);
    mo.set_max_packet_size(256 * 1024 * 1024, 1024 * 1024);
    mo.set_inflight(1000);
    let (client, mut el) = AsyncClient::new(mo, 4096);
    let seen = Arc::new(std::sync::Mutex::new(vec![
        false;
        usize::try_from(n + 1).unwrap()
    ]));
    let distinct = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acker_stop = CancellationToken::new();
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel::<()>();
    let acker = {
        let (seen, distinct, stop) = (seen.clone(), distinct.clone(), acker_stop.clone());
        let ring = ring.clone();
        tokio::spawn(async move {
            let mut sub_tx = Some(sub_tx);
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        client
                            .subscribe("threadline/v1/+/+/+/records", QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(tx) = sub_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let gateway = p.topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
                        let body = match &ring {
                            Some(r) => r.verify(Purpose::Envelope, &gateway, &p.payload).unwrap(),
                            None => &p.payload[..],
                        };
                        let env: EnvelopeSeqs = serde_json::from_slice(body).unwrap();
                        let seqs: Vec<u64> = env.records.iter().map(|r| r.seq).collect();
                        {
                            let mut s = seen.lock().unwrap();
                            for q in &seqs {
                                let slot = &mut s[usize::try_from(*q).unwrap()];
                                if !*slot {
                                    *slot = true;
                                    distinct.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        let ack = Ack::from_seqs(env.epoch, seqs);
                        let topic = p.topic.trim_end_matches("records").to_owned() + "ack";
                        let mut payload = serde_json::to_vec(&ack).unwrap();
                        if let Some(r) = &ring {
                            r.sign_into(Purpose::Ack, &gateway, &mut payload);
                        }
                        client
                            .publish(topic, QoS::AtLeastOnce, false, payload)
                            .await
                            .unwrap();
                    }
                    Ok(_) => {}
                    Err(e) => panic!("acker: {e}"),
                }
            }
        })
    };
    sub_rx.await.unwrap();
    let cfg = GatewayConfig::parse(
        "bench.toml",
        &delivery_support::gateway_toml(
            dir.path(),
            &broker.url(),
            &if signed {
                format!(
                    "ack_timeout_ms = 60000\nsigning_key_file = \"{}\"",
                    key_file.display()
                )
            } else {
                "ack_timeout_ms = 60000".to_owned()
            },
            1024,
        ),
    )
    .unwrap();
    let pcfg = PublisherConfig::from_gateway(&cfg);
    println!(
        "replay: batch_max_records = {}, inflight_batches = {}, signed: {}",
        pcfg.mqtt.batch_max_records,
        pcfg.mqtt.inflight_batches,
        if signed {
            "yes (HMAC-SHA256 envelopes and acks)"
        } else {
            "no"
        }
    );
    let metrics = Arc::new(PublishMetrics::default());
    let publisher =
        Publisher::new(pcfg, outbox.clone(), Arc::new(Vec::new), metrics.clone()).unwrap();
    let stop = CancellationToken::new();
    let t = Instant::now();
    let task = tokio::spawn(publisher.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while outbox.stats().depth() > 0 {
        assert!(Instant::now() < deadline, "replay did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dt = t.elapsed();
    let got = distinct.load(Ordering::Relaxed);
    println!(
        "replay: {} records (epoch {epoch}, seqs {first_seq}..={n}) delivered and acked in {:.2} s = {:.0} records/s; \
         {} envelopes, {} re-sent, {} distinct seqs received",
        n,
        dt.as_secs_f64(),
        n as f64 / dt.as_secs_f64(),
        metrics.batches.load(Ordering::Relaxed),
        metrics.resent_batches.load(Ordering::Relaxed),
        got
    );
    assert_eq!(got, n, "every record of the backlog arrived");
    stop.cancel();
    let _ = task.await;
    acker_stop.cancel();
    let _ = acker.await;
}
