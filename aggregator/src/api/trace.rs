//! Query-side routes: unit report, trace, recall, internal trace (operations), readings.
//! Each route's query parameters are one struct (see `params`): extraction, checks and
//! OpenAPI description in one place.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use threadline_shared::event::Verdict;
use utoipa::IntoParams;

use super::error::{BadRequest, NotFound};
use super::params::{Asked, Bounded, Params, RecallFormat, ReportFormat, Time};
use super::{ApiError, AppState};
use crate::trace::genealogy::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_NODES, LIMIT_MAX_NODES};
use crate::trace::internal::{DEFAULT_LIMIT, MAX_LIMIT, ReadingCursor};
use crate::trace::{
    self, Direction, ItemKind, OperationFilter, OperationPage, QueryError, ReadingFilter,
    ReadingPage, Recall, TraceGraph, TraceRequest, UnitReport,
};

/// `max_depth` of a trace.
pub type MaxDepth = Bounded<0, 1000>;
/// `max_nodes` of a trace (beyond it, recall is the set-based answer).
pub type MaxNodes = Bounded<1, { LIMIT_MAX_NODES }>;
/// `limit` of a page of operations or readings.
pub type PageLimit = Bounded<1, { MAX_LIMIT }>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/units/{serial}", get(unit_report))
        .route("/api/v1/trace/{kind}/{id}", get(trace_graph))
        .route("/api/v1/lots/{lot}/recall", get(recall))
        .route("/api/v1/operations", get(operations))
        .route("/api/v1/readings", get(readings))
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotFound { what, id } => ApiError::not_found(what, id),
            QueryError::Db(e) => e.into(),
            QueryError::Data(msg) => ApiError::Internal(anyhow::anyhow!(msg)),
        }
    }
}

fn csv_response(body: String, filename: &str) -> Response {
    attachment("text/csv; charset=utf-8", filename, body)
}

/// A download: `body` with its content type and a safe `Content-Disposition` file name.
fn attachment(ctype: &'static str, filename: &str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    filename.replace(['"', '\\', '\r', '\n'], "_")
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// Query of `GET /api/v1/units/{serial}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnitReportQuery {
    /// json (default) | csv | html
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

/// The trace report of one unit.
///
/// `format=csv`: one row per operation parameter (an operation without parameters gets one row),
/// columns `serial,part,work_order,line,station,operation,equipment,operator,recipe,started_at,
/// completed_at,result,defect_code,parameter,value,unit,lsl,usl,in_spec`.
/// `format=html`: a printable page.
#[utoipa::path(
    get, path = "/api/v1/units/{serial}", tag = "trace",
    params(("serial" = String, Path, description = "unit serial"), UnitReportQuery),
    responses((status = 200, description = "the report", body = UnitReport), BadRequest, NotFound)
)]
pub async fn unit_report(
    State(st): State<AppState>,
    ext: Option<axum::Extension<super::epcis::EpcisIds>>,
    Asked(serial, q): Asked<String, UnitReportQuery>,
) -> Result<Response, ApiError> {
    let mut report = trace::unit_report(st.reads(), &serial).await?;
    trace::supplier::fill_report(st.reads(), &super::epcis::ids_of(ext), &mut report).await?;
    Ok(match q.format.unwrap_or_default() {
        ReportFormat::Json => Json(report).into_response(),
        ReportFormat::Csv => csv_response(
            trace::csv::unit_report(&report),
            &format!("unit-{serial}.csv"),
        ),
        ReportFormat::Html => {
            let now = threadline_shared::time::format(&threadline_shared::time::now());
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                crate::web::unit_report(&report, &now),
            )
                .into_response()
        }
    })
}

/// Query of `GET /api/v1/trace/{kind}/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TraceQuery {
    /// backward (default: what went in) | forward (where it went)
    #[param(inline)]
    pub direction: Option<Direction>,
    /// Levels to follow (default 20).
    #[param(inline)]
    pub max_depth: Option<MaxDepth>,
    /// Nodes to return (default 10000).
    #[param(inline)]
    pub max_nodes: Option<MaxNodes>,
    /// Only links valid at that instant (RFC 3339).
    #[param(inline)]
    pub as_of: Option<Time>,
}

/// Transitive genealogy of a unit, lot, container or shipment. A backward trace also lists
/// `supplier_events`: events captured from suppliers' EPCIS documents that name a lot of the
/// graph (`POST /api/v1/epcis/capture`).
#[utoipa::path(
    get, path = "/api/v1/trace/{kind}/{id}", tag = "trace",
    params(
        ("kind" = String, Path, description = "unit | lot | container | shipment"),
        ("id" = String, Path, description = "serial / lot / container / shipment id"),
        TraceQuery,
    ),
    responses((status = 200, description = "the genealogy graph", body = TraceGraph), BadRequest, NotFound)
)]
pub async fn trace_graph(
    State(st): State<AppState>,
    ext: Option<axum::Extension<super::epcis::EpcisIds>>,
    Asked((kind, id), q): Asked<(String, String), TraceQuery>,
) -> Result<Json<TraceGraph>, ApiError> {
    let kind = ItemKind::parse(&kind).ok_or_else(|| {
        ApiError::bad_request(
            "bad kind: expected one of unit, lot, container, shipment",
            json!({"parameter": "kind", "value": kind, "expected": ["unit", "lot", "container", "shipment"]}),
        )
    })?;
    let mut req = TraceRequest::new(kind, id, q.direction.unwrap_or(Direction::Backward));
    req.max_depth = q.max_depth.map_or(DEFAULT_MAX_DEPTH, |b| b.0);
    req.max_nodes = q.max_nodes.map_or(DEFAULT_MAX_NODES, |b| b.0);
    req.as_of = q.as_of.map(|t| t.0);
    let mut graph = trace::trace(st.reads(), &req).await?;
    trace::supplier::fill_graph(st.reads(), &super::epcis::ids_of(ext), &mut graph).await?;
    Ok(Json(graph))
}

