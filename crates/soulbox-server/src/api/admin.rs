//! E2B's admin routes (an admin API key, in `X-API-Key` or E2B's `X-Admin-Token`):
//! - `POST /admin/teams/{teamID}/sandboxes/kill` → `{killedCount, failedCount}`: every sandbox of the team,
//!   running or paused;
//! - `GET /admin/sandboxes/running-counts` → `{teamID: count}`, teams without running sandboxes left out;
//! - `POST /admin/teams/{teamID}/builds/cancel` → `{cancelledCount, failedCount}`: builds not started yet are
//!   cancelled, and so are running ones this replica runs (the engine removes their build sandboxes); one that
//!   another replica runs counts as failed to cancel and runs to its end.
//!
//! An unknown team is a 404.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::{AdminBuildCancelResult, AdminSandboxKillResult, SandboxState};

use super::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::store::StoreError;

async fn known_team(state: &ApiState, team_id: &str) -> Result<(), Response> {
    match state.lifecycle.store().get_team(team_id).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(error(StatusCode::NOT_FOUND, format!("team {team_id} not found"))),
        Err(e) => Err(LifecycleError::from(e).into_response()),
    }
}

/// `POST /admin/teams/{teamID}/sandboxes/kill`.
pub async fn kill_team_sandboxes(State(state): State<ApiState>, Path(team_id): Path<String>) -> Response {
    if let Err(r) = known_team(&state, &team_id).await {
        return r;
    }
    let sandboxes = match state.lifecycle.store().list_team_sandboxes(&team_id).await {
        Ok(s) => s,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    let mut result = AdminSandboxKillResult { failed_count: 0, killed_count: 0 };
    for sandbox in sandboxes {
        match state.lifecycle.kill(&team_id, &sandbox.id).await {
            // Gone meanwhile (its timeout, another kill): nothing left to kill.
            Ok(()) | Err(LifecycleError::NotFound(_)) => {
                state.metrics.forget(&sandbox.id);
                state.metrics.kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                result.killed_count += 1;
            }
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.id, team = %team_id, error = %e, "admin kill failed");
                result.failed_count += 1;
            }
        }
    }
    tracing::info!(team = %team_id, killed = result.killed_count, failed = result.failed_count, "team's sandboxes killed");
    Json(result).into_response()
}

/// `GET /admin/sandboxes/running-counts`.
pub async fn running_counts(State(state): State<ApiState>) -> Response {
    match state.lifecycle.store().list_sandboxes().await {
        Ok(records) => {
            let mut counts: BTreeMap<String, i64> = BTreeMap::new();
            for r in records.iter().filter(|r| r.state == SandboxState::Running) {
                *counts.entry(r.team_id.clone()).or_default() += 1;
            }
            Json(counts).into_response()
        }
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

/// `POST /admin/teams/{teamID}/builds/cancel`.
pub async fn cancel_team_builds(State(state): State<ApiState>, Path(team_id): Path<String>) -> Response {
    if let Err(r) = known_team(&state, &team_id).await {
        return r;
    }
    let store = state.lifecycle.store();
    let waiting = match store.cancel_waiting_builds(&team_id, "cancelled by an admin").await {
        Ok((cancelled, _)) => cancelled as usize,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    let running = match store.running_builds(&team_id).await {
        Ok(ids) => ids,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    let stopped = crate::builds::cancel_running(&running);
    let failed = running.len() - stopped;
    tracing::info!(team = %team_id, waiting, stopped, failed, "team's builds cancelled");
    Json(AdminBuildCancelResult { cancelled_count: (waiting + stopped) as u32, failed_count: failed as u32 })
        .into_response()
}
