//! Shared pieces of the delivery tests: a real Mosquitto on a free port (`threadline_shared::
//! testing`'s), a stand-in aggregator (the *acker*) that records every envelope and acks it (or
//! withholds acks), a gateway config, and polling helpers (tests wait for conditions with a
//! deadline, never for a fixed time).

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use threadline_shared::envelope::{Ack, Envelope, Status};
use threadline_shared::event::{Record, RecordBody, TagValue};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[allow(unused_imports)] // like the dead_code above: not every test binary uses every helper
pub use threadline_shared::testing::{MOSQUITTO, Mosquitto, free_port};

/// Polls `cond` every 20 ms until it holds or `timeout` passes (then panics with `what`).
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when Mosquitto is installed; otherwise says how to enable the test (or fails in CI).
pub fn have_mosquitto() -> bool {
    Mosquitto::available()
}

/// What the acker saw.
#[derive(Debug, Default)]
pub struct Collected {
    /// epoch → seq → record (first copy).
    pub records: BTreeMap<Uuid, BTreeMap<u64, Record>>,
    /// Copies received beyond the first (allowed: dedup by (epoch, seq)).
    pub duplicates: u64,
    pub envelopes: u64,
    /// Envelopes whose seqs were not strictly increasing (must stay 0).
    pub unordered_envelopes: u64,
    pub statuses: Vec<Status>,
    /// (first seq, last seq) of every envelope, in arrival order.
    pub arrivals: Vec<(u64, u64)>,
}

impl Collected {
    pub fn count(&self) -> usize {
        self.records.values().map(|m| m.len()).sum()
    }
}

/// The stand-in aggregator: subscribes to every gateway's records (and statuses), keeps the
/// first copy of each (epoch, seq), and acks every envelope unless acks are withheld.
pub struct Acker {
    pub seen: Arc<Mutex<Collected>>,
    pub acking: Arc<AtomicBool>,
    pub acks_sent: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Acker {
    pub async fn start(port: u16, root: &str) -> Acker {
        let seen = Arc::new(Mutex::new(Collected::default()));
        let acking = Arc::new(AtomicBool::new(true));
        let acks_sent = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let subscribed = Arc::new(AtomicBool::new(false));
        let mut opts = MqttOptions::new(format!("acker-{}", Uuid::new_v4()), "127.0.0.1", port);
        opts.set_max_packet_size(256 * 1024 * 1024, 1024 * 1024);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(opts, 1024);
        let records_filter = format!("{root}/+/+/+/records");
        let status_filter = format!("{root}/+/+/+/status");
        let task = {
            let (seen, acking, acks_sent, stop, subscribed) = (
                seen.clone(),
                acking.clone(),
                acks_sent.clone(),
                stop.clone(),
                subscribed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = el.poll() => ev,
                    };
                    match ev {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            client
                                .subscribe(&records_filter, QoS::AtLeastOnce)
                                .await
                                .unwrap();
                            client
                                .subscribe(&status_filter, QoS::AtLeastOnce)
                                .await
                                .unwrap();
                        }
                        Ok(Event::Incoming(Incoming::SubAck(_))) => {
                            subscribed.store(true, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            if p.topic.ends_with("/status") {
                                if let Ok(s) = serde_json::from_slice::<Status>(&p.payload) {
                                    seen.lock().unwrap().statuses.push(s);
                                }
                                continue;
                            }
                            let env: Envelope = serde_json::from_slice(&p.payload)
                                .expect("the gateway publishes valid envelopes");
                            let seqs: Vec<u64> = env.records.iter().map(|r| r.seq).collect();
                            {
                                let mut c = seen.lock().unwrap();
                                c.envelopes += 1;
                                if let (Some(f), Some(l)) = (seqs.first(), seqs.last()) {
                                    c.arrivals.push((*f, *l));
                                }
                                if !seqs.windows(2).all(|w| w[0] < w[1]) {
                                    c.unordered_envelopes += 1;
                                }
                                let per_epoch = c.records.entry(env.epoch).or_default();
                                let mut dups = 0;
                                for r in env.records {
                                    if let std::collections::btree_map::Entry::Vacant(e) =
                                        per_epoch.entry(r.seq)
                                    {
                                        e.insert(r);
                                    } else {
                                        dups += 1;
                                    }
                                }
                                c.duplicates += dups;
                            }
                            if acking.load(Ordering::SeqCst) {
                                let ack = Ack::from_seqs(env.epoch, seqs);
                                let topic = p.topic.trim_end_matches("records").to_owned() + "ack";
                                let _ = client.try_publish(
                                    topic,
                                    QoS::AtLeastOnce,
                                    false,
                                    serde_json::to_vec(&ack).unwrap(),
                                );
                                acks_sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {
                            // Broker down: rumqttc reconnects on the next poll.
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                            }
                        }
                    }
                }
            })
        };
        wait_for("acker subscribed", Duration::from_secs(10), || {
            subscribed.load(Ordering::SeqCst)
        })
        .await;
        Acker {
            seen,
            acking,
            acks_sent,
            stop,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().count()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A gateway config with no devices, publishing to `url`.
pub fn gateway_toml(data_dir: &Path, url: &str, extra_mqtt: &str, buffer_max_mb: u64) -> String {
    format!(
        r#"
[gateway]
id = "gw-test"
plant = "plant-a"
line = "line-1"
data_dir = "{}"
buffer_max_mb = {buffer_max_mb}

[mqtt]
url = "{url}"
keep_alive_s = 5
{extra_mqtt}
"#,
        data_dir.display()
    )
}

/// The synthetic source's counter carried by a record (reading value or event `raw`).
pub fn counter_of(r: &Record) -> u64 {
    match &r.body {
        RecordBody::Reading(rd) => match rd.value {
            Some(TagValue::UInt(u)) => u,
            Some(TagValue::Int(i)) => u64::try_from(i).unwrap(),
            ref other => panic!("unexpected value {other:?}"),
        },
        RecordBody::ScanRejected(s) => s.raw.parse().unwrap(),
        other => panic!("unexpected record {other:?}"),
    }
}

/// Checks that the acker received exactly seqs 1..=n of one epoch, each carrying counter ==
/// seq (the synthetic source's order), with events where `event_every` says.
pub fn assert_complete(c: &Collected, epoch: Uuid, n: u64, event_every: u64) {
    assert_eq!(c.unordered_envelopes, 0, "every envelope is in seq order");
    let recs = c.records.get(&epoch).expect("records of the epoch");
    let seqs: Vec<u64> = recs.keys().copied().collect();
    let missing: Vec<u64> = (1..=n).filter(|s| !recs.contains_key(s)).take(20).collect();
    assert!(missing.is_empty(), "missing seqs (first 20): {missing:?}");
    assert_eq!(seqs.len() as u64, n, "no seqs beyond {n}");
    let mut last_ts = None;
    for (seq, r) in recs {
        assert_eq!(counter_of(r), *seq, "seq order = production order");
        let is_event = event_every > 0 && seq % event_every == 0;
        assert_eq!(!r.body.is_reading(), is_event, "kind of seq {seq}");
        if let Some(t) = last_ts {
            assert!(r.ts >= t, "timestamps follow seq order");
        }
        last_ts = Some(r.ts);
    }
}

/// The outbox file of a data dir.
pub fn outbox_path(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox.db")
}

/// GETs `path` from the health endpoint: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (code, body)
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
