//! HTTP routes of holds and dispositions (merged into the API by `api::router`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::routes::{OperationStatus, Route, RouteInput, RouteOperation, RouteStatus, RouteWrite};
use super::wip::{QueueTime, Wip, WipFilter, WipUnit, WorkOrderProgress};
use super::{Disposition, Hold, RoutingError, UnitHold};
use crate::api::error::{BadRequest, NotFound};
use crate::api::params::{Asked, Bounded, Params, Time};
use crate::api::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/holds", get(list_holds).post(place_hold))
        .route("/api/v1/holds/{hold_id}/release", post(release_hold))
        .route("/api/v1/lots/{lot}/recall/hold", post(hold_recall))
        .route("/api/v1/units/{serial}/holds", get(unit_holds))
        .route(
            "/api/v1/units/{serial}/disposition",
            post(post_disposition).get(get_dispositions),
        )
        .route("/api/v1/routes", post(post_route))
        .route("/api/v1/routes/{part}", get(get_routes))
        .route("/api/v1/routes/{part}/{version}", get(get_route_version))
        .route("/api/v1/units/{serial}/route-status", get(route_status))
        .route("/api/v1/wip", get(get_wip))
        .route("/api/v1/work-orders/{id}", get(get_work_order))
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_holds,
        place_hold,
        release_hold,
        hold_recall,
        unit_holds,
        post_disposition,
        get_dispositions,
        post_route,
        get_routes,
        get_route_version,
        route_status,
        get_wip,
        get_work_order
    ),
    components(schemas(
        Hold,
        UnitHold,
        Disposition,
        HoldRequest,
        ReleaseRequest,
        DispositionRequest,
        super::HoldKind,
        super::DispositionKind,
        RouteInput,
        RouteOperation,
        Route,
        RouteWrite,
        RouteWritten,
        RoutesOfPart,
        RouteStatus,
        OperationStatus,
        Wip,
        WipUnit,
        WorkOrderProgress,
        QueueTime
    ))
)]
pub struct RoutingApi;

impl From<RoutingError> for ApiError {
    fn from(e: RoutingError) -> Self {
        match e {
            RoutingError::Invalid(msg, detail) => ApiError::bad_request(msg, detail),
            RoutingError::NotFound { what, id } => ApiError::not_found(what, id),
            RoutingError::Conflict(error, detail) => ApiError::Conflict { error, detail },
            RoutingError::Db(e) => e.into(),
            RoutingError::Query(q) => q.into(),
        }
    }
}

fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| {
        ApiError::bad_request(
            format!("bad JSON body: {e}"),
            json!({"body": e.to_string()}),
        )
    })
}

/// Body of `POST /api/v1/holds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// lot | unit | container | part
    pub kind: String,
    /// The lot id, serial, container id or part number.
    pub id: String,
    pub reason: String,
    /// Who places the hold (a person or system).
    pub by: String,
}

/// Body of a release or a recall hold.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub reason: String,
    pub by: String,
}

/// Body of `POST /api/v1/units/{serial}/disposition`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispositionRequest {
    /// scrap | rework | use_as_is | return_to_supplier
    pub disposition: String,
    pub reason: String,
    pub by: String,
}

/// Query of `GET /api/v1/holds`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HoldsQuery {
    /// true: released holds too (newest first); default: active holds only.
    pub history: Option<bool>,
    /// Only holds of this kind (lot | unit | container | part).
    pub kind: Option<String>,
    /// Only holds on this id.
    pub id: Option<String>,
}

/// Active holds (or all with `history=true`), newest first.
#[utoipa::path(get, path = "/api/v1/holds", tag = "holds", params(HoldsQuery),
    responses((status = 200, body = [Hold]), BadRequest))]
pub async fn list_holds(
    State(st): State<AppState>,
    q: Result<Query<HoldsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Hold>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text(), json!(null)))?;
    Ok(Json(
        super::list_holds(
            &st.db,
            q.history.unwrap_or(false),
            q.kind.as_deref(),
            q.id.as_deref(),
        )
        .await?,
    ))
}

/// Places a hold (a chained event of the aggregator); stations refuse what it covers.
#[utoipa::path(post, path = "/api/v1/holds", tag = "holds", request_body = HoldRequest,
    responses((status = 201, body = Hold), BadRequest, NotFound))]
pub async fn place_hold(
    State(st): State<AppState>,
    b: Bytes,
) -> Result<(axum::http::StatusCode, Json<Hold>), ApiError> {
    let r: HoldRequest = body(&b)?;
    let h = super::place_hold(&st.db, &r.kind, &r.id, &r.reason, &r.by).await?;
    st.ingest.holds_changed.notify_one();
    Ok((axum::http::StatusCode::CREATED, Json(h)))
}

