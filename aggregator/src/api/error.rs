//! The one error type of the API: JSON `{"error": "...", "detail": ...}` with a fitting status.
//! Internal errors are logged with their cause and answered without it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// The evidence, for a program (which parameter, which id, …); may be null.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// 400 in the OpenAPI description of a route.
#[derive(utoipa::IntoResponses)]
#[response(status = 400)]
/// A parameter, path segment or body field is malformed or unknown; `detail` says which.
pub struct BadRequest(pub ErrorBody);

/// 404 in the OpenAPI description of a route.
#[derive(utoipa::IntoResponses)]
#[response(status = 404)]
/// No item has that id; `detail.id` names it.
pub struct NotFound(pub ErrorBody);

/// An API error.
#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed parameter or body; `detail` says which.
    BadRequest { error: String, detail: Value },
    /// 401: missing or invalid token.
    Unauthorized,
    /// 403: valid token without the scope.
    Forbidden(String),
    /// 404: unknown id.
    NotFound { what: &'static str, id: String },
    /// 409: the request conflicts with the stored state (a released hold, a used route).
    Conflict { error: String, detail: Value },
    /// 413: too large.
    TooLarge(String),
    /// 503: a dependency (the database) is down.
    Unavailable(String),
    /// 500: logged, not leaked.
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn bad_request(error: impl Into<String>, detail: Value) -> Self {
        ApiError::BadRequest {
            error: error.into(),
            detail,
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            what,
            id: id.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                ApiError::Unavailable("database unavailable".to_owned())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<sqlx::Error>() {
            Ok(sqlx) => sqlx.into(),
            Err(other) => ApiError::Internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest { error, detail } => (
                StatusCode::BAD_REQUEST,
                json!({"error": error, "detail": detail}),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or invalid bearer token", "detail": null}),
            ),
            ApiError::Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                json!({"error": "token lacks the scope for this request", "detail": {"required_scope": scope}}),
            ),
            ApiError::NotFound { what, id } => (
                StatusCode::NOT_FOUND,
                json!({"error": format!("unknown {what}"), "detail": {"id": id}}),
            ),
            ApiError::Conflict { error, detail } => (
                StatusCode::CONFLICT,
                json!({"error": error, "detail": detail}),
            ),
            ApiError::TooLarge(msg) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": msg, "detail": null}),
            ),
            ApiError::Unavailable(msg) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": msg, "detail": null}),
            ),
            ApiError::Internal(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "internal error answering an API request"
                );
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal error", "detail": null}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}
