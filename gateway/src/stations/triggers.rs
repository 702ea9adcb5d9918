//! Tag changes at a station: the work order and unit tags, and the `start_on`, `complete_on`
//! and `disassemble_on` edges; and when a trigger fires.

use threadline_shared::event::TagValue;
use threadline_shared::time::Timestamp;

use super::config::{Edge, TriggerConfig, TriggerValue};
use super::station::Station;

impl Station<'_> {
    /// Trigger tag `tag` changed from `prev` to `value` (a good value, different from `prev`).
    pub(super) fn on_trigger(
        &mut self,
        tag: &str,
        prev: Option<&TagValue>,
        value: &TagValue,
        ts: Timestamp,
    ) {
        let cfg = self.cfg;
        if cfg.work_order_tag.as_deref() == Some(tag) {
            let wo = value.to_text();
            if !wo.is_empty() && prev.is_none_or(|p| p.to_text() != wo) {
                self.line.work_order = Some(wo);
                self.line.work_order_part = None;
            }
        }
        if cfg.unit_tag.as_deref() == Some(tag) {
            // PLC strings are often padded with NULs or blanks.
            let clean = |v: &TagValue| {
                v.to_text()
                    .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_owned()
            };
            let serial = clean(value);
            if !serial.is_empty() && prev.is_none_or(|p| clean(p) != serial) {
                let source = format!("tag:{tag}");
                self.set_unit(&serial, ts, &source, &serial);
            }
        }
        let fired = |t: &Option<TriggerConfig>| {
            t.as_ref()
                .is_some_and(|t| t.tag == tag && fires(t, prev, value))
        };
        if fired(&cfg.start_on) {
            match &mut self.st.unit {
                Some(u) => u.started_at = Some(ts),
                None => {
                    tracing::info!(station = %cfg.id, tag, "start edge with no current unit")
                }
            }
        }
        if fired(&cfg.complete_on) {
            let raw = format!("{tag}={}", value.to_text());
            self.complete(ts, &format!("tag:{tag}"), &raw);
        }
        if fired(&cfg.disassemble_on) {
            self.disassemble_all(ts);
        }
    }
}

fn truthy(v: &TagValue) -> bool {
    match v.as_f64() {
        Some(n) => n != 0.0,
        None => !v.to_text().trim().is_empty(),
    }
}

/// Whether a tag value equals a configured value (`equals`, `result.pass`).
pub(super) fn matches_value(v: &TagValue, want: &TriggerValue) -> bool {
    match want {
        TriggerValue::Bool(b) => v.as_f64().is_some_and(|n| (n != 0.0) == *b),
        TriggerValue::Number(n) => v.as_f64().is_some_and(|x| (x - n).abs() < 1e-9),
        TriggerValue::Text(t) => v.to_text() == *t,
    }
}

/// Whether a trigger fires on the change `prev` → `now`. With no previous value (first value
/// ever, nothing persisted) nothing fires: a level is not an edge.
fn fires(t: &TriggerConfig, prev: Option<&TagValue>, now: &TagValue) -> bool {
    let Some(prev) = prev else { return false };
    if let Some(eq) = &t.equals {
        return matches_value(now, eq) && !matches_value(prev, eq);
    }
    match t.edge {
        Edge::Rising => !truthy(prev) && truthy(now),
        Edge::Falling => truthy(prev) && !truthy(now),
        Edge::Change => prev != now,
    }
}
