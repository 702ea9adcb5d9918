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
        // PostgreSQL's `statement_timeout` (SQLSTATE 57014) and the SQLite query pool's
        // deadline (`SQLITE_INTERRUPT`, 9; a SQLSTATE always has five characters).
        if let sqlx::Error::Database(d) = &e
            && matches!(d.code().as_deref(), Some("57014" | "9"))
        {
            return ApiError::Unavailable(
                "query timed out ([http] query_timeout_ms); narrow the request (filters, a \
                 smaller limit) or raise the timeout"
                    .to_owned(),
            );
        }
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

/// Middleware: every error answer is the JSON shape. Answers with status ≥ 400 that are
/// neither JSON nor an HTML page of the web UI — an unmatched route (404, empty), a wrong
/// method (405), a body over the limit (413, axum's plain text), an unsupported media type —
/// are rewritten to `{"error": …, "detail": {"status": …}}`, keeping their status and headers
/// (`Allow` on a 405).
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    let ctype = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("application/json") || ctype.starts_with("text/html") {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::NOT_FOUND => format!("no such route: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("method {method} not allowed on {path}"),
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
        _ if !text.is_empty() => text.clone(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let mut detail = json!({"status": status.as_u16()});
    if !text.is_empty() && text != error {
        detail["message"] = Value::String(text);
    }
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW)
        && let Ok(a) = allow.to_str()
    {
        detail["allow"] = Value::String(a.to_owned());
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_vec(&json!({"error": error, "detail": detail})).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}
