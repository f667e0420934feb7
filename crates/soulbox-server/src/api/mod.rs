//! The E2B REST API (spec §1) plus SoulBox's additions, in E2B's error shape everywhere.

mod admin;
mod cluster;
mod dashboard;
mod json_body;
mod keys;
mod log_lines;
mod network;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod rest_tests;
mod sandbox_logs;
mod sandboxes;
mod secrets;
#[cfg(test)]
mod secrets_tests;
mod snapshots;
#[cfg(test)]
mod snapshots_tests;
mod system;
mod team_metrics;
mod teams;
#[cfg(test)]
mod teams_tests;
pub mod templates;
#[cfg(test)]
mod tests;
mod unsupported;
mod volume_content;
pub mod volume_ops;
mod volumes;
#[cfg(test)]
mod volumes_cluster_tests;
#[cfg(test)]
mod volumes_tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use http::StatusCode;

use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::metrics::MetricsStore;
pub use crate::reply::error;
use crate::store::Caller;

/// Everything the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<MetricsStore>,
    /// Base domain returned to clients (`null` when unset: clients then use their own `E2B_DOMAIN`).
    pub domain: Option<String>,
    pub started: std::time::Instant,
}

pub fn router(state: ApiState) -> Router {
    let authenticated = Router::new()
        .route("/sandboxes", post(sandboxes::create_v1).get(sandboxes::list_v1))
        .route("/v2/sandboxes", post(sandboxes::create_v2).get(sandboxes::list_v2))
        .route("/sandboxes/metrics", get(sandboxes::metrics_many))
        .route("/sandboxes/{id}", get(sandboxes::get).delete(sandboxes::kill))
        .route("/sandboxes/{id}/connect", post(sandboxes::connect_v1))
        .route("/v2/sandboxes/{id}/connect", post(sandboxes::connect_v2))
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/network", put(network::update))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/refreshes", post(sandboxes::refresh))
        .route("/sandboxes/{id}/metrics", get(sandboxes::metrics_one))
        .route("/sandboxes/{id}/logs", get(sandbox_logs::logs_v1))
        .route("/v2/sandboxes/{id}/logs", get(sandbox_logs::logs_v2))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/snapshots", get(snapshots::list))
        .route("/secrets", post(secrets::create).get(secrets::list))
        .route("/secrets/{id}", get(secrets::get).post(secrets::update).delete(secrets::delete))
        .route("/volumes", post(volumes::create).get(volumes::list))
        .route("/volumes/{id}", get(volumes::get).delete(volumes::delete))
        .route("/teams", get(teams::list_teams))
        .route("/teams/{id}/metrics", get(team_metrics::metrics))
        .route("/teams/{id}/metrics/max", get(team_metrics::max))
        .route("/api-keys", get(keys::list_keys).post(keys::create_key))
        .route("/api-keys/{id}", patch(keys::rename_key).delete(keys::revoke_key))
        .route("/access-tokens", post(keys::create_token))
        .route("/access-tokens/{id}", delete(keys::delete_token))
        .merge(templates::routes())
        .merge(admin_routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .route("/health", get(system::health))
        .route("/metrics", get(system::prometheus))
        .route("/openapi.json", get(system::openapi))
        // Node agents authenticate with the cluster's node token, checked in the handler.
        .route(crate::cluster::wire::HEARTBEAT_PATH, post(system::heartbeat))
        .route(crate::cluster::wire::EGRESS_CA_PATH, get(cluster::egress_ca))
        .route(crate::cluster::wire::SECRET_PATH, post(cluster::secret))
        .merge(dashboard::routes())
        .merge(authenticated)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn(refuse_oversized_bodies))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Template file uploads (large, token in the URL) are outside the body limit and the API key.
        .merge(templates::upload_routes())
        .merge(volume_content::routes())
        .layer(axum::middleware::from_fn(soulbox_http::linger_on_unread_body))
        .with_state(state)
}

