//! Test support compiled into the gateway: the synthetic record source behind the hidden
//! `threadline-gateway run --synthetic-rate N` flag, with which the delivery tests and the
//! kill test drive the real daemon (outbox → MQTT → ack) without PLCs. Not for production use.

use std::time::Duration;

use threadline_shared::event::{Quality, Reading, RecordBody, ScanRejected, TagValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbox::NewRecord;

/// Synthetic records: readings of tag `synthetic.counter` (value = 1, 2, 3, …) and, every
/// `event_every`-th record, a `scan_rejected` event with the counter as `raw`.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// Records per second (sent in 10 ms ticks).
    pub rate_per_s: u64,
    /// 0 = readings only.
    pub event_every: u64,
    /// Stop after this many records (None = until shutdown).
    pub total: Option<u64>,
}

impl Synthetic {
    /// Sends the records at the configured rate to `out` until `stop`, `total` or a closed
    /// channel.
    pub(crate) async fn run(self, out: mpsc::Sender<NewRecord>, stop: CancellationToken) {
        let mut counter = 0u64;
        let per_tick = (self.rate_per_s / 100).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for _ in 0..per_tick {
                if self.total.is_some_and(|t| counter >= t) {
                    return;
                }
                counter += 1;
                let body = if self.event_every > 0 && counter.is_multiple_of(self.event_every) {
                    RecordBody::ScanRejected(ScanRejected {
                        station: Some("SYN".into()),
                        scanner: "synthetic".into(),
                        raw: counter.to_string(),
                        reason: "synthetic".into(),
                    })
                } else {
                    RecordBody::Reading(Reading {
                        device: "synthetic".into(),
                        tag: "synthetic.counter".into(),
                        value: Some(TagValue::UInt(counter)),
                        unit: None,
                        quality: Quality::Good,
                        error: None,
                    })
                };
                let rec = NewRecord {
                    ts: threadline_shared::time::now(),
                    body,
                };
                if out.send(rec).await.is_err() {
                    return;
                }
            }
        }
    }
}
