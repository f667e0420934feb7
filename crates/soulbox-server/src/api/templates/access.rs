//! Team scoping of the template API (issue 11). Templates built through the API belong to the team whose key
//! asked for them; another team gets E2B's 404 for them, their builds, logs, tags and uploads, and cannot start
//! a build from them. Server templates (`base`, built by the server, with no store record) are public. Template
//! names are unique across teams, like E2B's aliases: a name another team (or the server) holds is a 409.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::api::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::store::{BuildRecord, Caller, TemplateRecord};
use soulbox_templates::BaseAccess;

pub fn template_not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("template '{id}' not found"))
}

fn failed(e: impl Into<LifecycleError>) -> Response {
    e.into().into_response()
}

/// The caller's team's template `id`; another team's answers as an unknown one does.
pub async fn own_template(state: &ApiState, caller: &Caller, id: &str) -> Result<TemplateRecord, Response> {
    match state.lifecycle.store().get_template_record(id).await {
        Ok(Some(record)) if record.team_id == caller.team_id => Ok(record),
        Ok(_) => Err(template_not_found(id)),
        Err(e) => Err(failed(e)),
    }
}

/// Build `build` of the caller's team's template `id`.
pub async fn own_build(state: &ApiState, caller: &Caller, id: &str, build: &str) -> Result<BuildRecord, Response> {
    let not_found = || error(StatusCode::NOT_FOUND, format!("build '{build}' of template '{id}' not found"));
    own_template(state, caller, id).await.map_err(|_| not_found())?;
    match state.lifecycle.store().get_build(build).await {
        Ok(Some(b)) if b.template_id == id => Ok(b),
        Ok(_) => Err(not_found()),
        Err(e) => Err(failed(e)),
    }
}

/// A new template may not take a server template's name (the store's own check covers other teams' names).
pub async fn check_not_a_server_template(state: &ApiState, name: &str) -> Result<(), Response> {
    let on_node = match state.lifecycle.node().templates().await {
        Ok(list) => list.iter().any(|t| t.template_id == name),
        Err(e) => return Err(failed(e)),
    };
    let recorded = match state.lifecycle.store().get_template_record(name).await {
        Ok(r) => r.is_some(),
        Err(e) => return Err(failed(e)),
    };
    if (on_node && !recorded) || soulbox_templates::is_shipped_template(name) {
        return Err(error(
            StatusCode::CONFLICT,
            format!("the template name '{name}' is taken by a server template: choose another name"),
        ));
    }
    Ok(())
}

/// What a build of the caller's team may start from: not other teams' private templates; a build template only
/// when `tag_build` (the one its checked `fromTemplate: name:tag` resolved to).
pub async fn base_access(state: &ApiState, caller: &Caller, tag_build: Option<String>) -> Result<BaseAccess, Response> {
    let records = state.lifecycle.store().list_template_records().await.map_err(failed)?;
    let hidden = records.into_iter().filter(|r| r.team_id != caller.team_id && !r.public).map(|r| r.id).collect();
    Ok(BaseAccess::Team { hidden, tag_build })
}

/// A deprecated `teamID` in a build request must be the key's own team: the refusal when it is another.
pub fn foreign_team_id(caller: &Caller, team_id: Option<&str>) -> Option<Response> {
    team_id
        .filter(|team| *team != caller.team_id)
        .map(|team| error(StatusCode::FORBIDDEN, format!("the API key does not belong to team {team}")))
}
