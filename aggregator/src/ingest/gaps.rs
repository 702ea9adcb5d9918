//! Seq gaps per gateway and epoch: the seqs this aggregator has stored (new, duplicate or
//! dead-lettered — everything it acks) and the holes between them.
//!
//! A gateway numbers every record of an epoch 1, 2, 3, …; a hole below the highest seq seen is
//! a record that has not arrived (yet: a backlog interleaving with live data makes short-lived
//! holes). A hole that stays open longer than `[aggregator] gap_alarm_s` is lost data —
//! readings the gateway dropped when its outbox was full, or a record that never reached the
//! broker — and `/healthz` reports it.
//!
//! Tracked in memory from the first seq seen after start (seqs below it are not holes: they
//! were stored before, or arrive with the re-sent backlog). With `shared_group` replicas each
//! replica sees only part of every gateway's stream, so tracking is off there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Holes kept per stream, at most; beyond, the newest holes are merged into the last one
/// (the count of missing seqs stays right, the ranges get coarser).
const MAX_HOLES: usize = 10_000;

/// One gateway epoch's stream.
#[derive(Debug, Default)]
struct Stream {
    /// Lowest and highest seq seen.
    min: u64,
    max: u64,
    /// Open holes: first missing seq → (last missing seq, when the hole was first seen).
    holes: BTreeMap<u64, (u64, Instant)>,
}

impl Stream {
    fn new(lo: u64, hi: u64) -> Stream {
        Stream {
            min: lo,
            max: hi,
            holes: BTreeMap::new(),
        }
    }

    fn add(&mut self, lo: u64, hi: u64, now: Instant) {
        if lo > self.max.saturating_add(1) {
            self.open(self.max + 1, lo - 1, now);
        }
        if hi.saturating_add(1) < self.min {
            self.open(hi + 1, self.min - 1, now);
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.fill(lo, hi);
    }

    fn open(&mut self, lo: u64, hi: u64, now: Instant) {
        if self.holes.len() >= MAX_HOLES
            && let Some(mut last) = self.holes.last_entry()
        {
            let (end, _) = last.get_mut();
            *end = (*end).max(hi);
            return;
        }
        self.holes.insert(lo, (hi, now));
    }

    /// Removes `lo..=hi` from the holes, keeping the parts left on either side.
    fn fill(&mut self, lo: u64, hi: u64) {
        let touched: Vec<u64> = self
            .holes
            .range(..=hi)
            .rev()
            .take_while(|(_, (end, _))| *end >= lo)
            .map(|(start, _)| *start)
            .collect();
        for start in touched {
            let Some((end, since)) = self.holes.remove(&start) else {
                continue;
            };
            if start < lo {
                self.holes.insert(start, (lo - 1, since));
            }
            if end > hi {
                self.holes.insert(hi + 1, (end, since));
            }
        }
    }
}

/// A hole as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GapRange {
    #[schema(value_type = String)]
    pub epoch: Uuid,
    /// First and last missing seq.
    pub from: u64,
    pub to: u64,
    /// Seconds since the hole was first seen.
    pub age_s: u64,
}

/// One gateway's gaps: `count` missing seqs in all, the first few ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GatewayGaps {
    /// Missing seqs in all (every epoch).
    pub count: u64,
    /// The oldest open holes first, at most [`RANGES_SHOWN`].
    pub ranges: Vec<GapRange>,
}

/// Ranges listed per gateway.
pub const RANGES_SHOWN: usize = 10;

/// Every gateway's streams.
#[derive(Debug, Default)]
pub struct SeqGaps {
    streams: BTreeMap<(String, Uuid), Stream>,
}

impl SeqGaps {
    /// Seqs of one gateway epoch stored by a batch (any order, duplicates allowed).
    pub fn stored(&mut self, gateway: &str, epoch: Uuid, seqs: &[u64], now: Instant) {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs = Vec::new();
        for s in sorted {
            match runs.last_mut() {
                Some((_, hi)) if *hi + 1 == s => *hi = s,
                _ => runs.push((s, s)),
            }
        }
        let key = (gateway.to_owned(), epoch);
        for (lo, hi) in runs {
            match self.streams.get_mut(&key) {
                Some(stream) => stream.add(lo, hi, now),
                None => {
                    self.streams.insert(key.clone(), Stream::new(lo, hi));
                }
            }
        }
    }

