//! The frame every page shares: head, navigation, search box, footer; the 404 page; the
//! embedded assets (one CSS, a few small scripts) served under `/ui/assets/`.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::escape;

pub const CSS: &str = include_str!("assets/app.css");
pub const GRAPH_JS: &str = include_str!("assets/graph.js");
pub const APP_JS: &str = include_str!("assets/app.js");

/// `GET /ui/assets/{name}`.
pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (ctype, body) = match name.as_str() {
        "app.css" => ("text/css; charset=utf-8", CSS),
        "graph.js" => ("text/javascript; charset=utf-8", GRAPH_JS),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        _ => return not_found("asset", &name),
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A whole page: `title` (plain text, escaped here), `body` (HTML, escaped by the caller).
pub fn page(title: &str, body: &str) -> String {
    let t = escape(title);
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · Threadline</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/ui/assets/app.css\"></head><body>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">Threadline</a><nav>\
         <a href=\"/\">Search</a><a href=\"/ui/dashboard\">Dashboard</a>\
         <a href=\"/ui/operations\">Operations</a><a href=\"/ui/spc\">SPC</a>\
         <a href=\"/ui/analysis\">Analysis</a><a href=\"/api/openapi.json\">API</a></nav>\
         <form class=\"quick\" action=\"/\" method=\"get\"><input name=\"q\" placeholder=\"scan or type an id\" aria-label=\"search\"></form>\
         </header><main>{body}</main>\
         <footer>Threadline traceability · all times UTC</footer>\
         <script src=\"/ui/assets/app.js\"></script></body></html>\n"
    )
}

/// A page answering `status`.
pub fn respond(status: StatusCode, title: &str, body: &str) -> Response {
    (status, Html(page(title, body))).into_response()
}

/// The 404 page: says what was not found.
pub fn not_found(what: &str, id: &str) -> Response {
    let body = format!(
        "<h1>Not found</h1><p class=\"notfound\">No {} with id <code>{}</code> is known to this aggregator.</p>\
         <p>Check the id or <a href=\"/?q={}\">search for it</a>.</p>",
        escape(what),
        escape(id),
        super::url_escape(id)
    );
    respond(StatusCode::NOT_FOUND, "Not found", &body)
}

/// A database or query failure, as a page.
pub fn failure(e: impl std::fmt::Display) -> Response {
    tracing::warn!("page failed: {e}");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        &format!(
            "<h1>Something failed</h1><p class=\"error\">{}</p>",
            escape(&e.to_string())
        ),
    )
}

/// JSON for a `<script type="application/json">` block: `<` escaped so no text closes it.
pub fn json_block(id: &str, v: &serde_json::Value) -> String {
    let text = v.to_string().replace('<', "\\u003c");
    format!("<script type=\"application/json\" id=\"{id}\">{text}</script>")
}
