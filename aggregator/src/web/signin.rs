//! Signing in to the web UI with an API token (`[[http.token]]`), and out again. The session
//! itself (random id in an `HttpOnly; SameSite=Strict` cookie, server-side expiry, CSRF rule) is
//! kept by [`crate::api::auth`]; see docs/security.md.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::escape;
use super::layout::respond;
use crate::api::AppState;
use crate::api::auth::{SESSION_COOKIE, cookie};

/// The sign-in page (`GET` shows the form, `POST` signs in).
pub const SIGN_IN: &str = "/ui/sign-in";
/// `POST` ends the session (`GET` shows a button that does).
pub const SIGN_OUT: &str = "/ui/sign-out";

/// Where to go after signing in: a path of this server only (`/…` but not `//host/…` nor
/// `/\\host`, which browsers treat as another site), else the start page.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") => {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The sign-in form, answering `status`, returning to `next` afterwards; `problem` is shown
/// above the form (e.g. a refused token).
pub fn sign_in_page(status: StatusCode, next: &str, problem: Option<&str>) -> Response {
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(p)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{problem}\
         <p>This aggregator needs an API token (ask whoever runs it for a <code>read</code> token).</p>\
         <form method=\"post\" action=\"{SIGN_IN}\" class=\"signin\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required autofocus></label> \
         <button type=\"submit\">Sign in</button></form>",
        escape(&local_path(Some(next)))
    );
    let mut r = respond(status, "Sign in", &body);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/sign-in?next=/ui/…`.
pub async fn sign_in_form(Query(q): Query<NextQuery>) -> Response {
    sign_in_page(StatusCode::OK, &local_path(q.next.as_deref()), None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    next: Option<String>,
}

/// `POST /ui/sign-in` (form: `token`, `next`): a session cookie and a redirect to `next`, or the
/// form again (401) for an unknown token. A browser's cross-site post is refused (login CSRF).
pub async fn sign_in(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let next = local_path(f.next.as_deref());
    let browser_cross_site = (headers.contains_key("sec-fetch-site")
        || headers.contains_key(header::ORIGIN))
        && !st.tokens.same_origin(&headers);
    if browser_cross_site {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            &next,
            Some("Sign-in from another site refused."),
        );
    }
    if !st.tokens.is_enabled() {
        // Nothing to sign in to: the UI is open.
        return (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response();
    }
    match st.tokens.sign_in(&f.token) {
        Some((id, name)) => {
            tracing::info!(token = %name, "web UI sign-in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, st.tokens.session_cookie(&id)),
                    (header::LOCATION, next),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response()
        }
        None => {
            tracing::info!("web UI sign-in with an unknown token refused");
            sign_in_page(
                StatusCode::UNAUTHORIZED,
                &next,
                Some("That token was not accepted."),
            )
        }
    }
}

/// `GET /ui/sign-out`: a button that posts the sign-out.
pub async fn sign_out_form() -> Response {
    respond(
        StatusCode::OK,
        "Sign out",
        &format!(
            "<h1>Sign out</h1><form method=\"post\" action=\"{SIGN_OUT}\">\
             <button type=\"submit\" id=\"sign-out\">Sign out</button></form>"
        ),
    )
}

/// `POST /ui/sign-out`: ends the session the cookie names and deletes the cookie. Only from our
/// own pages (a cross-site post would sign the user out behind their back).
pub async fn sign_out(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !st.tokens.same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site sign-out refused\n").into_response();
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        st.tokens.sign_out(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, st.tokens.clear_cookie()),
            (header::LOCATION, SIGN_IN.to_owned()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/ui/lots/L1?x=1")), "/ui/lots/L1?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(None), "/");
    }
}
