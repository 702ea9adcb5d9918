//! Messages on the wire besides the records themselves: the batch envelope (gateway →
//! aggregator), the ack (aggregator → gateway) and the retained status (gateway → all).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::Record;
use crate::time::{Timestamp, rfc3339, rfc3339_opt};

/// Envelope format version carried in `v`.
pub const ENVELOPE_VERSION: u32 = 1;

/// A batch of records from one gateway's outbox epoch, published on `…/records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub gateway: String,
    pub plant: String,
    pub line: String,
    /// The outbox's identity: a new outbox database means a new epoch (and seq restarts at 1).
    pub epoch: Uuid,
    pub records: Vec<Record>,
}

/// The aggregator's end-to-end acknowledgement: these seq ranges of this epoch are committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub epoch: Uuid,
    /// Inclusive `[first_seq, last_seq]` ranges, sorted and non-overlapping.
    pub ranges: Vec<[u64; 2]>,
}

impl Ack {
    /// Builds an ack from any seqs (unsorted, with duplicates), merging adjacent seqs into ranges.
    pub fn from_seqs(epoch: Uuid, seqs: impl IntoIterator<Item = u64>) -> Ack {
        let mut seqs: Vec<u64> = seqs.into_iter().collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for s in seqs {
            match ranges.last_mut() {
                Some(last) if last[1] + 1 == s => last[1] = s,
                _ => ranges.push([s, s]),
            }
        }
        Ack { epoch, ranges }
    }

    /// True when `seq` lies in one of the ranges.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.iter().any(|[a, b]| (*a..=*b).contains(&seq))
    }

    /// How many seqs the ranges cover.
    pub fn count(&self) -> u64 {
        self.ranges
            .iter()
            .map(|[a, b]| b.saturating_sub(*a) + 1)
            .sum()
    }
}

/// `online` or `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayState {
    Online,
    Offline,
}

/// Health of one device as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    pub id: String,
    /// `ok`, `down`, `degraded`, …
    pub state: String,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The retained `…/status` message (and the last will, with `state = offline`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: GatewayState,
    #[serde(with = "rfc3339")]
    pub since: Timestamp,
    #[serde(default)]
    pub buffer_depth: u64,
    #[serde(default)]
    pub devices: Vec<DeviceHealth>,
    /// The outbox epoch currently being published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Uuid>,
    /// True while the outbox is at `buffer_max_mb` (readings are being dropped or refused).
    #[serde(default)]
    pub buffer_full: bool,
    /// Readings dropped or refused because the outbox was full, since the gateway started.
    #[serde(default)]
    pub readings_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_merges_ranges() {
        let e = Uuid::nil();
        let ack = Ack::from_seqs(e, [5, 1, 2, 3, 3, 7, 6, 10]);
        assert_eq!(ack.ranges, vec![[1, 3], [5, 7], [10, 10]]);
        assert!(ack.contains(6) && !ack.contains(4) && !ack.contains(11));
        assert_eq!(ack.count(), 7);
    }
}
