//! Analytics routes: common-cause analysis.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::json;

use super::error::BadRequest;
use super::{ApiError, AppState};
use crate::analytics::{self, CommonCause, CommonCauseRequest, common_cause::MAX_UNITS};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/analysis/common-cause", post(common_cause))
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
    Ok(Json(analytics::common_cause(&st.db, &req).await?))
}
