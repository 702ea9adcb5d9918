//! `[[pattern]]` and `[[station]]` tables.
//!
//! The keys of PRODUCT.md work as documented there; everything added for the station kinds
//! (`unit_tag`, `logout_code`, `starts_units`, packing, shipping, receiving, inspection) is
//! optional and documented on its field and in `docs/stations.md`.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use threadline_shared::config::Validator;
use threadline_shared::event::ContainerLevel;

use crate::config::GatewayConfig;

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
    #[serde(default)]
    pub regex: Option<String>,
    /// Matches a GS1 element string / Digital Link that carries this AI (e.g. "00", "01").
    #[serde(default)]
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
    #[serde(default)]
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

/// One captured parameter with its specification limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    pub tag: String,
    /// Name in the event; default: the tag name.
    #[serde(default)]
    pub name: Option<String>,
    /// Lower specification limit.
    #[serde(default)]
    pub lsl: Option<f64>,
    /// Upper specification limit.
    #[serde(default)]
    pub usl: Option<f64>,
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

/// One inspected characteristic of an `inspect` station.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharacteristicConfig {
    /// Tag holding the measured value.
    pub tag: String,
    /// Characteristic name in `quality_check`; default: the tag name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lsl: Option<f64>,
    #[serde(default)]
    pub usl: Option<f64>,
}

/// One `[[station]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    pub id: String,
    /// Operation name, e.g. "OP10 press-fit bearing"; default: the station id.
    #[serde(default)]
    pub operation: Option<String>,
    pub kind: StationKind,
    /// Machine (equipment) the operation runs on.
    #[serde(default)]
    pub equipment: Option<String>,
    /// The edge that completes the operation of the current unit.
    #[serde(default)]
    pub complete_on: Option<TriggerConfig>,
    /// The edge that starts it (sets `started_at`); without it, `started_at` is when the unit
    /// became current.
    #[serde(default)]
    pub start_on: Option<TriggerConfig>,
    /// Pass / fail of the operation; without it every operation passes.
    #[serde(default)]
    pub result: Option<ResultConfig>,
    /// Tag holding the defect code.
    #[serde(default)]
    pub defect_code: Option<String>,
    /// Tag holding the recipe / program number (method).
    #[serde(default)]
    pub recipe: Option<String>,
    /// Process parameters snapshotted with every operation.
    #[serde(default)]
    pub capture: Vec<CaptureConfig>,
    /// Tags snapshotted with every operation.
    #[serde(default)]
    pub environment: Vec<String>,
    /// Material feeders (one per part).
    #[serde(default)]
    pub feeder: Vec<FeederConfig>,

    /// String tag holding the serial read by a fixed camera / RFID head: a new non-empty value
    /// makes it the current unit (as if scanned).
    #[serde(default)]
    pub unit_tag: Option<String>,
    /// A scanned code that logs the operator out (exactly this text).
    #[serde(default)]
    pub logout_code: Option<String>,
    /// A scanned code that completes the operation of the current unit, for stations without a
    /// PLC edge (manual assembly, packing tables).
    #[serde(default)]
    pub complete_code: Option<String>,
    /// This is the line's first station: a unit that becomes current here is started
    /// (`unit_started`, with the line's work order).
    #[serde(default)]
    pub starts_units: bool,
    /// Part number of units started here when the work order does not tell it.
    #[serde(default)]
    pub part: Option<String>,
    /// Part of each work order (work order → part), for `unit_started`.
    #[serde(default)]
    pub work_order_parts: BTreeMap<String, String>,
    /// String tag holding the line's current work order (instead of, or as well as, scanning).
    #[serde(default)]
    pub work_order_tag: Option<String>,
    /// A unit already completed at this station scanned again: `reject` (default) or `allow`.
    #[serde(default)]
    pub rework: Rework,
    /// How many completed serials the station remembers for the rework check.
    #[serde(default = "default_rework_memory")]
    pub rework_memory: usize,
    /// assembly: this code (or `CODE:reason`) makes the next scanned child a disassembly.
    #[serde(default)]
    pub disassemble_code: Option<String>,
    /// Reason of a disassembly when the code carries none.
    #[serde(default = "default_disassemble_reason")]
    pub disassemble_reason: String,
    /// assembly: this edge removes every child bound here to the current unit (`disassembled`).
    #[serde(default)]
    pub disassemble_on: Option<TriggerConfig>,
    /// pack: the level of the containers opened here (`case` holds units; `pallet` holds cases
    /// and units).
    #[serde(default)]
    pub level: Option<ContainerLevel>,
    /// pack: the container closes after this many children.
    #[serde(default)]
    pub pack_size: Option<u32>,
    /// pack / ship: a scanned code that closes the open container / shipment.
    #[serde(default)]
    pub close_code: Option<String>,
    /// pack: this code makes the next scanned child an unpack from the open container (or from
    /// the container named by the scan that follows when none is open).
    #[serde(default)]
    pub unpack_code: Option<String>,
    /// ship: customer of every shipment opened here, unless the label or `shipment_customers`
    /// says otherwise.
    #[serde(default)]
    pub customer: Option<String>,
    /// ship: customer of known shipments (shipment → customer).
    #[serde(default)]
    pub shipment_customers: BTreeMap<String, String>,
    /// GTIN (14 digits) → part number, for labels carrying AI 01 (received lots, feeder lots,
    /// work orders); an unknown GTIN is the part itself. The maps of all stations are merged.
    #[serde(default)]
    pub gtin_parts: BTreeMap<String, String>,
    /// receive: supplier of received lots unless the label says (AI 412 or a `supplier` group).
    #[serde(default)]
    pub supplier: Option<String>,
    /// inspect: characteristics recorded as `quality_check` on `complete_on`.
    #[serde(default)]
    pub characteristics: Vec<CharacteristicConfig>,
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

