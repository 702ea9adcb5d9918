//! EPCIS 2.0 routes: the event query, one unit's document (both streamed JSON-LD), and the
//! capture of a supplier's document.
//! `[epcis] id_base` reaches the handlers as an [`EpcisIds`] extension (`main` adds it;
//! without one, the default `id_base` is used).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::error::{BadRequest, NotFound};
use super::params::{Asked, Params, Time};
use super::{ApiError, AppState};
use crate::epcis::capture;
use crate::epcis::export::{self, EventQuery, Selection};
use crate::epcis::supplier::{self, CaptureReport};
use crate::epcis::{EventType, Ids, bare_biz_step};
use crate::trace::{self, ItemKind};

/// The URI builder of the configured `[epcis] id_base`.
#[derive(Debug, Clone)]
pub struct EpcisIds(pub Arc<Ids>);

impl Default for EpcisIds {
    fn default() -> Self {
        EpcisIds(Arc::new(Ids::new(&crate::epcis::default_id_base())))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/epcis/events", get(events))
        .route("/api/v1/units/{serial}/epcis", get(unit_document))
        .route(
            "/api/v1/epcis/capture",
            post(capture).layer(DefaultBodyLimit::max(CAPTURE_MAX_BYTES)),
        )
}

/// Largest capture body (a bigger delivery is split by the sender).
pub const CAPTURE_MAX_BYTES: usize = 64 << 20;

/// The URI builder of the request (for handlers of other modules that show supplier events).
pub fn ids_of(ext: Option<axum::Extension<EpcisIds>>) -> Arc<Ids> {
    ids(ext)
}

/// The ids the handler should use (the configured ones, or the default).
fn ids(ext: Option<axum::Extension<EpcisIds>>) -> Arc<Ids> {
    ext.map(|e| e.0.0).unwrap_or_else(|| EpcisIds::default().0)
}

fn json_ld(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/ld+json")], body).into_response()
}

/// Query of `GET /api/v1/epcis/events`: EPCIS 2.0 SimpleEventQuery parameters. List values are
/// separated by `|` (as in the EPCIS REST binding).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EpcisEventsQuery {
    /// Events at or after (RFC 3339).
    #[serde(rename = "GE_eventTime")]
    #[param(rename = "GE_eventTime", inline)]
    pub ge_event_time: Option<Time>,
    /// Events before (RFC 3339).
    #[serde(rename = "LT_eventTime")]
    #[param(rename = "LT_eventTime", inline)]
    pub lt_event_time: Option<Time>,
    /// EPCs (URIs, `|`-separated) in `epcList` or `childEPCs`.
    #[serde(rename = "MATCH_epc")]
    #[param(rename = "MATCH_epc")]
    pub match_epc: Option<String>,
    /// EPCs in `epcList`, `childEPCs`, `inputEPCList`, `outputEPCList` or `parentID`.
    #[serde(rename = "MATCH_anyEPC")]
    #[param(rename = "MATCH_anyEPC")]
    pub match_any_epc: Option<String>,
    /// EPC classes (lot URIs) in any quantity list.
    #[serde(rename = "MATCH_anyEPCClass")]
    #[param(rename = "MATCH_anyEPCClass")]
    pub match_any_epc_class: Option<String>,
    /// Business steps, bare CBV values (`shipping`) or their URIs, `|`-separated.
    #[serde(rename = "EQ_bizStep")]
    #[param(rename = "EQ_bizStep")]
    pub eq_biz_step: Option<String>,
    /// ObjectEvent | AggregationEvent | TransformationEvent, `|`-separated.
    #[serde(rename = "eventType")]
    #[param(rename = "eventType")]
    pub event_type: Option<String>,
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|v| {
            v.split('|')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl EpcisEventsQuery {
    fn into_query(self) -> Result<EventQuery, ApiError> {
        let event_type = match &self.event_type {
            None => None,
            Some(_) => {
                let mut out = Vec::new();
                for t in list(&self.event_type) {
                    out.push(EventType::parse(&t).ok_or_else(|| {
                        ApiError::bad_request(
                            format!("bad parameter eventType: {t:?} is not an event type Threadline exports"),
                            json!({"parameter": "eventType", "value": t,
                                   "expected": ["ObjectEvent", "AggregationEvent", "TransformationEvent"]}),
                        )
                    })?);
                }
                Some(out)
            }
        };
        let biz_step = self.eq_biz_step.as_ref().map(|_| {
            list(&self.eq_biz_step)
                .iter()
                .map(|b| bare_biz_step(b).to_owned())
                .collect()
        });
        if let (Some(ge), Some(lt)) = (&self.ge_event_time, &self.lt_event_time)
            && ge.0 >= lt.0
        {
            return Err(ApiError::bad_request(
                "GE_eventTime must be before LT_eventTime",
                json!({"parameter": "LT_eventTime"}),
            ));
        }
        Ok(EventQuery {
            ge_event_time: self.ge_event_time.map(|t| t.0),
            lt_event_time: self.lt_event_time.map(|t| t.0),
            match_epc: list(&self.match_epc),
            match_any_epc: list(&self.match_any_epc),
            match_any_epc_class: list(&self.match_any_epc_class),
            biz_step,
            event_type,
        })
    }
}

/// EPCIS 2.0 event query: an `EPCISQueryDocument` (JSON-LD, streamed) of the trace events
/// matching every given parameter, in log order. The mapping of each record type is in
/// `docs/epcis.md`; `eventID` is the GS1 event hash.
#[utoipa::path(
    get, path = "/api/v1/epcis/events", tag = "epcis", operation_id = "epcis_events", params(EpcisEventsQuery),
    responses(
        (status = 200, description = "EPCISQueryDocument", content_type = "application/ld+json", body = Object),
        BadRequest
    )
)]
pub async fn events(
    State(st): State<AppState>,
    ext: Option<axum::Extension<EpcisIds>>,
    Params(q): Params<EpcisEventsQuery>,
) -> Result<Response, ApiError> {
    let q = q.into_query()?;
    let ids = ids(ext);
    Ok(json_ld(Body::from_stream(export::stream(
        st.reads().clone(),
        (*ids).clone(),
        Selection::Query(q),
    ))))
}