/// Routes for the admin role only (nodes, keys): other keys get 403.
fn admin_routes() -> Router<ApiState> {
    Router::new()
        .route("/nodes", get(system::nodes))
        .route("/nodes/{id}", get(system::node).post(system::set_node_status).delete(system::remove_node))
        .route("/nodes/{id}/drain", post(system::drain))
        .route("/nodes/{id}/undrain", post(system::undrain))
        .route("/nodes/{id}/evacuate", post(system::evacuate))
        .route("/admin/teams/{team}/api-keys", post(keys::admin_create_key))
        .route("/admin/teams/{team}/api-keys/{id}", delete(keys::admin_revoke_key))
        .route("/admin/teams/{team}/sandboxes/kill", post(admin::kill_team_sandboxes))
        .route("/admin/teams/{team}/builds/cancel", post(admin::cancel_team_builds))
        .route("/admin/sandboxes/running-counts", get(admin::running_counts))
        .route_layer(axum::middleware::from_fn(require_admin))
}

/// Largest JSON body the API accepts.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A declared `Content-Length` over the limit is refused before any of the body is read (and before hyper sends
/// `100 Continue`), so the client gets the 413 instead of a connection closed mid-upload.
async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY_BYTES as u64 => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is over the limit of {MAX_BODY_BYTES} bytes"),
        ),
        _ => next.run(request).await,
    }
}

/// Rewrites errors produced outside our handlers (axum's extractor rejections: bad paths, queries, oversized
/// bodies, wrong methods) into E2B's `{"code","message"}` shape, which the Python SDK always parses.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    error(status, message)
}

/// How a request authenticated: E2B's `X-API-Key` (or `X-Admin-Token` with an admin key), or an access token in
/// `Authorization: Bearer` (E2B's `AccessTokenAuth`; it acts as a member of its team).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    AccessToken,
}

/// Every API route needs a key or an access token, checked against the store (hashes, constant-time); the
/// handlers get the [`Caller`] (its team scopes what they see) and the [`Credential`].
async fn require_api_key(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (api_key, admin_token) = (header("x-api-key"), header("x-admin-token"));
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    let store = state.lifecycle.store();
    let (found, credential) = if let Some(key) = api_key {
        (store.authenticate_api_key(&key).await, Credential::ApiKey)
    } else if let Some(key) = &admin_token {
        // E2B's admin header: here it carries an admin API key.
        let found = store.authenticate_api_key(key).await.map(|c| c.filter(Caller::is_admin));
        (found, Credential::ApiKey)
    } else if let Some(token) = bearer {
        (store.authenticate_access_token(&token).await, Credential::AccessToken)
    } else {
        return refuse_unread(
            &request,
            StatusCode::UNAUTHORIZED,
            "missing API key: set the X-API-Key header (or Authorization: Bearer with an access token)",
        );
    };
    match found {
        Ok(Some(caller)) => {
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(credential);
            next.run(request).await
        }
        Ok(None) => refuse_unread(
            &request,
            StatusCode::UNAUTHORIZED,
            match credential {
                Credential::ApiKey if admin_token.is_some() => "invalid admin token",
                Credential::ApiKey => "invalid API key",
                Credential::AccessToken => "invalid access token",
            },
        ),
        Err(e) => {
            tracing::error!(error = %e, "api key check failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "could not check the API key")
        }
    }
}

/// The admin routes: 403 in E2B's shape for any other key (it is valid, so not 401).
async fn require_admin(request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.is_admin() => next.run(request).await,
        _ => refuse_unread(
            &request,
            StatusCode::FORBIDDEN,
            "this route needs an admin API key (`soulbox keys create --admin`)",
        ),
    }
}

/// A refusal sent before the request's body was read. hyper then closes the connection unless the body had
/// already arrived whole, and a keep-alive client that reuses it gets "server disconnected" on its next request:
/// `Connection: close` tells it not to.
fn refuse_unread(request: &Request, status: StatusCode, message: &str) -> Response {
    let mut response = error(status, message);
    let headers = request.headers();
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > 0) || headers.contains_key(http::header::TRANSFER_ENCODING) {
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

/// The HTTP status E2B answers a lifecycle error with.
fn status_of(e: &LifecycleError) -> StatusCode {
    match e {
        LifecycleError::NotFound(_) => StatusCode::NOT_FOUND,
        LifecycleError::Conflict(_) => StatusCode::CONFLICT,
        LifecycleError::BadRequest(_) => StatusCode::BAD_REQUEST,
        LifecycleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        LifecycleError::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        LifecycleError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        LifecycleError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        LifecycleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for LifecycleError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
        }
        error(status, self.to_string())
    }
}
