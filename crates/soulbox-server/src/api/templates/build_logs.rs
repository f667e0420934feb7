//! `GET /templates/{id}/builds/{buildID}/logs?cursor=&limit=&direction=&level=&source=`: a build's stored log,
//! E2B's `TemplateBuildLogsResponse`. `cursor` is a time in unix ms (`forward`: entries at or after it, oldest
//! first; `backward`: at or before it, newest first), `level` keeps that level and above, `limit` is 0..=100
//! (default 100). `source` (`temporary` | `persistent`) is accepted and means nothing here: SoulBox keeps one
//! log per build, in its store. The stream of a running build is `…/logs/stream`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::{LogsDirection, TemplateBuildLogsResponse};

use super::access::own_build;
use super::builds::log_entry;
use crate::api::log_lines::Level;
use crate::api::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::store::Caller;

const MAX_LIMIT: i64 = 100;
/// Entries read per store page.
const PAGE: i64 = 1000;

#[allow(clippy::result_large_err)] // its checks' errors are the handler's answer, returned at once
pub async fn logs(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, build)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let number = |key: &str| -> Result<Option<i64>, Response> {
        params
            .get(key)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad(format!("{key} must be a non-negative integer")))
            })
            .transpose()
    };
    let (cursor, limit) = match (number("cursor"), number("limit")) {
        (Ok(c), Ok(l)) => (c, l.unwrap_or(MAX_LIMIT)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if limit > MAX_LIMIT {
        return bad(format!("limit must be at most {MAX_LIMIT}"));
    }
    let direction = match params.get("direction").map(String::as_str) {
        None | Some("forward") => LogsDirection::Forward,
        Some("backward") => LogsDirection::Backward,
        Some(other) => return bad(format!("direction must be forward or backward, not '{other}'")),
    };
    let level = match params.get("level").map(String::as_str) {
        None => None,
        Some(raw @ ("debug" | "info" | "warn" | "error")) => Level::parse(raw),
        Some(other) => return bad(format!("level must be one of debug, info, warn, error, not '{other}'")),
    };
    if let Some(other) = params.get("source").filter(|s| !matches!(s.as_str(), "temporary" | "persistent")) {
        return bad(format!("source must be temporary or persistent, not '{other}'"));
    }
    if let Err(r) = own_build(&state, &caller, &id, &build).await {
        return r;
    }
    // A build's log is bounded when stored (builds/log.rs): reading it whole is cheap.
    let store = state.lifecycle.store();
    let mut records = Vec::new();
    loop {
        let from = records.last().map_or(0, |r: &crate::store::BuildLogRecord| r.seq + 1);
        let page = match store.build_logs(&build, from, PAGE).await {
            Ok(p) => p,
            Err(e) => return LifecycleError::from(e).into_response(),
        };
        let done = (page.len() as i64) < PAGE;
        records.extend(page);
        if done {
            break;
        }
    }
    let kept = records.iter().filter(|r| {
        level.is_none_or(|min| Level::parse(&r.level).unwrap_or(Level::Info) >= min)
            && match (direction, cursor) {
                (_, None) => true,
                (LogsDirection::Forward, Some(c)) => r.unix_ms >= c,
                (LogsDirection::Backward, Some(c)) => r.unix_ms <= c,
            }
    });
    let mut kept: Vec<_> = kept.collect();
    if direction == LogsDirection::Backward {
        kept.reverse();
    }
    let logs = kept.into_iter().take(limit as usize).map(log_entry).collect();
    Json(TemplateBuildLogsResponse { logs }).into_response()
}
