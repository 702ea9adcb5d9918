//! `[[pattern]]` and `[[station]]` tables.

use serde::Deserialize;
use threadline_shared::config::Validator;

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

/// One `[[pattern]]`: classifies a scanned code by regex or by a GS1 application identifier.
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

/// Tag edge that triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    #[default]
    Rising,
    Falling,
    Change,
}

/// `complete_on` / `start_on`: a tag edge, or the tag becoming equal to a value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub tag: String,
    #[serde(default)]
    pub edge: Edge,
    /// Trigger when the tag becomes equal to this value (instead of an edge).
    #[serde(default)]
    pub equals: Option<f64>,
}

/// `result = { tag = "press.ok", pass = 1 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultConfig {
    pub tag: String,
    /// The tag value that means pass.
    #[serde(default = "default_pass")]
    pub pass: f64,
}

fn default_pass() -> f64 {
    1.0
}

/// One captured parameter with its specification limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    pub tag: String,
    /// Name in the event; default: the tag name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lsl: Option<f64>,
    #[serde(default)]
    pub usl: Option<f64>,
}

/// `[[station.feeder]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeederConfig {
    pub part: String,
    #[serde(default = "default_qty")]
    pub qty_per_unit: f64,
}

fn default_qty() -> f64 {
    1.0
}

/// One `[[station]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    pub id: String,
    /// Operation name, e.g. "OP10 press-fit bearing".
    #[serde(default)]
    pub operation: Option<String>,
    pub kind: StationKind,
    #[serde(default)]
    pub equipment: Option<String>,
    #[serde(default)]
    pub complete_on: Option<TriggerConfig>,
    #[serde(default)]
    pub start_on: Option<TriggerConfig>,
    #[serde(default)]
    pub result: Option<ResultConfig>,
    /// Tag holding the defect code.
    #[serde(default)]
    pub defect_code: Option<String>,
    /// Tag holding the recipe / program number (method).
    #[serde(default)]
    pub recipe: Option<String>,
    #[serde(default)]
    pub capture: Vec<CaptureConfig>,
    /// Tags snapshotted with every operation.
    #[serde(default)]
    pub environment: Vec<String>,
    #[serde(default)]
    pub feeder: Vec<FeederConfig>,
}

/// Cross-field checks of patterns and stations.
pub(crate) fn validate(cfg: &GatewayConfig, v: &mut Validator<'_>) {
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
            (None, Some(_)) => {}
        }
    }
    let tags = crate::drivers::config::tag_names(cfg);
    let mut ids = std::collections::HashSet::new();
    for (i, s) in cfg.station.iter().enumerate() {
        let at = format!("station[{i}]");
        if !ids.insert(s.id.as_str()) {
            v.error(
                format!("{at}.id"),
                format!("duplicate station id {:?}", s.id),
            );
        }
        let check = |v: &mut Validator<'_>, path: String, tag: &str| {
            if !tags.contains(tag) {
                v.error(
                    path,
                    format!("unknown tag {tag:?}: no [[device.tag]] has this name"),
                );
            }
        };
        if let Some(t) = &s.complete_on {
            check(v, format!("{at}.complete_on.tag"), &t.tag);
        }
        if let Some(t) = &s.start_on {
            check(v, format!("{at}.start_on.tag"), &t.tag);
        }
        if let Some(r) = &s.result {
            check(v, format!("{at}.result.tag"), &r.tag);
        }
        if let Some(t) = &s.defect_code {
            check(v, format!("{at}.defect_code"), t);
        }
        if let Some(t) = &s.recipe {
            check(v, format!("{at}.recipe"), t);
        }
        for (j, c) in s.capture.iter().enumerate() {
            check(v, format!("{at}.capture[{j}].tag"), &c.tag);
        }
        for (j, e) in s.environment.iter().enumerate() {
            check(v, format!("{at}.environment[{j}]"), e);
        }
    }
}
