//! Everything about one product, in the order it happened: its five units (deepest level first,
//! each with its lots, operations and their parameters; the finished unit with its quality check
//! and press reading), then packing into a case, the case onto a pallet, the pallet shipped.
//!
//! Random values come from one seeded generator, drawn in a fixed order (per operation: every
//! parameter, then the hall environment; per finished unit: the quality check, then the
//! reading), so the same seed writes the same rows.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::layout::{CASE_SIZE, LEVELS, LOT_SIZE, Layout, PALLET_SIZE, ts};
use super::rows::{Edge, Item, Material, Operation, Parameter, QualityCheck, Reading};
use super::sink::Sink;

/// The epoch of every generated reading (one gateway session).
const READINGS_EPOCH: &str = "b0000000-0000-0000-0000-000000000001";

/// A process parameter of every operation, with its limits and nominal value.
struct ParamDef {
    name: &'static str,
    unit: &'static str,
    lsl: f64,
    usl: f64,
    nominal: f64,
}

const fn param(
    name: &'static str,
    unit: &'static str,
    lsl: f64,
    usl: f64,
    nominal: f64,
) -> ParamDef {
    ParamDef {
        name,
        unit,
        lsl,
        usl,
        nominal,
    }
}

/// Parameters of every operation.
const PARAM_DEFS: [ParamDef; 10] = [
    param("press.pressure", "bar", 180.0, 220.0, 200.0),
    param("press.force_peak", "kN", 8.0, 12.5, 10.0),
    param("press.stroke", "mm", 41.0, 43.0, 42.0),
    param("press.speed", "mm/s", 9.0, 11.0, 10.0),
    param("press.dwell", "ms", 180.0, 260.0, 220.0),
    param("screw.torque", "Nm", 4.5, 5.5, 5.0),
    param("screw.angle", "deg", 700.0, 780.0, 740.0),
    param("temp.part", "°C", 18.0, 30.0, 23.0),
    param("vision.offset", "mm", -0.2, 0.2, 0.0),
    param("leak.rate", "ml/min", 0.0, 2.0, 0.8),
];

/// An operation a unit goes through.
struct Step {
    station: &'static str,
    operation: &'static str,
    /// Equipment name prefix; two machines of each (`PRESS-1`, `PRESS-2`).
    equipment: &'static str,
}

/// Operations of a finished unit (level 1).
const FINISHED_STEPS: [Step; 3] = [
    Step {
        station: "ST10",
        operation: "OP10 press-fit",
        equipment: "PRESS",
    },
    Step {
        station: "ST20",
        operation: "OP20 screw",
        equipment: "SCREW",
    },
    Step {
        station: "ST30",
        operation: "OP30 leak test",
        equipment: "LEAK",
    },
];

/// Operations of a sub-assembly (levels 2 to 5).
const SUB_STEPS: [Step; 1] = [Step {
    station: "ST05",
    operation: "OP05 sub-assembly",
    equipment: "SUBPRESS",
}];

/// One unit being written.
struct Unit {
    /// The product it belongs to.
    p: u64,
    level: u64,
    id: i64,
    built: DateTime<Utc>,
}

/// Writes products one after the other; holds the random generator and the id counters.
pub(super) struct Products<'l> {
    layout: &'l Layout,
    rng: StdRng,
    last_operation: i64,
    last_check: i64,
    last_edge: i64,
    /// Scratch for an operation's environment JSON (reused: no allocation per operation).
    environment: String,
}

