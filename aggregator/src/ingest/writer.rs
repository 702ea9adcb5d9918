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
use crate::store::{Batch, BatchOutcome, Db, DeadLetter, DeadLetterKind};

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
    /// Bytes of payload per batch, at most (`[aggregator] batch_max_mb`); a message larger
    /// than this alone still makes a batch of its own.
    pub batch_max_bytes: usize,
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
            // The checkpointer lives as long as its committer (the guard is dropped when the
            // committer returns, however it ends).
            let checkpoint_stop = CancellationToken::new();
            if db.max_parallel_writers() == 1 {
                w.tasks.push(tokio::spawn(run_checkpointer(
                    db.clone(),
                    checkpoint_stop.clone(),
                )));
            }
            w.tasks.push(tokio::spawn(run_committer(
                db.clone(),
                decode.root.clone(),
                brx,
                acks.clone(),
                stats.clone(),
                cancel.clone(),
                checkpoint_stop.drop_guard(),
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
    // A message and its size in bytes: the payload as received, or an estimate for one
    // decoded already (tests, benchmarks).
    let take = |q: Queued| match q {
        Queued::Decoded(m) => {
            let bytes = 256 * m.weight();
            (m, bytes)
        }
        Queued::Raw { topic, payload } => (
            super::decode::decode_signed(
                &decode.root,
                &topic,
                &payload,
                decode.max_payload_bytes,
                decode.keys.as_deref(),
            ),
            payload.len() + topic.len(),
        ),
    };
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = Batch::default();
        let (m, mut bytes) = take(first);
        let mut weight = add(&mut batch, m);
        let deadline = tokio::time::Instant::now() + cfg.batch_max_wait;
        while weight < cfg.batch_max_records && bytes < cfg.batch_max_bytes {
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
                Some(m) => {
                    let (m, b) = take(m);
                    bytes += b;
                    weight += add(&mut batch, m);
                }
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
    root: String,
    mut batches: mpsc::Receiver<Batch>,
    acks: AckSink,
    stats: Arc<IngestStats>,
    cancel: CancellationToken,
    _checkpointer: tokio_util::sync::DropGuard,
) {
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = batches.recv() => match b { Some(b) => b, None => return },
        };
        let Some(out) = write_with_retry(&db, &root, &batch, &stats, &cancel).await else {
            return;
        };
        send_acks(&acks, &out, &stats);
    }
}

/// How often the checkpointer copies the WAL into the database file (SQLite).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] beside the committer, until `stop` (SQLite;
/// see [`crate::store::db::Checkpointer`]). Failures are logged and tried again: the writer's own
/// automatic checkpoint is the backstop.
async fn run_checkpointer(db: Db, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            match db.checkpointer().await {
                Ok(Some(c)) => conn = Some(c),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the WAL checkpoint connection; next try soon");
                    continue;
                }
            }
        }
        if let Some(c) = &mut conn
            && let Err(e) = c.checkpoint().await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; next try soon");
            conn = None;
        }
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

/// Writes a batch until it commits; `None` when cancelled first.
///
/// Poison isolation: when the database refuses the batch for its data ([`Db::refusal`]: a NUL
/// character, an id longer than an index allows, a value out of range), the batch is bisected —
/// each half written in a transaction of its own, in order, halves that fail split again —
/// until every refused unit (record, status or dead letter) stands alone; each is then
/// dead-lettered with the database's reason (kind `refused`) and acked. Everything else commits
/// and is acked as usual. A batch with `k` refused units of `n` costs about `2·k·log2(n)` extra
/// transactions, only when something is refused. Errors that are not the data's (the database
/// is down) are retried with backoff, never bisected: nothing valid is ever dead-lettered
/// because the database was unavailable.
pub async fn write_with_retry(
    db: &Db,
    root: &str,
    batch: &Batch,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> Option<BatchOutcome> {
    let reason = match write_piece(db, batch, stats, cancel).await? {
        Ok(out) => return Some(out),
        Err(reason) => reason,
    };
    let n = batch.units();
    tracing::warn!(error = %reason, units = n,
        "the database refused part of a batch; isolating the refused records");
    let mut total = BatchOutcome::default();
    // Ranges of units still to write; the last is written next (the front of the batch first,
    // so that a gateway's events are chained in order).
    let mut todo: Vec<(usize, usize, String)> = Vec::new();
    if n > 1 {
        todo.push((n / 2, n, String::new()));
        todo.push((0, n / 2, String::new()));
    } else {
        todo.push((0, n, reason));
    }
    while let Some((lo, hi, known)) = todo.pop() {
        let piece = batch.slice(lo, hi);
        // A single unit that already failed is not written again.
        let result = if hi - lo == 1 && !known.is_empty() {
            Err(known)
        } else {
            write_piece(db, &piece, stats, cancel).await?
        };
        match result {
            Ok(out) => total.merge(out),
            Err(_) if hi - lo > 1 => {
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi, String::new()));
                todo.push((lo, mid, String::new()));
            }
            Err(reason) => {
                if let Some(out) =
                    dead_letter_alone(db, root, &piece, &reason, stats, cancel).await?
                {
                    total.merge(out);
                }
            }
        }
    }
    Some(total)
}

