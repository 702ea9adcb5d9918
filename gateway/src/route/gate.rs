//! The gate the pipeline passes scans through before the station engine (see the module docs
//! of `route` for why).
//!
//! # The verdict
//!
//! For a scan of a station with `enforce_route = true` that names a unit or a lot
//! ([`StationEngine::route_subject`]):
//!
//! 1. a hold in the cache on the unit or lot itself, or on its part, refuses it
//!    (`on hold: <reason> (<kind> <id>)`), and so does one on a lot or sub-assembly this line
//!    put into the unit (`…, via <kind> <id>)`), without asking anybody;
//! 2. a lot is checked against the `materials` of the route operation at the station (the
//!    route of the current unit's part, else of the part units start as here): a lot of
//!    another part is refused (`lot <lot> (part <part>) is not a material of operation <op> at
//!    <station> (route … takes …)`). The lot's part comes from its label, else from the
//!    cache (received on this line, looked up before), else from the aggregator
//!    (`GET /api/v1/trace/lot/{lot}?max_depth=0`); a route not cached is fetched first. A
//!    route still not known passes the lot; a part still not known refuses it when the
//!    operation restricts its materials. A child unit scanned into the current unit is
//!    accepted;
//! 3. a unit is looked up (`route-status?station=…`): `allowed` accepts it; a refusal for a
//!    missing or failed operation is re-judged with this line's own results, which the
//!    aggregator may not have received yet (the line passed the operation a moment ago);
//!    any other refusal (a covering hold, scrapped, not on the route) is the reason as is;
//! 4. no answer (unreachable, timeout, an error status): the cached route and this line's own
//!    results decide what they can — a required operation of *this gateway's* stations before
//!    the station missing or failed, or the station not on the route, refuses it with that
//!    reason and ` (route service unreachable; decided from this line's history)`; otherwise
//!    `[route] when_unreachable` decides: `allow` accepts, `block` refuses with
//!    `route service unreachable: <why>`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::cache::{MaterialCheck, RouteCache};
use super::interlock::Interlocks;
use super::lookup::{Lookup, RouteStatus};
use super::{RouteSection, WhenUnreachable};
use crate::drivers::RawScan;
use crate::stations::{RouteSubject, StationEngine, StationEvent, SubjectKind};

/// A scan with the gate's verdict: hand it to the engine, or refuse it.
#[derive(Debug)]
pub struct Decided {
    pub scan: RawScan,
    /// `Some(reason)`: refuse the scan.
    pub refused: Option<String>,
    /// The scan named a unit that would have become current.
    pub unit_scan: bool,
    /// The scan was checked (a unit or lot at an enforcing station): its outcome is written
    /// to the station's interlock.
    pub checked: bool,
    /// The verdict came from a lookup: the station's queued scans may go on after it.
    pub(crate) looked_up: bool,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct GateCounters {
    /// `route-status` lookups started.
    pub lookups: AtomicU64,
    /// Lookups that got no usable answer.
    pub unreachable: AtomicU64,
    /// Scans refused by the gate (holds, routes, the unreachable policy).
    pub refused: AtomicU64,
    /// Interlock writes the device confirmed.
    pub interlock_writes: AtomicU64,
    /// Interlock writes that failed (refused, timed out, no connection).
    pub interlock_failures: AtomicU64,
}

/// What the lookup tasks share.
struct Shared {
    cache: Arc<RouteCache>,
    lookup: Lookup,
    policy: WhenUnreachable,
    /// This gateway's station ids (whose results the line knows itself).
    own: Vec<String>,
    counters: Arc<GateCounters>,
}

/// The gate. Owned by the pipeline; lookups run in tasks and come back through [`RouteGate::decided`].
pub struct RouteGate {
    shared: Arc<Shared>,
    /// Stations with a lookup in flight.
    busy: HashSet<String>,
    /// Scans waiting behind their station's lookup, in arrival order.
    queued: HashMap<String, VecDeque<RawScan>>,
    tx: mpsc::UnboundedSender<Decided>,
    rx: Option<mpsc::UnboundedReceiver<Decided>>,
    interlocks: Interlocks,
}

impl RouteGate {
    /// The gate of a validated `[route]`; `stations` are this gateway's station ids.
    pub fn new(
        r: &RouteSection,
        cache: Arc<RouteCache>,
        stations: Vec<String>,
        counters: Arc<GateCounters>,
    ) -> anyhow::Result<RouteGate> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(RouteGate {
            shared: Arc::new(Shared {
                cache,
                lookup: Lookup::new(r)?,
                policy: r.when_unreachable,
                own: stations,
                counters,
            }),
            busy: HashSet::new(),
            queued: HashMap::new(),
            tx,
            rx: Some(rx),
            interlocks: Interlocks::default(),
        })
    }

