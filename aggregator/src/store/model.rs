//! What the write path takes and gives back: validated batches in, committed seqs and counters out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use threadline_shared::event::Record;
use threadline_shared::time::Timestamp;
use uuid::Uuid;

/// Records of one validated envelope (one gateway, one epoch).
#[derive(Debug, Clone)]
pub struct EnvelopeRecords {
    pub gateway: String,
    pub plant: String,
    pub line: String,
    pub epoch: Uuid,
    /// Valid records, in envelope order.
    pub records: Vec<Record>,
    /// Seqs of records of this envelope that were dead-lettered (bad type, bad value): they are
    /// acked with the batch, because their dead letter is committed with it — otherwise the
    /// gateway would re-send an unusable record forever.
    pub dead_seqs: Vec<u64>,
}

/// A payload (or one record of it) that could not be used.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub gateway: Option<String>,
    /// Machine-readable reason (metrics label); see [`DeadLetterKind`].
    pub kind: DeadLetterKind,
    /// Human-readable reason with the evidence.
    pub reason: String,
    pub payload: Vec<u8>,
}

/// Why something became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterKind {
    /// Payload larger than `max_payload_kb` (stored truncated).
    Oversized,
    /// Not JSON, or not an envelope.
    MalformedEnvelope,
    /// `v` is not 1.
    UnsupportedVersion,
    /// Envelope gateway/plant/line differ from the topic's.
    TopicMismatch,
    /// A topic we subscribed to but cannot parse.
    BadTopic,
    /// A record with a `type` we do not know.
    UnknownRecordType,
    /// A record of a known type with a missing field or a value of the wrong type.
    InvalidRecord,
    /// A status message that is not a status.
    MalformedStatus,
    /// `disassembled` / `unpacked` with no open edge to close (arrived before its assembly?).
    UnmatchedClose,
    /// An envelope not signed with its gateway's key while `gateway_keys_dir` is set.
    BadSignature,
    /// A record (or status) the database refused (a NUL character, an id longer than an index
    /// allows, a value out of range): isolated from its batch, which committed without it.
    Refused,
}

impl DeadLetterKind {
    pub const ALL: [DeadLetterKind; 11] = [
        DeadLetterKind::Oversized,
        DeadLetterKind::MalformedEnvelope,
        DeadLetterKind::UnsupportedVersion,
        DeadLetterKind::TopicMismatch,
        DeadLetterKind::BadTopic,
        DeadLetterKind::UnknownRecordType,
        DeadLetterKind::InvalidRecord,
        DeadLetterKind::MalformedStatus,
        DeadLetterKind::UnmatchedClose,
        DeadLetterKind::BadSignature,
        DeadLetterKind::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Oversized => "oversized",
            DeadLetterKind::MalformedEnvelope => "malformed_envelope",
            DeadLetterKind::UnsupportedVersion => "unsupported_version",
            DeadLetterKind::TopicMismatch => "topic_mismatch",
            DeadLetterKind::BadTopic => "bad_topic",
            DeadLetterKind::UnknownRecordType => "unknown_record_type",
            DeadLetterKind::InvalidRecord => "invalid_record",
            DeadLetterKind::MalformedStatus => "malformed_status",
            DeadLetterKind::UnmatchedClose => "unmatched_close",
            DeadLetterKind::BadSignature => "bad_signature",
            DeadLetterKind::Refused => "refused",
        }
    }
}

/// A gateway's retained status message.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub gateway: String,
    pub plant: String,
    pub line: String,
    pub status: threadline_shared::Status,
    /// The message as received (stored in `gateways.status`).
    pub raw: serde_json::Value,
}

/// One transaction's worth of input.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub envelopes: Vec<EnvelopeRecords>,
    pub dead_letters: Vec<DeadLetter>,
    pub statuses: Vec<StatusUpdate>,
}

