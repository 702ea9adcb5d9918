//! `[[pattern]]` and `[[station]]` tables.
//!
//! The keys of PRODUCT.md work as documented there; everything added for the station kinds
//! (`unit_tag`, `logout_code`, `starts_units`, packing, shipping, receiving, inspection) is
//! optional and documented on its field and in `docs/stations.md`.
//!
//! The checks here are those of one pattern or station on its own; checks against other
//! sections (tag names, station ids, scanners) are the gateway config's, in `crate::config`.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use threadline_shared::config::Validator;
use threadline_shared::event::ContainerLevel;

/// What a scanned code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    Unit,
    Lot,
    Operator,
    WorkOrder,
    Container,
    Shipment,
}

impl CodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeKind::Unit => "unit",
            CodeKind::Lot => "lot",
            CodeKind::Operator => "operator",
            CodeKind::WorkOrder => "work_order",
            CodeKind::Container => "container",
            CodeKind::Shipment => "shipment",
        }
    }
}

/// One `[[pattern]]`: classifies a scanned code by regex or by a GS1 application identifier.
///
/// The id of the item is: the named group `id` of the regex if it has one, else the whole code;
/// for `gs1_ai`, the value of that AI. Named groups `part`, `qty`, `customer`, `supplier` feed
/// the station logic (lot part, lot quantity, shipment customer, receiving supplier).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub kind: CodeKind,
    /// Matched against the whole raw code; named groups such as `(?P<part>…)` are used.
    pub regex: Option<String>,
    /// Matches a GS1 element string / Digital Link that carries this AI (e.g. "00", "01").
    pub gs1_ai: Option<String>,
    /// Only at these stations (default: every station). Lets two stations read the same
    /// label format differently.
    #[serde(default)]
    pub stations: Vec<String>,
}

/// Station kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StationKind {
    Process,
    Assembly,
    Pack,
    Ship,
    Receive,
    Inspect,
}

impl StationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StationKind::Process => "process",
            StationKind::Assembly => "assembly",
            StationKind::Pack => "pack",
            StationKind::Ship => "ship",
            StationKind::Receive => "receive",
            StationKind::Inspect => "inspect",
        }
    }

    /// Kinds that work on a current unit and complete operations on it.
    pub fn has_units(self) -> bool {
        matches!(
            self,
            StationKind::Process | StationKind::Assembly | StationKind::Inspect
        )
    }
}

/// Tag edge that triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// 0 / false → non-zero / true.
    #[default]
    Rising,
    /// Non-zero / true → 0 / false.
    Falling,
    /// Any change of value (e.g. a cycle counter).
    Change,
}

/// A value a trigger compares with: number, bool or text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TriggerValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// `complete_on` / `start_on`: a tag edge, or the tag becoming equal to a value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub tag: String,
    /// Which edge fires (ignored when `equals` is given).
    #[serde(default)]
    pub edge: Edge,
    /// Trigger when the tag becomes equal to this value (instead of an edge).
    pub equals: Option<TriggerValue>,
}

/// `result = { tag = "press.ok", pass = 1 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultConfig {
    pub tag: String,
    /// The tag value that means pass; any other value (or no value) is a fail.
    #[serde(default = "default_pass")]
    pub pass: TriggerValue,
}

fn default_pass() -> TriggerValue {
    TriggerValue::Number(1.0)
}

/// A tag measured with its specification limits: a captured process parameter (`capture`) or
/// an inspected characteristic (`characteristics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredTag {
    /// Tag holding the measured value.
    pub tag: String,
    /// Name of the parameter / characteristic in the event; default: the tag name.
    pub name: Option<String>,
    /// Lower specification limit.
    pub lsl: Option<f64>,
    /// Upper specification limit.
    pub usl: Option<f64>,
}

impl MeasuredTag {
    /// The name in the event.
    pub fn event_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.tag)
    }
}

/// `[[station.feeder]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeederConfig {
    /// The part this feeder holds; a scanned lot of this part replaces the loaded one.
    pub part: String,
    /// Quantity of the part every completed unit consumed.
    #[serde(default = "default_qty")]
    pub qty_per_unit: f64,
}

fn default_qty() -> f64 {
    1.0
}

