//! The poll loop of one Modbus device.
//!
//! One task per device owns the device's link and runs every scan group on its own period (the
//! earliest due group runs next; missed periods are skipped, never bunched up). While the device
//! is unreachable no group polls; a reconnect is tried after a jittered exponential backoff
//! (100 ms doubling to 30 s, reset by the first answer) and every tag is `bad` with the reason.
//! A read refused with "illegal data address" is split in halves (recursively) so one bad tag
//! does not blind its neighbours; the split plan is kept for the following scans and the merged
//! plan is tried again after a minute.
//! Only changes are emitted: a tag's update goes out when its value or quality differs from the
//! last one sent (which changes become readings is `crate::readings`' business).

use std::sync::atomic::Ordering;
use std::time::Duration;

use threadline_shared::event::{Quality, TagValue};
use threadline_shared::time::{self, Timestamp};
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use crate::drivers::config::DeviceConfig;
use crate::drivers::modbus::error::{ILLEGAL_DATA_ADDRESS, ModbusError};
use crate::drivers::modbus::link::{Link, ReadData, ReadRequest};
use crate::drivers::modbus::plan::{DevicePlan, PlannedRead};
use crate::drivers::{DriverContext, TagUpdate};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A group whose reads were split after "illegal data address" tries its merged plan again this
/// often (the PLC program may have been fixed; fewer requests are better for everyone).
const REMERGE_AFTER: Duration = Duration::from_secs(60);

/// Emits changes of tag state; remembers what was last sent per tag.
struct Emitter {
    device: String,
    last: Vec<Option<(Option<TagValue>, Quality)>>,
    ctx: DriverContext,
}

/// Exact equality, except that NaN equals NaN (a NaN register must not emit every scan).
fn same(a: &Option<TagValue>, b: &Option<TagValue>) -> bool {
    match (a, b) {
        (Some(TagValue::Float(x)), Some(TagValue::Float(y))) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

impl Emitter {
    /// Sends the update if it is a change. Returns false when the driver must stop.
    async fn emit(
        &mut self,
        tag: usize,
        name: &str,
        value: Option<TagValue>,
        quality: Quality,
        error: Option<String>,
        ts: Timestamp,
    ) -> bool {
        let Some(slot) = self.last.get_mut(tag) else {
            return true;
        };
        if let Some((v, q)) = slot
            && *q == quality
            && same(v, &value)
        {
            return true;
        }
        *slot = Some((value.clone(), quality));
        self.ctx.metrics.values.fetch_add(1, Ordering::Relaxed);
        let update = TagUpdate {
            device: self.device.clone(),
            tag: name.to_owned(),
            value,
            quality,
            error,
            ts,
        };
        match self.ctx.out.try_send(update) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            // A slow consumer slows the poll loop (bounded memory), but shutdown still wins.
            Err(TrySendError::Full(update)) => tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => false,
                r = self.ctx.out.send(update) => r.is_ok(),
            },
        }
    }
}

/// State of one device's poll loop.
pub(crate) struct Poller {
    plan: DevicePlan,
    /// The reads as planned, before any split; restored every `REMERGE_AFTER`.
    planned: Vec<Vec<PlannedRead>>,
    /// Per group: when its reads were first split since the last restore.
    split_at: Vec<Option<Instant>>,
    link: Link,
    timeout: Duration,
    out: Emitter,
    /// Set while the device is unreachable; polls wait for `retry_at`.
    down: bool,
    retry_at: Instant,
    backoff: Duration,
}

impl Poller {
    pub(crate) fn new(
        cfg: &DeviceConfig,
        plan: DevicePlan,
        link: Link,
        ctx: DriverContext,
    ) -> Self {
        let n = plan.tags.len();
        let planned = plan.groups.iter().map(|g| g.reads.clone()).collect();
        let split_at = vec![None; plan.groups.len()];
        Poller {
            plan,
            planned,
            split_at,
            link,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            out: Emitter {
                device: cfg.id.clone(),
                last: vec![None; n],
                ctx,
            },
            down: false,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
        }
    }

