//! API keys and access tokens over REST, in E2B's shapes.
//!
//! - `GET /api-keys`, `POST /api-keys {name}` (the secret is in the answer only), `PATCH /api-keys/{id} {name}`,
//!   `DELETE /api-keys/{id}`;
//! - `POST /access-tokens {name}` (the token is in the answer only), `DELETE /access-tokens/{id}`;
//! - the admin's `POST /admin/teams/{teamID}/api-keys`, `DELETE /admin/teams/{teamID}/api-keys/{id}`.
//!
//! Who may: E2B manages keys with a user's access token (`Authorization: Bearer`), scoped to that token's team.
//! SoulBox has no users: an access token (made by the team's admin or by another of the team's tokens) acts for
//! its team, and an admin API key acts for any team — the one in `X-Team-ID`, else every team for listing and
//! revoking (issue 11's behaviour) and its own for creating. A member API key gets 403: keys are not what
//! manages keys. Another team's key or token answers 404, as an unknown one does.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use soulbox_protocol::api::{
    CreatedAccessToken, CreatedTeamApiKey, IdentifierMaskingDetails, NewAccessToken, NewTeamApiKey, TeamApiKey,
    UpdateTeamApiKey,
};

use super::{ApiState, Credential, error};
use crate::keys::{ACCESS_TOKEN, API_KEY, SecretKind};
use crate::lifecycle::LifecycleError;
use crate::store::{ApiKeyRecord, Caller, Role, StoreError, TeamRecord};
use crate::time::rfc3339;

/// Which teams' keys a request manages.
enum Scope {
    /// One team (an access token's, or the one an admin named in `X-Team-ID`).
    Team(TeamRecord),
    /// Every team (an admin key without `X-Team-ID`); new keys go to the admin's own team.
    All,
}

fn failed(e: StoreError) -> Response {
    LifecycleError::from(e).into_response()
}

async fn scope(
    state: &ApiState,
    caller: &Caller,
    credential: Credential,
    headers: &HeaderMap,
) -> Result<Scope, Response> {
    let store = state.lifecycle.store();
    match credential {
        Credential::AccessToken => match headers.get("x-team-id").and_then(|v| v.to_str().ok()) {
            // E2B sends the team with a user's token; a SoulBox token belongs to exactly one.
            Some(team) if team != caller.team_id => {
                Err(error(StatusCode::FORBIDDEN, format!("the access token does not belong to team {team}")))
            }
            _ => store.get_team(&caller.team_id).await.map(Scope::Team).map_err(failed),
        },
        Credential::ApiKey if caller.is_admin() => match headers.get("x-team-id").and_then(|v| v.to_str().ok()) {
            Some(team) => match store.get_team(team).await {
                Ok(t) => Ok(Scope::Team(t)),
                Err(StoreError::NotFound(_)) => Err(error(StatusCode::NOT_FOUND, format!("team {team} not found"))),
                Err(e) => Err(failed(e)),
            },
            None => Ok(Scope::All),
        },
        Credential::ApiKey => Err(error(
            StatusCode::FORBIDDEN,
            "keys and access tokens are managed with an access token (Authorization: Bearer) or an admin API key \
             (`soulbox keys create --admin`), not a member key",
        )),
    }
}

impl Scope {
    /// The team whose keys a change may touch; `None`: any team's.
    fn team_id(self) -> Option<String> {
        match self {
            Scope::Team(t) => Some(t.id),
            Scope::All => None,
        }
    }

    /// The team a new key or token goes to (and whose tokens a delete may touch): the scope's, or the admin's
    /// own for every team.
    fn home(self, caller: &Caller) -> Home {
        match self {
            Scope::Team(t) => Home { id: t.id, name: t.name },
            Scope::All => Home { id: caller.team_id.clone(), name: caller.team_name.clone() },
        }
    }
}

/// See [`Scope::home`].
struct Home {
    id: String,
    name: String,
}

/// A request body naming a key or token (1-128 characters).
#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn named_body<T: DeserializeOwned>(raw: &[u8], name: impl Fn(&T) -> &str) -> Result<T, Response> {
    let parsed: T = serde_json::from_slice(raw)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")))?;
    let name = name(&parsed);
    if name.trim().is_empty() || name.len() > 128 {
        return Err(error(StatusCode::BAD_REQUEST, "name must be 1-128 characters"));
    }
    Ok(parsed)
}

fn mask(kind: SecretKind, display_prefix: &str) -> IdentifierMaskingDetails {
    let mask = kind.mask(display_prefix);
    IdentifierMaskingDetails {
        prefix: mask.prefix.into(),
        value_length: mask.value_length,
        masked_value_prefix: mask.masked_value_prefix,
        masked_value_suffix: String::new(),
    }
}

/// A new key or token (its secret is in this answer only).
fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// The answer to a change of `what` `id` (rename, revoke, delete): `ok`, or 404 when there is no such one
/// (also another team's).
fn changed(done: Result<(), StoreError>, what: &str, id: &str, ok: StatusCode) -> Response {
    match done {
        Ok(()) => ok.into_response(),
        Err(StoreError::NotFound(_)) => error(StatusCode::NOT_FOUND, format!("{what} {id} not found")),
        Err(e) => failed(e),
    }
}

fn listed(k: &ApiKeyRecord) -> TeamApiKey {
    TeamApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        mask: mask(API_KEY, &k.key_prefix),
        created_at: rfc3339(k.created_at_ms),
        created_by: None,
        last_used: k.last_used_ms.map(rfc3339),
        team_id: Some(k.team_id.clone()),
        role: Some(k.role.as_str().into()),
    }
}

