//! `GET /teams` (any key or access token: its own team). Keys and tokens: `keys.rs`; team metrics:
//! `team_metrics.rs`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use soulbox_protocol::api::{Team, TeamLimits};

use super::ApiState;
use crate::lifecycle::LifecycleError;
use crate::store::Caller;

/// `GET /teams`: the caller's team, in E2B's `Team` shape (with its effective limits).
pub async fn list_teams(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let team = match state.lifecycle.store().get_team(&caller.team_id).await {
        Ok(t) => t,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    let limits = state.lifecycle.config().team_limits.with(team.overrides);
    // The key that asked (E2B answers with the team's key; the caller holds this one already).
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Json(vec![Team {
        team_id: team.id,
        name: team.name,
        api_key,
        is_default: true,
        limits: Some(TeamLimits {
            max_sandboxes: limits.max_sandboxes,
            max_vcpus: limits.max_vcpus,
            max_memory_mb: limits.max_memory_mb,
            max_builds: limits.max_builds,
        }),
    }])
    .into_response()
}
