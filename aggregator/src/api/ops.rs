//! Ingest-side routes: health, metrics, gateways, events, audit, master data (placeholder).

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
