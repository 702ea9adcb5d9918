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
    /// The primary: every write (master data, holds, dispositions, routes, EPCIS capture) and
    /// the reads that decide something (route status and holds for enforcement, health).
    pub db: Db,
    /// Shared with ingest: health, counters and per-gateway lag for `/healthz` and `/metrics`.
    pub ingest: Arc<crate::ingest::IngestStats>,
    /// API tokens (`[[http.token]]`); empty = no authentication. Built with `auth::Tokens::load`.
    pub tokens: Arc<auth::Tokens>,
    /// `[database] read_url`: a read replica for the query side (trace, reports, analytics,
    /// EPCIS export, web pages); `None` = the primary serves them too.
    pub replica: Option<Db>,
}

impl AppState {
    /// State with every query on the primary.
    pub fn new(db: Db, ingest: Arc<crate::ingest::IngestStats>, tokens: Arc<auth::Tokens>) -> Self {
        AppState {
            db,
            ingest,
            tokens,
            replica: None,
        }
    }

    /// The same state with the query side on a read replica.
    pub fn with_replica(mut self, replica: Db) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Where the query side reads: the replica when there is one, else the primary. Reads that
    /// must see the newest write (enforcement: route status, holds) use [`AppState::db`].
    pub fn reads(&self) -> &Db {
        self.replica.as_ref().unwrap_or(&self.db)
    }
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