/// Cross-field checks of patterns and stations.
pub(crate) fn validate(cfg: &GatewayConfig, v: &mut Validator<'_>) {
    let station_ids: HashSet<&str> = cfg.station.iter().map(|s| s.id.as_str()).collect();
    for (i, p) in cfg.pattern.iter().enumerate() {
        match (&p.regex, &p.gs1_ai) {
            (None, None) => v.error(format!("pattern[{i}]"), "needs `regex` or `gs1_ai`"),
            (Some(_), Some(_)) => v.error(
                format!("pattern[{i}].gs1_ai"),
                "give `regex` or `gs1_ai`, not both",
            ),
            (Some(r), None) => {
                if let Err(e) = regex::Regex::new(r) {
                    v.error(
                        format!("pattern[{i}].regex"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            (None, Some(ai)) => {
                if !(2..=4).contains(&ai.len()) || !ai.bytes().all(|b| b.is_ascii_digit()) {
                    v.error(
                        format!("pattern[{i}].gs1_ai"),
                        format!("{ai:?} is not a GS1 application identifier (2 to 4 digits)"),
                    );
                }
            }
        }
        for (j, s) in p.stations.iter().enumerate() {
            if !station_ids.contains(s.as_str()) {
                v.error(
                    format!("pattern[{i}].stations[{j}]"),
                    format!("unknown station {s:?}"),
                );
            }
        }
    }
    let tags = crate::drivers::config::tag_names(cfg);
    let mut ids = HashSet::new();
    for (i, s) in cfg.station.iter().enumerate() {
        let at = format!("station[{i}]");
        if !ids.insert(s.id.as_str()) {
            v.error(
                format!("{at}.id"),
                format!("duplicate station id {:?}", s.id),
            );
        }
        for (path, tag) in s.tag_refs() {
            if !tags.contains(tag) {
                v.error(
                    format!("{at}.{path}"),
                    format!("unknown tag {tag:?}: no [[device.tag]] has this name"),
                );
            }
        }
        let mut parts = HashSet::new();
        for (j, f) in s.feeder.iter().enumerate() {
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
        for (j, c) in s.capture.iter().enumerate() {
            if let (Some(l), Some(u)) = (c.lsl, c.usl)
                && l > u
            {
                v.error(format!("{at}.capture[{j}].lsl"), "lsl is above usl");
            }
        }
        for (j, c) in s.characteristics.iter().enumerate() {
            if let (Some(l), Some(u)) = (c.lsl, c.usl)
                && l > u
            {
                v.error(format!("{at}.characteristics[{j}].lsl"), "lsl is above usl");
            }
        }
        let not_for = |v: &mut Validator<'_>, present: bool, key: &str, kinds: &str| {
            if present {
                v.error(
                    format!("{at}.{key}"),
                    format!(
                        "`{key}` is for {kinds} stations, this one is kind = \"{}\"",
                        s.kind.as_str()
                    ),
                );
            }
        };
        let is = |k: StationKind| s.kind == k;
        match s.kind {
            StationKind::Pack => {
                if s.level.is_none() {
                    v.error(
                        format!("{at}.level"),
                        "a pack station needs `level = \"case\"` or `level = \"pallet\"`",
                    );
                }
                if s.pack_size == Some(0) {
                    v.error(format!("{at}.pack_size"), "must be at least 1");
                }
            }
            StationKind::Inspect if s.characteristics.is_empty() => {
                v.error(
                    format!("{at}.characteristics"),
                    "an inspect station needs at least one characteristic",
                );
            }
            _ => {}
        }
        if s.kind.has_units() && s.complete_on.is_none() && s.complete_code.is_none() {
            v.error(
                format!("{at}.complete_on"),
                format!(
                    "a {} station needs `complete_on` (a tag edge) or `complete_code` (a scanned code) to complete its units",
                    s.kind.as_str()
                ),
            );
        }
        if !s.kind.has_units() {
            not_for(
                v,
                s.complete_on.is_some(),
                "complete_on",
                "process, assembly and inspect",
            );
            not_for(
                v,
                s.unit_tag.is_some(),
                "unit_tag",
                "process, assembly and inspect",
            );
            not_for(
                v,
                !s.feeder.is_empty(),
                "feeder",
                "process, assembly and inspect",
            );
            not_for(
                v,
                s.starts_units,
                "starts_units",
                "process, assembly and inspect",
            );
        }
        not_for(
            v,
            !is(StationKind::Pack) && s.level.is_some(),
            "level",
            "pack",
        );
        not_for(
            v,
            !is(StationKind::Pack) && s.pack_size.is_some(),
            "pack_size",
            "pack",
        );
        not_for(
            v,
            !is(StationKind::Pack) && s.unpack_code.is_some(),
            "unpack_code",
            "pack",
        );
        not_for(
            v,
            !is(StationKind::Assembly) && s.disassemble_code.is_some(),
            "disassemble_code",
            "assembly",
        );
        not_for(
            v,
            !is(StationKind::Assembly) && s.disassemble_on.is_some(),
            "disassemble_on",
            "assembly",
        );
        not_for(
            v,
            !is(StationKind::Ship) && !s.shipment_customers.is_empty(),
            "shipment_customers",
            "ship",
        );
        not_for(
            v,
            !is(StationKind::Inspect) && !s.characteristics.is_empty(),
            "characteristics",
            "inspect",
        );
        let mut codes: Vec<(&str, &str)> = Vec::new();
        for (key, code) in [
            ("logout_code", &s.logout_code),
            ("complete_code", &s.complete_code),
            ("disassemble_code", &s.disassemble_code),
            ("close_code", &s.close_code),
            ("unpack_code", &s.unpack_code),
        ] {
            if let Some(code) = code {
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
        for gtin in s.gtin_parts.keys() {
            if gtin.len() != 14 || !gtin.bytes().all(|b| b.is_ascii_digit()) {
                v.error(
                    format!("{at}.gtin_parts"),
                    format!("{gtin:?} is not a GTIN-14 (14 digits)"),
                );
            }
        }
        if s.rework_memory == 0 && s.rework == Rework::Reject {
            v.error(
                format!("{at}.rework_memory"),
                "must be at least 1 with rework = \"reject\"",
            );
        }
    }
    let starters = cfg.station.iter().filter(|s| s.starts_units).count();
    let wo_tags: Vec<&str> = cfg
        .station
        .iter()
        .filter_map(|s| s.work_order_tag.as_deref())
        .collect();
    if starters == 0 && !wo_tags.is_empty() {
        v.error(
            "station",
            "`work_order_tag` is set but no station has `starts_units = true`; work orders are given to units started there",
        );
    }
}

fn trigger_text(t: &TriggerConfig) -> String {
    match &t.equals {
        Some(TriggerValue::Bool(b)) => format!("{} = {b}", t.tag),
        Some(TriggerValue::Number(n)) => format!("{} = {n}", t.tag),
        Some(TriggerValue::Text(s)) => format!("{} = {s:?}", t.tag),
        None => {
            let edge = match t.edge {
                Edge::Rising => "rising",
                Edge::Falling => "falling",
                Edge::Change => "change",
            };
            format!("{} {edge}", t.tag)
        }
    }
}

/// One line per station describing its wiring, for `threadline-gateway check`:
/// `ST10 process "OP10 press-fit bearing" on PRESS-1: scanners [st10-scanner]; unit from scan; completes on press.cycle_done rising; …`.
pub fn wiring(cfg: &GatewayConfig) -> Vec<String> {
    cfg.station
        .iter()
        .map(|s| {
            let scanners: Vec<&str> = cfg
                .scanner
                .iter()
                .filter(|r| r.station == s.id)
                .map(|r| r.id.as_str())
                .collect();
            let mut parts = vec![format!("scanners {scanners:?}")];
            if s.kind.has_units() {
                parts.push(match &s.unit_tag {
                    Some(t) => format!("unit from scan or tag {t}"),
                    None => "unit from scan".to_owned(),
                });
                if s.starts_units {
                    parts.push("starts units".to_owned());
                }
                if let Some(t) = &s.start_on {
                    parts.push(format!("starts on {}", trigger_text(t)));
                }
                let mut done = Vec::new();
                if let Some(t) = &s.complete_on {
                    done.push(trigger_text(t));
                }
                if let Some(c) = &s.complete_code {
                    done.push(format!("code {c:?}"));
                }
                parts.push(format!("completes on {}", done.join(" or ")));
                if let Some(r) = &s.result {
                    parts.push(format!("result {}", r.tag));
                }
                if !s.capture.is_empty() {
                    let c: Vec<&str> = s.capture.iter().map(|c| c.tag.as_str()).collect();
                    parts.push(format!("captures {c:?}"));
                }
                if !s.environment.is_empty() {
                    parts.push(format!("environment {:?}", s.environment));
                }
                if !s.feeder.is_empty() {
                    let f: Vec<String> = s
                        .feeder
                        .iter()
                        .map(|f| format!("{}×{}", f.part, f.qty_per_unit))
                        .collect();
                    parts.push(format!("feeders [{}]", f.join(", ")));
                }
                if s.rework == Rework::Allow {
                    parts.push("rework allowed".to_owned());
                }
            }
            if let Some(l) = s.level {
                let size = s.pack_size.map_or(String::new(), |n| format!(" of {n}"));
                parts.push(format!("packs {}{size}", l.as_str()));
            }
            if !s.characteristics.is_empty() {
                let c: Vec<&str> = s.characteristics.iter().map(|c| c.tag.as_str()).collect();
                parts.push(format!("inspects {c:?}"));
            }
            let equipment = s
                .equipment
                .as_deref()
                .map_or(String::new(), |e| format!(" on {e}"));
            format!(
                "{} {} {:?}{equipment}: {}",
                s.id,
                s.kind.as_str(),
                s.operation_name(),
                parts.join("; ")
            )
        })
        .collect()
}
