//! The HTTP API: `pub fn router(state) -> Router`, one error type.
//!
//! Routes are grouped by concern: `ops` (health, metrics, gateways, events, audit, master data —
//! the ingest side) and `trace` (unit report, trace, recall, operations, readings — the query
//! side). `openapi` merges both groups' utoipa descriptions.

pub mod analytics;
pub mod auth;
pub mod epcis;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod tls;
pub mod trace;

use std::sync::Arc;

use axum::Router;

pub use error::ApiError;

use crate::store::Db;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Shared with ingest: health, counters and per-gateway lag for `/healthz` and `/metrics`.
    pub ingest: Arc<crate::ingest::IngestStats>,
    /// API tokens (`[[http.token]]`); empty = no authentication. Built with `auth::Tokens::load`.
    pub tokens: Arc<auth::Tokens>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::web::routes())
        .merge(ops::routes())
        .merge(trace::routes())
        .merge(crate::routing::api::routes())
        .merge(analytics::routes())
        .merge(epcis::routes())
        .merge(openapi::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Outermost: also the 404 of an unmatched route and the 405 of a wrong method.
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}
