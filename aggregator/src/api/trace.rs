//! Query-side routes: unit report, trace, recall, internal trace (operations), readings.

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::params::{Format, Params};
use super::{ApiError, AppState};
use crate::trace::{
    self, Direction, ItemKind, OperationFilter, OperationPage, QueryError, ReadingFilter,
    ReadingPage, Recall, TraceGraph, TraceRequest, UnitReport,
};

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

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request("malformed path", json!({"reason": e.body_text()})))
}

fn csv_response(body: String, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
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

/// The trace report of one unit.
///
/// `format=csv`: one row per operation parameter (an operation without parameters gets one row),
/// columns `serial,part,work_order,line,station,operation,equipment,operator,recipe,started_at,
/// completed_at,result,defect_code,parameter,value,unit,lsl,usl,in_spec`.
/// `format=html`: a printable page.
#[utoipa::path(
    get, path = "/api/v1/units/{serial}", tag = "trace",
    params(
        ("serial" = String, Path, description = "unit serial"),
        ("format" = Option<String>, Query, description = "json (default) | csv | html"),
    ),
    responses(
        (status = 200, description = "the report", body = UnitReport),
        (status = 400, description = "bad parameter"),
        (status = 404, description = "unknown serial"),
    )
)]
pub async fn unit_report(
    State(st): State<AppState>,
    serial: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let serial = path(serial)?;
    params.only(&["format"])?;
    let format = params.format(&[Format::Json, Format::Csv, Format::Html])?;
    let report = trace::unit_report(&st.db, &serial).await?;
    Ok(match format {
        Format::Json => Json(report).into_response(),
        Format::Csv => csv_response(
            trace::csv::unit_report(&report),
            &format!("unit-{serial}.csv"),
        ),
        Format::Html => {
            let now = threadline_shared::time::format(&threadline_shared::time::now());
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                crate::web::unit_report(&report, &now),
            )
                .into_response()
        }
    })
}

/// Transitive genealogy of a unit, lot, container or shipment.
#[utoipa::path(
    get, path = "/api/v1/trace/{kind}/{id}", tag = "trace",
    params(
        ("kind" = String, Path, description = "unit | lot | container | shipment"),
        ("id" = String, Path, description = "serial / lot / container / shipment id"),
        ("direction" = Option<String>, Query, description = "backward (default: what went in) | forward (where it went)"),
        ("max_depth" = Option<u32>, Query, description = "levels to follow, 0..=1000, default 20"),
        ("max_nodes" = Option<u32>, Query, description = "nodes to return, 1..=100000, default 10000"),
        ("as_of" = Option<String>, Query, description = "RFC 3339: only links valid at that instant"),
    ),
    responses(
        (status = 200, description = "the genealogy graph", body = TraceGraph),
        (status = 400, description = "bad parameter"),
        (status = 404, description = "unknown id"),
    )
)]
pub async fn trace_graph(
    State(st): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Params,
) -> Result<Json<TraceGraph>, ApiError> {
    let (kind, id) = path(ids)?;
    params.only(&["direction", "max_depth", "max_nodes", "as_of"])?;
    let kind = ItemKind::parse(&kind).ok_or_else(|| {
        ApiError::bad_request(
            "bad kind: expected one of unit, lot, container, shipment",
            json!({"parameter": "kind", "value": kind, "expected": ["unit", "lot", "container", "shipment"]}),
        )
    })?;
    let direction = match params
        .choice("direction", &["backward", "forward"])?
        .as_deref()
    {
        Some(d) => Direction::parse(d).unwrap_or(Direction::Backward),
        None => Direction::Backward,
    };
    let mut req = TraceRequest::new(kind, id, direction);
    if let Some(d) = params.u32("max_depth", 0, 1000)? {
        req.max_depth = d;
    }
    if let Some(n) = params.u32("max_nodes", 1, trace::genealogy::LIMIT_MAX_NODES)? {
        req.max_nodes = n;
    }
    req.as_of = params.time("as_of")?;
    Ok(Json(trace::trace(&st.db, &req).await?))
}

