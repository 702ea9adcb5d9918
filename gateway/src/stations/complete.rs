//! Completing the operation of a station's current unit: the `operation_completed` record
//! (parameters, environment, result, recipe, defect code, materials) and, at an inspect
//! station, one `quality_check` per characteristic.

use threadline_shared::event::{
    EnvironmentValue, MaterialUse, OperationCompleted, Parameter, QualityCheck, RecordBody,
    TagValue, Verdict,
};
use threadline_shared::time::Timestamp;

use super::state::CurrentUnit;
use super::station::{Station, StationEvent, reason};
use super::triggers::matches_value;

impl Station<'_> {
    /// Completes the operation of the current unit at `ts` (the edge's floor time); `source`
    /// and `raw` name what completed it (a tag edge or a scanned code), for the rejection when
    /// there is no current unit.
    pub(super) fn complete(&mut self, ts: Timestamp, source: &str, raw: &str) {
        let cfg = self.cfg;
        let Some(unit) = self.st.unit.take() else {
            self.counters.orphan_completions += 1;
            tracing::warn!(station = %cfg.id, source, "completion with no current unit");
            let why = reason::COMPLETION_WITHOUT_UNIT.to_owned();
            self.reject_raw(source, raw, ts, why);
            return;
        };
        let parameters = self.parameters(&unit);
        let environment = self.environment();
        let mut result = match &cfg.result {
            None => Verdict::Pass,
            Some(r) => match self.value(&r.tag) {
                Some(v) if matches_value(v, &r.pass) => Verdict::Pass,
                _ => Verdict::Fail,
            },
        };
        let recipe = cfg.recipe.as_deref().and_then(|t| self.value(t));
        let defect_code = cfg
            .defect_code
            .as_deref()
            .and_then(|t| self.value(t))
            .filter(|v| v.as_f64() != Some(0.0) && !v.to_text().trim().is_empty());
        let (checks, in_spec) = self.quality_checks(&unit, ts);
        if !in_spec {
            result = Verdict::Fail;
        }
        let completed = OperationCompleted {
            unit: unit.id.clone(),
            station: cfg.id.clone(),
            operation: cfg.operation_name().to_owned(),
            equipment: cfg.equipment.clone(),
            operator: self.st.operator.clone(),
            recipe: recipe.map(TagValue::to_text),
            started_at: Some(unit.started_at.unwrap_or(unit.since)),
            result,
            defect_code: defect_code.map(TagValue::to_text),
            parameters,
            environment,
            materials: self.materials(&unit),
        };
        self.emit(ts, RecordBody::OperationCompleted(completed));
        self.out.extend(checks);
        self.forget(unit);
    }

    fn value(&self, tag: &str) -> Option<&TagValue> {
        self.facts.values.get(tag)
    }

    fn tag_unit(&self, tag: &str) -> Option<String> {
        self.facts.units.get(tag).cloned()
    }

    /// `capture`: the tags' values with their limits; a tag with no good value is left out.
    fn parameters(&self, unit: &CurrentUnit) -> Vec<Parameter> {
        let cfg = self.cfg;
        let mut parameters = Vec::new();
        for c in &cfg.capture {
            match self.value(&c.tag) {
                Some(v) => parameters.push(Parameter {
                    name: c.event_name().to_owned(),
                    value: v.clone(),
                    unit: self.tag_unit(&c.tag),
                    lsl: c.lsl,
                    usl: c.usl,
                }),
                None => {
                    tracing::warn!(station = %cfg.id, tag = %c.tag, unit = %unit.id, "captured tag has no good value; parameter omitted")
                }
            }
        }
        parameters
    }

    /// `environment`: the tags that have a good value.
    fn environment(&self) -> Vec<EnvironmentValue> {
        self.cfg
            .environment
            .iter()
            .filter_map(|t| {
                self.value(t).map(|v| EnvironmentValue {
                    name: t.clone(),
                    value: v.clone(),
                    unit: self.tag_unit(t),
                })
            })
            .collect()
    }

    /// `characteristics`: one `quality_check` each, and whether all were measured and in spec
    /// (a characteristic with no good value has no check and fails the operation).
    fn quality_checks(&self, unit: &CurrentUnit, ts: Timestamp) -> (Vec<StationEvent>, bool) {
        let cfg = self.cfg;
        let mut all_pass = true;
        let mut checks = Vec::new();
        for c in &cfg.characteristics {
            let Some(v) = self.value(&c.tag) else {
                tracing::warn!(station = %cfg.id, tag = %c.tag, unit = %unit.id, "characteristic has no good value; check omitted, operation fails");
                all_pass = false;
                continue;
            };
            let p = Parameter {
                name: String::new(),
                value: v.clone(),
                unit: None,
                lsl: c.lsl,
                usl: c.usl,
            };
            let verdict = if p.in_spec() {
                Verdict::Pass
            } else {
                all_pass = false;
                Verdict::Fail
            };
            let check = QualityCheck {
                unit: unit.id.clone(),
                characteristic: c.event_name().to_owned(),
                value: v.clone(),
                unit_of_measure: self.tag_unit(&c.tag),
                lsl: c.lsl,
                usl: c.usl,
                result: verdict,
                station: Some(cfg.id.clone()),
                operator: self.st.operator.clone(),
            };
            checks.push(StationEvent {
                ts,
                body: RecordBody::QualityCheck(check),
            });
        }
        (checks, all_pass)
    }

    /// The lot in each feeder, consumed at the feeder's quantity per unit; an empty feeder is
    /// left out.
    fn materials(&self, unit: &CurrentUnit) -> Vec<MaterialUse> {
        let cfg = self.cfg;
        let mut materials = Vec::new();
        for f in &cfg.feeder {
            match self.st.feeders.get(&f.part) {
                Some(lot) => materials.push(MaterialUse {
                    lot: lot.clone(),
                    part: Some(f.part.clone()),
                    qty: f.qty_per_unit,
                }),
                None => {
                    tracing::warn!(station = %cfg.id, part = %f.part, unit = %unit.id, "feeder empty at completion: material not traced")
                }
            }
        }
        materials
    }

    /// After completion: the unit is no longer current, and is remembered as completed here
    /// (at most `rework_memory` serials) for the rework check.
    fn forget(&mut self, unit: CurrentUnit) {
        let st = &mut *self.st;
        st.children.clear();
        st.pending = None;
        st.completed.retain(|s| s != &unit.id);
        st.completed.push_back(unit.id);
        while st.completed.len() > self.cfg.rework_memory {
            st.completed.pop_front();
        }
    }
}