/// Whether a unit already completed at a station may be scanned there again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rework {
    /// The scan is rejected ("already completed at this station").
    #[default]
    Reject,
    /// The unit becomes current again; its next completion is another operation record.
    Allow,
}

/// One `[[station]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    pub id: String,
    /// Operation name, e.g. "OP10 press-fit bearing"; default: the station id.
    pub operation: Option<String>,
    pub kind: StationKind,
    /// Machine (equipment) the operation runs on.
    pub equipment: Option<String>,
    /// The edge that completes the operation of the current unit.
    pub complete_on: Option<TriggerConfig>,
    /// The edge that starts it (sets `started_at`); without it, `started_at` is when the unit
    /// became current.
    pub start_on: Option<TriggerConfig>,
    /// Pass / fail of the operation; without it every operation passes.
    pub result: Option<ResultConfig>,
    /// Tag holding the defect code.
    pub defect_code: Option<String>,
    /// Tag holding the recipe / program number (method).
    pub recipe: Option<String>,
    /// Process parameters snapshotted with every operation.
    #[serde(default)]
    pub capture: Vec<MeasuredTag>,
    /// Tags snapshotted with every operation.
    #[serde(default)]
    pub environment: Vec<String>,
    /// Material feeders (one per part).
    #[serde(default)]
    pub feeder: Vec<FeederConfig>,

    /// String tag holding the serial read by a fixed camera / RFID head: a new non-empty value
    /// makes it the current unit (as if scanned).
    pub unit_tag: Option<String>,
    /// A scanned code that logs the operator out (exactly this text).
    pub logout_code: Option<String>,
    /// A scanned code that completes the operation of the current unit, for stations without a
    /// PLC edge (manual assembly, packing tables).
    pub complete_code: Option<String>,
    /// This is the line's first station: a unit that becomes current here is started
    /// (`unit_started`, with the line's work order).
    #[serde(default)]
    pub starts_units: bool,
    /// Part number of units started here when the work order does not tell it.
    pub part: Option<String>,
    /// Part of each work order (work order → part), for `unit_started`.
    #[serde(default)]
    pub work_order_parts: BTreeMap<String, String>,
    /// String tag holding the line's current work order (instead of, or as well as, scanning).
    pub work_order_tag: Option<String>,
    /// A unit already completed at this station scanned again: `reject` (default) or `allow`.
    #[serde(default)]
    pub rework: Rework,
    /// How many completed serials the station remembers for the rework check.
    #[serde(default = "default_rework_memory")]
    pub rework_memory: usize,
    /// assembly: this code (or `CODE:reason`) makes the next scanned child a disassembly.
    pub disassemble_code: Option<String>,
    /// Reason of a disassembly when the code carries none.
    #[serde(default = "default_disassemble_reason")]
    pub disassemble_reason: String,
    /// assembly: this edge removes every child bound here to the current unit (`disassembled`).
    pub disassemble_on: Option<TriggerConfig>,
    /// pack: the level of the containers opened here (`case` holds units; `pallet` holds cases
    /// and units).
    pub level: Option<ContainerLevel>,
    /// pack: the container closes after this many children.
    pub pack_size: Option<u32>,
    /// pack / ship: a scanned code that closes the open container / shipment.
    pub close_code: Option<String>,
    /// pack: this code makes the next scanned child an unpack from the open container (or from
    /// the container named by the scan that follows when none is open).
    pub unpack_code: Option<String>,
    /// ship: customer of every shipment opened here, unless the label or `shipment_customers`
    /// says otherwise.
    pub customer: Option<String>,
    /// ship: customer of known shipments (shipment → customer).
    #[serde(default)]
    pub shipment_customers: BTreeMap<String, String>,
    /// GTIN (14 digits) → part number, for labels carrying AI 01 (received lots, feeder lots,
    /// work orders); an unknown GTIN is the part itself. The maps of all stations are merged.
    #[serde(default)]
    pub gtin_parts: BTreeMap<String, String>,
    /// receive: supplier of received lots unless the label says (AI 412 or a `supplier` group).
    pub supplier: Option<String>,
    /// inspect: characteristics recorded as `quality_check` on `complete_on`.
    #[serde(default)]
    pub characteristics: Vec<MeasuredTag>,
    /// Check every unit scanned here against its route and every scanned lot or unit against
    /// the holds before the scan is used (`[route]`, docs/routing.md); a refused scan is a
    /// `scan_rejected` naming why.
    #[serde(default)]
    pub enforce_route: bool,
    /// With `enforce_route`: the tag written with `ok` when a checked scan is accepted and
    /// `nok` when it is refused (docs/routing.md, "Interlock").
    pub interlock: Option<InterlockConfig>,
}