/// Releases an active hold, with reason and who; 409 when it is already released.
#[utoipa::path(post, path = "/api/v1/holds/{hold_id}/release", tag = "holds",
    params(("hold_id" = String, Path, description = "the hold")),
    request_body = ReleaseRequest,
    responses((status = 200, body = Hold), BadRequest, NotFound,
        (status = 409, description = "already released", body = crate::api::error::ErrorBody)))]
pub async fn release_hold(
    State(st): State<AppState>,
    Path(hold_id): Path<String>,
    b: Bytes,
) -> Result<Json<Hold>, ApiError> {
    let r: ReleaseRequest = body(&b)?;
    let h = super::release_hold(&st.db, &hold_id, &r.reason, &r.by).await?;
    st.ingest.holds_changed.notify_one();
    Ok(Json(h))
}

/// Holds the lot and every unit and container of its recall scope in one transaction.
#[utoipa::path(post, path = "/api/v1/lots/{lot}/recall/hold", tag = "holds",
    params(("lot" = String, Path, description = "the lot")),
    request_body = ReleaseRequest,
    responses((status = 201, body = [Hold]), BadRequest, NotFound))]
pub async fn hold_recall(
    State(st): State<AppState>,
    Path(lot): Path<String>,
    b: Bytes,
) -> Result<(axum::http::StatusCode, Json<Vec<Hold>>), ApiError> {
    let r: ReleaseRequest = body(&b)?;
    let holds = super::hold_recall_scope(&st.db, &lot, &r.reason, &r.by).await?;
    st.ingest.holds_changed.notify_one();
    Ok((axum::http::StatusCode::CREATED, Json(holds)))
}

/// The active holds covering a unit: on itself, its part, any lot or sub-assembly that went
/// into it, or a container holding it.
#[utoipa::path(get, path = "/api/v1/units/{serial}/holds", tag = "holds",
    params(("serial" = String, Path, description = "unit serial")),
    responses((status = 200, body = [UnitHold]), NotFound))]
pub async fn unit_holds(
    State(st): State<AppState>,
    Path(serial): Path<String>,
) -> Result<Json<Vec<UnitHold>>, ApiError> {
    if !super::item_exists(&st.db, "unit", &serial).await? {
        return Err(ApiError::not_found("unit", serial));
    }
    Ok(Json(super::holds_for_unit(&st.db, &serial).await?))
}

/// Records a disposition (scrap, rework, use-as-is, return-to-supplier), chained.
#[utoipa::path(post, path = "/api/v1/units/{serial}/disposition", tag = "holds",
    params(("serial" = String, Path, description = "unit serial")),
    request_body = DispositionRequest,
    responses((status = 201, body = Disposition), BadRequest, NotFound))]
pub async fn post_disposition(
    State(st): State<AppState>,
    Path(serial): Path<String>,
    b: Bytes,
) -> Result<(axum::http::StatusCode, Json<Disposition>), ApiError> {
    let r: DispositionRequest = body(&b)?;
    let d = super::add_disposition(&st.db, &serial, &r.disposition, &r.reason, &r.by).await?;
    Ok((axum::http::StatusCode::CREATED, Json(d)))
}

/// A unit's dispositions, oldest first.
#[utoipa::path(get, path = "/api/v1/units/{serial}/disposition", tag = "holds",
    params(("serial" = String, Path, description = "unit serial")),
    responses((status = 200, body = [Disposition]), NotFound))]
pub async fn get_dispositions(
    State(st): State<AppState>,
    Path(serial): Path<String>,
) -> Result<Json<Vec<Disposition>>, ApiError> {
    if !super::item_exists(st.reads(), "unit", &serial).await? {
        return Err(ApiError::not_found("unit", serial));
    }
    Ok(Json(
        super::dispositions_for_unit(st.reads(), &serial).await?,
    ))
}

/// What `POST /api/v1/routes` stored.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RouteWritten {
    #[serde(flatten)]
    pub route: Route,
    /// created | replaced (not used yet) | unchanged (the same operations were stored).
    pub result: RouteWrite,
}

/// Stores a route version: 201 when new, 200 when unchanged or replaced before any unit ran on
/// it, 409 when it is in use and differs (post a new version).
#[utoipa::path(post, path = "/api/v1/routes", tag = "routing", request_body = RouteInput,
    responses((status = 201, body = RouteWritten), (status = 200, body = RouteWritten), BadRequest,
        (status = 409, description = "the version is in use", body = crate::api::error::ErrorBody)))]