/// Writes one batch, retrying while the database is unavailable. `Some(Err(reason))` when the
/// database refused the data; `None` when cancelled.
async fn write_piece(
    db: &Db,
    batch: &Batch,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> Option<Result<BatchOutcome, String>> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match db.write_batch(batch).await {
            Ok(out) => {
                stats.committed(&out, started.elapsed().as_secs_f64());
                return Some(Ok(out));
            }
            Err(e) => {
                if let Some(reason) = db.refusal(&e) {
                    return Some(Err(reason));
                }
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

/// Dead-letters the one unit of `piece` that the database refused, with its reason, and says
/// what to ack: a record's seq (with its envelope's dead-lettered seqs). A refused record's
/// payload is a version-1 envelope holding just that record, so that `dead-letters replay`
/// can re-ingest it. `Some(None)` when even the dead letter cannot be stored (logged; nothing
/// acked, so the gateway re-sends it); `None` when cancelled.
async fn dead_letter_alone(
    db: &Db,
    root: &str,
    piece: &Batch,
    reason: &str,
    stats: &IngestStats,
    cancel: &CancellationToken,
) -> Option<Option<BatchOutcome>> {
    // (gateway, plant, line, epoch) → seqs, as in `BatchOutcome::committed`.
    type Acked = ((String, String, String, uuid::Uuid), Vec<u64>);
    let mut ack: Option<Acked> = None;
    let dead = if let Some(s) = piece.statuses.first() {
        DeadLetter {
            topic: format!("{root}/{}/{}/{}/status", s.plant, s.line, s.gateway),
            gateway: Some(s.gateway.clone()),
            kind: DeadLetterKind::Refused,
            reason: format!(
                "status of gateway {} refused by the database: {reason}",
                s.gateway
            ),
            payload: serde_json::to_vec(&s.raw).unwrap_or_default(),
        }
    } else if let Some(e) = piece.envelopes.first() {
        let mut seqs = e.dead_seqs.clone();
        seqs.extend(e.records.iter().map(|r| r.seq));
        let what = match e.records.first() {
            Some(r) => format!(
                "record seq {} ({}) of epoch {}",
                r.seq,
                r.type_name(),
                e.epoch
            ),
            None => format!("dead-lettered seqs {:?} of epoch {}", e.dead_seqs, e.epoch),
        };
        let envelope = serde_json::json!({
            "v": threadline_shared::envelope::ENVELOPE_VERSION,
            "gateway": e.gateway, "plant": e.plant, "line": e.line, "epoch": e.epoch,
            "records": e.records,
        });
        ack = Some((
            (e.gateway.clone(), e.plant.clone(), e.line.clone(), e.epoch),
            seqs,
        ));
        DeadLetter {
            topic: format!("{root}/{}/{}/{}/records", e.plant, e.line, e.gateway),
            gateway: Some(e.gateway.clone()),
            kind: DeadLetterKind::Refused,
            reason: format!("{what} refused by the database: {reason}"),
            payload: serde_json::to_vec(&envelope).unwrap_or_default(),
        }
    } else if let Some(d) = piece.dead_letters.first() {
        DeadLetter {
            reason: format!("{} (first storing failed: {reason})", d.reason),
            payload: d.payload.clone(),
            ..d.clone()
        }
    } else {
        return Some(None);
    };
    tracing::warn!(reason = %dead.reason, gateway = ?dead.gateway, "dead-lettered a refused unit");
    let alone = Batch {
        dead_letters: vec![dead],
        ..Batch::default()
    };
    match write_piece(db, &alone, stats, cancel).await? {
        Ok(mut out) => {
            if let Some((k, seqs)) = ack {
                out.committed.entry(k).or_default().extend(seqs);
            }
            Some(Some(out))
        }
        Err(again) => {
            tracing::error!(error = %again, "a dead letter could not be stored; not acked");
            stats.write_failed(&again);
            Some(None)
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
