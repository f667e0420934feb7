//! A build's start, status and live log: `POST /v2/templates/{id}/builds/{buildID}`,
//! `GET .../builds/{buildID}/status` and `GET .../builds/{buildID}/logs/stream` (NDJSON).

use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::Deserialize;
use soulbox_protocol::api::{
    BuildEnd, BuildEndReason, BuildLogEntry, BuildReason, BuildStatus, BuildStreamLine, LogLevel, TemplateBuildInfo,
};

use super::access::{base_access, own_build};
use super::internal;
use crate::api::{ApiState, error};
use crate::builds::{self, Followed, InputError};
use crate::lifecycle::LifecycleError;
use crate::names::build_template_name;
use crate::store::{BuildLogRecord, Caller};
use crate::time::rfc3339;
use soulbox_templates::Recipe;

pub(super) async fn start_build(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, build)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut recipe: Recipe = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let store = state.lifecycle.store().clone();
    let record = match own_build(&state, &caller, &id, &build).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // `fromTemplate: "name:tag"` builds on that tag's build (of a template the team may see).
    let mut tag_build = None;
    if let Some((base, tag)) =
        recipe.from_template.clone().as_deref().and_then(|f| f.split_once(':')).filter(|(_, t)| *t != "default")
    {
        let base_not_found = || error(StatusCode::BAD_REQUEST, format!("base template '{base}:{tag}' not found"));
        match state.lifecycle.template_visible(&caller.team_id, base).await {
            Ok(true) => {}
            Ok(false) => return base_not_found(),
            Err(e) => return e.into_response(),
        }
        match store.tag_build(base, tag).await {
            Ok(Some(b)) => {
                recipe.from_template = Some(build_template_name(&b));
                tag_build = recipe.from_template.clone();
            }
            Ok(None) => return base_not_found(),
            Err(e) => return internal(e),
        }
    }
    let base_access = match base_access(&state, &caller, tag_build).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    // Before any check below touches uploads a running build may be using.
    if record.status != "waiting" {
        return error(StatusCode::CONFLICT, format!("build '{build}' was already started"));
    }
    // A base the caller may not use (a host path outside the config's allowed dirs), or uploaded files that are
    // not what their hash says, are refused now, with nothing started or registered: the build stays `waiting`
    // and can be started again.
    let files_dir = match builds::check_inputs(state.lifecycle.node().as_ref(), &caller.team_id, &id, &recipe).await {
        Ok(dir) => dir,
        Err(e @ InputError::CannotBuild) => {
            return error(StatusCode::NOT_IMPLEMENTED, e.to_string());
        }
        Err(InputError::Refused(m)) => return error(StatusCode::BAD_REQUEST, m),
    };
    let recipe_json = serde_json::to_string(&recipe).unwrap_or_default();
    match store.start_build(&build, &recipe_json, &state.lifecycle.config().team_limits).await {
        Ok(true) => {}
        Ok(false) => {
            return error(StatusCode::CONFLICT, format!("build '{build}' was already started"));
        }
        Err(e) => return LifecycleError::from(e).into_response(),
    }
    let job = builds::job(&record, recipe, files_dir, base_access);
    builds::spawn(store, state.lifecycle.node().clone(), job, id, record.tags);
    StatusCode::ACCEPTED.into_response()
}

pub(super) fn log_entry(r: &BuildLogRecord) -> BuildLogEntry {
    let level = match r.level.as_str() {
        "debug" => LogLevel::Debug,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Info,
    };
    BuildLogEntry { level, message: r.message.clone(), step: r.step.clone(), timestamp: rfc3339(r.unix_ms) }
}

/// A stored build status (`waiting`, `building`, `ready`, `error`).
fn build_status_of(stored: &str) -> BuildStatus {
    BuildStatus::parse(stored).unwrap_or_else(|| {
        tracing::error!(status = stored, "a build has an unknown stored status");
        BuildStatus::Error
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusQuery {
    logs_offset: Option<i64>,
    limit: Option<i64>,
}

pub(super) async fn build_status(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, build)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let store = state.lifecycle.store();
    let record = match own_build(&state, &caller, &id, &build).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(100).clamp(0, 100);
    let logs = match store.build_logs(&build, q.logs_offset.unwrap_or(0).max(0), limit).await {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let status = build_status_of(&record.status);
    let reason = (status == BuildStatus::Error).then(|| BuildReason {
        message: Some(record.reason.unwrap_or_else(|| "build failed".into())),
        step: record.reason_step,
    });
    Json(TemplateBuildInfo {
        build_id: build,
        log_entries: logs.iter().map(log_entry).collect(),
        logs: logs.iter().map(|l| format!("[{}] {}", rfc3339(l.unix_ms), l.message)).collect(),
        reason,
        status,
        template_id: id,
    })
    .into_response()
}

/// NDJSON: every stored entry, then the live ones, then the final status line.
pub(super) async fn stream_logs(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, build)): Path<(String, String)>,
) -> Response {
    if let Err(r) = own_build(&state, &caller, &id, &build).await {
        return r;
    }
    let followed = builds::follow(state.lifecycle.store().clone(), build);
    let lines = futures::stream::unfold(followed, move |mut rx| async move {
        let line = match rx.recv().await? {
            Followed::Entry(r) => BuildStreamLine::Entry(log_entry(&r)),
            Followed::End(b) => {
                let status = build_status_of(&b.status);
                let reason =
                    (status == BuildStatus::Error).then_some(BuildEndReason { message: b.reason, step: b.reason_step });
                BuildStreamLine::End(BuildEnd { reason, status })
            }
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), rx))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(lines))
        .into_response()
}
