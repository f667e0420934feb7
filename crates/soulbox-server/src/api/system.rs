//! Server health (seed feature 1), Prometheus metrics, the OpenAPI document, nodes (seed feature 10) and
//! templates as the node knows them.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use soulbox_protocol::api::SandboxState;
use soulbox_protocol::version::SOULBOX_VERSION;

use super::ApiState;
use crate::lifecycle::LifecycleError;
use crate::metrics::MetricsStore;
use crate::time::rfc3339;

/// `GET /health`: 200 when the store answers and the node is usable, else 503 with the reason.
pub async fn health(State(state): State<ApiState>) -> Response {
    let store_ok = state.lifecycle.store().count_active_api_keys().await.is_ok();
    let node = state.lifecycle.node().info().await;
    let node_ok = !matches!(node.status, crate::node::NodeStatus::Unhealthy);
    let healthy = store_ok && node_ok;
    let body = serde_json::json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "version": SOULBOX_VERSION,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "checks": { "store": store_ok, "node": node.status.as_str() },
    });
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition of the server's own state.
pub async fn prometheus(State(state): State<ApiState>) -> Response {
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
         soulbox_uptime_seconds {}\n",
        MetricsStore::counter(&m.creates),
        MetricsStore::counter(&m.create_failures),
        MetricsStore::counter(&m.kills),
        node.memory_available_mb * 1024 * 1024,
        state.started.elapsed().as_secs(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json")).into_response()
}

pub async fn nodes(State(state): State<ApiState>) -> Response {
    let n = state.lifecycle.node().info().await;
    Json(serde_json::json!([{
        "nodeID": n.node_id,
        "status": n.status.as_str(),
        "region": n.region,
        "version": n.version,
        "cpuCount": n.cpu_count,
        "memoryMB": n.memory_mb,
        "cpuAvailable": n.cpu_available,
        "memoryAvailableMB": n.memory_available_mb,
        "sandboxCount": n.sandbox_count,
        "lastHealthCheck": rfc3339(n.last_health_check_unix_ms),
    }]))
    .into_response()
}

pub async fn templates(State(state): State<ApiState>) -> Response {
    match state.lifecycle.node().templates().await {
        Ok(list) => Json(
            list.iter()
                .filter(|t| !crate::templates::api::is_internal_template(&t.template_id))
                .map(|t| {
                    serde_json::json!({
                        "templateID": t.template_id,
                        "buildID": t.template_id,
                        "aliases": t.aliases,
                        "names": t.aliases,
                        "cpuCount": t.cpu_count,
                        "memoryMB": t.memory_mb,
                        "diskSizeMB": t.disk_size_mb,
                        "envdVersion": t.envd_version,
                        "public": false,
                        "buildStatus": "ready",
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}