    /// Gaps per gateway (gateways without any are left out).
    pub fn by_gateway(&self, now: Instant) -> BTreeMap<String, GatewayGaps> {
        let mut out: BTreeMap<String, GatewayGaps> = BTreeMap::new();
        let mut all: BTreeMap<&str, Vec<(Instant, GapRange)>> = BTreeMap::new();
        for ((gw, epoch), stream) in &self.streams {
            for (from, (to, since)) in &stream.holes {
                let g = out.entry(gw.clone()).or_default();
                g.count += to - from + 1;
                all.entry(gw).or_default().push((
                    *since,
                    GapRange {
                        epoch: *epoch,
                        from: *from,
                        to: *to,
                        age_s: now.saturating_duration_since(*since).as_secs(),
                    },
                ));
            }
        }
        for (gw, mut ranges) in all {
            ranges.sort_by_key(|(since, r)| (*since, r.from));
            if let Some(g) = out.get_mut(gw) {
                g.ranges = ranges
                    .into_iter()
                    .take(RANGES_SHOWN)
                    .map(|(_, r)| r)
                    .collect();
            }
        }
        out
    }

    /// Holes open longer than `alarm`, as one line each gateway (for `/healthz`).
    pub fn alarms(&self, now: Instant, alarm: Duration) -> Vec<String> {
        self.by_gateway(now)
            .into_iter()
            .filter_map(|(gw, g)| {
                let old: Vec<&GapRange> = g
                    .ranges
                    .iter()
                    .filter(|r| r.age_s >= alarm.as_secs())
                    .collect();
                let first = old.first()?;
                Some(format!(
                    "gateway {gw}: {} records missing; seqs {}..={} of epoch {} missing for {} s \
                     (limit {} s)",
                    g.count,
                    first.from,
                    first.to,
                    first.epoch,
                    first.age_s,
                    alarm.as_secs()
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch() -> Uuid {
        Uuid::from_u128(7)
    }

    fn holes(g: &SeqGaps, now: Instant) -> Vec<(u64, u64)> {
        g.by_gateway(now)
            .get("gw")
            .map(|g| g.ranges.iter().map(|r| (r.from, r.to)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn in_order_streams_have_no_gaps() {
        let now = Instant::now();
        let mut g = SeqGaps::default();
        g.stored("gw", epoch(), &[1, 2, 3], now);
        g.stored("gw", epoch(), &[5, 4, 6, 6], now);
        assert!(g.by_gateway(now).is_empty());
    }

    #[test]
    fn a_hole_opens_narrows_and_closes_as_its_seqs_arrive() {
        let t0 = Instant::now();
        let mut g = SeqGaps::default();
        g.stored("gw", epoch(), &[1, 2, 10], t0);
        assert_eq!(holes(&g, t0), vec![(3, 9)]);
        assert_eq!(g.by_gateway(t0)["gw"].count, 7);
        let t1 = t0 + Duration::from_secs(5);
        g.stored("gw", epoch(), &[5, 6], t1);
        assert_eq!(holes(&g, t1), vec![(3, 4), (7, 9)]);
        // Both parts keep the age of the hole they came from.
        assert!(g.by_gateway(t1)["gw"].ranges.iter().all(|r| r.age_s == 5));
        g.stored("gw", epoch(), &[3, 4, 7, 8, 9], t1);
        assert!(g.by_gateway(t1).is_empty());
    }

    #[test]
    fn seqs_below_the_first_seen_are_a_backlog_not_a_hole_until_they_skip() {
        let t0 = Instant::now();
        let mut g = SeqGaps::default();
        // Live data first after a restart, then the re-sent backlog from below.
        g.stored("gw", epoch(), &[100, 101], t0);
        g.stored("gw", epoch(), &[90, 91, 92, 93, 94, 95, 96, 97, 98, 99], t0);
        assert!(g.by_gateway(t0).is_empty());
        g.stored("gw", epoch(), &[80], t0);
        assert_eq!(holes(&g, t0), vec![(81, 89)]);
    }

    #[test]
    fn epochs_and_gateways_are_separate_and_alarms_wait_for_their_age() {
        let t0 = Instant::now();
        let mut g = SeqGaps::default();
        g.stored("gw", epoch(), &[1, 3], t0);
        g.stored("gw", Uuid::from_u128(8), &[1, 2], t0);
        g.stored("other", epoch(), &[4, 5], t0);
        assert_eq!(g.by_gateway(t0).len(), 1);
        let alarm = Duration::from_secs(300);
        assert!(g.alarms(t0 + Duration::from_secs(299), alarm).is_empty());
        let lines = g.alarms(t0 + Duration::from_secs(300), alarm);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("gateway gw: 1 records missing; seqs 2..=2"),
            "{lines:?}"
        );
    }
}
