//! Analytics routes: common-cause analysis, SPC, supplier scorecard, first-pass yield
//! (see docs/analysis.md).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::error::BadRequest;
use super::params::{Params, Time};
use super::{ApiError, AppState};
use crate::analytics::quality::{self, Scorecard, YieldBy, YieldReport};
use crate::analytics::spc::{self, ChartKind, Spc, SpcRequest};
use crate::analytics::{self, CommonCause, CommonCauseRequest, common_cause::MAX_UNITS};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/analysis/common-cause", post(common_cause))
        .route("/api/v1/spc", get(spc_chart))
        .route("/api/v1/suppliers/scorecard", get(scorecard))
        .route("/api/v1/analysis/yield", get(yield_report))
}

/// Common-cause analysis: what the complaint units share (lots at any BOM level, suppliers,
/// supplier batches, equipment, operators, recipes, work orders, station hours), ranked by the
/// one-sided Fisher exact p-value against the population (see docs/analysis.md).
#[utoipa::path(
    post, path = "/api/v1/analysis/common-cause", tag = "analytics",
    request_body = CommonCauseRequest,
    responses((status = 200, description = "the ranked factors", body = CommonCause), BadRequest)
)]
pub async fn common_cause(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Json<CommonCause>, ApiError> {
    let req: CommonCauseRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            format!("bad request body: {e}"),
            json!({"expected": {"units": ["serial"], "population": {"part": "…", "from": "RFC 3339", "to": "RFC 3339"}, "limit": 50}}),
        )
    })?;
    if req.units.is_empty() {
        return Err(ApiError::bad_request(
            "units must name at least one serial",
            json!({"field": "units"}),
        ));
    }
    if req.units.len() > MAX_UNITS {
        return Err(ApiError::bad_request(
            format!("at most {MAX_UNITS} units per request"),
            json!({"field": "units", "given": req.units.len(), "max": MAX_UNITS}),
        ));
    }
    Ok(Json(analytics::common_cause(st.reads(), &req).await?))
}

fn required(v: Option<String>, name: &str) -> Result<String, ApiError> {
    v.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            format!("parameter {name} is required"),
            json!({"parameter": name}),
        )
    })
}

fn window(from: Option<Time>, to: Option<Time>) -> Result<(Option<Time>, Option<Time>), ApiError> {
    if let (Some(f), Some(t)) = (from, to)
        && f.0 >= t.0
    {
        return Err(ApiError::bad_request(
            "from must be before to",
            json!({"from": crate::trace::time_text(&f.0), "to": crate::trace::time_text(&t.0)}),
        ));
    }
    Ok((from, to))
}

/// Query of `GET /api/v1/spc`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SpcQuery {
    /// Station id (required).
    pub station: Option<String>,
    /// Parameter name (required), e.g. st10.pressure.
    pub parameter: Option<String>,
    /// Operations completed at or after (RFC 3339).
    #[param(inline)]
    pub from: Option<Time>,
    /// Operations completed before (RFC 3339).
    #[param(inline)]
    pub to: Option<Time>,
    /// imr (default) | xbar-r
    #[param(inline)]
    pub chart: Option<ChartKind>,
    /// X̄-R subgroup size, 2–10 (default 5).
    pub subgroup: Option<u32>,
}

/// SPC chart of one station parameter: I-MR or X̄-R with control limits, Western Electric 1–4
/// (`we1`…`we4`) and Nelson (`n5` trend, `n6` alternation, `n7` stratification, `n8` mixture)
/// rule violations per point, Cp/Cpk (σ_within) and Pp/Ppk (σ_overall). Every point names the
/// unit it was measured on. The newest 100,000 values at most (`truncated`).
#[utoipa::path(
    get, path = "/api/v1/spc", tag = "analytics", params(SpcQuery),
    responses((status = 200, description = "the chart", body = Spc), BadRequest)
)]
pub async fn spc_chart(
    State(st): State<AppState>,
    Params(q): Params<SpcQuery>,
) -> Result<Json<Spc>, ApiError> {
    let station = required(q.station, "station")?;
    let parameter = required(q.parameter, "parameter")?;
    let (from, to) = window(q.from, q.to)?;
    let chart = q.chart.unwrap_or_default();
    if chart == ChartKind::Imr && q.subgroup.is_some() {
        return Err(ApiError::bad_request(
            "subgroup applies to chart=xbar-r only",
            json!({"parameter": "subgroup"}),
        ));
    }
    let req = SpcRequest {
        station,
        parameter,
        from: from.map(|t| t.0),
        to: to.map(|t| t.0),
        chart,
        subgroup: q.subgroup.unwrap_or(5) as usize,
    };
    match spc::spc(st.reads(), &req).await? {
        Ok(s) => Ok(Json(s)),
        Err(e) => Err(ApiError::bad_request(
            e.to_string(),
            json!({"parameter": "subgroup", "value": req.subgroup, "expected": "an integer from 2 to 10"}),
        )),
    }
}

/// Query of `GET /api/v1/suppliers/scorecard`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScorecardQuery {
    /// Units first seen at or after (RFC 3339).
    #[param(inline)]
    pub from: Option<Time>,
    /// Units first seen before (RFC 3339).
    #[param(inline)]
    pub to: Option<Time>,
}

/// Supplier scorecard: per supplier its lots, the units they reached at any BOM level (`n`),
/// the failed ones (any failed operation or quality check), ppm, and its worst lots.
#[utoipa::path(
    get, path = "/api/v1/suppliers/scorecard", tag = "analytics", params(ScorecardQuery),
    responses((status = 200, description = "suppliers, worst first", body = Scorecard), BadRequest)
)]
pub async fn scorecard(
    State(st): State<AppState>,
    Params(q): Params<ScorecardQuery>,
) -> Result<Json<Scorecard>, ApiError> {
    let (from, to) = window(q.from, q.to)?;
    Ok(Json(
        quality::scorecard(st.reads(), from.map(|t| t.0), to.map(|t| t.0)).await?,
    ))
}

/// Query of `GET /api/v1/analysis/yield`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct YieldQuery {
    /// Station id (required).
    pub station: Option<String>,
    /// lot | equipment | operator | work_order | hour (required)
    #[param(inline)]
    pub by: Option<YieldBy>,
    /// First operations completed at or after (RFC 3339).
    #[param(inline)]
    pub from: Option<Time>,
    /// First operations completed before (RFC 3339).
    #[param(inline)]
    pub to: Option<Time>,
}

/// First-pass yield at a station per group, each with its `n`, worst first. `by=lot` counts a
/// unit in every lot it consumed at any BOM level.
#[utoipa::path(
    get, path = "/api/v1/analysis/yield", tag = "analytics", params(YieldQuery),
    responses((status = 200, description = "yield per group", body = YieldReport), BadRequest)
)]
pub async fn yield_report(
    State(st): State<AppState>,
    Params(q): Params<YieldQuery>,
) -> Result<Json<YieldReport>, ApiError> {
    let station = required(q.station, "station")?;
    let by = q.by.ok_or_else(|| {
        ApiError::bad_request(
            "parameter by is required: lot, equipment, operator, work_order or hour",
            json!({"parameter": "by", "expected": ["lot", "equipment", "operator", "work_order", "hour"]}),
        )
    })?;
    let (from, to) = window(q.from, q.to)?;
    Ok(Json(
        quality::yield_by(st.reads(), &station, by, from.map(|t| t.0), to.map(|t| t.0)).await?,
    ))
}
