//! Bearer-token authentication for the HTTP API.
//!
//! No tokens configured = no authentication (loopback installs). With tokens, every request
//! needs `Authorization: Bearer <token>` except `/healthz` and `/metrics`, which stay open for
//! load balancers and Prometheus (they reveal no genealogy). Read-scope tokens may use GET and
//! HEAD only; anything else (the POST master-data routes) needs write scope.
//!
//! Tokens are read from their files once at start (surrounding whitespace trimmed) and kept only
//! as SHA-256 digests; a presented token is hashed and compared against every digest in constant
//! time, so neither timing nor logs reveal a token. Only the token's *name* is ever logged.
//!
//! **Web UI sessions.** A browser signs in once at `/ui/sign-in` with a token; the server keeps
//! a session (token name, scope, expiry) under a random 256-bit id and sets the cookie
//! [`SESSION_COOKIE`] (`HttpOnly; SameSite=Strict; Path=/`, `Secure` behind TLS) holding only
//! that id, never the token. The cookie is accepted wherever a bearer token is (pages and API);
//! sessions live in memory (a restart signs everyone out), expire after [`SESSION_TTL`], and end
//! at `POST /ui/sign-out`. A request with an `Authorization` header is judged by it alone.
//!
//! **CSRF.** A cookie is sent by the browser whatever page made the request, so a state-changing
//! request (anything but GET/HEAD/OPTIONS) authenticated by the cookie must prove it comes from
//! our own pages: `Sec-Fetch-Site: same-origin`, or else an `Origin` equal to this server's
//! (`Host` header, with the scheme the server speaks). Without either it is refused (403).
//! `SameSite=Strict` already keeps the cookie off cross-site requests in current browsers; this
//! check is the second lock (older browsers, sibling subdomains). Bearer requests are not
//! affected (a browser never adds that header by itself).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::config::{Scope, TokenConfig};

/// Paths answered without a token.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/metrics"];

struct Token {
    name: String,
    scope: Scope,
    digest: [u8; 32],
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tl_session";
/// How long a web UI session lasts after sign-in (a shift and a half).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes when a new one would exceed it (bounded memory, even
/// if someone signs in in a loop with a valid token).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: String,
    scope: Scope,
    expires: Instant,
}

