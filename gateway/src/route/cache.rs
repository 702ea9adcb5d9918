//! What the gateway knows without the aggregator: the holds last received, the routes last
//! fetched and the operations this line completed, in `data_dir/route_cache.json`.
//!
//! - **Format.** JSON `{"version":1,"holds_seq":…,"holds":[{hold_id,kind,id,reason,…}],
//!   "routes":{part:[route oldest first]},"units":{serial:{part,route_version,ops:[{station,
//!   operation,passed}],inputs:[{kind,id}],touched}},"lots":{lot:{part,touched}}}`; routes and
//!   holds as the aggregator sends them; `inputs` are the lots and sub-assemblies this line put
//!   into the unit (for holds that reach it through them), `lots` the parts of lots received or
//!   looked up (for the materials check). Fields added later default when absent.
//! - **Written** atomically (a temporary file renamed over it) by the saver task at most every
//!   [`SAVE_DELAY`] after a change and at shutdown: a gateway killed right after an operation
//!   may forget that one result (the aggregator still has it once delivered), never a whole
//!   file.
//! - **Bounded.** At most [`MAX_UNITS`] units and [`MAX_UNITS`] lots are remembered, the least
//!   recently touched go first.
//! - **Unreadable** at start: moved aside to `route_cache.json.corrupt-<unix ms>`, logged, and
//!   the gateway starts with nothing cached (the policy applies until it learns again).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use threadline_shared::event::{ItemKind, RecordBody, Verdict};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::stations::{RouteSubject, StationEvent, SubjectKind};

const FILE: &str = "route_cache.json";
const VERSION: u32 = 1;
/// Units whose operations are remembered, at most.
pub(crate) const MAX_UNITS: usize = 20_000;
/// A change is written this long after it (changes in between are written together).
pub(crate) const SAVE_DELAY: Duration = Duration::from_millis(200);

/// A hold as the aggregator publishes it (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub hold_id: String,
    pub kind: String,
    pub id: String,
    pub reason: String,
}

/// A route version as `GET /api/v1/routes/{part}` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Route {
    pub part: String,
    pub version: String,
    pub operations: Vec<RouteOp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RouteOp {
    pub station: String,
    pub operation: String,
    #[serde(default = "yes")]
    pub required: bool,
    /// Parts whose lots may be consumed here (empty: any).
    #[serde(default)]
    pub materials: Vec<String>,
    /// Equipment allowed here (empty: any).
    #[serde(default)]
    pub equipment: Vec<String>,
}

impl Route {
    /// Why an operation passed on `equipment` does not count for route operation `op`, when
    /// the operation lists equipment and it is not among them (the aggregator's wording).
    pub(crate) fn wrong_equipment(&self, op: &RouteOp, equipment: Option<&str>) -> Option<String> {
        if op.equipment.is_empty() || equipment.is_some_and(|e| op.equipment.iter().any(|a| a == e))
        {
            return None;
        }
        Some(format!(
            "operation {} at {} ran on {}, not on equipment of route {} version {} ({})",
            op.operation,
            op.station,
            equipment.unwrap_or("no recorded equipment"),
            self.part,
            self.version,
            op.equipment.join(", ")
        ))
    }
}

fn yes() -> bool {
    true
}

/// What this line knows of a unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct LocalUnit {
    pub part: Option<String>,
    /// The route version the aggregator last said the unit runs under.
    pub route_version: Option<String>,
    /// Operations completed on this line, oldest first.
    pub ops: Vec<LocalOp>,
    /// Lots and units this line put into the unit (consumed or assembled, not taken out again).
    pub inputs: Vec<Input>,
    /// Order of the last change, for eviction.
    pub touched: u64,
}

/// A lot or a sub-assembly that went into a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Input {
    pub kind: ItemKind,
    pub id: String,
}

/// What this line knows of a lot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct LocalLot {
    pub part: Option<String>,
    pub touched: u64,
}