/// Query of `GET /api/v1/units/{serial}/epcis` (none).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnitEpcisQuery {}

/// One unit's EPCIS history: an `EPCISDocument` (JSON-LD, streamed) of every event that names
/// it (start, operations, material consumed, assembly, packing, quality checks).
#[utoipa::path(
    get, path = "/api/v1/units/{serial}/epcis", tag = "epcis",
    params(("serial" = String, Path, description = "unit serial")),
    responses(
        (status = 200, description = "EPCISDocument", content_type = "application/ld+json", body = Object),
        BadRequest, NotFound
    )
)]
pub async fn unit_document(
    State(st): State<AppState>,
    ext: Option<axum::Extension<EpcisIds>>,
    Asked(serial, _q): Asked<String, UnitEpcisQuery>,
) -> Result<Response, ApiError> {
    let item = trace::item_id(st.reads(), ItemKind::Unit, &serial)
        .await?
        .ok_or_else(|| ApiError::not_found("unit", serial.clone()))?;
    let ids = ids(ext);
    let log_ids = export::unit_event_ids(st.reads(), item).await?;
    let epc = ids.unit(&serial);
    Ok(json_ld(Body::from_stream(export::stream(
        st.reads().clone(),
        (*ids).clone(),
        Selection::Ids { ids: log_ids, epc },
    ))))
}

/// EPCIS capture: a supplier's `EPCISDocument` (JSON-LD, EPCIS 2.0). Its shape is checked (a
/// 400 names the JSON path, what was expected and what was given); every event is stored once
/// by its `eventID` (without one: by its canonical content), so a re-capture stores nothing
/// new; each is linked to the lots of ours it names (LGTIN / lot Digital Link / lot URI in any
/// id list or quantity list; the rule is in `docs/epcis.md`) and shown in their backward trace,
/// the unit report and the lot page. Needs a write-scope token when tokens are configured.
#[utoipa::path(
    post, path = "/api/v1/epcis/capture", tag = "epcis", operation_id = "epcis_capture",
    request_body(content = Object, content_type = "application/ld+json",
        description = "an EPCISDocument (EPCIS 2.0 JSON-LD)"),
    responses(
        (status = 200, description = "what was stored and linked", body = CaptureReport),
        BadRequest,
        (status = 413, description = "body over 64 MiB")
    )
)]
pub async fn capture(
    State(st): State<AppState>,
    ext: Option<axum::Extension<EpcisIds>>,
    body: axum::body::Bytes,
) -> Result<axum::Json<CaptureReport>, ApiError> {
    let doc = capture::parse_document(&body).map_err(|e| {
        ApiError::bad_request(
            e.message(),
            json!({"path": e.path, "expected": e.expected, "given": e.given}),
        )
    })?;
    let ids = ids(ext);
    let report = supplier::store(&st.db, &ids, &doc).await?;
    tracing::info!(
        events = report.events,
        captured = report.captured,
        duplicates = report.duplicates,
        "EPCIS document captured"
    );
    Ok(axum::Json(report))
}
