//! What node agents ask the control plane for besides heartbeats, with the cluster's node token: the
//! installation's egress CA (`GET /cluster/egress-ca`, once at start) and a header rule's secret
//! (`POST /cluster/secret`, as a sandbox's request leaves its node).
//!
//! The node token is the cluster's one trust root between control plane and nodes (a holder can register as any
//! node), so these hand a node no more than it could get by joining: the CA every node signs with, and a secret
//! only for a sandbox the store places on the asking node.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use super::ApiState;
use crate::cluster::wire::{SecretRequest, SecretResponse};
use crate::lifecycle::LifecycleError;

/// The registry when this is a cluster and the caller holds its node token; the error answer otherwise.
fn authorized<'a>(
    state: &'a ApiState,
    headers: &http::HeaderMap,
) -> Result<&'a crate::cluster::registry::Registry, Box<Response>> {
    let Some(registry) = state.lifecycle.nodes().cluster() else {
        let why = "this server is not in cluster mode (no node_token configured)";
        return Err(Box::new(super::error(StatusCode::NOT_FOUND, why)));
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !crate::cluster::wire::token_matches(&registry.config().node_token, authorization) {
        return Err(Box::new(super::error(StatusCode::UNAUTHORIZED, "invalid node token")));
    }
    Ok(registry)
}

pub async fn egress_ca(State(state): State<ApiState>, headers: http::HeaderMap) -> Response {
    let registry = match authorized(&state, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match &registry.config().egress_ca {
        Some(ca) => Json(ca.clone()).into_response(),
        None => super::error(StatusCode::NOT_FOUND, "this control plane has no egress CA"),
    }
}

pub async fn secret(State(state): State<ApiState>, headers: http::HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(resp) = authorized(&state, &headers) {
        return *resp;
    }
    let request: SecretRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return super::error(StatusCode::BAD_REQUEST, format!("invalid secret request: {e}")),
    };
    let store = state.lifecycle.store();
    let record = match store.get_sandbox(&request.sandbox_id).await {
        Ok(r) => r,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    if record.node_id != request.node_id {
        return super::error(StatusCode::FORBIDDEN, "the sandbox does not run on this node");
    }
    match store.secret_value(&record.team_id, &request.name).await {
        Ok(value) => Json(SecretResponse { value: value.map(|v| v.expose().to_owned()) }).into_response(),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}