/// The materials check of a lot at its station (see [`RouteCache::material_check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MaterialCheck {
    Pass,
    Refuse(String),
    /// Not decidable from the cache: fetch the route of `route_part` (when set) and look the
    /// lot's part up (when `lot_part`), then decide with `last_word`.
    Need {
        route_part: Option<String>,
        lot_part: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LocalOp {
    pub station: String,
    pub operation: String,
    pub passed: bool,
    /// The equipment it ran on, when the station records one.
    #[serde(default)]
    pub equipment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct CacheFile {
    version: u32,
    /// `chain_seq` of the holds message the holds come from.
    holds_seq: Option<i64>,
    holds: Vec<Hold>,
    routes: BTreeMap<String, Vec<Route>>,
    units: BTreeMap<String, LocalUnit>,
    lots: BTreeMap<String, LocalLot>,
    clock: u64,
}

/// The cached route version `unit` runs under: the one the aggregator named, else the newest
/// of its part (`part` when the line does not know the unit's).
fn route_of<'d>(d: &'d CacheFile, unit: &LocalUnit, part: Option<&str>) -> Option<&'d Route> {
    let part = unit.part.as_deref().or(part)?;
    let versions = d.routes.get(part)?;
    unit.route_version
        .as_deref()
        .and_then(|want| versions.iter().find(|r| r.version == want))
        .or_else(|| versions.last())
}

/// The cache, shared by the gate, its lookups, the holds listener and the saver task.
#[derive(Debug)]
pub struct RouteCache {
    path: PathBuf,
    data: Mutex<CacheFile>,
    changed: Notify,
}

