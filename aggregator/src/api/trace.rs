//! Query-side routes: unit report, trace, recall, operations, readings (placeholder).

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