impl Batch {
    /// Records (valid and dead-lettered) in the batch.
    pub fn record_count(&self) -> usize {
        self.envelopes
            .iter()
            .map(|e| e.records.len() + e.dead_seqs.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty() && self.dead_letters.is_empty() && self.statuses.is_empty()
    }

    /// The batch's units of isolation: each status, each record (an envelope without records
    /// but with dead-lettered seqs counts as one), each dead letter. See [`Batch::slice`].
    pub fn units(&self) -> usize {
        self.statuses.len()
            + self
                .envelopes
                .iter()
                .map(|e| e.records.len().max(usize::from(!e.dead_seqs.is_empty())))
                .sum::<usize>()
            + self.dead_letters.len()
    }

    /// The units `lo..hi` (in the order statuses, records in envelope order, dead letters) as a
    /// batch of their own. An envelope's dead-lettered seqs go with its first unit. Slicing
    /// `0..n` at any cut points yields batches that together hold exactly this batch, in order.
    pub fn slice(&self, lo: usize, hi: usize) -> Batch {
        let mut out = Batch::default();
        let mut at = 0;
        let take = |at: usize, n: usize| (at.max(lo), (at + n).min(hi));
        let (a, b) = take(at, self.statuses.len());
        if a < b {
            out.statuses
                .extend_from_slice(&self.statuses[a - at..b - at]);
        }
        at += self.statuses.len();
        for e in &self.envelopes {
            let n = e.records.len().max(usize::from(!e.dead_seqs.is_empty()));
            let (a, b) = take(at, n);
            if a < b {
                let first = a == at;
                out.envelopes.push(EnvelopeRecords {
                    gateway: e.gateway.clone(),
                    plant: e.plant.clone(),
                    line: e.line.clone(),
                    epoch: e.epoch,
                    records: e.records
                        [(a - at).min(e.records.len())..(b - at).min(e.records.len())]
                        .to_vec(),
                    dead_seqs: if first {
                        e.dead_seqs.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
            at += n;
        }
        let (a, b) = take(at, self.dead_letters.len());
        if a < b {
            out.dead_letters
                .extend_from_slice(&self.dead_letters[a - at..b - at]);
        }
        out
    }

    /// Whether committing the batch must survive a power cut before its ack (SQLite
    /// `synchronous = FULL`): it holds trace events or dead letters. Readings and statuses only
    /// may commit `NORMAL` (WAL: a power cut may roll back the last commits, never corrupt).
    pub fn needs_full_sync(&self) -> bool {
        !self.dead_letters.is_empty()
            || self
                .envelopes
                .iter()
                .any(|e| !e.dead_seqs.is_empty() || e.records.iter().any(|r| !r.body.is_reading()))
    }

    /// Floor times of the batch's readings (PostgreSQL makes their day partitions first).
    pub fn reading_times(&self) -> impl Iterator<Item = Timestamp> + '_ {
        self.envelopes
            .iter()
            .flat_map(|e| e.records.iter())
            .filter(|r| r.body.is_reading())
            .map(|r| r.ts)
    }
}

/// What a committed batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// SQLite: `PRAGMA synchronous` of the connection as read just before the commit (2 = FULL
    /// for any batch with trace events or dead letters, 1 = NORMAL for readings only); `None`
    /// on PostgreSQL. Merged: the strongest.
    pub sqlite_synchronous: Option<i64>,
    /// Per (gateway, plant, line, epoch): every seq now durably stored — new, duplicate or
    /// dead-lettered. This is what gets acked.
    pub committed: BTreeMap<(String, String, String, Uuid), Vec<u64>>,
    /// New rows by record type.
    pub new_by_type: BTreeMap<&'static str, u64>,
    /// Records that were already stored (or twice in the batch).
    pub duplicates: u64,
    /// Dead letters written, by kind (including ones found while projecting).
    pub dead_letters: BTreeMap<DeadLetterKind, u64>,
    /// Newest record timestamp per gateway in this batch.
    pub newest_ts: BTreeMap<String, Timestamp>,
}

impl BatchOutcome {
    /// Adds what another (later) transaction did: a batch written in pieces.
    pub fn merge(&mut self, o: BatchOutcome) {
        self.sqlite_synchronous = self.sqlite_synchronous.max(o.sqlite_synchronous);
        for (k, v) in o.committed {
            self.committed.entry(k).or_default().extend(v);
        }
        for (k, v) in o.new_by_type {
            *self.new_by_type.entry(k).or_default() += v;
        }
        self.duplicates += o.duplicates;
        for (k, v) in o.dead_letters {
            *self.dead_letters.entry(k).or_default() += v;
        }
        for (k, v) in o.newest_ts {
            let e = self.newest_ts.entry(k).or_insert(v);
            if v > *e {
                *e = v;
            }
        }
    }
}

/// The first broken link of a hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokenLink {
    pub gateway: String,
    pub event_id: i64,
    pub epoch: String,
    pub seq: i64,
    /// What the chain says this row's hash (or prev_hash) must be, hex.
    pub expected: String,
    /// What the row holds, hex.
    pub stored: String,
    /// Which check failed: `hash`, `prev_hash` or `body`.
    pub problem: String,
}

/// Result of recomputing every chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub gateways: u64,
    pub events: u64,
    /// The first broken link of each broken chain.
    pub broken: Vec<BrokenLink>,
}

/// `POST /api/v1/lots`: a lot's master data. Absent fields keep what is stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LotInput {
    pub lot: String,
    pub part: Option<String>,
    pub supplier: Option<String>,
    /// The supplier's own batch number.
    pub supplier_batch: Option<String>,
    pub qty: Option<f64>,
}