/// `interlock = { tag = "st30.ok_to_run", ok = 1, nok = 0 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterlockConfig {
    /// A `writable = true` tag of a modbus-tcp device (coil, or holding register).
    pub tag: String,
    #[serde(default = "default_ok")]
    pub ok: f64,
    #[serde(default)]
    pub nok: f64,
}

fn default_ok() -> f64 {
    1.0
}

fn default_rework_memory() -> usize {
    5000
}
fn default_disassemble_reason() -> String {
    "disassembly".to_owned()
}

impl StationConfig {
    /// The operation name in events.
    pub fn operation_name(&self) -> &str {
        self.operation.as_deref().unwrap_or(&self.id)
    }

    /// Every tag this station reads, with the config path naming it.
    pub fn tag_refs(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = Vec::new();
        if let Some(i) = &self.interlock {
            out.push(("interlock.tag".into(), &i.tag));
        }
        if let Some(t) = &self.complete_on {
            out.push(("complete_on.tag".into(), &t.tag));
        }
        if let Some(t) = &self.start_on {
            out.push(("start_on.tag".into(), &t.tag));
        }
        if let Some(t) = &self.disassemble_on {
            out.push(("disassemble_on.tag".into(), &t.tag));
        }
        if let Some(r) = &self.result {
            out.push(("result.tag".into(), &r.tag));
        }
        if let Some(t) = &self.defect_code {
            out.push(("defect_code".into(), t));
        }
        if let Some(t) = &self.recipe {
            out.push(("recipe".into(), t));
        }
        if let Some(t) = &self.unit_tag {
            out.push(("unit_tag".into(), t));
        }
        if let Some(t) = &self.work_order_tag {
            out.push(("work_order_tag".into(), t));
        }
        for (j, c) in self.capture.iter().enumerate() {
            out.push((format!("capture[{j}].tag"), &c.tag));
        }
        for (j, e) in self.environment.iter().enumerate() {
            out.push((format!("environment[{j}]"), e));
        }
        for (j, c) in self.characteristics.iter().enumerate() {
            out.push((format!("characteristics[{j}].tag"), &c.tag));
        }
        out
    }
}

