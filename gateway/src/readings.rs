//! Readings: which tag updates are streamed as `reading` records (`record`, `deadband`).
//!
//! Drivers emit every change of a tag's value or quality; station logic sees all of them.
//! [`Deadband`] decides which also go to the outbox as the tag's time series.

use std::collections::HashMap;

use threadline_shared::event::{Quality, Reading, RecordBody, TagValue};

use crate::config::GatewayConfig;
use crate::drivers::TagUpdate;
use crate::outbox::NewRecord;

/// Per-tag recording rule.
#[derive(Debug, Clone)]
struct TagRule {
    deadband: f64,
    unit: Option<String>,
}

/// Decides which tag updates become `reading` records: tags with `record = true`, when the
/// value moved more than `deadband` from the last *recorded* value (any change for 0 or for
/// non-numeric values), and always when the quality changes.
pub struct Deadband {
    /// Tags with `record = true`.
    rules: HashMap<String, TagRule>,
    /// The last *recorded* value and quality of every tag.
    last: HashMap<String, (Option<TagValue>, Quality)>,
}

impl Deadband {
    pub fn new(cfg: &GatewayConfig) -> Deadband {
        let rules = cfg
            .device
            .iter()
            .flat_map(|d| d.tag.iter())
            .filter(|t| t.record)
            .map(|t| {
                (
                    t.name.clone(),
                    TagRule {
                        deadband: t.deadband,
                        unit: t.unit.clone(),
                    },
                )
            })
            .collect();
        Deadband {
            rules,
            last: HashMap::new(),
        }
    }

    /// Takes the tag rules of a reloaded config; the last recorded value of a tag that is still
    /// recorded is kept (no duplicate reading after a reload), the others are forgotten.
    pub fn reconfigure(&mut self, cfg: &GatewayConfig) {
        let next = Deadband::new(cfg);
        self.last.retain(|tag, _| next.rules.contains_key(tag));
        self.rules = next.rules;
    }

    /// The reading to record for `u`, if any.
    pub fn filter(&mut self, u: &TagUpdate) -> Option<NewRecord> {
        let rule = self.rules.get(&u.tag)?;
        let record = match self.last.get(&u.tag) {
            None => true,
            Some((last_value, last_quality)) => {
                *last_quality != u.quality
                    || match (last_value, &u.value) {
                        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
                            (Some(x), Some(y)) if rule.deadband > 0.0 => {
                                (x - y).abs() > rule.deadband
                            }
                            _ => a != b,
                        },
                        (None, None) => false,
                        _ => true,
                    }
            }
        };
        if !record {
            return None;
        }
        self.last
            .insert(u.tag.clone(), (u.value.clone(), u.quality));
        Some(NewRecord {
            ts: u.ts,
            body: RecordBody::Reading(Reading {
                device: u.device.clone(),
                tag: u.tag.clone(),
                value: u.value.clone(),
                unit: rule.unit.clone(),
                quality: u.quality,
                error: u.error.clone(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_text() -> String {
        r#"
[gateway]
id = "gw"
plant = "p"
line = "l"
data_dir = "/tmp/x"
[mqtt]
url = "mqtt://127.0.0.1:1"
[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:502"
  [[device.tag]]
  name = "p"
  area = "holding"
  address = 0
  type = "f32"
  deadband = 0.5
  unit = "bar"
  [[device.tag]]
  name = "hidden"
  area = "holding"
  address = 2
  record = false
"#
        .to_owned()
    }

    fn cfg() -> GatewayConfig {
        GatewayConfig::parse("t.toml", &cfg_text()).unwrap()
    }

    fn upd(tag: &str, v: Option<f64>, q: Quality) -> TagUpdate {
        TagUpdate {
            device: "plc".into(),
            tag: tag.into(),
            value: v.map(TagValue::Float),
            quality: q,
            error: None,
            ts: threadline_shared::time::now(),
        }
    }

    #[test]
    fn deadband_is_absolute_against_the_last_recorded_value_and_quality_changes_pass() {
        let mut d = Deadband::new(&cfg());
        let g = Quality::Good;
        assert!(d.filter(&upd("p", Some(10.0), g)).is_some());
        assert!(d.filter(&upd("p", Some(10.4), g)).is_none());
        // 10.9 vs last *recorded* 10.0 → moved 0.9 > 0.5.
        assert!(d.filter(&upd("p", Some(10.9), g)).is_some());
        assert!(d.filter(&upd("p", Some(10.5), g)).is_none());
        assert!(d.filter(&upd("p", None, Quality::Bad)).is_some());
        assert!(d.filter(&upd("p", None, Quality::Bad)).is_none());
        assert!(d.filter(&upd("p", Some(10.9), g)).is_some());
        assert!(d.filter(&upd("hidden", Some(1.0), g)).is_none());
        assert!(d.filter(&upd("unknown", Some(1.0), g)).is_none());
    }

    #[test]
    fn a_reload_keeps_the_last_value_of_tags_still_recorded_and_takes_new_deadbands() {
        let mut d = Deadband::new(&cfg());
        let g = Quality::Good;
        assert!(d.filter(&upd("p", Some(10.0), g)).is_some());
        let wider = GatewayConfig::parse(
            "t.toml",
            &cfg_text().replace("deadband = 0.5", "deadband = 2.0"),
        )
        .unwrap();
        d.reconfigure(&wider);
        // Same tag, same last value: 10.9 is inside the new 2.0 deadband, no duplicate reading.
        assert!(d.filter(&upd("p", Some(10.9), g)).is_none());
        assert!(d.filter(&upd("p", Some(12.5), g)).is_some());
        let unrecorded = GatewayConfig::parse(
            "t.toml",
            &cfg_text().replace("deadband = 0.5", "deadband = 0.5\n  record = false"),
        )
        .unwrap();
        d.reconfigure(&unrecorded);
        assert!(d.filter(&upd("p", Some(20.0), g)).is_none());
    }
}
