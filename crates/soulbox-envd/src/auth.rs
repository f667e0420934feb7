//! Who is calling: the access-token gate in front of every route, and the user a call runs as.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use soulbox_protocol::connect::RpcError;
use soulbox_protocol::envd_secret;
use subtle::ConstantTimeEq;

use crate::errors::json_error;
use crate::state::AppState;
use crate::users::{Accounts, User};

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// The user everything runs as when neither the call nor `/init` names one.
pub const FALLBACK_USER: &str = "root";

/// The outermost gate: an agent started with a node secret answers only requests that carry it — every route,
/// `/health`, `/init`, CORS preflights and unknown paths alike. Only the node that started the sandbox knows the
/// secret (its proxy adds it), so nothing else that reaches the sandbox's address talks to envd.
pub async fn require_node_secret(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(secret) = state.node_secret()
        && !secret_matches(request.headers(), &secret)
    {
        tracing::debug!(method = %request.method(), path = request.uri().path(), "refused a request without the node's secret");
        return node_secret_refused();
    }
    next.run(request).await
}

/// Constant-time check of the node secret header against `secret`.
pub fn secret_matches(headers: &HeaderMap, secret: &str) -> bool {
    headers.get(envd_secret::HEADER).map(|v| bool::from(v.as_bytes().ct_eq(secret.as_bytes()))).unwrap_or(false)
}

/// 403 in E2B's error shape, marked so that a proxy can tell this refusal from the access-token checks.
fn node_secret_refused() -> Response {
    let mut response = json_error(StatusCode::FORBIDDEN, "this agent answers only the node that started its sandbox");
    response
        .headers_mut()
        .insert(envd_secret::REFUSED_HEADER, http::HeaderValue::from_static(envd_secret::REFUSED_VALUE));
    response
}

/// With an access token configured, every route except `GET /health`, `/files` (which checks the token or a
/// signature itself), `POST /init` and the node's quiesce (its secret alone; the route exists only with one)
/// needs a matching `X-Access-Token`.
pub async fn require_access_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let exempt = matches!(
        (request.method(), request.uri().path()),
        (&Method::GET, "/health")
            | (&Method::POST, "/init")
            | (&Method::POST, soulbox_protocol::envd_init::QUIESCE_PATH)
            | (&Method::GET | &Method::POST, "/files")
            | (&Method::OPTIONS, _)
    );
    if exempt {
        return next.run(request).await;
    }
    let expected = state.config().access_token;
    match expected {
        Some(token) if !token_matches(request.headers(), &token) => json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized access, please provide a valid access token or method signing if supported",
        ),
        _ => next.run(request).await,
    }
}

/// Constant-time check of the `X-Access-Token` header against `token`.
pub fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    headers.get(ACCESS_TOKEN_HEADER).map(|v| bool::from(v.as_bytes().ct_eq(token.as_bytes()))).unwrap_or(false)
}

/// The username of a `Basic base64("<user>:")` authorization header, if there is one.
pub fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_owned())
}

/// The user an RPC runs as: the Basic-auth user, else the default user from `/init`, else root.
pub fn rpc_user(state: &AppState, headers: &HeaderMap) -> Result<User, RpcError> {
    let name =
        basic_auth_user(headers).or_else(|| state.config().default_user).unwrap_or_else(|| FALLBACK_USER.to_owned());
    lookup(&name).ok_or_else(|| RpcError::unauthenticated(format!("invalid username: '{name}'")))
}

/// The user a `/files` request acts as: the `username` query parameter, else the default user, else root.
#[allow(clippy::result_large_err)] // the error is the ready response, built only on the error path
pub fn files_user(state: &AppState, username: Option<&str>) -> Result<User, Response> {
    let name = username
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .or_else(|| state.config().default_user)
        .unwrap_or_else(|| FALLBACK_USER.to_owned());
    lookup(&name)
        .ok_or_else(|| json_error(StatusCode::UNAUTHORIZED, &format!("error looking up user '{name}': unknown user")))
}

fn lookup(name: &str) -> Option<User> {
    Accounts::load().user(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_user() {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Basic dXNlcjo=".parse().unwrap()); // "user:"
        assert_eq!(basic_auth_user(&h).as_deref(), Some("user"));
        h.insert(http::header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_auth_user(&h), None);
    }

    #[test]
    fn secret_compare() {
        let mut h = HeaderMap::new();
        assert!(!secret_matches(&h, "s3cret"));
        h.insert(envd_secret::HEADER, "s3cret".parse().unwrap());
        assert!(secret_matches(&h, "s3cret"));
        assert!(!secret_matches(&h, "s3cre"));
        assert!(!secret_matches(&h, "s3cret!"));
        h.insert(envd_secret::HEADER, "".parse().unwrap());
        assert!(!secret_matches(&h, "s3cret"));
    }

    #[test]
    fn token_compare() {
        let mut h = HeaderMap::new();
        assert!(!token_matches(&h, "t"));
        h.insert(ACCESS_TOKEN_HEADER, "t".parse().unwrap());
        assert!(token_matches(&h, "t"));
        assert!(!token_matches(&h, "tt"));
    }
}
