//! The write path, once for both backends: deduplicate, chain, insert, project — one
//! transaction per batch, run against the [`WriteTx`] contract (never a backend directly).
//!
//! Readings are not chained: they go to `readings` only (idempotent by primary key). Trace events
//! go to the chained `events` log and, in the same transaction, to the projections (items, edges,
//! operations, …; rules in [`super::projection`]). Only events that are new (not already stored)
//! are projected, so a re-delivered batch changes nothing but its ack.

use std::collections::{BTreeMap, HashMap, HashSet};

use threadline_shared::event::{Record, RecordBody};
use uuid::Uuid;

use super::backend::WriteTx;
use super::chain;
use super::model::{Batch, BatchOutcome, DeadLetter, DeadLetterKind, EnvelopeRecords};
use super::projection::{Projection, split_value};
use super::rows::{CanonicalBody, EventInsert, ReadingInsert};

/// Writes one batch in `tx` and commits it. Nothing is visible (and nothing may be acked)
/// unless this returns `Ok`.
pub(crate) async fn write_and_commit<T: WriteTx>(
    mut tx: T,
    batch: &Batch,
) -> sqlx::Result<BatchOutcome> {
    let mut out = write_batch(&mut tx, batch).await?;
    out.sqlite_synchronous = tx.synchronous().await?;
    tx.commit().await?;
    Ok(out)
}

/// Writes one batch in the given (open) transaction; the caller commits.
async fn write_batch<T: WriteTx>(tx: &mut T, batch: &Batch) -> sqlx::Result<BatchOutcome> {
    let mut out = BatchOutcome::default();
    let mut dead: Vec<DeadLetter> = batch.dead_letters.clone();

    for s in &batch.statuses {
        tx.upsert_status(s).await?;
    }

    // Group envelopes by gateway; lock gateways in name order (no deadlock between replicas).
    let mut by_gateway: BTreeMap<&str, Vec<&EnvelopeRecords>> = BTreeMap::new();
    for e in &batch.envelopes {
        by_gateway.entry(e.gateway.as_str()).or_default().push(e);
    }
    let mut readings: Vec<ReadingInsert> = Vec::new();
    let mut events: Vec<EventInsert> = Vec::new();
    // Index into `events` → (gateway, line, record) for projecting after the insert.
    let mut event_src: Vec<(&str, &str, &Record)> = Vec::new();
    let mut reading_keys: HashSet<(String, Uuid, i64)> = HashSet::new();

    for (gw, envs) in &by_gateway {
        let first = envs[0];
        tx.lock_gateway(gw, &first.plant, &first.line).await?;
        let mut head = tx
            .chain_head(gw)
            .await?
            .unwrap_or_else(|| chain::GENESIS.to_vec());
        // Trace-event seqs already stored, per epoch.
        let mut by_epoch: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
        for e in envs {
            let seqs = by_epoch.entry(e.epoch).or_default();
            seqs.extend(
                e.records
                    .iter()
                    .filter(|r| !r.body.is_reading())
                    .map(|r| r.seq as i64),
            );
        }
        let mut stored: HashMap<Uuid, HashSet<i64>> = HashMap::new();
        for (epoch, seqs) in &by_epoch {
            if !seqs.is_empty() {
                stored.insert(*epoch, tx.existing_seqs(gw, *epoch, seqs).await?);
            }
        }
        for e in envs {
            let committed = out
                .committed
                .entry((e.gateway.clone(), e.plant.clone(), e.line.clone(), e.epoch))
                .or_default();
            committed.extend(e.dead_seqs.iter().copied());
            let stored = stored.entry(e.epoch).or_default();
            for rec in &e.records {
                committed.push(rec.seq);
                let newest = out.newest_ts.entry(e.gateway.clone()).or_insert(rec.ts);
                if rec.ts > *newest {
                    *newest = rec.ts;
                }
                let seq = rec.seq as i64;
                if let RecordBody::Reading(r) = &rec.body {
                    if !reading_keys.insert((e.gateway.clone(), e.epoch, seq)) {
                        out.duplicates += 1;
                        continue;
                    }
                    let (value_num, value_text) = match &r.value {
                        Some(v) => split_value(v),
                        None => (None, None),
                    };
                    readings.push(ReadingInsert {
                        gateway: e.gateway.clone(),
                        epoch: e.epoch,
                        seq,
                        ts: rec.ts,
                        device: r.device.clone(),
                        tag: r.tag.clone(),
                        value_num,
                        value_text,
                        unit: r.unit.clone(),
                        quality: r.quality.as_str(),
                        error: r.error.clone(),
                    });
                    continue;
                }
                if !stored.insert(seq) {
                    out.duplicates += 1;
                    continue;
                }
                let body = match CanonicalBody::of(rec) {
                    Ok(b) => b,
                    Err(why) => {
                        // Never chain an empty body: the record is dead-lettered (and acked
                        // with the batch, like any dead-lettered record).
                        dead.push(DeadLetter {
                            topic: String::new(),
                            gateway: Some(e.gateway.clone()),
                            kind: DeadLetterKind::InvalidRecord,
                            reason: format!("record seq {seq} cannot be stored: {why}"),
                            payload: format!("{rec:?}").into_bytes(),
                        });
                        continue;
                    }
                };
                let hash = chain::link_hash(&head, gw, &e.epoch, body.as_str().as_bytes());
                events.push(EventInsert {
                    gateway: e.gateway.clone(),
                    epoch: e.epoch,
                    seq,
                    ts: rec.ts,
                    type_: rec.type_name(),
                    body,
                    prev_hash: std::mem::replace(&mut head, hash.to_vec()),
                    hash: hash.to_vec(),
                });
                event_src.push((e.gateway.as_str(), e.line.as_str(), rec));
            }
        }
    }

    if !readings.is_empty() {
        let new = tx.insert_readings(&readings).await?;
        out.duplicates += readings.len() as u64 - new;
        if new > 0 {
            *out.new_by_type.entry("reading").or_default() += new;
        }
    }
    if !events.is_empty() {
        let ids = tx.insert_events(&events).await?;
        let mut proj = Projection::default();
        for ((ev, id), (gw, line, rec)) in events.iter().zip(&ids).zip(&event_src) {
            *out.new_by_type.entry(ev.type_).or_default() += 1;
            proj.add(*id, gw, line, rec);
        }
        let ids = tx.upsert_items(&proj.items).await?;
        if !proj.edges.is_empty() {
            tx.insert_edges(&proj.edges, &ids).await?;
            // Closes that arrived before these edges (backlog and live interleaved, resends).
            if tx.has_pending_closes().await? {
                for e in &proj.edges {
                    tx.apply_pending_close(e, &ids).await?;
                }
            }
        }
        for c in &proj.closes {
            if !tx.close_edge(c, &ids).await? {
                // Nothing open to close (yet): kept pending, applied when the edge arrives —
                // the genealogy is the same whatever the arrival order.
                tx.insert_pending_close(c, &ids).await?;
            }
        }
        if !proj.ops.operations.is_empty() {
            tx.insert_operations(&proj.ops, &ids).await?;
        }
        if !proj.quality.is_empty() {
            tx.insert_quality(&proj.quality, &ids).await?;
        }
    }
    for (gw, ts) in &out.newest_ts {
        tx.touch_gateway(gw, *ts).await?;
    }
    if !dead.is_empty() {
        tx.insert_dead_letters(&dead).await?;
        for d in &dead {
            *out.dead_letters.entry(d.kind).or_default() += 1;
        }
    }
    Ok(out)
}
