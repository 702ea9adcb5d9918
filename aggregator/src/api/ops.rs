//! Ingest-side routes: health, metrics, gateways, raw events, audit, master data.
//! Auth is applied around these routes by the API's middleware, not here.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{Bounded, Params};
use super::{ApiError, AppState};
use crate::store::{
    Db, EventsPage, GatewayInfo, LotInput, ShipmentInput, VerifyReport, WorkOrderInput,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/events", get(events))
        .route("/api/v1/audit/verify", get(verify))
        .route("/api/v1/lots", post(post_lots))
        .route("/api/v1/work-orders", post(post_work_orders))
        .route("/api/v1/shipments", post(post_shipments))
}

/// The OpenAPI description of these routes, for merging into the API's document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        healthz,
        metrics,
        gateways,
        events,
        verify,
        post_lots,
        post_work_orders,
        post_shipments
    ),
    components(schemas(
        GatewayInfo,
        EventsPage,
        crate::store::EventRow,
        VerifyReport,
        crate::store::BrokenLink,
        LotInput,
        WorkOrderInput,
        ShipmentInput,
        Health,
        Stored
    ))
)]
pub struct OpsApi;

/// `/healthz` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
    pub mqtt_connected: bool,
}

/// Health: 200 when ingest is connected and the database reachable; 503 with the reason.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, description = "unhealthy, with the reason")))]
pub async fn healthz(State(st): State<AppState>) -> Result<Json<Health>, ApiError> {
    if let Some(reason) = st.ingest.unhealthy_reason() {
        return Err(ApiError::Unavailable(reason));
    }
    if !st.db.ping().await {
        return Err(ApiError::Unavailable("database unavailable".to_owned()));
    }
    if let Some(reason) = st.ingest.gap_alarm_reason() {
        return Err(ApiError::Unavailable(reason));
    }
    Ok(Json(Health {
        status: "ok".to_owned(),
        database: st.db.backend().to_owned(),
        mqtt_connected: st
            .ingest
            .mqtt_connected
            .load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.ingest.render_prometheus(threadline_shared::time::now()),
    )
}

/// Every gateway: state from its status messages, last record, buffer depth, devices, and
/// `gaps` (seqs missing below the highest seen: `count` and the oldest `ranges`).
#[utoipa::path(get, path = "/api/v1/gateways", tag = "ops",
    responses((status = 200, body = Vec<GatewayInfo>)))]
pub async fn gateways(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let gws = st.reads().gateways().await?;
    let mut gaps = st.ingest.gaps();
    let gws: Vec<Value> = gws
        .into_iter()
        .map(|g| {
            let mut v = serde_json::to_value(&g).unwrap_or(Value::Null);
            let gap = gaps.remove(&g.id).unwrap_or_default();
            if let Value::Object(m) = &mut v {
                m.insert("gaps".to_owned(), json!(gap));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "gateways": gws })))
}

/// `limit` of a page of the event log.
pub type EventsLimit = Bounded<1, 1000>;

/// Paging parameters of `/api/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this gateway's events.
    pub gateway: Option<String>,
    /// Cursor: events with an id greater than this (the previous page's `next_after`).
    pub after_id: Option<i64>,
    /// Events with a seq greater than this (meaningful for one gateway with one epoch).
    pub after_seq: Option<i64>,
    /// Page size (default 100).
    #[param(inline)]
    pub limit: Option<EventsLimit>,
}

/// The raw, hash-chained event log in id (insertion) order.
#[utoipa::path(get, path = "/api/v1/events", tag = "ops", params(EventsQuery),
    responses((status = 200, body = EventsPage), super::error::BadRequest))]
pub async fn events(
    State(st): State<AppState>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let limit = q.limit.map_or(100, |b| b.0);
    let page = st
        .db
        .events_page(
            q.gateway.as_deref(),
            q.after_id.unwrap_or(0),
            q.after_seq,
            i64::from(limit),
        )
        .await?;
    Ok(Json(page))
}

/// Recomputes every gateway's hash chain; names the first broken link of each broken chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "ops",
    responses((status = 200, body = VerifyReport)))]
pub async fn verify(State(st): State<AppState>) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(st.reads().verify_chains().await?))
}

/// Answer of the master-data routes.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Stored {
    pub stored: usize,
}

/// Lots from ERP / WMS (one object or an array); idempotent by `lot`.
#[utoipa::path(post, path = "/api/v1/lots", tag = "master data", request_body = LotInput,
    responses((status = 200, body = Stored), (status = 400, description = "which field is wrong")))]
pub async fn post_lots(State(st): State<AppState>, body: Bytes) -> Result<Json<Stored>, ApiError> {
    store_many::<LotInput>(&st.db, &body).await
}

/// Work orders (one object or an array); idempotent by `id`.
#[utoipa::path(post, path = "/api/v1/work-orders", tag = "master data", request_body = WorkOrderInput,
    responses((status = 200, body = Stored), (status = 400, description = "which field is wrong")))]
