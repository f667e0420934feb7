//! envd's plain HTTP endpoints: `/health`, `/init`, `/envs`, `/files`, `/metrics`.

pub mod claim;
pub mod files;
pub mod quiesce;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use soulbox_protocol::version::{ENVD_PROTOCOL_VERSION, SOULBOX_VERSION};

use crate::auth::token_matches;
use crate::errors::json_error;
use crate::state::{AppState, InitRequest};

/// Seed feature 1's shape (snake_case field names as in the seed).
#[derive(Serialize)]
struct Health {
    status: &'static str,
    sandbox_id: Option<String>,
    uptime_seconds: u64,
    /// SoulBox's own agent version.
    version: &'static str,
    /// The E2B envd protocol level this agent speaks.
    envd_version: &'static str,
}

/// Seed feature 1. E2B SDKs only need a 2xx; SoulBox clients get the details. 503 when the agent is sick.
pub async fn health(State(state): State<AppState>) -> Response {
    let problem = state.health_problem();
    let body = Health {
        status: if problem.is_none() { "healthy" } else { "unhealthy" },
        sandbox_id: state.config().sandbox_id,
        uptime_seconds: state.started.elapsed().as_secs(),
        version: SOULBOX_VERSION,
        envd_version: ENVD_PROTOCOL_VERSION,
    };
    let status = if problem.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `POST /init`: sets sandbox env vars, access token, default user and workdir. Once a token is set, changing
/// the configuration needs that token.
pub async fn init(State(state): State<AppState>, headers: http::HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(current) = state.config().access_token
        && !token_matches(&headers, &current)
    {
        return json_error(StatusCode::UNAUTHORIZED, "access token present in header but does not match");
    }
    let init: InitRequest = if body.is_empty() {
        InitRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(i) => i,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid init body: {e}")),
        }
    };
    state.update_config(init);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /envs`: the sandbox-level environment variables.
pub async fn envs(State(state): State<AppState>) -> Response {
    Json(state.config().env_vars).into_response()
}

/// `GET /metrics` (seed feature 8): sampled on the blocking pool, since it reads `/proc` and the cgroup.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || state.metrics.collect()).await {
        Ok(metrics) => Json(metrics).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("collecting metrics failed: {e}")),
    }
}
