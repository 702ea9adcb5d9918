//! The per-gateway hash chain over the trace event log.
//!
//! Invariants: a gateway's chain is its `events` rows in `id` order (insertion order); the first
//! row's `prev_hash` is 32 zero bytes, every other row's `prev_hash` is the previous row's `hash`;
//! `hash = sha256(prev_hash || u32_be(len(gateway)) || gateway || epoch (16 bytes) || body)`
//! where `body` is the record's canonical JSON (`Record::canonical_json`) exactly as stored in
//! `events.body`. Altering any stored byte of a row (body, hash, prev_hash), deleting a row or
//! inserting one breaks the chain at that row; `verify` names the first broken link.
//! Appends are serialized per gateway: within an aggregator a gateway is always written by the
//! same writer (`ingest::writer_for`), and the gateway's row is locked (`INSERT … ON CONFLICT
//! DO UPDATE` on `gateways`, `WriteTx::lock_gateway`) for the transaction, so replicas sharing
//! a database also append one at a time.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model::{BrokenLink, VerifyReport};

/// The `prev_hash` of a gateway's first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Hash of one link.
pub fn link_hash(prev: &[u8], gateway: &str, epoch: &Uuid, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update((gateway.len() as u32).to_be_bytes());
    h.update(gateway.as_bytes());
    h.update(epoch.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// One stored row as verification reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainRow {
    pub id: i64,
    pub gateway: String,
    pub epoch: String,
    pub seq: i64,
    #[sqlx(rename = "type")]
    pub type_: String,
    pub body: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Streaming verifier: feed rows ordered by (gateway, id).
#[derive(Debug, Default)]
pub struct Verifier {
    current: Option<String>,
    prev: Vec<u8>,
    /// The current gateway's chain already has a broken link (report only the first).
    current_broken: bool,
    report: VerifyReport,
}

impl Verifier {
    pub fn new() -> Self {
        Verifier {
            report: VerifyReport {
                ok: true,
                ..VerifyReport::default()
            },
            ..Verifier::default()
        }
    }

    pub fn feed(&mut self, row: &ChainRow) {
        if self.current.as_deref() != Some(row.gateway.as_str()) {
            self.current = Some(row.gateway.clone());
            self.prev = GENESIS.to_vec();
            self.current_broken = false;
            self.report.gateways += 1;
        }
        self.report.events += 1;
        if self.current_broken {
            return;
        }
        let broken = |expected: &[u8], stored: &[u8], problem: &str| BrokenLink {
            gateway: row.gateway.clone(),
            event_id: row.id,
            epoch: row.epoch.clone(),
            seq: row.seq,
            expected: hex::encode(expected),
            stored: hex::encode(stored),
            problem: problem.to_owned(),
        };
        let link = if row.prev_hash != self.prev {
            Some(broken(&self.prev, &row.prev_hash, "prev_hash"))
        } else {
            match Uuid::parse_str(&row.epoch) {
                Err(_) => Some(broken(&[], row.epoch.as_bytes(), "epoch")),
                Ok(epoch) => {
                    let want = link_hash(&self.prev, &row.gateway, &epoch, row.body.as_bytes());
                    if want.as_slice() != row.hash.as_slice() {
                        Some(broken(&want, &row.hash, "hash"))
                    } else if !body_matches_columns(row) {
                        // The body is covered by the hash; seq and type are columns next to
                        // it — an edit there is caught here.
                        Some(broken(&[], &[], "body does not match the seq/type columns"))
                    } else {
                        None
                    }
                }
            }
        };
        match link {
            Some(l) => {
                self.report.ok = false;
                self.report.broken.push(l);
                self.current_broken = true;
            }
            None => self.prev = row.hash.clone(),
        }
    }

    pub fn finish(self) -> VerifyReport {
        self.report
    }
}

fn body_matches_columns(row: &ChainRow) -> bool {
    #[derive(serde::Deserialize)]
    struct Head {
        seq: i64,
        #[serde(rename = "type")]
        type_: String,
    }
    serde_json::from_str::<Head>(&row.body)
        .map(|h| h.seq == row.seq && h.type_ == row.type_)
        .unwrap_or(false)
}