pub async fn post_route(
    State(st): State<AppState>,
    b: Bytes,
) -> Result<(axum::http::StatusCode, Json<RouteWritten>), ApiError> {
    let r: RouteInput = body(&b)?;
    let (route, result) = super::routes::put_route(&st.db, &r).await?;
    let status = match result {
        RouteWrite::Created => axum::http::StatusCode::CREATED,
        _ => axum::http::StatusCode::OK,
    };
    Ok((status, Json(RouteWritten { route, result })))
}

/// Every route version of a part.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RoutesOfPart {
    pub part: String,
    /// The newest version: what a unit starting now runs under.
    pub current: Route,
    /// Oldest first.
    pub versions: Vec<Route>,
}

/// A part's route: the current version and every earlier one.
#[utoipa::path(get, path = "/api/v1/routes/{part}", tag = "routing",
    params(("part" = String, Path, description = "part number")),
    responses((status = 200, body = RoutesOfPart), NotFound))]
pub async fn get_routes(
    State(st): State<AppState>,
    Path(part): Path<String>,
) -> Result<Json<RoutesOfPart>, ApiError> {
    let versions = super::routes::routes_of(st.reads(), &part).await?;
    let Some(current) = versions.last().cloned() else {
        return Err(ApiError::not_found("route", part));
    };
    Ok(Json(RoutesOfPart {
        part,
        current,
        versions,
    }))
}

/// One route version.
#[utoipa::path(get, path = "/api/v1/routes/{part}/{version}", tag = "routing",
    params(("part" = String, Path, description = "part number"),
        ("version" = String, Path, description = "route version")),
    responses((status = 200, body = Route), NotFound))]
pub async fn get_route_version(
    State(st): State<AppState>,
    Path((part, version)): Path<(String, String)>,
) -> Result<Json<Route>, ApiError> {
    Ok(Json(
        super::routes::get_route(st.reads(), &part, &version).await?,
    ))
}

/// Query of `GET /api/v1/units/{serial}/route-status`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RouteStatusQuery {
    /// The unit's part, for a serial not seen yet (a unit at its first station).
    pub part: Option<String>,
    /// Answer `allowed` / `reason` for this station.
    pub station: Option<String>,
}

/// Where a unit stands on its route: each operation passed / failed / missing, the next
/// required one, covering holds, and with `station=` whether it may be worked there now.
#[utoipa::path(get, path = "/api/v1/units/{serial}/route-status", tag = "routing",
    params(("serial" = String, Path, description = "unit serial"), RouteStatusQuery),
    responses((status = 200, body = RouteStatus), BadRequest))]
pub async fn route_status(
    State(st): State<AppState>,
    Asked(serial, q): Asked<String, RouteStatusQuery>,
) -> Result<Json<RouteStatus>, ApiError> {
    Ok(Json(
        super::routes::route_status(&st.db, &serial, q.part.as_deref(), q.station.as_deref())
            .await?,
    ))
}

/// Query of `GET /api/v1/wip`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WipQuery {
    /// Only units of this line.
    pub line: Option<String>,
    /// Only units of this part.
    pub part: Option<String>,
    /// Only units with an operation at or after this time (default: the last 30 days).
    #[param(inline)]
    pub since: Option<Time>,
    /// At most this many units (default 1000).
    #[param(inline)]
    pub limit: Option<Bounded<1, 10000>>,
}

/// Units in progress (started, not finished), oldest last operation first, with their last
/// operation and its age.
#[utoipa::path(get, path = "/api/v1/wip", tag = "routing", params(WipQuery),
    responses((status = 200, body = Wip), BadRequest))]
pub async fn get_wip(
    State(st): State<AppState>,
    Params(q): Params<WipQuery>,
) -> Result<Json<Wip>, ApiError> {
    Ok(Json(
        super::wip::wip(
            st.reads(),
            &WipFilter {
                line: q.line.as_deref(),
                part: q.part.as_deref(),
                since: q.since.map(|t| t.0),
                limit: q.limit.map_or(1000, |l| l.0 as usize),
            },
        )
        .await?,
    ))
}

/// Work-order progress: planned vs started / completed / passed / failed / scrapped, and the
/// queue time between stations (p50 / p95).
#[utoipa::path(get, path = "/api/v1/work-orders/{id}", tag = "routing",
    params(("id" = String, Path, description = "work order")),
    responses((status = 200, body = WorkOrderProgress), NotFound))]
pub async fn get_work_order(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkOrderProgress>, ApiError> {
    Ok(Json(super::wip::work_order(st.reads(), &id).await?))
}