impl RouteCache {
    /// Loads `data_dir/route_cache.json` (nothing cached when absent or unreadable).
    pub fn load(data_dir: &Path) -> Arc<RouteCache> {
        let path = data_dir.join(FILE);
        let data = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheFile::default(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "route cache unreadable; starting without cached routes and holds");
                CacheFile::default()
            }
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(c) if c.version == VERSION => c,
                Ok(c) => {
                    set_aside(&path, &format!("unsupported version {}", c.version));
                    CacheFile::default()
                }
                Err(e) => {
                    set_aside(&path, &e.to_string());
                    CacheFile::default()
                }
            },
        };
        tracing::info!(
            holds = data.holds.len(),
            routes = data.routes.len(),
            units = data.units.len(),
            lots = data.lots.len(),
            "route cache loaded"
        );
        Arc::new(RouteCache {
            path,
            data: Mutex::new(CacheFile {
                version: VERSION,
                ..data
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CacheFile> {
        // A panic while holding it leaves plain data behind: keep using it.
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(&self) {
        self.changed.notify_one();
    }

    /// Replaces the holds with those of a holds message.
    pub(crate) fn set_holds(&self, seq: i64, holds: Vec<Hold>) {
        let mut d = self.lock();
        if d.holds_seq.is_some_and(|s| s > seq) {
            tracing::warn!(
                seq,
                cached = d.holds_seq,
                "holds message older than the cached one; taking it (the retained message is the aggregator's current set)"
            );
        }
        d.holds_seq = Some(seq);
        d.holds = holds;
        drop(d);
        self.touch();
    }

    /// Stores the route versions of a part (oldest first).
    pub(crate) fn set_routes(&self, part: &str, versions: Vec<Route>) {
        self.lock().routes.insert(part.to_owned(), versions);
        self.touch();
    }

    /// Has version `version` of `part`'s route (any version when `None`).
    pub(crate) fn has_route(&self, part: &str, version: Option<&str>) -> bool {
        self.lock()
            .routes
            .get(part)
            .is_some_and(|v| version.is_none_or(|want| v.iter().any(|r| r.version == want)))
    }

    /// Remembers what the aggregator said of a unit.
    pub(crate) fn learn_unit(&self, serial: &str, part: Option<&str>, version: Option<&str>) {
        let mut d = self.lock();
        d.clock += 1;
        let clock = d.clock;
        let u = d.units.entry(serial.to_owned()).or_default();
        if let Some(p) = part {
            u.part = Some(p.to_owned());
        }
        if let Some(v) = version {
            u.route_version = Some(v.to_owned());
        }
        u.touched = clock;
        evict(&mut d);
        drop(d);
        self.touch();
    }

    /// Remembers the part of a lot (received on this line, or as the aggregator knows it).
    pub(crate) fn learn_lot(&self, lot: &str, part: &str) {
        let mut d = self.lock();
        d.clock += 1;
        let clock = d.clock;
        let l = d.lots.entry(lot.to_owned()).or_default();
        l.part = Some(part.to_owned());
        l.touched = clock;
        evict(&mut d);
        drop(d);
        self.touch();
    }

    /// Records the units started, the operations completed, the lots received and what went
    /// into (or came out of) a unit among a station step's events.
    pub(crate) fn observe(&self, events: &[StationEvent]) {
        let mut changed = false;
        let mut d = self.lock();
        for e in events {
            match &e.body {
                RecordBody::UnitStarted(s) => {
                    d.clock += 1;
                    let clock = d.clock;
                    let u = d.units.entry(s.unit.clone()).or_default();
                    if s.part.is_some() {
                        u.part.clone_from(&s.part);
                    }
                    u.touched = clock;
                    changed = true;
                }
                RecordBody::OperationCompleted(o) => {
                    d.clock += 1;
                    let clock = d.clock;
                    let u = d.units.entry(o.unit.clone()).or_default();
                    u.ops.push(LocalOp {
                        station: o.station.clone(),
                        operation: o.operation.clone(),
                        passed: o.result == Verdict::Pass,
                        equipment: o.equipment.clone(),
                    });
                    for m in &o.materials {
                        add_input(u, ItemKind::Lot, &m.lot);
                    }
                    u.touched = clock;
                    for m in &o.materials {
                        if let Some(p) = &m.part {
                            // The feeder's part: what the station took the lot for.
                            let l = d.lots.entry(m.lot.clone()).or_default();
                            l.part.get_or_insert_with(|| p.clone());
                            l.touched = clock;
                        }
                    }
                    changed = true;
                }
                RecordBody::Assembled(a) => {
                    d.clock += 1;
                    let clock = d.clock;
                    let u = d.units.entry(a.parent.clone()).or_default();
                    add_input(u, a.child.kind, &a.child.id);
                    u.touched = clock;
                    changed = true;
                }
                RecordBody::Disassembled(a) => {
                    if let Some(u) = d.units.get_mut(&a.parent) {
                        u.inputs
                            .retain(|i| !(i.kind == a.child.kind && i.id == a.child.id));
                        changed = true;
                    }
                }
                RecordBody::LotReceived(r) => {
                    if let Some(p) = &r.part {
                        d.clock += 1;
                        let clock = d.clock;
                        let l = d.lots.entry(r.lot.clone()).or_default();
                        l.part = Some(p.clone());
                        l.touched = clock;
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        if changed {
            evict(&mut d);
            drop(d);
            self.touch();
        }
    }

    /// The hold that covers the subject, as a `scan_rejected` reason: on the unit or lot
    /// itself, or its part (`on hold: <reason> (<kind> <id>)`); for a unit also on a lot or
    /// sub-assembly this line put into it, at any depth (`on hold: <reason> (<kind> <id>, via
    /// <kind> <input>)`, `via` the unit's own input it came through, as the aggregator words
    /// it) — so a lot hold stops the units it reached with the aggregator away too.
    pub(crate) fn hold_of(&self, s: &RouteSubject) -> Option<String> {
        let d = self.lock();
        if d.holds.is_empty() {
            return None;
        }
        let part = match s.kind {
            SubjectKind::Unit => d
                .units
                .get(&s.id)
                .and_then(|u| u.part.clone())
                .or_else(|| s.part.clone()),
            SubjectKind::Lot => s
                .part
                .clone()
                .or_else(|| d.lots.get(&s.id).and_then(|l| l.part.clone())),
        };
        if let Some(h) = d.holds.iter().find(|h| {
            (h.kind == s.kind.as_str() && h.id == s.id)
                || (h.kind == "part" && part.as_deref() == Some(h.id.as_str()))
        }) {
            return Some(format!("on hold: {} ({} {})", h.reason, h.kind, h.id));
        }
        if s.kind != SubjectKind::Unit {
            return None;
        }
        // Backward through this line's inputs, breadth first; `via` is the first level's.
        let mut seen: HashSet<(ItemKind, &str)> = HashSet::new();
        let mut queue: VecDeque<(&Input, &Input)> = VecDeque::new();
        for i in d
            .units
            .get(&s.id)
            .map(|u| u.inputs.as_slice())
            .unwrap_or_default()
        {
            queue.push_back((i, i));
        }
        while let Some((i, via)) = queue.pop_front() {
            if !seen.insert((i.kind, i.id.as_str())) || seen.len() > MAX_UNITS {
                continue;
            }
            if let Some(h) = d
                .holds
                .iter()
                .find(|h| h.kind == i.kind.as_str() && h.id == i.id)
            {
                return Some(format!(
                    "on hold: {} ({} {}, via {} {})",
                    h.reason, h.kind, h.id, via.kind, via.id
                ));
            }
            if i.kind == ItemKind::Unit
                && let Some(u) = d.units.get(&i.id)
            {
                queue.extend(u.inputs.iter().map(|n| (n, via)));
            }
        }
        None
    }

    /// Whether the route lets the station consume lot `s` (a lot subject): the route of the
    /// station's current unit's part (else the part units start as here), in the version the
    /// unit runs under (else the newest cached), its operation at the station, and that
    /// operation's `materials`. No part, no route operation at the station, or no `materials`:
    /// nothing to check. `last_word`: after the lookups, so a route still not known passes
    /// (logged) and a lot part still not known is refused.
    pub(crate) fn material_check(&self, s: &RouteSubject, last_word: bool) -> MaterialCheck {
        let d = self.lock();
        let unit = s.unit.as_ref().and_then(|u| d.units.get(u));
        let Some(route_part) = unit
            .and_then(|u| u.part.clone())
            .or_else(|| s.unit_part.clone())
        else {
            return MaterialCheck::Pass;
        };
        let Some(versions) = d.routes.get(&route_part) else {
            if last_word {
                tracing::debug!(lot = %s.id, station = %s.station, part = %route_part, "no route known for the part: lot not checked against materials");
                return MaterialCheck::Pass;
            }
            let lot_part =
                s.part.is_none() && d.lots.get(&s.id).and_then(|l| l.part.as_ref()).is_none();
            return MaterialCheck::Need {
                route_part: Some(route_part),
                lot_part,
            };
        };
        let Some(route) = unit
            .and_then(|u| u.route_version.as_deref())
            .and_then(|want| versions.iter().find(|r| r.version == want))
            .or_else(|| versions.last())
        else {
            return MaterialCheck::Pass;
        };
        let Some(op) = route.operations.iter().find(|o| o.station == s.station) else {
            return MaterialCheck::Pass;
        };
        if op.materials.is_empty() {
            return MaterialCheck::Pass;
        }
        let lot_part = s
            .part
            .clone()
            .or_else(|| d.lots.get(&s.id).and_then(|l| l.part.clone()));
        match lot_part {
            Some(p) if op.materials.contains(&p) => MaterialCheck::Pass,
            Some(p) => MaterialCheck::Refuse(format!(
                "lot {} (part {p}) is not a material of operation {} at {} (route {} version {} takes {})",
                s.id,
                op.operation,
                op.station,
                route.part,
                route.version,
                op.materials.join(", ")
            )),
            None if last_word => MaterialCheck::Refuse(format!(
                "lot {}: part unknown (not on its label, not received or known to the aggregator); operation {} at {} takes {}",
                s.id,
                op.operation,
                op.station,
                op.materials.join(", ")
            )),
            None => MaterialCheck::Need {
                route_part: None,
                lot_part: true,
            },
        }
    }

    /// The part of unit `serial` as this line knows it (its `unit_started`, or the
    /// aggregator's earlier answer).
    pub(crate) fn unit_part(&self, serial: &str) -> Option<String> {
        self.lock().units.get(serial).and_then(|u| u.part.clone())
    }

    /// This line's latest result of `operation` at `station` for `serial`: `Ok` passed,
    /// `Err(reason)` failed (or passed on equipment its cached route does not allow), `None`
    /// when the line has not run it.
    pub(crate) fn local_result(
        &self,
        serial: &str,
        station: &str,
        operation: &str,
    ) -> Option<Result<(), String>> {
        let d = self.lock();
        let unit = d.units.get(serial)?;
        let last = unit
            .ops
            .iter()
            .rev()
            .find(|o| o.station == station && o.operation == operation)?;
        if !last.passed {
            return Some(Err(format!("failed operation {operation} at {station}")));
        }
        let wrong = route_of(&d, unit, None).and_then(|r| {
            let op = r
                .operations
                .iter()
                .find(|o| o.station == station && o.operation == operation)?;
            r.wrong_equipment(op, last.equipment.as_deref())
        });
        Some(wrong.map_or(Ok(()), Err))
    }

    /// Why the cached route and this line's own results refuse the unit at its station, when
    /// they do; only operations at `own` stations (this gateway's) are judged, the others are
    /// not known here. `None` also when no route is cached for the unit's part.
    pub(crate) fn local_refusal(&self, s: &RouteSubject, own: &[String]) -> Option<String> {
        let d = self.lock();
        let unit = d.units.get(&s.id);
        let route = match unit {
            Some(u) => route_of(&d, u, s.part.as_deref())?,
            None => d.routes.get(s.part.as_ref()?)?.last()?,
        };
        let Some(at) = route.operations.iter().position(|o| o.station == s.station) else {
            return Some(format!(
                "station {} is not on route {} version {}",
                s.station, route.part, route.version
            ));
        };
        route.operations[..at]
            .iter()
            .filter(|o| o.required && own.contains(&o.station))
            .find_map(|o| {
                let last = unit.and_then(|u| {
                    u.ops
                        .iter()
                        .rev()
                        .find(|l| l.station == o.station && l.operation == o.operation)
                });
                match last {
                    Some(l) if l.passed => route.wrong_equipment(o, l.equipment.as_deref()),
                    Some(_) => Some(format!("failed operation {} at {}", o.operation, o.station)),
                    None => Some(format!(
                        "missing operation {} at {}",
                        o.operation, o.station
                    )),
                }
            })
    }

    /// Writes the file (atomically).
    pub fn save(&self) -> std::io::Result<()> {
        let json = {
            let d = self.lock();
            serde_json::to_vec(&*d).map_err(std::io::Error::other)?
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Saves every change [`SAVE_DELAY`] after it, and once more when `stop` is cancelled.
    pub async fn run_saver(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(SAVE_DELAY) => {}
                _ = stop.cancelled() => break,
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(file = %self.path.display(), error = %e, "route cache not written")
                }
                Err(e) => tracing::error!(error = %e, "route cache writer failed"),
            }
        }
        if let Err(e) = self.save() {
            tracing::error!(file = %self.path.display(), error = %e, "route cache not written at shutdown");
        }
    }
}

fn add_input(u: &mut LocalUnit, kind: ItemKind, id: &str) {
    if !u.inputs.iter().any(|i| i.kind == kind && i.id == id) {
        u.inputs.push(Input {
            kind,
            id: id.to_owned(),
        });
    }
}

/// Forgets the least recently touched units and lots beyond [`MAX_UNITS`] each (a tenth more
/// at once, so that the sort is rare).
fn evict(d: &mut CacheFile) {
    if d.lots.len() > MAX_UNITS + MAX_UNITS / 10 {
        let mut order: Vec<(u64, String)> =
            d.lots.iter().map(|(k, l)| (l.touched, k.clone())).collect();
        order.sort_unstable();
        let excess = d.lots.len() - MAX_UNITS;
        for (_, k) in order.into_iter().take(excess) {
            d.lots.remove(&k);
        }
    }
    if d.units.len() <= MAX_UNITS + MAX_UNITS / 10 {
        return;
    }
    let mut order: Vec<(u64, String)> = d
        .units
        .iter()
        .map(|(k, u)| (u.touched, k.clone()))
        .collect();
    order.sort_unstable();
    let excess = d.units.len() - MAX_UNITS;
    for (_, k) in order.into_iter().take(excess) {
        d.units.remove(&k);
    }
}

fn set_aside(path: &Path, why: &str) {
    let aside = path.with_extension(format!(
        "json.corrupt-{}",
        chrono::Utc::now().timestamp_millis()
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::error!(file = %path.display(), moved_to = %aside.display(), error = why, "route cache unreadable; starting without cached routes and holds")
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "route cache unreadable and not moved aside")
        }
    }
}

#[cfg(test)]
mod tests {
    use threadline_shared::event::{OperationCompleted, UnitStarted};
    use threadline_shared::time::now;

    use super::*;

    fn route() -> Route {
        let op = |station: &str, operation: &str, required: bool| RouteOp {
            station: station.into(),
            operation: operation.into(),
            required,
            materials: Vec::new(),
            equipment: Vec::new(),
        };
        Route {
            part: "FG-1".into(),
            version: "1".into(),
            operations: vec![
                op("ST10", "assemble", true),
                op("ST15", "inspect", false),
                op("ST20", "test", true),
                op("OTHER", "elsewhere", true),
                op("ST30", "final", true),
            ],
        }
    }

    fn subject(station: &str, id: &str, kind: SubjectKind) -> RouteSubject {
        RouteSubject {
            station: station.into(),
            kind,
            id: id.into(),
            route: kind == SubjectKind::Unit,
            part: None,
            unit: None,
            unit_part: None,
        }
    }

    fn started(unit: &str) -> StationEvent {
        StationEvent {
            ts: now(),
            body: RecordBody::UnitStarted(UnitStarted {
                unit: unit.into(),
                part: Some("FG-1".into()),
                work_order: None,
                station: "ST10".into(),
                operator: None,
            }),
        }
    }

    fn op(unit: &str, station: &str, operation: &str, result: Verdict) -> StationEvent {
        StationEvent {
            ts: now(),
            body: RecordBody::OperationCompleted(OperationCompleted {
                unit: unit.into(),
                station: station.into(),
                operation: operation.into(),
                equipment: None,
                operator: None,
                recipe: None,
                started_at: None,
                result,
                defect_code: None,
                parameters: Vec::new(),
                environment: Vec::new(),
                materials: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_pass_on_equipment_the_route_does_not_allow_is_no_pass() {
        let dir = tempfile::tempdir().unwrap();
        let own: Vec<String> = ["ST10", "ST15", "ST20", "ST30"].map(String::from).to_vec();
        let c = RouteCache::load(dir.path());
        let mut r = route();
        r.operations[2].equipment = vec!["EOL-1".into()];
        c.set_routes("FG-1", vec![r]);
        let on = |unit: &str, eq: &str| {
            let mut e = op(unit, "ST20", "test", Verdict::Pass);
            if let RecordBody::OperationCompleted(o) = &mut e.body {
                o.equipment = Some(eq.into());
            }
            e
        };
        c.observe(&[started("SN1"), op("SN1", "ST10", "assemble", Verdict::Pass)]);
        c.observe(&[on("SN1", "EOL-9")]);
        let why =
            "operation test at ST20 ran on EOL-9, not on equipment of route FG-1 version 1 (EOL-1)";
        let sn1 = subject("ST30", "SN1", SubjectKind::Unit);
        assert_eq!(c.local_refusal(&sn1, &own).as_deref(), Some(why));
        assert_eq!(
            c.local_result("SN1", "ST20", "test"),
            Some(Err(why.to_owned()))
        );
        // Retested on allowed equipment: the latest attempt decides.
        c.observe(&[on("SN1", "EOL-1")]);
        assert_eq!(c.local_refusal(&sn1, &own), None);
        assert_eq!(c.local_result("SN1", "ST20", "test"), Some(Ok(())));
    }

    #[test]
    fn this_lines_results_refuse_what_they_can_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let own: Vec<String> = ["ST10", "ST15", "ST20", "ST30"].map(String::from).to_vec();
        let c = RouteCache::load(dir.path());
        c.set_routes("FG-1", vec![route()]);
        c.observe(&[started("SN1"), op("SN1", "ST10", "assemble", Verdict::Pass)]);
        // ST20 (this line) not done; OTHER is not this line's and not judged; ST15 optional.
        let sn1 = subject("ST30", "SN1", SubjectKind::Unit);
        assert_eq!(
            c.local_refusal(&sn1, &own).as_deref(),
            Some("missing operation test at ST20")
        );
        c.observe(&[op("SN1", "ST20", "test", Verdict::Fail)]);
        assert_eq!(
            c.local_refusal(&sn1, &own).as_deref(),
            Some("failed operation test at ST20")
        );
        // The latest attempt decides.
        c.observe(&[op("SN1", "ST20", "test", Verdict::Pass)]);
        assert_eq!(c.local_refusal(&sn1, &own), None);
        assert_eq!(
            c.local_refusal(&subject("PK9", "SN1", SubjectKind::Unit), &own)
                .as_deref(),
            Some("station PK9 is not on route FG-1 version 1")
        );
        // A unit of a part without a cached route: nothing to decide.
        assert_eq!(
            c.local_refusal(&subject("ST30", "SN-UNKNOWN", SubjectKind::Unit), &own),
            None
        );

        c.set_holds(
            3,
            vec![
                Hold {
                    hold_id: "H-1".into(),
                    kind: "lot".into(),
                    id: "LOT-B".into(),
                    reason: "cracked".into(),
                },
                Hold {
                    hold_id: "H-2".into(),
                    kind: "part".into(),
                    id: "FG-1".into(),
                    reason: "field return".into(),
                },
            ],
        );
        assert_eq!(
            c.hold_of(&subject("ST20", "LOT-B", SubjectKind::Lot))
                .as_deref(),
            Some("on hold: cracked (lot LOT-B)")
        );
        // A unit id equal to a held lot's is not that lot; its part (learned) is held.
        assert_eq!(
            c.hold_of(&subject("ST20", "SN1", SubjectKind::Unit))
                .as_deref(),
            Some("on hold: field return (part FG-1)")
        );
        assert_eq!(c.hold_of(&subject("ST20", "SN9", SubjectKind::Unit)), None);

        c.save().unwrap();
        let again = RouteCache::load(dir.path());
        assert_eq!(again.local_refusal(&sn1, &own), None);
        assert_eq!(
            again
                .hold_of(&subject("ST20", "LOT-B", SubjectKind::Lot))
                .as_deref(),
            Some("on hold: cracked (lot LOT-B)")
        );
        assert_eq!(again.local_result("SN1", "ST20", "test"), Some(Ok(())));
    }

    fn assembled(parent: &str, kind: ItemKind, child: &str) -> StationEvent {
        StationEvent {
            ts: now(),
            body: RecordBody::Assembled(threadline_shared::event::Assembly {
                parent: parent.into(),
                child: threadline_shared::event::ItemRef::new(kind, child),
                qty: Some(1.0),
                station: Some("ST10".into()),
                operator: None,
                reason: None,
            }),
        }
    }

    fn hold(kind: &str, id: &str, reason: &str) -> Hold {
        Hold {
            hold_id: format!("H-{id}"),
            kind: kind.into(),
            id: id.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_held_lot_refuses_every_unit_it_reached_on_this_line_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let c = RouteCache::load(dir.path());
        // SN1 consumed LOT-A (feeder) and got sub-assembly SUB-1, which got LOT-B.
        let mut done = op("SN1", "ST10", "assemble", Verdict::Pass);
        if let RecordBody::OperationCompleted(o) = &mut done.body {
            o.materials.push(threadline_shared::event::MaterialUse {
                lot: "LOT-A".into(),
                part: Some("P1".into()),
                qty: 1.0,
            });
        }
        c.observe(&[
            started("SN1"),
            done,
            assembled("SN1", ItemKind::Unit, "SUB-1"),
            assembled("SUB-1", ItemKind::Lot, "LOT-B"),
            assembled("SN2", ItemKind::Unit, "SN3"),
        ]);
        let sn1 = subject("ST30", "SN1", SubjectKind::Unit);
        c.set_holds(1, vec![hold("lot", "LOT-B", "cracked")]);
        assert_eq!(
            c.hold_of(&sn1).as_deref(),
            Some("on hold: cracked (lot LOT-B, via unit SUB-1)")
        );
        c.set_holds(2, vec![hold("lot", "LOT-A", "wrong alloy")]);
        assert_eq!(
            c.hold_of(&sn1).as_deref(),
            Some("on hold: wrong alloy (lot LOT-A, via lot LOT-A)")
        );
        // The sub-assembly itself held: its parent is covered; a unit it did not reach is not.
        c.set_holds(3, vec![hold("unit", "SUB-1", "dropped")]);
        assert_eq!(
            c.hold_of(&sn1).as_deref(),
            Some("on hold: dropped (unit SUB-1, via unit SUB-1)")
        );
        assert_eq!(c.hold_of(&subject("ST30", "SN2", SubjectKind::Unit)), None);
        // Taken out again: no longer covered. Survives a reload.
        c.observe(&[StationEvent {
            ts: now(),
            body: RecordBody::Disassembled(threadline_shared::event::Assembly {
                parent: "SN1".into(),
                child: threadline_shared::event::ItemRef::new(ItemKind::Unit, "SUB-1"),
                qty: Some(1.0),
                station: Some("ST10".into()),
                operator: None,
                reason: Some("rework".into()),
            }),
        }]);
        assert_eq!(c.hold_of(&sn1), None);
        c.set_holds(4, vec![hold("lot", "LOT-A", "wrong alloy")]);
        c.save().unwrap();
        let again = RouteCache::load(dir.path());
        assert_eq!(
            again.hold_of(&sn1).as_deref(),
            Some("on hold: wrong alloy (lot LOT-A, via lot LOT-A)")
        );
    }

    #[test]
    fn a_lot_of_a_part_the_operation_does_not_take_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = RouteCache::load(dir.path());
        let lot = |id: &str, part: Option<&str>| RouteSubject {
            station: "ST20".into(),
            kind: SubjectKind::Lot,
            id: id.into(),
            route: false,
            part: part.map(String::from),
            unit: None,
            unit_part: Some("FG-1".into()),
        };
        // No route cached yet: fetch it (and the part of a lot without one on its label).
        assert_eq!(
            c.material_check(&lot("L1", Some("P1")), false),
            MaterialCheck::Need {
                route_part: Some("FG-1".into()),
                lot_part: false
            }
        );
        assert_eq!(
            c.material_check(&lot("L1", Some("P1")), true),
            MaterialCheck::Pass
        );
        let mut r = route();
        r.operations[2].materials = vec!["P1".into(), "P3".into()];
        c.set_routes("FG-1", vec![r]);
        assert_eq!(
            c.material_check(&lot("L1", Some("P1")), false),
            MaterialCheck::Pass
        );
        assert_eq!(
            c.material_check(&lot("L2", Some("P2")), false),
            MaterialCheck::Refuse(
                "lot L2 (part P2) is not a material of operation test at ST20 (route FG-1 version 1 takes P1, P3)"
                    .into()
            )
        );
        // No part on the label: a lot received on this line is known; another one is looked
        // up, and refused when still unknown.
        c.observe(&[StationEvent {
            ts: now(),
            body: RecordBody::LotReceived(threadline_shared::event::LotReceived {
                lot: "L3".into(),
                part: Some("P2".into()),
                supplier: None,
                supplier_batch: None,
                qty: None,
                station: Some("RCV".into()),
            }),
        }]);
        assert!(matches!(
            c.material_check(&lot("L3", None), false),
            MaterialCheck::Refuse(why) if why.starts_with("lot L3 (part P2) is not a material")
        ));
        assert_eq!(
            c.material_check(&lot("L4", None), false),
            MaterialCheck::Need {
                route_part: None,
                lot_part: true
            }
        );
        assert!(matches!(
            c.material_check(&lot("L4", None), true),
            MaterialCheck::Refuse(why) if why.starts_with("lot L4: part unknown")
        ));
        c.learn_lot("L4", "P3");
        assert_eq!(
            c.material_check(&lot("L4", None), true),
            MaterialCheck::Pass
        );
        // The current unit's part decides the route; a station with no materials takes any.
        c.observe(&[started("SN1")]);
        let mut at30 = lot("L2", Some("P2"));
        at30.station = "ST30".into();
        at30.unit = Some("SN1".into());
        at30.unit_part = Some("OTHER-PART".into());
        assert_eq!(c.material_check(&at30, false), MaterialCheck::Pass);
    }

    #[test]
    fn an_unreadable_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let c = RouteCache::load(dir.path());
        assert!(!c.has_route("FG-1", None));
        assert!(!dir.path().join(FILE).exists());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside);
    }

    #[test]
    fn the_least_recently_touched_units_are_forgotten() {
        let mut d = CacheFile::default();
        for i in 0..(MAX_UNITS + MAX_UNITS / 10 + 1) {
            d.clock += 1;
            d.units.insert(
                format!("SN{i}"),
                LocalUnit {
                    touched: d.clock,
                    ..LocalUnit::default()
                },
            );
        }
        evict(&mut d);
        assert_eq!(d.units.len(), MAX_UNITS);
        assert!(!d.units.contains_key("SN0"));
        assert!(
            d.units
                .contains_key(&format!("SN{}", MAX_UNITS + MAX_UNITS / 10))
        );
    }
}