impl<'l> Products<'l> {
    pub(super) fn new(layout: &'l Layout, seed: u64) -> Products<'l> {
        Products {
            layout,
            rng: StdRng::seed_from_u64(seed),
            last_operation: 0,
            last_check: 0,
            last_edge: 0,
            environment: String::new(),
        }
    }

    /// Writes product `p` (products are written in order, from 0).
    pub(super) async fn write(&mut self, sink: &mut Sink, p: u64) -> anyhow::Result<()> {
        let t = self.layout.product_time(p);
        // Units, deepest level first (built first).
        for level in (1..=LEVELS).rev() {
            self.unit(sink, p, level, t).await?;
        }
        self.packing(sink, p, t).await
    }

    /// An open edge with the next edge id.
    fn edge<'a>(
        &mut self,
        parent_id: i64,
        child_id: i64,
        relation: &'a str,
        qty: Option<f64>,
        station: &'a str,
        valid_from: &'a str,
    ) -> Edge<'a> {
        self.last_edge += 1;
        Edge {
            id: self.last_edge,
            parent_id,
            child_id,
            relation,
            qty,
            station,
            valid_from,
            valid_to: None,
            closed_reason: None,
        }
    }

    /// The unit of `level` of product `p` (finished at `t`), its material and assembly edges,
    /// its operations, and for a finished unit its quality check and reading.
    async fn unit(
        &mut self,
        sink: &mut Sink,
        p: u64,
        level: u64,
        t: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let unit = Unit {
            p,
            level,
            id: self.layout.unit_id(p, level),
            built: t - Duration::minutes((level as i64 - 1) * 30),
        };
        let built = ts(unit.built);
        let serial = if level == 1 {
            format!("SN{p:010}")
        } else {
            format!("SA{level}-{p:010}")
        };
        let part = format!("P-L{level}");
        let wo = format!("WO-{:05}", p / 5_000);
        sink.push(&Item {
            part: Some(&part),
            work_order: Some(&wo),
            line: Some(if level == 1 { "line-1" } else { "line-sub" }),
            first_seen_at: Some(&built),
            ..Item::new(unit.id, "unit", &serial)
        })
        .await?;

        // Material: this level's part lot; level 5 also the fastener lot.
        let lot = self.layout.lot_id(level, p);
        let e = self.edge(unit.id, lot, "consumed", Some(1.0), "ST-MAT", &built);
        sink.push(&e).await?;
        if level == LEVELS {
            let fastener = self.layout.fastener_lot_of(p);
            let e = self.edge(unit.id, fastener, "consumed", Some(4.0), "ST-SCREW", &built);
            sink.push(&e).await?;
        }
        if level < LEVELS {
            let child = self.layout.unit_id(p, level + 1);
            let e = self.edge(unit.id, child, "assembled", Some(1.0), "ST-ASM", &built);
            sink.push(&e).await?;
        }

        // Operations: 3 on finished units, 1 on sub-assemblies; 10 parameters each.
        let steps: &[Step] = if level == 1 {
            &FINISHED_STEPS
        } else {
            &SUB_STEPS
        };
        for (k, step) in steps.iter().enumerate() {
            self.operation(sink, &unit, k, step).await?;
        }
        if level == 1 {
            self.quality_check(sink, unit.id, t).await?;
            self.reading(sink, p, t).await?;
        }
        Ok(())
    }

    /// Operation `k` of `unit`: the operation row, its parameters (~0.2 % of them out of
    /// spec, which fails the operation), and on the first one the lot it consumed.
    async fn operation(
        &mut self,
        sink: &mut Sink,
        unit: &Unit,
        k: usize,
        step: &Step,
    ) -> anyhow::Result<()> {
        self.last_operation += 1;
        let id = self.last_operation;
        let equipment = format!("{}-{}", step.equipment, 1 + (unit.p + k as u64) % 2);
        let operator = format!("OP{:04}", 1 + (unit.p / 4_800) % 20);
        let started = unit.built + Duration::seconds(k as i64 * 60);
        let completed = started + Duration::seconds(20);
        // The injected causes (module doc of `datagen`): the bad lot's products fail the leak
        // test (ST30, level 1) ~30 % of the time; PRESS-1 drifts in the drift window.
        let bad_leak = unit.level == 1
            && step.station == "ST30"
            && unit.p / LOT_SIZE == self.layout.bad_lot()
            && self.rng.random_range(0..100) < 30;
        let window = self.layout.drift_window();
        let drift = if unit.level == 1
            && step.station == "ST10"
            && equipment == "PRESS-1"
            && window.contains(&unit.p)
        {
            // Up by half a spread every 500 products, at most 2 spreads (inside the limits).
            ((unit.p - window.start) as f64 / 500.0 * 0.5).min(2.0)
        } else {
            0.0
        };
        let rng = &mut self.rng;
        let params = PARAM_DEFS.map(|d| {
            let spread = (d.usl - d.lsl) / 6.0;
            let mut v = d.nominal + rng.random_range(-2.5..2.5) * spread;
            if d.name == "press.pressure" && drift > 0.0 {
                v = (v + drift * spread).min(d.usl);
            }
            if bad_leak && d.name == "leak.rate" {
                v = d.usl + spread;
            }
            if rng.random_range(0..1000) < 2 {
                v = d.usl + spread; // a real out-of-spec value, ~0.2 % of parameters
            }
            Parameter {
                operation_id: id,
                name: d.name,
                value_num: (v * 1000.0).round() / 1000.0,
                unit: d.unit,
                lsl: d.lsl,
                usl: d.usl,
                in_spec: v >= d.lsl && v <= d.usl,
            }
        });
        let out_of_spec = params.iter().any(|x| !x.in_spec);
        self.environment.clear();
        let _ = write!(
            self.environment,
            "[{{\"name\":\"hall.temp\",\"value\":{:.1},\"unit\":\"°C\"}},{{\"name\":\"hall.humidity\",\"value\":{:.1},\"unit\":\"%\"}}]",
            21.0 + self.rng.random_range(-2.0..2.0),
            45.0 + self.rng.random_range(-10.0..10.0)
        );
        let recipe = format!("R{}", unit.level);
        sink.push(&Operation {
            id,
            unit_id: unit.id,
            station: step.station,
            operation: step.operation,
            equipment: &equipment,
            operator: &operator,
            recipe: &recipe,
            started_at: &ts(started),
            completed_at: &ts(completed),
            result: if out_of_spec { "fail" } else { "pass" },
            defect_code: out_of_spec.then_some("OOS"),
            out_of_spec,
            environment: &self.environment,
            gateway: if unit.level == 1 {
                "gw-line-1"
            } else {
                "gw-line-sub"
            },
        })
        .await?;
        for param in &params {
            sink.push(param).await?;
        }
        if k == 0 {
            sink.push(&Material {
                operation_id: id,
                lot_id: self.layout.lot_id(unit.level, unit.p),
                qty: 1.0,
            })
            .await?;
        }
        Ok(())
    }

    /// The bore check of a finished unit, 10 min after it was finished.
    async fn quality_check(
        &mut self,
        sink: &mut Sink,
        unit_id: i64,
        t: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.last_check += 1;
        sink.push(&QualityCheck {
            id: self.last_check,
            unit_id,
            characteristic: "bore.diameter",
            value_num: 12.0 + self.rng.random_range(-0.01..0.01),
            unit_of_measure: "mm",
            lsl: 11.99,
            usl: 12.02,
            result: "pass",
            station: "QC1",
            operator: "OP0100",
            checked_at: &ts(t + Duration::minutes(10)),
        })
        .await
    }

    /// The press pressure reading of finished product `p`, 5 s after it was finished.
    async fn reading(&mut self, sink: &mut Sink, p: u64, t: DateTime<Utc>) -> anyhow::Result<()> {
        sink.push(&Reading {
            gateway: "gw-line-1",
            epoch: READINGS_EPOCH,
            seq: p as i64 + 1,
            ts: &ts(t + Duration::seconds(5)),
            device: "press-plc",
            tag: "press.pressure",
            value_num: 200.0 + self.rng.random_range(-10.0..10.0),
            unit: "bar",
            quality: "good",
        })
        .await
    }

    /// Packing, with an occasional unpack/repack (a closed edge), and shipping.
    async fn packing(&mut self, sink: &mut Sink, p: u64, t: DateTime<Utc>) -> anyhow::Result<()> {
        let layout = self.layout;
        let uid = layout.unit_id(p, 1);
        let c = p / CASE_SIZE;
        let case = layout.case_id(c);
        if p.is_multiple_of(1_000) {
            let (packed, unpacked) = (ts(t + Duration::minutes(15)), ts(t + Duration::minutes(18)));
            let e = Edge {
                valid_to: Some(&unpacked),
                closed_reason: Some("unpacked"),
                ..self.edge(layout.rework_case, uid, "packed", None, "PK1", &packed)
            };
            sink.push(&e).await?;
        }
        let at = ts(t + Duration::minutes(20));
        let e = self.edge(case, uid, "packed", None, "PK1", &at);
        sink.push(&e).await?;
        // The last product of a case closes it onto its pallet; the last case of a pallet
        // ships the pallet.
        if p % CASE_SIZE == CASE_SIZE - 1 || p == layout.products - 1 {
            let pl = c / PALLET_SIZE;
            let pallet = layout.pallet_id(pl);
            let at = ts(t + Duration::minutes(30));
            let e = self.edge(pallet, case, "packed", None, "PK2", &at);
            sink.push(&e).await?;
            if c % PALLET_SIZE == PALLET_SIZE - 1 || c == layout.cases - 1 {
                let shipment = layout.shipment_id(pl / 2);
                let at = ts(t + Duration::hours(12));
                let e = self.edge(shipment, pallet, "shipped", None, "SHIP", &at);
                sink.push(&e).await?;
            }
        }
        Ok(())
    }
}
