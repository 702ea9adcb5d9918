//! The single writer task: batches decoded messages, writes each batch in one transaction,
//! retries with backoff while the database is down, and acks only after the commit.
//!
//! Being the only writer of this process is what serializes hash-chain appends per gateway
//! here; between replicas the gateway row lock does (see `store::chain`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use threadline_shared::{Ack, Topic, TopicKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::decode::Incoming;
use super::stats::IngestStats;
use crate::store::{Batch, BatchOutcome, Db};

/// Where acks go after a commit.
#[derive(Clone, Debug)]
pub enum AckSink {
    /// Published QoS 1 on `{root}/{plant}/{line}/{gateway}/ack`.
    Mqtt {
        client: rumqttc::AsyncClient,
        root: String,
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

/// Runs until `rx` closes or `cancel` fires. A batch not yet committed when cancelled is not
/// acked (its gateways re-send it).
pub async fn run_writer(
    db: Db,
    mut rx: mpsc::Receiver<Incoming>,
    acks: AckSink,
    stats: Arc<IngestStats>,
    cfg: WriterConfig,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = Batch::default();
        let mut weight = add(&mut batch, first);
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
                Some(m) => weight += add(&mut batch, m),
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
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
            AckSink::Mqtt { client, root } => {
                let topic = match Topic::new(root, plant, line, gw, TopicKind::Ack) {
                    Ok(t) => t.to_string(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot build ack topic");
                        continue;
                    }
                };
                let payload = serde_json::to_vec(&ack).unwrap_or_default();
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
