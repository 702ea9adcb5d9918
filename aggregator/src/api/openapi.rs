//! `GET /api/openapi.json`: the OpenAPI 3 description, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types' `ToSchema`.
//! Every route of `router()` is listed in `paths(...)`; the test `openapi_lists_every_route`
//! fails when one is missing.

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
        super::analytics::common_cause,
        super::analytics::spc_chart,
        super::analytics::scorecard,
        super::analytics::yield_report,
        super::epcis::events,
        super::epcis::unit_document,
        super::epcis::capture,
        super::ops::healthz,
        super::ops::metrics,
        super::ops::gateways,
        super::ops::events,
        super::ops::verify,
        super::ops::post_lots,
        super::ops::post_work_orders,
        super::ops::post_shipments,
        crate::web::dashboard::dashboard,
    ),
    components(schemas(
        super::error::ErrorBody,
        trace::UnitReport,
        trace::Material,
        trace::ComponentMaterial,
        trace::Component,
        trace::Operation,
        trace::OperationSummary,
        trace::Parameter,
        trace::EnvValue,
        trace::QualityCheck,
        trace::Container,
        trace::Shipment,
        trace::TraceGraph,
        trace::TraceNode,
        trace::TraceEdge,
        trace::SupplierEvent,
        crate::epcis::supplier::CaptureReport,
        crate::epcis::supplier::CaptureLink,
        trace::Direction,
        trace::ItemKind,
        trace::Recall,
        trace::RecallShipment,
        trace::RecallCounts,
        trace::OperationPage,
        trace::OperationRow,
        trace::ReadingPage,
        trace::ReadingRow,
        crate::web::dashboard::Dashboard,
        crate::web::dashboard::LineStats,
        crate::web::dashboard::StationStats,
        crate::web::dashboard::GatewayStats,
        crate::analytics::CommonCauseRequest,
        crate::analytics::PopulationSpec,
        crate::analytics::CommonCause,
        crate::analytics::Factor,
        crate::analytics::spc::Spc,
        crate::analytics::spc::SpcPoint,
        crate::analytics::spc::ChartKind,
        crate::analytics::quality::Scorecard,
        crate::analytics::quality::SupplierScore,
        crate::analytics::quality::LotScore,
        crate::analytics::quality::YieldReport,
        crate::analytics::quality::YieldGroup,
        crate::analytics::quality::YieldBy,
    ))
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(<crate::routing::api::RoutingApi as OpenApi>::openapi());
    Json(doc)
}
