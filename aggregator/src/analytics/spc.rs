//! Statistical process control of one station parameter: I-MR and X̄-R charts, the Western
//! Electric and Nelson run rules, process capability. Pure functions of the values in time order
//! ([`chart`]); the query that reads them is [`spc`].
//!
//! - **I-MR** (individuals): center = mean of the values, σ_within = MR̄ / d2(2) = MR̄ / 1.128
//!   (MR = |xᵢ − xᵢ₋₁|), control limits center ± 3σ_within; the moving-range chart has
//!   center MR̄, UCL = D4(2)·MR̄, LCL = 0.
//! - **X̄-R**: consecutive values in subgroups of 2–10 (a trailing incomplete subgroup is left
//!   out and counted in `excluded`); center = X̿ (mean of the subgroup means),
//!   σ_within = R̄ / d2(n), limits X̿ ± A2·R̄; range chart D3·R̄ … D4·R̄.
//! - **Capability**: Cp = (USL − LSL) / 6σ_within, Cpk = min(USL − μ, μ − LSL) / 3σ_within (one
//!   side when only one limit exists; Cp needs both); Pp / Ppk the same with σ_overall, the
//!   sample standard deviation (n − 1) of the individual values.
//! - **Rules**, on the charted points with zone width s = (UCL − center) / 3 (σ_within for I-MR,
//!   σ_within/√n for X̄-R). A violation is marked on the point that completes its pattern, and
//!   for the "k of m beyond" rules only when that point is itself one of the k:
//!   `we1` one point beyond 3s; `we2` 2 of 3 beyond 2s, same side; `we3` 4 of 5 beyond 1s, same
//!   side; `we4` 8 in a row on one side of the center; and the four Nelson rules the Western
//!   Electric ones do not already cover (Nelson's 3, 4, 7, 8, numbered here 5–8 after them):
//!   `n5` 6 in a row steadily increasing or decreasing (trend), `n6` 14 in a row alternating up
//!   and down, `n7` 15 in a row within 1s (stratification), `n8` 8 in a row beyond 1s with
//!   points on both sides (mixture). "Beyond" is strict; a point on the center line breaks a
//!   run, equal neighbours break a trend or an alternation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Db;
use crate::store::sql::{self, Sql};
use crate::trace::QueryError;

/// At most this many values are charted (the newest); more sets `truncated`.
pub const MAX_POINTS: usize = 100_000;

/// Control chart constants for subgroup size n (Montgomery, *Introduction to Statistical
/// Quality Control*, Appendix VI): (n, d2, A2, D3, D4).
pub const CONSTANTS: [(usize, f64, f64, f64, f64); 9] = [
    (2, 1.128, 1.880, 0.0, 3.267),
    (3, 1.693, 1.023, 0.0, 2.574),
    (4, 2.059, 0.729, 0.0, 2.282),
    (5, 2.326, 0.577, 0.0, 2.114),
    (6, 2.534, 0.483, 0.0, 2.004),
    (7, 2.704, 0.419, 0.076, 1.924),
    (8, 2.847, 0.373, 0.136, 1.864),
    (9, 2.970, 0.337, 0.184, 1.816),
    (10, 3.078, 0.308, 0.223, 1.777),
];

/// The constants of subgroup size `n` (2–10).
pub fn constants(n: usize) -> Option<(f64, f64, f64, f64)> {
    CONSTANTS
        .iter()
        .find(|c| c.0 == n)
        .map(|&(_, d2, a2, d3, d4)| (d2, a2, d3, d4))
}

/// Which chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum ChartKind {
    /// Individuals and moving range.
    #[default]
    #[serde(rename = "imr")]
    Imr,
    /// Subgroup means and ranges.
    #[serde(rename = "xbar-r")]
    XbarR,
}

/// One measured value, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub unit: String,
    pub completed_at: String,
    pub value: f64,
}