    /// Runs until shutdown (or until nobody listens to the values any more).
    pub(crate) async fn run(mut self) {
        let shutdown = self.out.ctx.shutdown.clone();
        let start = Instant::now();
        let mut next_due = vec![start; self.plan.groups.len()];
        if next_due.is_empty() {
            shutdown.cancelled().await;
            return;
        }
        loop {
            let Some((gi, due)) = next_due.iter().copied().enumerate().min_by_key(|&(_, d)| d)
            else {
                return;
            };
            let wake = if self.down {
                due.max(self.retry_at)
            } else {
                due
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            if !self.poll_group(gi).await {
                return;
            }
            let period = Duration::from_millis(self.plan.groups[gi].scan_ms.max(1));
            let now = Instant::now();
            let mut next = due + period;
            if next <= now {
                // Behind schedule (slow device, long outage): skip the missed periods.
                let behind = (now - next).as_nanos() / period.as_nanos() + 1;
                next += period * u32::try_from(behind).unwrap_or(u32::MAX);
            }
            next_due[gi] = next;
        }
    }

    /// Polls every read of a group once. Returns false when the driver must stop.
    async fn poll_group(&mut self, gi: usize) -> bool {
        let shutdown = self.out.ctx.shutdown.clone();
        if self.split_at[gi].is_some_and(|t| t.elapsed() >= REMERGE_AFTER) {
            self.plan.groups[gi].reads = self.planned[gi].clone();
            self.split_at[gi] = None;
        }
        let mut i = 0;
        while let Some(read) = self.plan.groups[gi].reads.get(i) {
            let req = ReadRequest {
                area: read.area,
                start: read.start,
                count: read.count,
            };
            let t0 = Instant::now();
            let res = tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                r = self.link.read(req, self.timeout) => r,
            };
            let rtt = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            let ts = time::now();
            let metrics = &self.out.ctx.metrics;
            match res {
                Ok(data) => {
                    metrics.record_ok(rtt);
                    self.reachable();
                    if !self.apply(gi, i, &data, ts).await {
                        return false;
                    }
                    i += 1;
                }
                Err(ModbusError::Refused(exc)) => {
                    metrics.record_error(exc.to_string());
                    self.reachable();
                    let read = &self.plan.groups[gi].reads[i];
                    if exc.code == ILLEGAL_DATA_ADDRESS && read.tags.len() > 1 {
                        let members: Vec<usize> = read.tags.iter().map(|t| t.tag).collect();
                        let (left, right) = members.split_at(members.len() / 2);
                        let area = read.area;
                        if let (Some(l), Some(r)) = (
                            PlannedRead::covering(area, &self.plan.tags, left),
                            PlannedRead::covering(area, &self.plan.tags, right),
                        ) {
                            tracing::info!(
                                device = %self.out.device, start = read.start, count = read.count,
                                "illegal data address inside a merged read: splitting it"
                            );
                            let reads = &mut self.plan.groups[gi].reads;
                            reads[i] = l;
                            reads.insert(i + 1, r);
                            self.split_at[gi].get_or_insert_with(Instant::now);
                            // Retry the left half now, in this same scan.
                            continue;
                        }
                    }
                    let error = exc.to_string();
                    let tags: Vec<usize> = read.tags.iter().map(|t| t.tag).collect();
                    for t in tags {
                        let name = self.plan.tags[t].name.clone();
                        if !self
                            .out
                            .emit(t, &name, None, Quality::Bad, Some(error.clone()), ts)
                            .await
                        {
                            return false;
                        }
                    }
                    i += 1;
                }
                Err(ModbusError::Unreachable(e)) => {
                    let error = e.to_string();
                    metrics.record_error(error.clone());
                    if !self.down {
                        tracing::warn!(device = %self.out.device, %error, "device unreachable");
                    }
                    self.down = true;
                    let jitter = 0.5 + rand::random::<f64>() * 0.5;
                    self.retry_at = Instant::now() + self.backoff.mul_f64(jitter);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    for t in 0..self.plan.tags.len() {
                        let name = self.plan.tags[t].name.clone();
                        if !self
                            .out
                            .emit(t, &name, None, Quality::Bad, Some(error.clone()), ts)
                            .await
                        {
                            return false;
                        }
                    }
                    return true;
                }
            }
        }
        true
    }

    /// The device answered: leave the down state, reset the backoff.
    fn reachable(&mut self) {
        if self.down {
            tracing::info!(device = %self.out.device, "device reachable again");
        }
        self.down = false;
        self.backoff = BACKOFF_MIN;
    }

    /// Decodes a read's answer into its tags and emits the changes.
    async fn apply(&mut self, gi: usize, i: usize, data: &ReadData, ts: Timestamp) -> bool {
        let read = &self.plan.groups[gi].reads[i];
        for pt in &read.tags {
            let spec = &self.plan.tags[pt.tag];
            let off = usize::from(pt.offset);
            let value = match data {
                ReadData::Words(w) => w.get(off..).and_then(|r| spec.decoder.decode_regs(r)),
                ReadData::Bits(b) => b.get(off).map(|&bit| spec.decoder.decode_bit(bit)),
            };
            let ok = match value {
                Some(v) => {
                    self.out
                        .emit(pt.tag, &spec.name, Some(v), Quality::Good, None, ts)
                        .await
                }
                None => {
                    let e = "reply too short for the tag".to_owned();
                    self.out
                        .emit(pt.tag, &spec.name, None, Quality::Bad, Some(e), ts)
                        .await
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }
}
