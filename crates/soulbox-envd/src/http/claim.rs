//! `POST /soulbox/claim` (`soulbox_protocol::envd_init::CLAIM_PATH`): a sandbox of the node's booted pool gets
//! its user's identity. The node secret gate in front of every route already checked the pool's secret; this
//! replaces the configuration as a whole (the pool's held no user data, and nothing of it may stay), rewrites the
//! network files and swaps the node secret, so the pool's secret stops working the moment this answers.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::errors::json_error;
use crate::state::{AppState, InitRequest, SandboxConfig};

pub async fn claim(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    if !state.pooled.load(Ordering::SeqCst) {
        // Only a pooled agent has this route, and only until its claim.
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut init: InitRequest = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid claim body: {e}")),
    };
    let Some(secret) = init.envd_secret.take().filter(|s| !s.is_empty()) else {
        return json_error(StatusCode::BAD_REQUEST, "a claim must carry the sandbox's own envdSecret");
    };
    // One claim only, even when two race.
    if state.pooled.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let network = init.network.take();
    let egress_ca = init.egress_ca.take();
    init.pooled = None;
    // The files live below the root the agent publishes to (`/` in a sandbox; none in unit tests).
    if let Some(root) = state.token_file_root.get() {
        if let Some(network) = network {
            for (path, error) in crate::etc_files::write_all(root, &network) {
                tracing::warn!(path, %error, "could not write a network file of the sandbox");
            }
        }
        if let Some(pem) = egress_ca {
            for (path, error) in crate::trust::install(root, &pem) {
                tracing::warn!(path, %error, "could not install the egress CA in the sandbox");
            }
        }
    }
    let mut config = SandboxConfig::default();
    config.apply(init);
    state.replace_config(config);
    match state.node_secret.write() {
        Ok(mut s) => *s = Some(secret),
        Err(poisoned) => *poisoned.into_inner() = Some(secret),
    }
    tracing::info!(sandbox = state.config().sandbox_id.as_deref().unwrap_or(""), "claimed from the booted pool");
    StatusCode::NO_CONTENT.into_response()
}