impl PatternConfig {
    /// The checks of this pattern on its own; `at` is its path (`pattern[0]`).
    pub(crate) fn check(&self, at: &str, v: &mut Validator<'_>) {
        match (&self.regex, &self.gs1_ai) {
            (None, None) => v.error(at, "needs `regex` or `gs1_ai`"),
            (Some(_), Some(_)) => {
                v.error(format!("{at}.gs1_ai"), "give `regex` or `gs1_ai`, not both");
            }
            (Some(r), None) => {
                if let Err(e) = regex::Regex::new(r) {
                    v.error(
                        format!("{at}.regex"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            (None, Some(ai)) => {
                if !(2..=4).contains(&ai.len()) || !ai.bytes().all(|b| b.is_ascii_digit()) {
                    v.error(
                        format!("{at}.gs1_ai"),
                        format!("{ai:?} is not a GS1 application identifier (2 to 4 digits)"),
                    );
                }
            }
        }
    }
}

/// The station kinds that work on units, as named in messages.
const UNIT_KINDS: &str = "process, assembly and inspect";

impl StationConfig {
    /// The checks of this station on its own; `at` is its path (`station[3]`).
    pub(crate) fn check(&self, at: &str, v: &mut Validator<'_>) {
        let mut parts = HashSet::new();
        for (j, f) in self.feeder.iter().enumerate() {
            if !parts.insert(f.part.as_str()) {
                v.error(
                    format!("{at}.feeder[{j}].part"),
                    format!(
                        "duplicate feeder part {:?} (one feeder per part and station)",
                        f.part
                    ),
                );
            }
            if !(f.qty_per_unit.is_finite() && f.qty_per_unit >= 0.0) {
                v.error(
                    format!("{at}.feeder[{j}].qty_per_unit"),
                    "must be a number ≥ 0",
                );
            }
        }
        for (key, list) in [
            ("capture", &self.capture),
            ("characteristics", &self.characteristics),
        ] {
            for (j, m) in list.iter().enumerate() {
                if let (Some(l), Some(u)) = (m.lsl, m.usl)
                    && l > u
                {
                    v.error(format!("{at}.{key}[{j}].lsl"), "lsl is above usl");
                }
            }
        }
        self.check_kind(at, v);
        self.check_codes(at, v);
        for gtin in self.gtin_parts.keys() {
            if gtin.len() != 14 || !gtin.bytes().all(|b| b.is_ascii_digit()) {
                v.error(
                    format!("{at}.gtin_parts"),
                    format!("{gtin:?} is not a GTIN-14 (14 digits)"),
                );
            }
        }
        if self.rework_memory == 0 && self.rework == Rework::Reject {
            v.error(
                format!("{at}.rework_memory"),
                "must be at least 1 with rework = \"reject\"",
            );
        }
    }

    /// What the station's kind needs, and the keys that belong to other kinds.
    fn check_kind(&self, at: &str, v: &mut Validator<'_>) {
        match self.kind {
            StationKind::Pack => {
                if self.level.is_none() {
                    v.error(
                        format!("{at}.level"),
                        "a pack station needs `level = \"case\"` or `level = \"pallet\"`",
                    );
                }
                if self.pack_size == Some(0) {
                    v.error(format!("{at}.pack_size"), "must be at least 1");
                }
            }
            StationKind::Inspect if self.characteristics.is_empty() => {
                v.error(
                    format!("{at}.characteristics"),
                    "an inspect station needs at least one characteristic",
                );
            }
            _ => {}
        }
        let units = self.kind.has_units();
        if units && self.complete_on.is_none() && self.complete_code.is_none() {
            v.error(
                format!("{at}.complete_on"),
                format!(
                    "a {} station needs `complete_on` (a tag edge) or `complete_code` (a scanned code) to complete its units",
                    self.kind.as_str()
                ),
            );
        }
        let is = |k: StationKind| self.kind == k;
        // (key, given, allowed at this kind, the kinds it is for)
        for (key, given, allowed, kinds) in [
            ("complete_on", self.complete_on.is_some(), units, UNIT_KINDS),
            ("unit_tag", self.unit_tag.is_some(), units, UNIT_KINDS),
            ("feeder", !self.feeder.is_empty(), units, UNIT_KINDS),
            ("starts_units", self.starts_units, units, UNIT_KINDS),
            ("level", self.level.is_some(), is(StationKind::Pack), "pack"),
            (
                "pack_size",
                self.pack_size.is_some(),
                is(StationKind::Pack),
                "pack",
            ),
            (
                "unpack_code",
                self.unpack_code.is_some(),
                is(StationKind::Pack),
                "pack",
            ),
            (
                "disassemble_code",
                self.disassemble_code.is_some(),
                is(StationKind::Assembly),
                "assembly",
            ),
            (
                "disassemble_on",
                self.disassemble_on.is_some(),
                is(StationKind::Assembly),
                "assembly",
            ),
            (
                "shipment_customers",
                !self.shipment_customers.is_empty(),
                is(StationKind::Ship),
                "ship",
            ),
            (
                "characteristics",
                !self.characteristics.is_empty(),
                is(StationKind::Inspect),
                "inspect",
            ),
            (
                "enforce_route",
                self.enforce_route,
                !is(StationKind::Receive),
                "process, assembly, inspect, pack and ship",
            ),
        ] {
            if given && !allowed {
                v.error(
                    format!("{at}.{key}"),
                    format!(
                        "`{key}` is for {kinds} stations, this one is kind = \"{}\"",
                        self.kind.as_str()
                    ),
                );
            }
        }
    }

    /// Control codes are non-empty and distinct.
    fn check_codes(&self, at: &str, v: &mut Validator<'_>) {
        let mut codes: Vec<(&str, &str)> = Vec::new();
        for (key, code) in [
            ("logout_code", &self.logout_code),
            ("complete_code", &self.complete_code),
            ("disassemble_code", &self.disassemble_code),
            ("close_code", &self.close_code),
            ("unpack_code", &self.unpack_code),
        ] {
            let Some(code) = code else { continue };
            if code.is_empty() {
                v.error(format!("{at}.{key}"), "must not be empty");
            } else if let Some((other, _)) = codes.iter().find(|(_, c)| *c == code) {
                v.error(
                    format!("{at}.{key}"),
                    format!("{code:?} is already the station's `{other}`"),
                );
            }
            codes.push((key, code));
        }
    }

    /// One line describing the station's wiring, for `threadline-gateway check`:
    /// `ST10 process "OP10 press-fit bearing" on PRESS-1: scanners ["st10-scanner"]; unit from scan; completes on press.cycle_done rising; …`.
    /// `scanners` are the ids of the readers that feed it.
    pub fn wiring(&self, scanners: &[&str]) -> String {
        let mut parts = vec![format!("scanners {scanners:?}")];
        if self.kind.has_units() {
            self.unit_wiring(&mut parts);
        }
        if let Some(l) = self.level {
            let size = self.pack_size.map_or(String::new(), |n| format!(" of {n}"));
            parts.push(format!("packs {}{size}", l.as_str()));
        }
        if !self.characteristics.is_empty() {
            let c: Vec<&str> = self
                .characteristics
                .iter()
                .map(|c| c.tag.as_str())
                .collect();
            parts.push(format!("inspects {c:?}"));
        }
        if self.enforce_route {
            parts.push("enforces route and holds".to_owned());
        }
        if let Some(il) = &self.interlock {
            parts.push(format!(
                "interlock {} (ok {}, nok {})",
                il.tag, il.ok, il.nok
            ));
        }
        let equipment = self
            .equipment
            .as_deref()
            .map_or(String::new(), |e| format!(" on {e}"));
        format!(
            "{} {} {:?}{equipment}: {}",
            self.id,
            self.kind.as_str(),
            self.operation_name(),
            parts.join("; ")
        )
    }

    /// The wiring of a station that works on units: where units come from, what completes them.
    fn unit_wiring(&self, parts: &mut Vec<String>) {
        parts.push(match &self.unit_tag {
            Some(t) => format!("unit from scan or tag {t}"),
            None => "unit from scan".to_owned(),
        });
        if self.starts_units {
            parts.push("starts units".to_owned());
        }
        if let Some(t) = &self.start_on {
            parts.push(format!("starts on {}", t.text()));
        }
        let mut done = Vec::new();
        if let Some(t) = &self.complete_on {
            done.push(t.text());
        }
        if let Some(c) = &self.complete_code {
            done.push(format!("code {c:?}"));
        }
        parts.push(format!("completes on {}", done.join(" or ")));
        if let Some(r) = &self.result {
            parts.push(format!("result {}", r.tag));
        }
        if !self.capture.is_empty() {
            let c: Vec<&str> = self.capture.iter().map(|c| c.tag.as_str()).collect();
            parts.push(format!("captures {c:?}"));
        }
        if !self.environment.is_empty() {
            parts.push(format!("environment {:?}", self.environment));
        }
        if !self.feeder.is_empty() {
            let f: Vec<String> = self
                .feeder
                .iter()
                .map(|f| format!("{}×{}", f.part, f.qty_per_unit))
                .collect();
            parts.push(format!("feeders [{}]", f.join(", ")));
        }
        if self.rework == Rework::Allow {
            parts.push("rework allowed".to_owned());
        }
    }
}

impl TriggerConfig {
    /// `press.cycle_done rising`, `press.state = 3`, …
    fn text(&self) -> String {
        match &self.equals {
            Some(TriggerValue::Bool(b)) => format!("{} = {b}", self.tag),
            Some(TriggerValue::Number(n)) => format!("{} = {n}", self.tag),
            Some(TriggerValue::Text(s)) => format!("{} = {s:?}", self.tag),
            None => {
                let edge = match self.edge {
                    Edge::Rising => "rising",
                    Edge::Falling => "falling",
                    Edge::Change => "change",
                };
                format!("{} {edge}", self.tag)
            }
        }
    }
}
