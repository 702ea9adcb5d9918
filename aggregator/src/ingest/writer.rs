//! The writers: each batches (and decodes) the messages of its gateways, writes each batch in
//! one transaction, retries with backoff while the database is down, and acks only after the
//! commit.
//!
//! A gateway is always routed to the same writer, and a writer commits one batch at a time:
//! that serializes a gateway's hash-chain appends in this process; between processes
//! (replicas sharing a database) the gateway row lock does (see `store::chain`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use threadline_shared::{Ack, Topic, TopicKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use threadline_shared::signing::Purpose;

use super::decode::Incoming;
use super::keys::GatewayKeys;
use super::stats::IngestStats;
use crate::store::{Batch, BatchOutcome, Db};

/// Where acks go after a commit.
#[derive(Clone, Debug)]
pub enum AckSink {
    /// Published QoS 1 on `{root}/{plant}/{line}/{gateway}/ack`.
    Mqtt {
        client: rumqttc::AsyncClient,
        root: String,
        /// `gateway_keys_dir`: acks are signed with their gateway's key.
        keys: Option<Arc<GatewayKeys>>,
    },
    /// Handed to a channel (tests, benchmarks): (gateway, ack).
    Channel(mpsc::UnboundedSender<(String, Ack)>),
    /// Dropped (benchmarks of the database side only).
    None,
}

/// Batching limits.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
}

/// What the MQTT loop hands a writer: a message as received (decoded by the writer, so that
/// decoding runs on as many tasks as there are writers), or one already decoded (tests,
/// benchmarks).
#[derive(Debug)]
pub enum Queued {
    Raw {
        topic: String,
        payload: bytes::Bytes,
    },
    Decoded(Incoming),
}

/// How raw messages are decoded.
#[derive(Clone, Debug)]
pub struct DecodeConfig {
    pub root: String,
    pub max_payload_bytes: usize,
    /// `gateway_keys_dir`: envelopes must be signed ([`super::decode::decode_signed`]).
    pub keys: Option<Arc<GatewayKeys>>,
}

/// Several writers, each with its own bounded queue; messages are routed by gateway
/// ([`writer_for`]). Each writer is two tasks: a batcher (decodes, fills the next batch) and a
/// committer (writes a batch in one transaction, then acks it), joined by a one-batch channel —
/// the next batch is decoded and assembled while the current one commits.
#[derive(Debug)]
pub struct Writers {
    queues: Vec<mpsc::Sender<Queued>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    decode: DecodeConfig,
}

impl Writers {
    /// Starts `n` writers (at most [`Db::max_parallel_writers`]: one on SQLite, which has one
    /// write lock). `queue` messages may wait in all; each writer's queue holds its share (at
    /// least 16), so memory stays bounded by about the same number of payloads however many
    /// writers there are.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        db: &Db,
        n: usize,
        queue: usize,
        decode: DecodeConfig,
        acks: &AckSink,
        stats: &Arc<IngestStats>,
        cfg: &WriterConfig,
        cancel: &CancellationToken,
    ) -> Writers {
        let n = n.clamp(1, db.max_parallel_writers());
        let mut w = Writers {
            queues: Vec::with_capacity(n),
            tasks: Vec::with_capacity(2 * n),
            decode: decode.clone(),
        };
        for _ in 0..n {
            let (tx, rx) = mpsc::channel((queue / n).max(16));
            // One batch waits while one commits: bounded, so back-pressure still reaches MQTT.
            let (btx, brx) = mpsc::channel(1);
            w.queues.push(tx);
            w.tasks.push(tokio::spawn(run_batcher(
                rx,
                btx,
                decode.clone(),
                cfg.clone(),
                cancel.clone(),
            )));
            w.tasks.push(tokio::spawn(run_committer(
                db.clone(),
                brx,
                acks.clone(),
                stats.clone(),
                cancel.clone(),
            )));
        }
        w
    }

    /// Queues a decoded message for its gateway's writer; waits while that queue is full
    /// (back-pressure). `Err` when the writer has stopped.
    pub async fn send(&self, m: Incoming) -> Result<(), mpsc::error::SendError<Queued>> {
        let i = writer_for(m.gateway(), self.queues.len());
        self.queues[i].send(Queued::Decoded(m)).await
    }

    /// Queues a message as received; its gateway is read from the topic (a topic without one
    /// goes to the first writer, which dead-letters it).
    pub async fn send_raw(
        &self,
        topic: String,
        payload: bytes::Bytes,
    ) -> Result<(), mpsc::error::SendError<Queued>> {
        let gw = threadline_shared::Topic::parse(&self.decode.root, &topic)
            .ok()
            .map(|t| t.gateway);
        let i = writer_for(gw.as_deref(), self.queues.len());
        self.queues[i].send(Queued::Raw { topic, payload }).await
    }

    /// Closes the queues and waits until every writer has written what it had (or was
    /// cancelled).
    pub async fn join(self) {
        drop(self.queues);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The writer (of `n`) for a gateway: always the same one, so a gateway's records, status and
/// dead letters are written in arrival order by one task. FNV-1a: stable across processes and
/// releases (std's hasher is randomly seeded).
pub fn writer_for(gateway: Option<&str>, n: usize) -> usize {
    match gateway {
        Some(g) if n > 1 => {
            let h = g.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            (h % n as u64) as usize
        }
        _ => 0,
    }
}

/// Fills batches from the queue (decoding raw messages) and hands each to the committer.
/// Ends when the queue closes (after handing over what it has) or on `cancel`.
async fn run_batcher(
    mut rx: mpsc::Receiver<Queued>,
    batches: mpsc::Sender<Batch>,
    decode: DecodeConfig,
    cfg: WriterConfig,
    cancel: CancellationToken,
) {
    let take = |q: Queued| match q {
        Queued::Decoded(m) => m,
        Queued::Raw { topic, payload } => super::decode::decode_signed(
            &decode.root,
            &topic,
            &payload,
            decode.max_payload_bytes,
            decode.keys.as_deref(),
        ),
    };
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = Batch::default();
        let mut weight = add(&mut batch, take(first));
        let deadline = tokio::time::Instant::now() + cfg.batch_max_wait;
        while weight < cfg.batch_max_records {
            // Take what is already queued without waiting, then wait up to the deadline.
            let m = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => None,
                    m = rx.recv() => m,
                },
            };
            match m {
                Some(m) => weight += add(&mut batch, take(m)),
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = batches.send(batch) => if r.is_err() { return },
        }
    }
}

