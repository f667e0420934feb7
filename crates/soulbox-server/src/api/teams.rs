//! Teams and keys over the API (issue 11): `GET /teams` (any key: its own team), and the admin's key management
//! in E2B's shapes — `GET /api-keys` (every active key, with its team and role), `POST /api-keys` (a member key
//! in the admin's team), `DELETE /api-keys/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use soulbox_protocol::api::{CreatedTeamApiKey, IdentifierMaskingDetails, NewTeamApiKey, Team, TeamApiKey, TeamLimits};

use super::{ApiState, error};
use crate::keys::KEY_PREFIX;
use crate::lifecycle::LifecycleError;
use crate::store::{ApiKeyRecord, Caller, Role, StoreError};
use crate::time::rfc3339;

/// Keys are `e2b_` + 40 hex.
const KEY_LENGTH: u32 = 44;

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

fn mask(record: &ApiKeyRecord) -> IdentifierMaskingDetails {
    IdentifierMaskingDetails {
        prefix: KEY_PREFIX.into(),
        value_length: KEY_LENGTH,
        masked_value_prefix: record.key_prefix.strip_prefix(KEY_PREFIX).unwrap_or(&record.key_prefix).to_owned(),
        masked_value_suffix: String::new(),
    }
}

/// `GET /api-keys` (admin): every active key of every team.
pub async fn list_keys(State(state): State<ApiState>) -> Response {
    match state.lifecycle.store().list_api_keys().await {
        Ok(keys) => Json(
            keys.iter()
                .filter(|k| k.revoked_at_ms.is_none())
                .map(|k| TeamApiKey {
                    id: k.id.clone(),
                    name: k.name.clone(),
                    mask: mask(k),
                    created_at: rfc3339(k.created_at_ms),
                    created_by: None,
                    last_used: None,
                    team_id: Some(k.team_id.clone()),
                    role: Some(k.role.as_str().into()),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

/// `POST /api-keys {name}` (admin): a member key in the admin's team; the secret is in the answer only.
pub async fn create_key(State(state): State<ApiState>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    let req: NewTeamApiKey = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}"));
        }
    };
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return error(StatusCode::BAD_REQUEST, "name must be 1-128 characters");
    }
    match state.lifecycle.store().create_api_key_in(&req.name, &caller.team_name, Role::Member).await {
        Ok((record, key)) => {
            tracing::info!(key = %record.id, team = %record.team_name, by = %caller.key_id, "api key created");
            let created = CreatedTeamApiKey {
                id: record.id.clone(),
                key: key.secret,
                mask: mask(&record),
                name: record.name.clone(),
                created_at: rfc3339(record.created_at_ms),
                created_by: None,
                last_used: None,
            };
            (StatusCode::CREATED, Json(created)).into_response()
        }
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

/// `DELETE /api-keys/{id}` (admin): revokes any team's key.
pub async fn revoke_key(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.lifecycle.store().revoke_api_key(&id).await {
        Ok(()) => {
            tracing::info!(key = %id, by = %caller.key_id, "api key revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(StoreError::NotFound(_)) => error(StatusCode::NOT_FOUND, format!("api key {id} not found")),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}