    /// Fetches the routes of `parts` into the cache in the background (one try each; a
    /// lookup fetches a part's route again when it is missing).
    pub fn prefetch(&self, parts: Vec<String>) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            for p in parts {
                fetch_routes(&shared, &p).await;
            }
        });
    }

    /// Lookups in flight.
    pub fn in_flight(&self) -> usize {
        self.busy.len()
    }

    /// A scan arrived: `Some` when the engine may take it now (with its verdict), `None` when it
    /// waits (for its own lookup, or behind its station's).
    pub fn offer(&mut self, scan: RawScan, engine: &StationEngine) -> Option<Decided> {
        if self.busy.contains(&scan.station) {
            self.queued
                .entry(scan.station.clone())
                .or_default()
                .push_back(scan);
            return None;
        }
        let Some(subject) = engine.route_subject(&scan) else {
            return Some(Decided {
                scan,
                refused: None,
                unit_scan: false,
                checked: false,
                looked_up: false,
            });
        };
        let unit_scan = subject.route;
        if let Some(why) = self.shared.cache.hold_of(&subject) {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Some(Decided {
                scan,
                refused: Some(why),
                unit_scan,
                checked: true,
                looked_up: false,
            });
        }
        if subject.kind == SubjectKind::Lot {
            match self.shared.cache.material_check(&subject, false) {
                MaterialCheck::Pass => {}
                MaterialCheck::Refuse(why) => {
                    self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Some(Decided {
                        scan,
                        refused: Some(why),
                        unit_scan,
                        checked: true,
                        looked_up: false,
                    });
                }
                MaterialCheck::Need {
                    route_part,
                    lot_part,
                } => {
                    self.busy.insert(scan.station.clone());
                    let shared = self.shared.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let refused =
                            material_verdict(&shared, &subject, route_part, lot_part).await;
                        if refused.is_some() {
                            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = tx.send(Decided {
                            scan,
                            refused,
                            unit_scan: false,
                            checked: true,
                            looked_up: true,
                        });
                    });
                    return None;
                }
            }
        }
        if !subject.route {
            return Some(Decided {
                scan,
                refused: None,
                unit_scan,
                checked: true,
                looked_up: false,
            });
        }
        self.busy.insert(scan.station.clone());
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let refused = verdict(&shared, &subject).await;
            if refused.is_some() {
                shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tx.send(Decided {
                scan,
                refused,
                unit_scan: true,
                checked: true,
                looked_up: true,
            });
        });
        None
    }

    /// The channel the lookups' verdicts come back on (taken once, by the pipeline; the gate
    /// keeps a sender, so it never closes).
    pub fn take_verdicts(&mut self) -> mpsc::UnboundedReceiver<Decided> {
        match self.rx.take() {
            Some(rx) => rx,
            None => {
                // Taken twice: a new channel, so that verdicts keep arriving somewhere.
                let (tx, rx) = mpsc::unbounded_channel();
                self.tx = tx;
                rx
            }
        }
    }

    /// After the engine handled a looked-up scan: the next queued scan of its station, to offer
    /// again (in order) until one waits for a lookup.
    pub fn next_queued(&mut self, d: &Decided) -> Option<RawScan> {
        if d.looked_up {
            self.busy.remove(&d.scan.station);
        }
        if self.busy.contains(&d.scan.station) {
            return None;
        }
        let q = self.queued.get_mut(&d.scan.station)?;
        let next = q.pop_front();
        if q.is_empty() {
            self.queued.remove(&d.scan.station);
        }
        next
    }

    /// Writes the stations' interlock tags from now on.
    pub fn set_interlocks(&mut self, interlocks: Interlocks) {
        self.interlocks = interlocks;
    }

    /// A checked scan's outcome (the gate's verdict and the engine's handling) to the
    /// station's interlock tag.
    pub fn signal(&self, d: &Decided, accepted: bool) {
        if d.checked {
            self.interlocks.signal(&d.scan.station, accepted);
        }
    }

    /// Records this line's results (a station step's events) in the cache.
    pub fn observe(&self, events: &[StationEvent]) {
        self.shared.cache.observe(events);
    }
}

