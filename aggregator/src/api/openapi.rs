//! `GET /api/openapi.json`: the OpenAPI 3 description, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types' `ToSchema`.
//!
//! MERGE NOTE: the ops routes (api/ops.rs: healthz, metrics, gateways, events, audit, master
//! data) are annotated by the ingest side; add their handler paths to `paths(...)` below once
//! they land on main (e.g. `super::ops::healthz, super::ops::metrics, …`).

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::AppState;
use crate::trace;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Threadline aggregator API",
        description = "Product genealogy, trace and recall. \
        Authentication: when [[http.token]] entries are configured every route except /healthz \
        and /metrics needs `Authorization: Bearer <token>`; read-scope tokens may only GET."
    ),
    paths(
        super::trace::unit_report,
        super::trace::trace_graph,
        super::trace::recall,
        super::trace::operations,
        super::trace::readings,
    ),
    components(schemas(
        trace::UnitReport,
        trace::Material,
        trace::ComponentMaterial,
        trace::Component,
        trace::Operation,
        trace::Parameter,
        trace::EnvValue,
        trace::QualityCheck,
        trace::Container,
        trace::Shipment,
        trace::TraceGraph,
        trace::TraceNode,
        trace::TraceEdge,
        trace::Direction,
        trace::ItemKind,
        trace::Recall,
        trace::RecallShipment,
        trace::RecallCounts,
        trace::OperationPage,
        trace::OperationRow,
        trace::ReadingPage,
        trace::ReadingRow,
    ))
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
