//! Snapshots and forks: `POST /sandboxes/{id}/snapshots`, `GET /snapshots`, `POST /sandboxes/{id}/fork`.
//! A snapshot is deleted as the template it is (`DELETE /templates/{snapshotID}`, in `templates/`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use soulbox_protocol::api::{
    ApiError, SandboxForkRequest, SandboxForkResult, SandboxSnapshotRequest, SnapshotInfo, SnapshotMode,
};

use super::json_body::JsonBody;
use super::sandboxes::sandbox;
use super::{ApiState, error, status_of};
use crate::lifecycle::SnapshotFilter;
use crate::listing::{PageCursor, page_params, take_page};
use crate::names::DEFAULT_TAG;
use crate::store::{Caller, SnapshotRecord};
use crate::time::rfc3339;

fn info(s: &SnapshotRecord) -> SnapshotInfo {
    let id = format!("{}:{DEFAULT_TAG}", s.template_id);
    SnapshotInfo {
        names: if s.named { vec![id.clone()] } else { vec![] },
        snapshot_id: id,
        mode: if s.memory { SnapshotMode::Full } else { SnapshotMode::Filesystem },
        sandbox_id: s.sandbox_id.clone(),
        created_at: rfc3339(s.created_at_ms),
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SandboxSnapshotRequest>,
) -> Response {
    let name = req.name.as_deref().filter(|n| !n.is_empty());
    match state.lifecycle.snapshot(&caller.team_id, &id, name).await {
        Ok(s) => (StatusCode::CREATED, Json(info(&s))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /snapshots?sandboxID=&name=&limit=&nextToken=`: the team's snapshots, oldest first, `x-next-token`
/// when there are more.
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let page = match page_params(params.get("limit").map(String::as_str), params.get("nextToken").map(String::as_str)) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let filter = SnapshotFilter { sandbox_id: params.get("sandboxID").cloned(), name: params.get("name").cloned() };
    let mut snapshots = match state.lifecycle.snapshots(&caller.team_id, &filter).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Some(c) = &page.after {
        let after = (c.started_at_ms, c.sandbox_id.as_str());
        snapshots.retain(|s| (s.created_at_ms, s.template_id.as_str()) > after);
    }
    let next = take_page(&mut snapshots, page.limit, |s| PageCursor {
        started_at_ms: s.created_at_ms,
        sandbox_id: s.template_id.clone(),
    });
    let items: Vec<SnapshotInfo> = snapshots.iter().map(info).collect();
    let mut response = Json(items).into_response();
    if let Some(v) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert("x-next-token", v);
    }
    response
}

pub async fn fork(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SandboxForkRequest>,
) -> Response {
    let outcomes = match state.lifecycle.fork(&caller.team_id, &id, req.timeout, req.count.unwrap_or(1)).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let results: Vec<SandboxForkResult> = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(record) => SandboxForkResult { sandbox: Some(sandbox(&record, state.domain.clone())), error: None },
            Err(e) => {
                let code = status_of(&e).as_u16();
                SandboxForkResult {
                    sandbox: None,
                    error: Some(ApiError { code, message: e.to_string(), error_code: None }),
                }
            }
        })
        .collect();
    (StatusCode::CREATED, Json(results)).into_response()
}