/// The verdict for a unit at its station (module docs): `Some(reason)` refuses it.
async fn verdict(shared: &Shared, s: &RouteSubject) -> Option<String> {
    shared.counters.lookups.fetch_add(1, Ordering::Relaxed);
    // The part the station would start the unit as, else the one this line started it as: an
    // aggregator that has not received the unit yet still judges it against its part's route
    // (and the line's own results re-judge what it reports missing), instead of knowing no
    // route and allowing it.
    let part = s.part.clone().or_else(|| shared.cache.unit_part(&s.id));
    match shared
        .lookup
        .route_status(&s.id, &s.station, part.as_deref())
        .await
    {
        Ok(status) => {
            shared.cache.learn_unit(
                &s.id,
                status.part.as_deref(),
                status.route_version.as_deref(),
            );
            if let Some(p) = &status.part
                && !shared.cache.has_route(p, status.route_version.as_deref())
                && status.route_version.is_some()
            {
                fetch_routes(shared, p).await;
            }
            judge_answer(shared, s, &status)
        }
        Err(why) => {
            shared.counters.unreachable.fetch_add(1, Ordering::Relaxed);
            if let Some(local) = shared.cache.local_refusal(s, &shared.own) {
                tracing::warn!(unit = %s.id, station = %s.station, error = %why, reason = %local, "route service unreachable; refused from this line's history");
                return Some(format!(
                    "{local} (route service unreachable; decided from this line's history)"
                ));
            }
            match shared.policy {
                WhenUnreachable::Allow => {
                    tracing::warn!(unit = %s.id, station = %s.station, error = %why, "route service unreachable; unit allowed (when_unreachable = \"allow\")");
                    None
                }
                WhenUnreachable::Block => Some(format!("route service unreachable: {why}")),
            }
        }
    }
}

/// The aggregator's answer, with a refusal for a missing or failed operation re-judged by this
/// line's own results (newer than what the aggregator may have received).
fn judge_answer(shared: &Shared, s: &RouteSubject, status: &RouteStatus) -> Option<String> {
    if status.allowed != Some(false) {
        return None;
    }
    let reason = status
        .reason
        .clone()
        .unwrap_or_else(|| "refused by the route service".to_owned());
    if !(reason.starts_with("missing operation ") || reason.starts_with("failed operation ")) {
        return Some(reason);
    }
    let at = status
        .operations
        .iter()
        .position(|o| o.station == s.station)?;
    let still = status.operations[..at]
        .iter()
        .filter(|o| o.required)
        .find_map(
            |o| match shared.cache.local_result(&s.id, &o.station, &o.operation) {
                Some(Ok(())) => None,
                Some(Err(why)) => Some(why),
                None => match o.status.as_str() {
                    "passed" => None,
                    "failed" => Some(format!("failed operation {} at {}", o.operation, o.station)),
                    "wrong_equipment" => Some(format!(
                        "operation {} at {} ran on {}, not on equipment of its route",
                        o.operation,
                        o.station,
                        o.equipment.as_deref().unwrap_or("no recorded equipment")
                    )),
                    _ => Some(format!(
                        "missing operation {} at {}",
                        o.operation, o.station
                    )),
                },
            },
        );
    if still.is_none() {
        tracing::info!(unit = %s.id, station = %s.station, aggregator = %reason, "allowed: this line's own result is newer than the aggregator's");
    }
    still
}

/// The materials check of a lot after fetching what the cache lacked (the route, the lot's
/// part): `Some(reason)` refuses it.
async fn material_verdict(
    shared: &Shared,
    s: &RouteSubject,
    route_part: Option<String>,
    lot_part: bool,
) -> Option<String> {
    if let Some(p) = route_part {
        fetch_routes(shared, &p).await;
    }
    let need_lot = lot_part
        || matches!(
            shared.cache.material_check(s, false),
            MaterialCheck::Need { lot_part: true, .. }
        );
    if need_lot {
        shared.counters.lookups.fetch_add(1, Ordering::Relaxed);
        match shared.lookup.lot_part(&s.id).await {
            Ok(Some(p)) => shared.cache.learn_lot(&s.id, &p),
            Ok(None) => tracing::debug!(lot = %s.id, "the aggregator knows no part of the lot"),
            Err(e) => {
                shared.counters.unreachable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(lot = %s.id, error = %e, "lot part not looked up");
            }
        }
    }
    match shared.cache.material_check(s, true) {
        MaterialCheck::Refuse(why) => Some(why),
        MaterialCheck::Pass | MaterialCheck::Need { .. } => None,
    }
}

async fn fetch_routes(shared: &Shared, part: &str) {
    match shared.lookup.routes(part).await {
        Ok(Some(v)) => {
            tracing::info!(part, versions = v.len(), "route cached");
            shared.cache.set_routes(part, v);
        }
        Ok(None) => tracing::debug!(part, "no route for the part"),
        Err(e) => tracing::debug!(part, error = %e, "route not fetched"),
    }
}
