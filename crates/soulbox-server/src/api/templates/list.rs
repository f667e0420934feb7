//! E2B's template list and updates: `GET /templates` and `GET /v2/templates` (paged by `limit` and `nextToken`,
//! the next page's token in `X-Next-Token`) list the server's templates and the caller's team's own (and other
//! teams' public ones) with every field of E2B's `Template`; `GET /templates/{id}` is one of them with its
//! builds, newest first (paged like the list; a server template has no builds through the API); `PATCH
//! /templates/{id}` and `PATCH /v2/templates/{id}` set the `public` flag of the team's own template.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::{
    TeamUser, TemplateBuild, TemplateListEntry, TemplateUpdateRequest, TemplateUpdateResponse, TemplateWithBuilds,
};

use super::access::own_template;
use crate::api::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::names::is_internal_template;
use crate::store::{Caller, TemplateRecord};
use crate::time::rfc3339;

/// E2B's page size bounds for `GET /v2/templates`.
const MAX_PAGE: usize = 100;

/// The templates `caller` sees, ordered by id.
async fn visible(state: &ApiState, caller: &Caller) -> Result<Vec<TemplateListEntry>, Response> {
    let failed = |e: LifecycleError| e.into_response();
    let store = state.lifecycle.store();
    let records: HashMap<String, TemplateRecord> = store
        .list_template_records()
        .await
        .map_err(|e| failed(e.into()))?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let stats = store.template_stats().await.map_err(|e| failed(e.into()))?;
    let node_templates = state.lifecycle.node().templates().await.map_err(|e| failed(e.into()))?;
    let mut out = Vec::new();
    for t in node_templates.iter().filter(|t| !is_internal_template(&t.template_id)) {
        // A server template has no record and is public; an API-built one is its team's unless public.
        let record = records.get(&t.template_id);
        if record.is_some_and(|r| r.team_id != caller.team_id && !r.public) {
            continue;
        }
        let stat = stats.get(&t.template_id).cloned().unwrap_or_default();
        let (created_ms, updated_ms) = match record {
            Some(r) => (r.created_at_ms, r.updated_at_ms),
            None => (t.created_at_ms, t.created_at_ms),
        };
        out.push(TemplateListEntry {
            aliases: t.aliases.clone(),
            build_id: record.and_then(|r| r.latest_build_id.clone()).unwrap_or_else(|| t.template_id.clone()),
            // A server template was built once, at setup.
            build_count: if record.is_some() { stat.build_count as i32 } else { 1 },
            build_status: "ready".to_owned(),
            cpu_count: t.cpu_count,
            created_at: rfc3339(created_ms),
            created_by: stat.created_by.map(|id| TeamUser { email: None, id }),
            disk_size_mb: t.disk_size_mb,
            envd_version: t.envd_version.clone(),
            last_spawned_at: stat.last_spawned_ms.map(rfc3339),
            memory_mb: t.memory_mb,
            names: t.aliases.clone(),
            public: record.is_none_or(|r| r.public),
            spawn_count: stat.spawn_count,
            template_id: t.template_id.clone(),
            updated_at: rfc3339(updated_ms),
        });
    }
    out.sort_by(|a, b| a.template_id.cmp(&b.template_id));
    Ok(out)
}

/// A `teamID` query must be the key's own team.
fn foreign_team(caller: &Caller, params: &HashMap<String, String>) -> Option<Response> {
    params
        .get("teamID")
        .filter(|t| **t != caller.team_id)
        .map(|team| error(StatusCode::FORBIDDEN, format!("the API key does not belong to team {team}")))
}