/// Writes each batch until it commits, then acks it. Ends when the batcher has ended and every
/// batch it handed over is written, or on `cancel` (an uncommitted batch is not acked; its
/// gateways re-send it).
async fn run_committer(
    db: Db,
    mut batches: mpsc::Receiver<Batch>,
    acks: AckSink,
    stats: Arc<IngestStats>,
    cancel: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = batches.recv() => match b { Some(b) => b, None => return },
        };
        let Some(out) = write_with_retry(&db, &batch, &stats, &cancel).await else {
            return;
        };
        send_acks(&acks, &out, &stats);
    }
}

fn add(batch: &mut Batch, m: Incoming) -> usize {
    let w = m.weight();
    match m {
        Incoming::Records(e, d) => {
            batch.envelopes.push(e);
            batch.dead_letters.extend(d);
        }
        Incoming::Status(s) => batch.statuses.push(s),
        Incoming::Dead(d) => batch.dead_letters.push(d),
        Incoming::Ignored => {}
    }
    w
}

/// Writes until it commits; `None` when cancelled first.
async fn write_with_retry(
    db: &Db,
    batch: &Batch,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> Option<BatchOutcome> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match db.write_batch(batch).await {
            Ok(out) => {
                stats.committed(&out, started.elapsed().as_secs_f64());
                return Some(out);
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, retry_in_ms = backoff.as_millis() as u64,
                    records = batch.record_count(), "batch write failed; not acked, retrying");
                stats.write_failed(&msg);
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn send_acks(sink: &AckSink, out: &BatchOutcome, stats: &IngestStats) {
    for ((gw, plant, line, epoch), seqs) in &out.committed {
        if seqs.is_empty() {
            continue;
        }
        let ack = Ack::from_seqs(*epoch, seqs.iter().copied());
        match sink {
            AckSink::Mqtt { client, root, keys } => {
                let topic = match Topic::new(root, plant, line, gw, TopicKind::Ack) {
                    Ok(t) => t.to_string(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot build ack topic");
                        continue;
                    }
                };
                let mut payload = serde_json::to_vec(&ack).unwrap_or_default();
                if let Some(keys) = keys {
                    match keys.get(gw) {
                        Ok(ring) => ring.sign_into(Purpose::Ack, gw, &mut payload),
                        // Only verified envelopes are committed, so the key was there a moment
                        // ago; unsigned, the gateway ignores this ack and re-sends.
                        Err(e) => tracing::warn!(gateway = %gw, error = %e, "ack not signed"),
                    }
                }
                // try_publish: the writer must never wait on the MQTT loop, which may itself be
                // waiting on the writer's channel (back-pressure) — that would deadlock.
                match client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload) {
                    Ok(()) => {
                        stats.acks_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.acks_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, gateway = %gw, "ack not queued; the gateway will re-send");
                    }
                }
            }
            AckSink::Channel(tx) => {
                if tx.send((gw.clone(), ack)).is_ok() {
                    stats.acks_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            AckSink::None => {}
        }
    }
}