/// Recall scope of a material lot: units (every assembly level), containers, shipments, customers.
///
/// `format=csv`: rows `kind,id,customer` with kind unit | container | shipment | customer.
#[utoipa::path(
    get, path = "/api/v1/lots/{lot}/recall", tag = "trace",
    params(
        ("lot" = String, Path, description = "lot id"),
        ("format" = Option<String>, Query, description = "json (default) | csv"),
        ("include_closed" = Option<bool>, Query, description = "also follow links closed by disassembly / unpacking (widest scope)"),
    ),
    responses(
        (status = 200, description = "the recall scope", body = Recall),
        (status = 400, description = "bad parameter"),
        (status = 404, description = "unknown lot"),
    )
)]
pub async fn recall(
    State(st): State<AppState>,
    lot: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let lot = path(lot)?;
    params.only(&["format", "include_closed"])?;
    let format = params.format(&[Format::Json, Format::Csv])?;
    let include_closed = params.bool("include_closed")?.unwrap_or(false);
    let r = trace::recall(&st.db, &lot, include_closed).await?;
    Ok(match format {
        Format::Csv => csv_response(trace::csv::recall(&r), &format!("recall-{lot}.csv")),
        _ => Json(r).into_response(),
    })
}

/// Internal trace: operations matching every given filter, with their unit; keyset-paged by id.
#[utoipa::path(
    get, path = "/api/v1/operations", tag = "trace",
    params(
        ("station" = Option<String>, Query, description = "station id"),
        ("equipment" = Option<String>, Query, description = "equipment id"),
        ("operator" = Option<String>, Query, description = "operator badge"),
        ("lot" = Option<String>, Query, description = "units that consumed this lot"),
        ("from" = Option<String>, Query, description = "completed at or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "completed before (RFC 3339)"),
        ("result" = Option<String>, Query, description = "pass | fail"),
        ("parameter" = Option<String>, Query, description = "parameter name; with out_of_spec=true: that parameter out of spec"),
        ("out_of_spec" = Option<bool>, Query, description = "alone: any parameter out of spec"),
        ("limit" = Option<u32>, Query, description = "page size, 1..=10000, default 1000"),
        ("after_id" = Option<i64>, Query, description = "next_after_id of the previous page"),
    ),
    responses(
        (status = 200, description = "one page", body = OperationPage),
        (status = 400, description = "bad parameter"),
    )
)]
pub async fn operations(
    State(st): State<AppState>,
    params: Params,
) -> Result<Json<OperationPage>, ApiError> {
    params.only(&[
        "station",
        "equipment",
        "operator",
        "lot",
        "from",
        "to",
        "result",
        "parameter",
        "out_of_spec",
        "limit",
        "after_id",
    ])?;
    let f = OperationFilter {
        station: params.text("station"),
        equipment: params.text("equipment"),
        operator: params.text("operator"),
        lot: params.text("lot"),
        from: params.time("from")?,
        to: params.time("to")?,
        result: params.choice("result", &["pass", "fail"])?,
        parameter: params.text("parameter"),
        out_of_spec: params.bool("out_of_spec")?,
        limit: params
            .u32("limit", 1, trace::internal::MAX_LIMIT)?
            .unwrap_or(trace::internal::DEFAULT_LIMIT),
        after_id: params.i64("after_id")?,
    };
    Ok(Json(trace::operations(&st.db, &f).await?))
}

/// Readings (time series) in time order; keyset-paged.
#[utoipa::path(
    get, path = "/api/v1/readings", tag = "trace",
    params(
        ("tag" = Option<String>, Query, description = "tag name"),
        ("gateway" = Option<String>, Query, description = "gateway id"),
        ("from" = Option<String>, Query, description = "at or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "before (RFC 3339)"),
        ("limit" = Option<u32>, Query, description = "page size, 1..=10000, default 1000"),
        ("after" = Option<String>, Query, description = "next_after of the previous page"),
    ),
    responses(
        (status = 200, description = "one page", body = ReadingPage),
        (status = 400, description = "bad parameter"),
    )
)]
pub async fn readings(
    State(st): State<AppState>,
    params: Params,
) -> Result<Json<ReadingPage>, ApiError> {
    params.only(&["tag", "gateway", "from", "to", "limit", "after"])?;
    let after = match params.text("after") {
        Some(c) => Some(trace::internal::ReadingCursor::decode(&c).ok_or_else(|| {
            ApiError::bad_request(
                "bad parameter after: expected the next_after cursor of a previous page",
                json!({"parameter": "after", "value": c}),
            )
        })?),
        None => None,
    };
    let f = ReadingFilter {
        tag: params.text("tag"),
        gateway: params.text("gateway"),
        from: params.time("from")?,
        to: params.time("to")?,
        limit: params
            .u32("limit", 1, trace::internal::MAX_LIMIT)?
            .unwrap_or(trace::internal::DEFAULT_LIMIT),
        after,
    };
    Ok(Json(trace::readings(&st.db, &f).await?))
}
