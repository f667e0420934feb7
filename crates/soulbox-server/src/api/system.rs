//! Server health (seed feature 1), Prometheus metrics, the OpenAPI document and nodes (seed feature 10).

use axum::Json;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use soulbox_protocol::api::SandboxState;
use soulbox_protocol::version::SOULBOX_VERSION;

use super::ApiState;
use crate::lifecycle::LifecycleError;
use crate::metrics::MetricsStore;
use crate::node::NodeStatus;
use crate::time::rfc3339;

/// `GET /health`: 200 when the store answers and the node is usable, else 503 with the reason.
pub async fn health(State(state): State<ApiState>) -> Response {
    let store_ok = state.lifecycle.store().count_active_api_keys().await.is_ok();
    // On one machine the node is part of the server; in a cluster the control plane is healthy with its store
    // (`checks.node` then says whether any node is alive).
    let node = state.lifecycle.node().info().await;
    let cluster = state.lifecycle.nodes().cluster().is_some();
    let node_ok = cluster || !matches!(node.status, NodeStatus::Unhealthy);
    let healthy = store_ok && node_ok;
    let body = soulbox_protocol::api::Health {
        checks: soulbox_protocol::api::HealthChecks { node: node.status.as_str().to_owned(), store: store_ok },
        status: if healthy { "healthy" } else { "unhealthy" }.to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        version: SOULBOX_VERSION.to_owned(),
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition of the server's own state; with `metrics_token` configured only
/// for `Authorization: Bearer <token>`.
pub async fn prometheus(
    State(state): State<ApiState>,
    token: Option<axum::Extension<crate::prom::MetricsToken>>,
    headers: http::HeaderMap,
) -> Response {
    let token = token.as_ref().and_then(|t| t.0.0.as_deref());
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !crate::prom::authorized(token, given) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics need Authorization: Bearer <metrics_token>\n",
        )
            .into_response();
    }
    let records = state.lifecycle.store().list_sandboxes().await.unwrap_or_default();
    let running = records.iter().filter(|r| r.state == SandboxState::Running).count();
    let paused = records.len() - running;
    let m = &state.metrics;
    let node = state.lifecycle.node().info().await;
    let text = format!(
        "# HELP soulbox_sandboxes Sandboxes by state.\n# TYPE soulbox_sandboxes gauge\n\
         soulbox_sandboxes{{state=\"running\"}} {running}\nsoulbox_sandboxes{{state=\"paused\"}} {paused}\n\
         # HELP soulbox_sandbox_creates_total Create requests.\n# TYPE soulbox_sandbox_creates_total counter\n\
         soulbox_sandbox_creates_total {}\n\
         # HELP soulbox_sandbox_create_failures_total Create requests that failed.\n# TYPE soulbox_sandbox_create_failures_total counter\n\
         soulbox_sandbox_create_failures_total {}\n\
         # HELP soulbox_sandbox_kills_total Kill requests that succeeded.\n# TYPE soulbox_sandbox_kills_total counter\n\
         soulbox_sandbox_kills_total {}\n\
         # HELP soulbox_node_memory_available_bytes Memory available for new sandboxes.\n# TYPE soulbox_node_memory_available_bytes gauge\n\
         soulbox_node_memory_available_bytes {}\n\
         # HELP soulbox_uptime_seconds Seconds since the server started.\n# TYPE soulbox_uptime_seconds gauge\n\
         soulbox_uptime_seconds {}\n\
         # HELP soulbox_metrics_sampler_rounds_total Rounds of the per-sandbox metrics sampler.\n# TYPE soulbox_metrics_sampler_rounds_total counter\n\
         soulbox_metrics_sampler_rounds_total {}\n\
         # HELP soulbox_metrics_sampler_cpu_seconds_total CPU time the sampler's rounds took.\n# TYPE soulbox_metrics_sampler_cpu_seconds_total counter\n\
         soulbox_metrics_sampler_cpu_seconds_total {}\n\
         # HELP soulbox_metrics_sampler_last_round_seconds Wall time of the sampler's last round.\n# TYPE soulbox_metrics_sampler_last_round_seconds gauge\n\
         soulbox_metrics_sampler_last_round_seconds {}\n{}",
        MetricsStore::counter(&m.creates),
        MetricsStore::counter(&m.create_failures),
        MetricsStore::counter(&m.kills),
        node.memory_available_mb * 1024 * 1024,
        state.started.elapsed().as_secs(),
        MetricsStore::counter(&m.sampler_rounds),
        MetricsStore::counter(&m.sampler_cpu_us) as f64 / 1e6,
        MetricsStore::counter(&m.sampler_last_round_us) as f64 / 1e6,
        crate::prom::render(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json")).into_response()
}

fn node_view(v: &crate::cluster::NodeView) -> soulbox_protocol::api::NodeInfo {
    let n = &v.info;
    soulbox_protocol::api::NodeInfo {
        address: v.address.clone(),
        cpu_available: n.cpu_available,
        cpu_count: n.cpu_count,
        draining: v.draining,
        last_health_check: Some(rfc3339(n.last_health_check_unix_ms)),
        last_heartbeat: v.last_heartbeat_ms.map(rfc3339),
        memory_available_mb: n.memory_available_mb,
        memory_mb: n.memory_mb,
        node_id: n.node_id.clone(),
        region: n.region.clone(),
        registered_at: v.registered_at_ms.map(rfc3339),
        sandbox_count: n.sandbox_count,
        status: n.status.as_str().to_owned(),
        trouble: n.trouble.clone(),
        version: n.version.clone(),
    }
}

/// `GET /nodes`: every node with status and capacity (seed feature 10).
pub async fn nodes(State(state): State<ApiState>) -> Response {
    match state.lifecycle.nodes().list().await {
        Ok(list) => Json(list.iter().map(node_view).collect::<Vec<_>>()).into_response(),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

/// `GET /nodes/{id}`.
pub async fn node(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.lifecycle.nodes().list().await {
        Ok(list) => match list.iter().find(|v| v.info.node_id == id) {
            Some(v) => Json(node_view(v)).into_response(),
            None => LifecycleError::NotFound(format!("node {id} not found")).into_response(),
        },
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

/// `POST /nodes/{id}/drain`: the node takes no new sandboxes; those it has run to their end.
pub async fn drain(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    set_draining(state, id, true).await
}

/// `POST /nodes/{id}/undrain`.
pub async fn undrain(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    set_draining(state, id, false).await
}

/// `POST /nodes/{id}/evacuate`: a drained node's sandboxes paused to disk and its snapshots move to other nodes
/// now (`Lifecycle::evacuate`); 409 unless the node is draining.
pub async fn evacuate(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.lifecycle.evacuate(&id).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /nodes/{id} {status}` (E2B's node status change): `draining` drains, `ready` undrains; E2B's other
/// statuses are not ones an admin sets here (`connecting`, `unhealthy` are observed; SoulBox has no `standby`).
pub async fn set_node_status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    struct NodeStatusChange {
        status: String,
    }
    let change: NodeStatusChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return super::error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")),
    };
    let draining = match change.status.as_str() {
        "draining" => true,
        "ready" => false,
        other => {
            return super::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "status '{other}' cannot be set: use draining or ready (POST /nodes/{{id}}/evacuate moves paused sandboxes off)"
                ),
            );
        }
    };
    match state.lifecycle.nodes().set_draining(&id, draining).await {
        Ok(()) => {
            tracing::info!(node = %id, draining, "node status set");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

async fn set_draining(state: ApiState, id: String, draining: bool) -> Response {
    match state.lifecycle.nodes().set_draining(&id, draining).await {
        Ok(()) => {
            tracing::info!(node = %id, draining, "node drain flag set");
            node(State(state), Path(id)).await
        }
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

/// `DELETE /nodes/{id}[?force=true]`: forgets a node. Refused (409) while it holds sandboxes and still
/// heartbeats, unless forced; its sandboxes are then lost (and killed by the node if it comes back).
pub async fn remove_node(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let force = params.get("force").is_some_and(|v| v == "true" || v == "1");
    let views = match state.lifecycle.nodes().list().await {
        Ok(v) => v,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    let Some(view) = views.iter().find(|v| v.info.node_id == id) else {
        return LifecycleError::NotFound(format!("node {id} not found")).into_response();
    };
    let sandboxes = match state.lifecycle.store().sandboxes_on_node(&id).await {
        Ok(s) => s,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    if !sandboxes.is_empty() && view.info.status != NodeStatus::Unhealthy && !force {
        return LifecycleError::Conflict(format!(
            "node {id} still has {} sandboxes: drain it, evacuate it (moves what is paused to disk) and wait, or \
             remove with ?force=true (they are then lost)",
            sandboxes.len()
        ))
        .into_response();
    }
    // Node-local volumes keep their files on the node whatever its health (an agent back under its id serves them
    // again): removing it makes them unreachable, so only on purpose.
    let volumes = match state.lifecycle.store().volumes_on_node(&id).await {
        Ok(n) => n,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    if volumes > 0 && !force {
        return LifecycleError::Conflict(format!(
            "node {id} holds the files of {volumes} volumes, which cannot move: delete them first, or remove with \
             ?force=true (they are then unreachable until an agent with this node id registers again)"
        ))
        .into_response();
    }
    if let Err(e) = state.lifecycle.nodes().remove(&id).await {
        return LifecycleError::from(e).into_response();
    }
    for (sandbox, _) in sandboxes {
        if let Err(e) = state.lifecycle.forget(&sandbox, &format!("node {id} was removed")).await {
            tracing::warn!(sandbox = %sandbox, error = %e, "could not drop a removed node's sandbox");
        }
    }
    tracing::info!(node = %id, "node removed");
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /cluster/heartbeat`: node agents register and report (authenticated by the cluster's node token, not
/// an API key).
pub async fn heartbeat(State(state): State<ApiState>, headers: http::HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(registry) = state.lifecycle.nodes().cluster() else {
        return super::error(StatusCode::NOT_FOUND, "this server is not in cluster mode (no node_token configured)");
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !crate::cluster::wire::token_matches(&registry.config().node_token, authorization) {
        return super::error(StatusCode::UNAUTHORIZED, "invalid node token");
    }
    let request: crate::cluster::wire::HeartbeatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return super::error(StatusCode::BAD_REQUEST, format!("invalid heartbeat: {e}")),
    };
    match crate::cluster_control::heartbeat(&state.lifecycle, registry, request).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}