/// One charted point.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct SpcPoint {
    /// The unit measured (X̄-R: the last unit of the subgroup; all of them in `units`).
    pub unit: String,
    /// When its operation completed (X̄-R: the last of the subgroup).
    pub completed_at: String,
    /// The value (X̄-R: the subgroup mean).
    pub value: f64,
    /// I-MR: |value − previous value| (null for the first point); X̄-R: the subgroup range.
    pub range: Option<f64>,
    /// X̄-R: every unit of the subgroup, in time order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<Vec<String>>,
    /// Rules this point completes: we1…we4, n5…n8.
    pub violations: Vec<&'static str>,
}

/// The answer of `GET /api/v1/spc`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Spc {
    pub station: String,
    pub parameter: String,
    /// imr | xbar-r
    pub chart: ChartKind,
    /// X̄-R: the subgroup size.
    pub subgroup: Option<usize>,
    /// Individual values charted.
    pub n: usize,
    /// Values left out: the trailing incomplete subgroup of X̄-R.
    pub excluded: usize,
    /// More than the newest `MAX_POINTS` values matched; only those are charted.
    pub truncated: bool,
    /// Mean of the individual values (μ of the capability indices).
    pub mean: Option<f64>,
    /// MR̄/1.128 (I-MR) or R̄/d2 (X̄-R).
    pub sigma_within: Option<f64>,
    /// Sample standard deviation (n − 1) of the individual values.
    pub sigma_overall: Option<f64>,
    pub center: Option<f64>,
    pub ucl: Option<f64>,
    pub lcl: Option<f64>,
    /// MR̄ (I-MR) or R̄ (X̄-R): the range chart's center line.
    pub range_center: Option<f64>,
    pub range_ucl: Option<f64>,
    pub range_lcl: Option<f64>,
    /// Specification limits (of the newest value that has them).
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub cp: Option<f64>,
    pub cpk: Option<f64>,
    pub pp: Option<f64>,
    pub ppk: Option<f64>,
    /// Points with at least one violation.
    pub violating_points: usize,
    pub points: Vec<SpcPoint>,
}

/// Why a chart cannot be drawn as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChartError {
    #[error("subgroup must be from 2 to 10 for xbar-r, got {0}")]
    Subgroup(usize),
}

