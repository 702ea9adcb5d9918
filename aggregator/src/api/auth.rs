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

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{Method, header};
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

/// The configured API tokens.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
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
        Ok(Tokens { tokens })
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
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
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
}

/// The middleware; layered over the whole router by `api::router`.
pub async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !st.tokens.is_enabled() || OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some((name, scope)) = presented.and_then(|p| st.tokens.check(p)) else {
        return ApiError::Unauthorized.into_response();
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !read_only && scope != Scope::Write {
        tracing::info!(token = name, method = %req.method(), path = req.uri().path(), "write refused to a read-scope token");
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