/// The live web UI sessions, by the SHA-256 of their id.
#[derive(Default)]
struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// The configured API tokens, and the web UI sessions signed in with them.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
    sessions: Sessions,
    /// The server speaks TLS: session cookies get `Secure`, and same-origin means `https://`.
    tls: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a digest is not the token, but there is no reason to print it either.
        f.debug_list()
            .entries(self.tokens.iter().map(|t| &t.name))
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Tokens {
    /// Reads every token file; an unreadable or empty file is an error naming the token.
    pub fn load(configs: &[TokenConfig]) -> anyhow::Result<Tokens> {
        let mut tokens = Vec::with_capacity(configs.len());
        for c in configs {
            let raw = std::fs::read_to_string(&c.token_file).with_context(|| {
                format!(
                    "reading token file {} of token {:?}",
                    c.token_file.display(),
                    c.name
                )
            })?;
            let t = raw.trim();
            if t.is_empty() {
                anyhow::bail!(
                    "token file {} of token {:?} is empty",
                    c.token_file.display(),
                    c.name
                );
            }
            tokens.push(Token {
                name: c.name.clone(),
                scope: c.scope,
                digest: digest(t.as_bytes()),
            });
        }
        Ok(Tokens {
            tokens,
            ..Tokens::default()
        })
    }

    /// Tokens given directly (tests, embedded setups).
    pub fn from_pairs(pairs: &[(&str, &str, Scope)]) -> Tokens {
        Tokens {
            tokens: pairs
                .iter()
                .map(|(name, token, scope)| Token {
                    name: (*name).to_owned(),
                    scope: *scope,
                    digest: digest(token.trim().as_bytes()),
                })
                .collect(),
            ..Tokens::default()
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Marks the server as speaking TLS (`[http] tls_cert_file`): cookies get `Secure`.
    pub fn with_tls(mut self, tls: bool) -> Tokens {
        self.tls = tls;
        self
    }

    /// Signs in with a token: a new session id (64 hex digits) and the token's name, or `None`
    /// for an unknown token.
    pub fn sign_in(&self, presented: &str) -> Option<(String, String)> {
        let (name, scope) = self.check(presented.trim())?;
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).ok()?;
        let id = hex::encode(raw);
        let now = Instant::now();
        let mut map = self.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(id.as_bytes()),
            Session {
                token: name.to_owned(),
                scope,
                expires: now + SESSION_TTL,
            },
        );
        Some((id, name.to_owned()))
    }

    /// Ends a session (unknown ids are ignored).
    pub fn sign_out(&self, id: &str) {
        let mut map = self.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&digest(id.as_bytes()));
    }

    /// The token name and scope of a live session.
    fn session(&self, id: &str) -> Option<(String, Scope)> {
        let key = digest(id.as_bytes());
        let mut map = self.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some((s.token.clone(), s.scope)),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// The `Set-Cookie` value that stores session `id` in the browser.
    pub fn session_cookie(&self, id: &str) -> String {
        format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            if self.tls { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that deletes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.tls { "; Secure" } else { "" }
        )
    }

    /// The matching token's name and scope. Compares against every token so the time taken does
    /// not depend on which one (if any) matched.
    fn check(&self, presented: &str) -> Option<(&str, Scope)> {
        let d = digest(presented.as_bytes());
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(&t.digest, &d) && found.is_none() {
                found = Some((t.name.as_str(), t.scope));
            }
        }
        found
    }

    /// Whether a request comes from this server's own pages (see the module doc, CSRF).
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        if let Some(site) = get("sec-fetch-site") {
            return site == "same-origin";
        }
        match (get("origin"), get("host")) {
            (Some(origin), Some(host)) => {
                let scheme = if self.tls { "https" } else { "http" };
                origin == format!("{scheme}://{host}")
            }
            _ => false,
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Paths every visitor may reach even with tokens configured: the sign-in page and the assets
/// it needs. (Sign-out is open too: it only ends the session its cookie names.)
fn is_public(path: &str) -> bool {
    OPEN_PATHS.contains(&path)
        || path.starts_with("/ui/assets/")
        || path == crate::web::signin::SIGN_IN
        || path == crate::web::signin::SIGN_OUT
}

/// A page of the UI (answered with the sign-in page when not signed in), not an API route.
fn is_page(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// 403 for a cookie-authenticated write that does not come from our own pages.
fn cross_site() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({
            "error": "cross-site request refused: a request authenticated by the session cookie \
                      must come from this server's pages (Origin / Sec-Fetch-Site)",
            "detail": null
        })),
    )
        .into_response()
}

/// The middleware; layered over the whole router by `api::router`.
pub async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !st.tokens.is_enabled() || is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let authorization = req.headers().get(header::AUTHORIZATION);
    let (name, scope) = if let Some(value) = authorization {
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some((name, scope)) = presented.and_then(|p| st.tokens.check(p)) else {
            return ApiError::Unauthorized.into_response();
        };
        (name.to_owned(), scope)
    } else if let Some(found) =
        cookie(req.headers(), SESSION_COOKIE).and_then(|id| st.tokens.session(id))
    {
        if !read_only && !st.tokens.same_origin(req.headers()) {
            tracing::info!(token = %found.0, method = %req.method(), path = req.uri().path(), "cross-site request with a session cookie refused");
            return cross_site();
        }
        found
    } else if read_only && is_page(req.uri().path()) {
        let next_path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        return crate::web::signin::sign_in_page(StatusCode::UNAUTHORIZED, &next_path, None);
    } else {
        return ApiError::Unauthorized.into_response();
    };
    if !read_only && scope != Scope::Write {
        tracing::info!(token = %name, method = %req.method(), path = req.uri().path(), "write refused to a read-scope token");
        return ApiError::Forbidden("write".to_owned()).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_trims_and_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("t");
        std::fs::write(&f, "  s3cret\n").expect("write");
        let t = Tokens::load(&[TokenConfig {
            name: "erp".into(),
            token_file: f,
            scope: Scope::Read,
        }])
        .expect("load");
        assert_eq!(t.check("s3cret"), Some(("erp", Scope::Read)));
        assert_eq!(t.check("s3cre"), None);
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn load_refuses_missing_and_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("empty");
        std::fs::write(&f, "\n").expect("write");
        let e = Tokens::load(&[TokenConfig {
            name: "a".into(),
            token_file: f,
            scope: Scope::Read,
        }])
        .unwrap_err();
        assert!(format!("{e:#}").contains("empty"));
        let missing = dir.path().join("nope");
        assert!(
            Tokens::load(&[TokenConfig {
                name: "b".into(),
                token_file: missing,
                scope: Scope::Read
            }])
            .is_err()
        );
    }
}