pub async fn post_work_orders(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Json<Stored>, ApiError> {
    store_many::<WorkOrderInput>(&st.db, &body).await
}

/// Shipments with their customer (one object or an array); idempotent by `id`.
#[utoipa::path(post, path = "/api/v1/shipments", tag = "master data", request_body = ShipmentInput,
    responses((status = 200, body = Stored), (status = 400, description = "which field is wrong")))]
pub async fn post_shipments(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Json<Stored>, ApiError> {
    store_many::<ShipmentInput>(&st.db, &body).await
}

/// A master-data object the routes above take: its fields, checked by name before it is
/// deserialized, and how it is stored.
trait MasterData: serde::de::DeserializeOwned + Sized {
    /// (name, expected kind, required).
    const FIELDS: &'static [Field];
    async fn store(db: &Db, rows: &[Self]) -> sqlx::Result<()>;
}

impl MasterData for LotInput {
    const FIELDS: &'static [Field] = &[
        ("lot", Kind::Str, true),
        ("part", Kind::Str, false),
        ("supplier", Kind::Str, false),
        ("supplier_batch", Kind::Str, false),
        ("qty", Kind::Num, false),
    ];
    async fn store(db: &Db, rows: &[Self]) -> sqlx::Result<()> {
        db.upsert_lots(rows).await
    }
}

impl MasterData for WorkOrderInput {
    const FIELDS: &'static [Field] = &[
        ("id", Kind::Str, true),
        ("part", Kind::Str, false),
        ("qty", Kind::Num, false),
        ("line", Kind::Str, false),
    ];
    async fn store(db: &Db, rows: &[Self]) -> sqlx::Result<()> {
        db.upsert_work_orders(rows).await
    }
}

impl MasterData for ShipmentInput {
    const FIELDS: &'static [Field] = &[
        ("id", Kind::Str, true),
        ("customer", Kind::Str, false),
        ("shipped_at", Kind::Time, false),
    ];
    async fn store(db: &Db, rows: &[Self]) -> sqlx::Result<()> {
        db.upsert_shipments(rows).await
    }
}

/// Parses one object or an array of them and stores them all.
async fn store_many<T: MasterData>(db: &Db, body: &[u8]) -> Result<Json<Stored>, ApiError> {
    let rows: Vec<T> = parse_many(body, T::FIELDS)?;
    T::store(db, &rows).await?;
    Ok(Json(Stored { stored: rows.len() }))
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Num,
    Time,
}

/// (name, expected kind, required).
type Field = (&'static str, Kind, bool);

/// Parses one object or an array of objects, checking each field by name first so that a 400
/// says exactly which field of which element is wrong.
fn parse_many<T: serde::de::DeserializeOwned>(
    body: &[u8],
    fields: &[Field],
) -> Result<Vec<T>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("body is not JSON", json!(e.to_string())))?;
    let (items, is_array) = match v {
        Value::Array(a) => (a, true),
        other => (vec![other], false),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |f: &str| {
            if is_array {
                format!("[{i}].{f}")
            } else {
                f.to_owned()
            }
        };
        let Value::Object(obj) = &item else {
            return Err(ApiError::bad_request(
                "expected a JSON object or an array of objects",
                json!({"field": at("")}),
            ));
        };
        for k in obj.keys() {
            if !fields.iter().any(|(n, _, _)| n == k) {
                let known: Vec<&str> = fields.iter().map(|(n, _, _)| *n).collect();
                return Err(ApiError::bad_request(
                    format!("unknown field {k:?}"),
                    json!({"field": at(k), "expected_one_of": known}),
                ));
            }
        }
        for (name, kind, required) in fields {
            let val = obj.get(*name).filter(|v| !v.is_null());
            let ok = match (val, kind) {
                (None, _) => !required,
                (Some(Value::String(s)), Kind::Str) => !(*required && s.trim().is_empty()),
                (Some(Value::Number(_)), Kind::Num) => true,
                (Some(Value::String(s)), Kind::Time) => threadline_shared::time::parse(s).is_ok(),
                _ => false,
            };
            if !ok {
                let expected = match kind {
                    Kind::Str if *required => "a non-empty string",
                    Kind::Str => "a string",
                    Kind::Num => "a number",
                    Kind::Time => "an RFC 3339 timestamp",
                };
                let error = if val.is_none() {
                    format!("missing field {name:?}")
                } else {
                    format!("field {name:?} must be {expected}")
                };
                return Err(ApiError::bad_request(
                    error,
                    json!({"field": at(name), "expected": expected}),
                ));
            }
        }
        out.push(serde_json::from_value(item).map_err(|e| {
            ApiError::bad_request(
                "invalid object",
                json!({"index": i, "error": e.to_string()}),
            )
        })?);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("empty array", json!(null)));
    }
    Ok(out)
}