/// `GET /templates[?teamID=]`.
pub async fn list_v1(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = foreign_team(&caller, &params) {
        return refused;
    }
    match visible(&state, &caller).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

/// `GET /v2/templates[?teamID=&limit=&nextToken=]`: pages in id order; the token is the last id of the page.
pub async fn list_v2(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = foreign_team(&caller, &params) {
        return refused;
    }
    let limit = match page_limit(&params) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let list = match visible(&state, &caller).await {
        Ok(list) => list,
        Err(r) => return r,
    };
    let after = params.get("nextToken").map(String::as_str).unwrap_or_default();
    let rest: Vec<TemplateListEntry> = list.into_iter().filter(|t| t.template_id.as_str() > after).collect();
    let more = rest.len() > limit;
    let page: Vec<TemplateListEntry> = rest.into_iter().take(limit).collect();
    let mut response = Json(&page).into_response();
    if more
        && let Some(last) = page.last()
        && let Ok(token) = http::HeaderValue::from_str(&last.template_id)
    {
        response.headers_mut().insert("x-next-token", token);
    }
    response
}

/// `limit` of a paged list: 1..=100, default 100.
#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn page_limit(params: &HashMap<String, String>) -> Result<usize, Response> {
    match params.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(MAX_PAGE),
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(error(StatusCode::BAD_REQUEST, format!("limit must be an integer from 1 to {MAX_PAGE}"))),
    }
}

/// `GET /templates/{id}[?limit=&nextToken=]`: the template with its builds; the token is the next build's index.
pub async fn get_one(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let limit = match page_limit(&params) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let skip = match params.get("nextToken").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "nextToken is not one this server gave"),
    };
    let list = match visible(&state, &caller).await {
        Ok(list) => list,
        Err(r) => return r,
    };
    let store = state.lifecycle.store();
    // Listed, or the team's own whose builds have not made it yet.
    let (template_id, aliases, public, created_at, updated_at, last_spawned_at, spawn_count) = match list
        .into_iter()
        .find(|t| t.template_id == id)
    {
        Some(t) => (t.template_id, t.aliases, t.public, t.created_at, t.updated_at, t.last_spawned_at, t.spawn_count),
        None => {
            let record = match own_template(&state, &caller, &id).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            let stat = match store.template_stats().await {
                Ok(mut all) => all.remove(&id).unwrap_or_default(),
                Err(e) => return LifecycleError::from(e).into_response(),
            };
            let created = (rfc3339(record.created_at_ms), rfc3339(record.updated_at_ms));
            let spawned = (stat.last_spawned_ms.map(rfc3339), stat.spawn_count);
            (record.id.clone(), vec![record.id], record.public, created.0, created.1, spawned.0, spawned.1)
        }
    };
    let ids = match store.build_ids(&id).await {
        Ok(ids) => ids,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    let mut builds = Vec::new();
    for build_id in ids.iter().skip(skip).take(limit) {
        match store.get_build(build_id).await {
            Ok(Some(b)) => builds.push(TemplateBuild {
                build_id: b.id,
                cpu_count: b.cpu_count.max(0) as u32,
                created_at: rfc3339(b.created_at_ms),
                finished_at: b.finished_at_ms.map(rfc3339),
                memory_mb: b.memory_mb.max(0) as u32,
                status: b.status,
                updated_at: rfc3339(b.finished_at_ms.unwrap_or(b.created_at_ms)),
            }),
            Ok(None) => {}
            Err(e) => return LifecycleError::from(e).into_response(),
        }
    }
    let body = TemplateWithBuilds {
        names: aliases.clone(),
        aliases,
        builds,
        created_at,
        last_spawned_at,
        public,
        spawn_count,
        template_id,
        updated_at,
    };
    let mut response = Json(body).into_response();
    if ids.len() > skip + limit {
        response.headers_mut().insert("x-next-token", http::HeaderValue::from(skip + limit));
    }
    response
}

/// Applies a `TemplateUpdateRequest` to the team's own template; its names on success.
async fn update(state: &ApiState, caller: &Caller, id: &str, body: &[u8]) -> Result<Vec<String>, Response> {
    let req: TemplateUpdateRequest = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")))?;
    let record = own_template(state, caller, id).await?;
    if let Some(public) = req.public {
        let store = state.lifecycle.store();
        store.set_template_public(&record.id, public).await.map_err(|e| LifecycleError::from(e).into_response())?;
        tracing::info!(template = %record.id, public, by = %caller.key_id, "template visibility changed");
    }
    Ok(vec![record.id])
}

/// `PATCH /templates/{id}` (E2B's deprecated one): 200 without a body.
pub async fn update_v1(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match update(&state, &caller, &id, &body).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

/// `PATCH /v2/templates/{id}` → `{names}`.
pub async fn update_v2(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match update(&state, &caller, &id, &body).await {
        Ok(names) => Json(TemplateUpdateResponse { names }).into_response(),
        Err(r) => r,
    }
}