/// `GET /api-keys`: the scope's active keys, masked.
pub async fn list_keys(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
) -> Response {
    let team = match scope(&state, &caller, credential, &headers).await {
        Ok(s) => s.team_id(),
        Err(r) => return r,
    };
    match state.lifecycle.store().list_api_keys().await {
        Ok(keys) => Json(
            keys.iter()
                .filter(|k| k.revoked_at_ms.is_none() && team.as_ref().is_none_or(|t| &k.team_id == t))
                .map(listed)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => failed(e),
    }
}

async fn create_in(state: &ApiState, caller: &Caller, team_name: &str, raw: &[u8]) -> Response {
    let req: NewTeamApiKey = match named_body(raw, |r: &NewTeamApiKey| &r.name) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match state.lifecycle.store().create_api_key_in(&req.name, team_name, Role::Member).await {
        Ok((record, key)) => {
            tracing::info!(key = %record.id, team = %record.team_name, by = %caller.key_id, "api key created");
            created(CreatedTeamApiKey {
                id: record.id.clone(),
                key: key.secret,
                mask: mask(API_KEY, &record.key_prefix),
                name: record.name.clone(),
                created_at: rfc3339(record.created_at_ms),
                created_by: None,
                last_used: None,
            })
        }
        Err(e) => failed(e),
    }
}

/// `POST /api-keys {name}`: a member key in the scope's team; the secret is in this answer only.
pub async fn create_key(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let team = match scope(&state, &caller, credential, &headers).await {
        Ok(s) => s.home(&caller),
        Err(r) => return r,
    };
    create_in(&state, &caller, &team.name, &raw).await
}

/// `PATCH /api-keys/{id} {name}`.
pub async fn rename_key(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Response {
    let team = match scope(&state, &caller, credential, &headers).await {
        Ok(s) => s.team_id(),
        Err(r) => return r,
    };
    let req: UpdateTeamApiKey = match named_body(&raw, |r: &UpdateTeamApiKey| &r.name) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let done = state.lifecycle.store().rename_api_key(team.as_deref(), &id, &req.name).await;
    changed(done, "api key", &id, StatusCode::OK)
}

async fn revoke(state: &ApiState, caller: &Caller, team: Option<&str>, id: &str) -> Response {
    let store = state.lifecycle.store();
    let done = match team {
        Some(team) => store.revoke_team_api_key(team, id).await,
        None => store.revoke_api_key(id).await,
    };
    if done.is_ok() {
        tracing::info!(key = %id, by = %caller.key_id, "api key revoked");
    }
    changed(done, "api key", id, StatusCode::NO_CONTENT)
}

/// `DELETE /api-keys/{id}`.
pub async fn revoke_key(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let team = match scope(&state, &caller, credential, &headers).await {
        Ok(s) => s.team_id(),
        Err(r) => return r,
    };
    revoke(&state, &caller, team.as_deref(), &id).await
}

/// `POST /access-tokens {name}`: a token for the scope's team (an admin without `X-Team-ID`: its own).
pub async fn create_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let team = match scope(&state, &caller, credential, &headers).await {
        Ok(s) => s.home(&caller),
        Err(r) => return r,
    };
    let req: NewAccessToken = match named_body(&raw, |r: &NewAccessToken| &r.name) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match state.lifecycle.store().create_access_token(&team.id, &req.name, &caller.key_id).await {
        Ok((record, token)) => {
            tracing::info!(token = %record.id, team = %record.team_id, by = %caller.key_id, "access token created");
            created(CreatedAccessToken {
                created_at: rfc3339(record.created_at_ms),
                id: record.id.clone(),
                mask: mask(ACCESS_TOKEN, &record.token_prefix),
                name: record.name,
                token: token.secret,
            })
        }
        Err(e) => failed(e),
    }
}

/// `DELETE /access-tokens/{id}`: the scope's team's token (an admin without `X-Team-ID`: its own team's).
pub async fn delete_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let team = match scope(&state, &caller, credential, &headers).await {
        Ok(s) => s.home(&caller),
        Err(r) => return r,
    };
    let done = state.lifecycle.store().delete_access_token(&team.id, &id).await;
    if done.is_ok() {
        tracing::info!(token = %id, by = %caller.key_id, "access token deleted");
    }
    changed(done, "access token", &id, StatusCode::NO_CONTENT)
}

async fn admin_team(state: &ApiState, team_id: &str) -> Result<TeamRecord, Response> {
    match state.lifecycle.store().get_team(team_id).await {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound(_)) => Err(error(StatusCode::NOT_FOUND, format!("team {team_id} not found"))),
        Err(e) => Err(failed(e)),
    }
}

/// `POST /admin/teams/{teamID}/api-keys {name}` (admin).
pub async fn admin_create_key(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(team_id): Path<String>,
    raw: Bytes,
) -> Response {
    match admin_team(&state, &team_id).await {
        Ok(team) => create_in(&state, &caller, &team.name, &raw).await,
        Err(r) => r,
    }
}

/// `DELETE /admin/teams/{teamID}/api-keys/{id}` (admin).
pub async fn admin_revoke_key(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((team_id, id)): Path<(String, String)>,
) -> Response {
    match admin_team(&state, &team_id).await {
        Ok(team) => revoke(&state, &caller, Some(&team.id), &id).await,
        Err(r) => r,
    }
}