/// Query of `GET /api/v1/lots/{lot}/recall`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecallQuery {
    /// json (default) | csv
    #[param(inline)]
    pub format: Option<RecallFormat>,
    /// Also follow links closed by disassembly / unpacking (widest scope).
    pub include_closed: Option<bool>,
}

/// Recall scope of a material lot: units (every assembly level), containers, shipments, customers.
///
/// `format=csv`: rows `kind,id,customer` with kind unit | container | shipment | customer.
#[utoipa::path(
    get, path = "/api/v1/lots/{lot}/recall", tag = "trace",
    params(("lot" = String, Path, description = "lot id"), RecallQuery),
    responses((status = 200, description = "the recall scope", body = Recall), BadRequest, NotFound)
)]
pub async fn recall(
    State(st): State<AppState>,
    Asked(lot, q): Asked<String, RecallQuery>,
) -> Result<Response, ApiError> {
    // Streamed: the database sorts, this process holds a channel of rows and one chunk, so a
    // recall of a million units costs no more memory than one of ten. Errors before the first
    // row (unknown lot, timeout, database down) are still the JSON error answer.
    let mut rows = trace::recall_rows(st.reads(), &lot, q.include_closed.unwrap_or(false)).await?;
    rows.ready().await?;
    Ok(match q.format.unwrap_or_default() {
        RecallFormat::Csv => attachment(
            "text/csv; charset=utf-8",
            &format!("recall-{lot}.csv"),
            axum::body::Body::from_stream(rows.into_body(trace::csv::RecallCsv::default())),
        ),
        RecallFormat::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(rows.into_body(trace::recall::JsonEncoder::new(&lot))),
        )
            .into_response(),
    })
}

/// Query of `GET /api/v1/operations`: every given filter must match.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationsQuery {
    /// Station id.
    pub station: Option<String>,
    /// Equipment id.
    pub equipment: Option<String>,
    /// Operator badge.
    pub operator: Option<String>,
    /// Units that consumed this lot.
    pub lot: Option<String>,
    /// Completed at or after (RFC 3339).
    #[param(inline)]
    pub from: Option<Time>,
    /// Completed before (RFC 3339).
    #[param(inline)]
    pub to: Option<Time>,
    /// pass | fail
    #[param(value_type = Option<String>)]
    pub result: Option<Verdict>,
    /// Parameter name; with out_of_spec=true: that parameter out of spec.
    pub parameter: Option<String>,
    /// Alone: any parameter out of spec.
    pub out_of_spec: Option<bool>,
    /// Page size (default 1000).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// `next_after_id` of the previous page.
    pub after_id: Option<i64>,
}

/// Internal trace: operations matching every given filter, with their unit; keyset-paged by id.
#[utoipa::path(
    get, path = "/api/v1/operations", tag = "trace", params(OperationsQuery),
    responses((status = 200, description = "one page", body = OperationPage), BadRequest)
)]
pub async fn operations(
    State(st): State<AppState>,
    Params(q): Params<OperationsQuery>,
) -> Result<Json<OperationPage>, ApiError> {
    Ok(Json(trace::operations(st.reads(), &q.into()).await?))
}

/// Query of `GET /api/v1/readings`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadingsQuery {
    /// Tag name.
    pub tag: Option<String>,
    /// Gateway id.
    pub gateway: Option<String>,
    /// At or after (RFC 3339).
    #[param(inline)]
    pub from: Option<Time>,
    /// Before (RFC 3339).
    #[param(inline)]
    pub to: Option<Time>,
    /// Page size (default 1000).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// `next_after` of the previous page.
    #[param(value_type = Option<String>)]
    pub after: Option<ReadingCursor>,
}

/// Readings (time series) in time order; keyset-paged.
#[utoipa::path(
    get, path = "/api/v1/readings", tag = "trace", params(ReadingsQuery),
    responses((status = 200, description = "one page", body = ReadingPage), BadRequest)
)]
pub async fn readings(
    State(st): State<AppState>,
    Params(q): Params<ReadingsQuery>,
) -> Result<Json<ReadingPage>, ApiError> {
    Ok(Json(trace::readings(st.reads(), &q.into()).await?))
}

impl From<OperationsQuery> for OperationFilter {
    fn from(q: OperationsQuery) -> Self {
        OperationFilter {
            station: q.station,
            equipment: q.equipment,
            operator: q.operator,
            lot: q.lot,
            from: q.from.map(|t| t.0),
            to: q.to.map(|t| t.0),
            result: q.result.map(|r| r.as_str().to_owned()),
            parameter: q.parameter,
            out_of_spec: q.out_of_spec,
            limit: q.limit.map_or(DEFAULT_LIMIT, |b| b.0),
            after_id: q.after_id,
        }
    }
}

impl From<ReadingsQuery> for ReadingFilter {
    fn from(q: ReadingsQuery) -> Self {
        ReadingFilter {
            tag: q.tag,
            gateway: q.gateway,
            from: q.from.map(|t| t.0),
            to: q.to.map(|t| t.0),
            limit: q.limit.map_or(DEFAULT_LIMIT, |b| b.0),
            after: q.after,
        }
    }
}