/// `POST /api/v1/work-orders`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkOrderInput {
    pub id: String,
    pub part: Option<String>,
    /// Units ordered.
    pub qty: Option<f64>,
    pub line: Option<String>,
}

/// `POST /api/v1/shipments`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentInput {
    pub id: String,
    pub customer: Option<String>,
    #[serde(default, with = "threadline_shared::time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub shipped_at: Option<Timestamp>,
}

/// A gateway as `GET /api/v1/gateways` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayInfo {
    pub id: String,
    pub plant: String,
    pub line: String,
    pub state: String,
    pub since: Option<String>,
    pub last_record_at: Option<String>,
    pub last_seen_at: Option<String>,
    pub buffer_depth: i64,
    #[schema(value_type = Object)]
    pub devices: serde_json::Value,
}

/// One row of the raw event log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRow {
    pub id: i64,
    pub gateway: String,
    pub epoch: String,
    pub seq: i64,
    pub ts: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// The record as stored (canonical JSON).
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
    pub hash: String,
}

/// A page of the event log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsPage {
    pub events: Vec<EventRow>,
    /// Pass as `after_id` for the next page; null when this page was the last.
    pub next_after: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record::from_json(&format!(
            r#"{{"seq":{seq},"ts":"2026-11-25T08:00:00Z","type":"reading","device":"d","tag":"t","quality":"good"}}"#
        ))
        .unwrap()
    }

    fn env(gw: &str, seqs: &[u64], dead: &[u64]) -> EnvelopeRecords {
        EnvelopeRecords {
            gateway: gw.into(),
            plant: "p".into(),
            line: "l".into(),
            epoch: Uuid::nil(),
            records: seqs.iter().map(|s| rec(*s)).collect(),
            dead_seqs: dead.to_vec(),
        }
    }

    fn seqs(b: &Batch) -> Vec<(String, u64)> {
        b.envelopes
            .iter()
            .flat_map(|e| {
                e.dead_seqs
                    .iter()
                    .chain(e.records.iter().map(|r| &r.seq))
                    .map(|s| (e.gateway.clone(), *s))
            })
            .collect()
    }

    #[test]
    fn slices_at_any_cut_hold_the_batch_in_order() {
        let dl = DeadLetter {
            topic: "t".into(),
            gateway: None,
            kind: DeadLetterKind::BadTopic,
            reason: "r".into(),
            payload: vec![],
        };
        let b = Batch {
            envelopes: vec![
                env("a", &[1, 2, 3], &[9]),
                env("b", &[], &[4]),
                env("a", &[5], &[]),
            ],
            dead_letters: vec![dl.clone(), dl],
            statuses: vec![],
        };
        assert_eq!(b.units(), 3 + 1 + 1 + 2);
        let whole = seqs(&b);
        for cut in 0..=b.units() {
            let (l, r) = (b.slice(0, cut), b.slice(cut, b.units()));
            assert_eq!(l.units() + r.units(), b.units(), "cut {cut}");
            let mut joined = seqs(&l);
            joined.extend(seqs(&r));
            assert_eq!(joined, whole, "cut {cut}");
            assert_eq!(l.dead_letters.len() + r.dead_letters.len(), 2);
        }
        for i in 0..b.units() {
            assert_eq!(b.slice(i, i + 1).units(), 1, "unit {i}");
        }
    }
}