/// What [`chart`] computes, before the station and parameter are attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub n: usize,
    pub excluded: usize,
    pub mean: Option<f64>,
    pub sigma_within: Option<f64>,
    pub sigma_overall: Option<f64>,
    pub center: Option<f64>,
    pub ucl: Option<f64>,
    pub lcl: Option<f64>,
    pub range_center: Option<f64>,
    pub range_ucl: Option<f64>,
    pub range_lcl: Option<f64>,
    pub cp: Option<f64>,
    pub cpk: Option<f64>,
    pub pp: Option<f64>,
    pub ppk: Option<f64>,
    pub points: Vec<SpcPoint>,
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation (n − 1); `None` below two values.
pub fn std_dev(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// (Cp, Cpk) of mean `mu` and sigma `s` against the limits; `None` where undefined.
pub fn capability(
    mu: Option<f64>,
    s: Option<f64>,
    lsl: Option<f64>,
    usl: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let (Some(mu), Some(s)) = (mu, s) else {
        return (None, None);
    };
    if !(s > 0.0 && s.is_finite()) {
        return (None, None);
    }
    let cp = match (lsl, usl) {
        (Some(l), Some(u)) => Some((u - l) / (6.0 * s)),
        _ => None,
    };
    let sides: Vec<f64> = [
        usl.map(|u| (u - mu) / (3.0 * s)),
        lsl.map(|l| (mu - l) / (3.0 * s)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let cpk = sides.into_iter().reduce(f64::min);
    (cp, cpk)
}

/// The chart of `samples` (time order) against the spec limits.
pub fn chart(
    samples: &[Sample],
    kind: ChartKind,
    subgroup: usize,
    lsl: Option<f64>,
    usl: Option<f64>,
) -> Result<Computed, ChartError> {
    let (points, used, excluded, center, sigma_within, half_width, range_center, rl, ru) =
        match kind {
            ChartKind::Imr => {
                let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
                let mrs: Vec<f64> = values.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
                let mr_bar = mean(&mrs);
                let (d2, _, d3, d4) = constants(2).unwrap_or((1.128, 1.88, 0.0, 3.267));
                let sw = mr_bar.map(|m| m / d2);
                let points = samples
                    .iter()
                    .enumerate()
                    .map(|(i, s)| SpcPoint {
                        unit: s.unit.clone(),
                        completed_at: s.completed_at.clone(),
                        value: s.value,
                        range: (i > 0).then(|| mrs[i - 1]),
                        units: None,
                        violations: Vec::new(),
                    })
                    .collect::<Vec<_>>();
                (
                    points,
                    values,
                    0,
                    mean(&samples.iter().map(|s| s.value).collect::<Vec<_>>()),
                    sw,
                    sw.map(|s| 3.0 * s),
                    mr_bar,
                    mr_bar.map(|m| d3 * m),
                    mr_bar.map(|m| d4 * m),
                )
            }
            ChartKind::XbarR => {
                let (d2, a2, d3, d4) = constants(subgroup).ok_or(ChartError::Subgroup(subgroup))?;
                let groups: Vec<&[Sample]> = samples.chunks_exact(subgroup).collect();
                let excluded = samples.len() % subgroup;
                let mut points = Vec::with_capacity(groups.len());
                let mut ranges = Vec::with_capacity(groups.len());
                let mut used = Vec::with_capacity(samples.len() - excluded);
                for g in &groups {
                    let vs: Vec<f64> = g.iter().map(|s| s.value).collect();
                    let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let last = &g[g.len() - 1];
                    ranges.push(hi - lo);
                    points.push(SpcPoint {
                        unit: last.unit.clone(),
                        completed_at: last.completed_at.clone(),
                        value: mean(&vs).unwrap_or(f64::NAN),
                        range: Some(hi - lo),
                        units: Some(g.iter().map(|s| s.unit.clone()).collect()),
                        violations: Vec::new(),
                    });
                    used.extend(vs);
                }
                let r_bar = mean(&ranges);
                let x_bar_bar = mean(&points.iter().map(|p| p.value).collect::<Vec<_>>());
                (
                    points,
                    used,
                    excluded,
                    x_bar_bar,
                    r_bar.map(|r| r / d2),
                    r_bar.map(|r| a2 * r),
                    r_bar,
                    r_bar.map(|r| d3 * r),
                    r_bar.map(|r| d4 * r),
                )
            }
        };
    let mu = mean(&used);
    let sigma_overall = std_dev(&used);
    let (cp, cpk) = capability(mu, sigma_within, lsl, usl);
    let (pp, ppk) = capability(mu, sigma_overall, lsl, usl);
    let mut points = points;
    if let (Some(c), Some(h)) = (center, half_width) {
        let values: Vec<f64> = points.iter().map(|p| p.value).collect();
        for (p, v) in points.iter_mut().zip(violations(&values, c, h / 3.0)) {
            p.violations = v;
        }
    }
    Ok(Computed {
        n: used.len(),
        excluded,
        mean: mu,
        sigma_within,
        sigma_overall,
        center,
        ucl: center.zip(half_width).map(|(c, h)| c + h),
        lcl: center.zip(half_width).map(|(c, h)| c - h),
        range_center,
        range_ucl: ru,
        range_lcl: rl,
        cp,
        cpk,
        pp,
        ppk,
        points,
    })
}

/// The rules each point completes (see the module doc), for points `x` around center `c` with
/// zone width `s`. No rule applies when `s` is not a positive number (a constant process).
pub fn violations(x: &[f64], c: f64, s: f64) -> Vec<Vec<&'static str>> {
    let mut out = vec![Vec::new(); x.len()];
    if !(s > 0.0 && s.is_finite()) {
        return out;
    }
    let z: Vec<f64> = x.iter().map(|v| (v - c) / s).collect();
    // k of the last m points beyond `lim` on the side of point i, point i among them.
    let k_of_m = |i: usize, k: usize, m: usize, lim: f64| -> bool {
        if i + 1 < m {
            return false;
        }
        let w = &z[i + 1 - m..=i];
        (z[i] > lim && w.iter().filter(|&&v| v > lim).count() >= k)
            || (z[i] < -lim && w.iter().filter(|&&v| v < -lim).count() >= k)
    };
    // The last `m` points (ending at i) all satisfy `f`.
    let run = |i: usize, m: usize, f: &dyn Fn(usize) -> bool| -> bool {
        i + 1 >= m && (i + 1 - m..=i).all(f)
    };
    for i in 0..x.len() {
        let v = &mut out[i];
        if z[i].abs() > 3.0 {
            v.push("we1");
        }
        if k_of_m(i, 2, 3, 2.0) {
            v.push("we2");
        }
        if k_of_m(i, 4, 5, 1.0) {
            v.push("we3");
        }
        if run(i, 8, &|j| z[j] > 0.0) || run(i, 8, &|j| z[j] < 0.0) {
            v.push("we4");
        }
        // Trend: 6 points, 5 steps all up or all down.
        if run(i, 5, &|j| j >= 1 && x[j] > x[j - 1]) || run(i, 5, &|j| j >= 1 && x[j] < x[j - 1]) {
            v.push("n5");
        }
        // Alternation: 14 points, 13 steps, each of the other sign than the one before.
        if run(i, 12, &|j| {
            j >= 2 && {
                let (a, b) = (x[j - 1] - x[j - 2], x[j] - x[j - 1]);
                (a > 0.0 && b < 0.0) || (a < 0.0 && b > 0.0)
            }
        }) {
            v.push("n6");
        }
        if run(i, 15, &|j| z[j].abs() < 1.0) {
            v.push("n7");
        }
        if run(i, 8, &|j| z[j].abs() > 1.0)
            && z[i + 1 - 8..=i].iter().any(|&v| v > 0.0)
            && z[i + 1 - 8..=i].iter().any(|&v| v < 0.0)
        {
            v.push("n8");
        }
    }
    out
}

/// What `GET /api/v1/spc` asks.
#[derive(Debug, Clone)]
pub struct SpcRequest {
    pub station: String,
    pub parameter: String,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub chart: ChartKind,
    /// X̄-R subgroup size (default 5).
    pub subgroup: usize,
}

/// SQLite's points in one JSON text: `[[unit, completed_at, value, lsl, usl, operation id], …]`.
#[derive(sqlx::FromRow)]
struct Packed {
    points: String,
}

/// Numbers travel as text of 17 significant digits: SQLite writes a JSON real with 15, which
/// does not always give the same `f64` back.
type PackedPoint = (String, String, String, Option<String>, Option<String>, i64);

/// A REAL column as the text of its exact value (NULL stays NULL).
fn exact(col: &str) -> String {
    format!("CASE WHEN {col} IS NULL THEN NULL ELSE printf('%!.17g', {col}) END")
}

#[derive(sqlx::FromRow)]
struct Row {
    unit: String,
    #[sqlx(try_from = "sql::Time")]
    completed_at: String,
    value: f64,
    lsl: Option<f64>,
    usl: Option<f64>,
}

/// Reads the parameter's numeric values at the station (newest [`MAX_POINTS`], in time order)
/// and charts them.
pub async fn spc(db: &Db, req: &SpcRequest) -> Result<Result<Spc, ChartError>, QueryError> {
    let mut q = Sql::new("");
    let st = q.param(req.station.as_str());
    let pa = q.param(req.parameter.as_str());
    let mut text = format!(
        "SELECT i.ext_id AS unit, o.completed_at, p.value_num AS value, p.lsl, p.usl \
         FROM operations o JOIN operation_parameters p ON p.operation_id = o.id \
         JOIN items i ON i.id = o.unit_id \
         WHERE o.station = {st} AND p.name = {pa} AND p.value_num IS NOT NULL"
    );
    if let Some(t) = req.from {
        text.push_str(&format!(" AND o.completed_at >= {}", q.param(t)));
    }
    if let Some(t) = req.to {
        text.push_str(&format!(" AND o.completed_at < {}", q.param(t)));
    }
    text.push_str(&format!(
        " ORDER BY o.completed_at DESC, o.id DESC LIMIT {}",
        MAX_POINTS + 1
    ));
    let mut rows: Vec<Row> = if db.dialect().postgres {
        q.push(&text);
        db.fetch_all(q).await?
    } else {
        // SQLite: one row holding every point as JSON. sqlx hands SQLite rows over from its
        // worker thread one small batch at a time, ~15 µs a row here — more than the statement
        // itself for 10,000 points; parsing the array costs ~3 ms.
        q.push(&format!(
            "SELECT json_group_array(json_array(unit, completed_at, {}, {}, {}, id)) \
             AS points FROM ({})",
            exact("value"),
            exact("lsl"),
            exact("usl"),
            text.replacen(
                "SELECT i.ext_id AS unit,",
                "SELECT o.id, i.ext_id AS unit,",
                1
            )
        ));
        let packed: Vec<Packed> = db.fetch_all(q).await?;
        let text = packed
            .into_iter()
            .next()
            .map(|p| p.points)
            .unwrap_or_default();
        let mut points: Vec<PackedPoint> =
            serde_json::from_str(if text.is_empty() { "[]" } else { &text })
                .map_err(|e| QueryError::Data(format!("SPC points: {e}")))?;
        // The aggregate keeps the subquery's order; sorted again so as not to depend on it.
        points.sort_by(|a, b| b.1.cmp(&a.1).then(b.5.cmp(&a.5)));
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|e| QueryError::Data(format!("SPC value {v:?}: {e}")))
        };
        let mut rows = Vec::with_capacity(points.len());
        for (unit, completed_at, value, lsl, usl, _) in points {
            rows.push(Row {
                unit,
                completed_at,
                value: num(&value)?,
                lsl: lsl.as_deref().map(num).transpose()?,
                usl: usl.as_deref().map(num).transpose()?,
            });
        }
        rows
    };
    let truncated = rows.len() > MAX_POINTS;
    rows.truncate(MAX_POINTS);
    // Spec limits: the newest value that has them.
    let lsl = rows.iter().find_map(|r| r.lsl);
    let usl = rows.iter().find_map(|r| r.usl);
    rows.reverse();
    let samples: Vec<Sample> = rows
        .into_iter()
        .filter(|r| r.value.is_finite())
        .map(|r| Sample {
            unit: r.unit,
            completed_at: r.completed_at,
            value: r.value,
        })
        .collect();
    let c = match chart(&samples, req.chart, req.subgroup, lsl, usl) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Spc {
        station: req.station.clone(),
        parameter: req.parameter.clone(),
        chart: req.chart,
        subgroup: (req.chart == ChartKind::XbarR).then_some(req.subgroup),
        n: c.n,
        excluded: c.excluded,
        truncated,
        mean: c.mean,
        sigma_within: c.sigma_within,
        sigma_overall: c.sigma_overall,
        center: c.center,
        ucl: c.ucl,
        lcl: c.lcl,
        range_center: c.range_center,
        range_ucl: c.range_ucl,
        range_lcl: c.range_lcl,
        lsl,
        usl,
        cp: c.cp,
        cpk: c.cpk,
        pp: c.pp,
        ppk: c.ppk,
        violating_points: c.points.iter().filter(|p| !p.violations.is_empty()).count(),
        points: c.points,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Montgomery, *Introduction to Statistical Quality Control*, Table 6.3: inside diameters
    /// (mm) of forged piston rings, 25 samples of 5, in order. Spec 74.000 ± 0.05.
    const PISTON: [f64; 125] = [
        74.030, 74.002, 74.019, 73.992, 74.008, 73.995, 73.992, 74.001, 74.011, 74.004, 73.998,
        74.024, 74.021, 74.005, 74.002, 74.002, 73.996, 73.993, 74.015, 74.009, 73.992, 74.007,
        74.015, 73.989, 74.014, 74.009, 73.994, 73.997, 73.985, 73.993, 73.995, 74.006, 73.994,
        74.000, 74.005, 73.985, 74.003, 73.993, 74.015, 73.988, 74.008, 73.995, 74.009, 74.005,
        74.004, 73.998, 74.000, 73.990, 74.007, 73.995, 73.994, 73.998, 73.994, 73.995, 73.990,
        74.004, 74.000, 74.007, 74.000, 73.996, 73.983, 74.002, 73.998, 73.997, 74.012, 74.006,
        73.967, 73.994, 74.000, 73.984, 74.012, 74.014, 73.998, 73.999, 74.007, 74.000, 73.984,
        74.005, 73.998, 73.996, 73.994, 74.012, 73.986, 74.005, 74.007, 74.006, 74.010, 74.018,
        74.003, 74.000, 73.984, 74.002, 74.003, 74.005, 73.997, 74.000, 74.010, 74.013, 74.020,
        74.003, 73.982, 74.001, 74.015, 74.005, 73.996, 74.004, 73.999, 73.990, 74.006, 74.009,
        74.010, 73.989, 73.990, 74.009, 74.014, 74.015, 74.008, 73.993, 74.000, 74.010, 73.982,
        73.984, 73.995, 74.017, 74.013,
    ];

    fn samples(xs: &[f64]) -> Vec<Sample> {
        xs.iter()
            .enumerate()
            .map(|(i, &value)| Sample {
                unit: format!("U{i:03}"),
                completed_at: format!("2026-03-01T06:{:02}:{:02}.000000Z", i / 60, i % 60),
                value,
            })
            .collect()
    }

    #[track_caller]
    fn close(got: Option<f64>, want: f64, tol: f64) {
        let g = got.unwrap_or(f64::NAN);
        assert!((g - want).abs() <= tol, "got {g}, want {want} ± {tol}");
    }

    #[test]
    fn constants_agree_with_d2_by_integration() {
        // scripts/spc_reference.py: d2(n) = ∫ 1 − Φ(x)ⁿ − (1 − Φ(x))ⁿ dx (scipy quad) and
        // A2 = 3 / (d2 √n); the table rounds both to 3 decimals.
        let d2 = [
            1.1283791670955128,
            1.6925687506432692,
            2.0587507460079286,
            2.3259289472810396,
            2.534412721222943,
            2.7043567512138096,
            2.8472006120905564,
            2.9700263244184755,
            3.077505461670349,
        ];
        for (i, &(n, t_d2, t_a2, d3, d4)) in CONSTANTS.iter().enumerate() {
            assert_eq!(n, i + 2);
            close(Some(t_d2), d2[i], 0.0005 + 1e-12);
            close(
                Some(t_a2),
                3.0 / (d2[i] * (n as f64).sqrt()),
                0.0005 + 1e-12,
            );
            // D3 + D4 = 2 wherever D3 is not clipped to 0 (both are 1 ∓ 3·d3/d2).
            if d3 > 0.0 {
                close(Some(d3 + d4), 2.0, 1e-9);
            }
        }
        assert_eq!(constants(1), None);
        assert_eq!(constants(11), None);
    }

    #[test]
    fn xbar_r_of_the_piston_rings_matches_montgomery() {
        let c = chart(
            &samples(&PISTON),
            ChartKind::XbarR,
            5,
            Some(73.95),
            Some(74.05),
        )
        .unwrap();
        assert_eq!((c.n, c.excluded, c.points.len()), (125, 0, 25));
        // The textbook (Example 6.3): x̿ = 74.001, R̄ = 0.023, UCL = 74.014, LCL = 73.988.
        close(c.center, 74.001, 0.0005);
        close(c.range_center, 0.023, 0.0005);
        close(c.ucl, 74.014, 0.0005);
        close(c.lcl, 73.988, 0.0005);
        close(c.range_lcl, 0.0, 0.0);
        // numpy (scripts/spc_reference.py), to the last digits.
        close(c.center, 74.001256, 1e-9);
        close(c.range_center, 0.02284, 1e-12);
        close(c.ucl, 74.01443468, 1e-9);
        close(c.lcl, 73.98807732, 1e-9);
        close(c.range_ucl, 0.04828376, 1e-9);
        close(c.sigma_within, 0.009819432502149578, 1e-12);
        close(c.sigma_overall, 0.010133706133493745, 1e-12);
        close(c.cp, 1.6973146526560683, 1e-9);
        close(c.cpk, 1.6546781085804512, 1e-9);
        close(c.pp, 1.6446763353023777, 1e-9);
        close(c.ppk, 1.6033620657587129, 1e-9);
        // The process is in control (the textbook's conclusion): no signals.
        assert!(
            c.points.iter().all(|p| p.violations.is_empty()),
            "{:?}",
            c.points
        );
        // A point carries its subgroup's units; the last one names it.
        let p = &c.points[1];
        assert_eq!(p.units.as_ref().unwrap().len(), 5);
        assert_eq!(p.unit, "U009");
        close(p.range, 74.011 - 73.992, 1e-9);
    }

    #[test]
    fn imr_matches_numpy_and_hand_values() {
        let c = chart(
            &samples(&PISTON[..40]),
            ChartKind::Imr,
            0,
            Some(73.95),
            Some(74.05),
        )
        .unwrap();
        close(c.mean, 74.00245, 1e-9);
        close(c.range_center, 0.012512820512819772, 1e-9);
        close(c.sigma_within, 0.011092925986542351, 1e-9);
        close(c.sigma_overall, 0.010900364613991066, 1e-12);
        close(c.ucl, 74.03572877795962, 1e-9);
        close(c.lcl, 73.96917122204037, 1e-9);
        close(c.range_ucl, 0.040879384615382194, 1e-9);
        close(c.cp, 1.5024590163934461, 1e-6);
        close(c.cpk, 1.4288385245902813, 1e-6);
        close(c.pp, 1.5290008414281269, 1e-9);
        close(c.ppk, 1.4540798001982647, 1e-9);
        assert_eq!(c.points[0].range, None);
        // By hand: 2,4,6,4,2,4,6,4 — every moving range is 2: σ = 2/1.128 = 1.77305,
        // limits 4 ± 5.31915.
        let c = chart(
            &samples(&[2.0, 4.0, 6.0, 4.0, 2.0, 4.0, 6.0, 4.0]),
            ChartKind::Imr,
            0,
            None,
            Some(10.0),
        )
        .unwrap();
        close(c.center, 4.0, 1e-12);
        close(c.sigma_within, 1.773049645390071, 1e-12);
        close(c.ucl, 9.319148936170213, 1e-12);
        close(c.lcl, -1.319148936170213, 1e-12);
        // One-sided spec: Cpk = (10 − 4) / 3σ, no Cp.
        assert_eq!(c.cp, None);
        close(c.cpk, 6.0 / (3.0 * 1.773049645390071), 1e-12);
    }

    #[test]
    fn rules_match_the_independent_implementation() {
        // scripts/spc_reference.py, RULES_SEQ: an in-control start, then a drift.
        let seq = [
            10.0, 10.4, 9.7, 10.2, 9.9, 10.1, 9.6, 10.3, 9.8, 10.0, 10.5, 10.6, 10.8, 10.9, 11.1,
            11.3, 11.2, 11.6, 11.4, 11.9, 12.2, 9.9, 10.1,
        ];
        let c = chart(&samples(&seq), ChartKind::Imr, 0, None, None).unwrap();
        close(c.center, 10.586956521739129, 1e-9);
        close(c.sigma_within, 0.37475822050290136, 1e-9);
        let got: Vec<(usize, Vec<&str>)> = c
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.violations.is_empty())
            .map(|(i, p)| (i, p.violations.clone()))
            .collect();
        let want: Vec<(usize, Vec<&str>)> = vec![
            (4, vec!["we3"]),
            (5, vec!["we3"]),
            (6, vec!["we3"]),
            (7, vec!["we4"]),
            (8, vec!["we2", "we3", "we4"]),
            (9, vec!["we3", "we4"]),
            (10, vec!["we4"]),
            (13, vec!["n5"]),
            (14, vec!["n5"]),
            (15, vec!["n5"]),
            (17, vec!["we3"]),
            (18, vec!["we2", "we3", "we4"]),
            (19, vec!["we1", "we2", "we3", "we4"]),
            (20, vec!["we1", "we2", "we3", "we4"]),
            (21, vec!["n8"]),
            (22, vec!["n8"]),
        ];
        assert_eq!(got, want);
    }

    /// Each rule on a sequence made for it, around center 0 with zone width 1.
    #[test]
    fn each_rule_fires_on_its_own_pattern() {
        let fired = |x: &[f64]| -> Vec<&'static str> {
            let mut all: Vec<&str> = violations(x, 0.0, 1.0).into_iter().flatten().collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        assert_eq!(fired(&[0.5, -0.5, 3.5]), ["we1"]);
        assert_eq!(fired(&[0.5, -0.5, -3.5]), ["we1"]);
        // 2 of 3 beyond 2σ on the same side; on opposite sides nothing.
        assert_eq!(fired(&[0.5, 2.5, -0.5, 2.5]), ["we2"]);
        assert_eq!(fired(&[0.5, 2.5, -0.5, -2.5]), Vec::<&str>::new());
        // The completing point must be beyond: 0.5, 2.5, 2.5, 0.5 flags the second 2.5 only
        // (and a window is only judged once it is full: the first 2.5 is point 2 of 3).
        let v = violations(&[0.5, 2.5, 2.5, 0.5], 0.0, 1.0);
        assert_eq!(v, vec![vec![], vec![], vec!["we2"], vec![]]);
        // 4 of 5 beyond 1σ (also 2 points beyond 2σ would be we2 — stay below 2).
        assert_eq!(fired(&[1.5, 1.5, -0.5, 1.5, 1.5]), ["we3"]);
        // 8 on one side, small and alternating so nothing else fires.
        assert_eq!(fired(&[0.2, 0.4, 0.3, 0.5, 0.1, 0.6, 0.2, 0.4]), ["we4"]);
        assert_eq!(
            fired(&[0.2, 0.4, 0.3, 0.5, 0.0, 0.6, 0.2, 0.4]),
            Vec::<&str>::new()
        );
        // Trend: 6 increasing (crossing the center, within 1σ); 5 are not enough, a tie breaks it.
        assert_eq!(fired(&[-0.9, -0.5, -0.1, 0.2, 0.5, 0.8]), ["n5"]);
        assert_eq!(fired(&[-0.5, -0.1, 0.2, 0.5, 0.8]), Vec::<&str>::new());
        assert_eq!(
            fired(&[-0.9, -0.5, -0.1, -0.1, 0.5, 0.8]),
            Vec::<&str>::new()
        );
        assert_eq!(fired(&[0.8, 0.5, 0.2, -0.1, -0.5, -0.9]), ["n5"]);
        // 14 alternating (13 are not enough), kept within 1σ and fewer than 15 points.
        let alt: Vec<f64> = (0..14)
            .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        assert_eq!(fired(&alt), ["n6"]);
        assert_eq!(fired(&alt[..13]), Vec::<&str>::new());
        // 15 within 1σ, with a change of side every two points (no run of 8, no alternation).
        let strat: Vec<f64> = (0..15)
            .map(|i| if (i / 2) % 2 == 0 { 0.3 } else { -0.3 })
            .collect();
        assert_eq!(fired(&strat), ["n7"]);
        assert_eq!(fired(&strat[..14]), Vec::<&str>::new());
        // 8 beyond 1σ on both sides, none in zone C (1.5, −1.5 alternating: also no run).
        let mix = [1.5, -1.5, 1.5, -1.5, 1.5, -1.5, 1.5, -1.5];
        assert_eq!(fired(&mix), ["n8"]);
        // A constant process has no zones: nothing fires.
        assert!(violations(&[1.0; 20], 1.0, 0.0).iter().all(Vec::is_empty));
    }

    #[test]
    fn xbar_r_checks_the_subgroup_and_leaves_the_tail_out() {
        assert_eq!(
            chart(&samples(&PISTON), ChartKind::XbarR, 11, None, None),
            Err(ChartError::Subgroup(11))
        );
        assert_eq!(
            chart(&samples(&PISTON), ChartKind::XbarR, 1, None, None),
            Err(ChartError::Subgroup(1))
        );
        let c = chart(&samples(&PISTON[..23]), ChartKind::XbarR, 5, None, None).unwrap();
        assert_eq!((c.n, c.excluded, c.points.len()), (20, 3, 4));
        // Too few values: an answer with nothing computable, not a panic.
        let c = chart(&samples(&[1.0]), ChartKind::Imr, 0, Some(0.0), Some(2.0)).unwrap();
        assert_eq!((c.n, c.sigma_within, c.cp, c.ucl), (1, None, None, None));
        let c = chart(&[], ChartKind::XbarR, 5, None, None).unwrap();
        assert_eq!((c.n, c.center), (0, None));
    }
}
