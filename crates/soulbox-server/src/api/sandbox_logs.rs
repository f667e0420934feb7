//! A sandbox's logs: `GET /sandboxes/{id}/logs?start=&limit=` (E2B's deprecated `SandboxLogs`: `logs` lines
//! and `logEntries`) and `GET /v2/sandboxes/{id}/logs?cursor=&limit=&direction=&level=&search=` (E2B's
//! `SandboxLogsV2Response`). Lines are shaped as E2B's (`log_lines.rs`).
//!
//! v2: `cursor` is a time in unix ms (default: the start for `forward`, now for `backward`); `forward` answers
//! the entries at or after it, oldest first, `backward` those at or before it, newest first; `level` keeps that
//! level and above; `search` is a case-sensitive substring of the message (at most 256 bytes); `limit` is
//! 0..=1000 (default 1000). Filters apply before the limit.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::{LogsDirection, SandboxLog, SandboxLogs, SandboxLogsV2Response};

use super::log_lines::{Level, Parsed};
use super::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::node::{LogLine, LogQuery};
use crate::store::Caller;
use crate::time::rfc3339;

type Params = Query<HashMap<String, String>>;

/// E2B's v2 `limit` bounds and `search` length.
const V2_MAX_LIMIT: i64 = 1000;
const MAX_SEARCH_BYTES: usize = 256;
/// Pages read from the node for one backward answer (its log is capped on the host: a few MiB at most).
const MAX_PAGES: usize = 8;

#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn number(params: &HashMap<String, String>, key: &str) -> Result<Option<i64>, Response> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("{key} must be a non-negative integer"))),
    }
}

/// `GET /sandboxes/{id}/logs`.
pub async fn logs_v1(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let (start_ms, limit) = match (number(&params, "start"), number(&params, "limit")) {
        (Ok(s), Ok(l)) => {
            (s.unwrap_or(0), (l.unwrap_or(LogQuery::DEFAULT_LIMIT as i64) as usize).min(LogQuery::MAX_LIMIT))
        }
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match state.lifecycle.sandbox_logs(&caller.team_id, &id, LogQuery { start_ms, limit }).await {
        Ok(lines) => {
            let parsed: Vec<Parsed> = lines.iter().map(Parsed::of).collect();
            Json(SandboxLogs {
                log_entries: parsed.iter().map(Parsed::entry).collect(),
                logs: parsed
                    .iter()
                    .map(|p| SandboxLog { line: p.json_line(), timestamp: rfc3339(p.unix_ms) })
                    .collect(),
            })
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The v2 query, checked.
struct V2Query {
    cursor: Option<i64>,
    limit: usize,
    direction: LogsDirection,
    level: Option<Level>,
    search: Option<String>,
}

#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn v2_query(params: &HashMap<String, String>) -> Result<V2Query, Response> {
    let cursor = number(params, "cursor")?;
    let limit = number(params, "limit")?.unwrap_or(V2_MAX_LIMIT);
    if limit > V2_MAX_LIMIT {
        return Err(error(StatusCode::BAD_REQUEST, format!("limit must be at most {V2_MAX_LIMIT}")));
    }
    let direction = match params.get("direction").map(String::as_str) {
        None | Some("forward") => LogsDirection::Forward,
        Some("backward") => LogsDirection::Backward,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("direction must be forward or backward, not '{other}'"),
            ));
        }
    };
    let level = match params.get("level") {
        None => None,
        Some(raw) => match Level::parse(raw).filter(|_| ["debug", "info", "warn", "error"].contains(&raw.as_str())) {
            Some(level) => Some(level),
            None => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("level must be one of debug, info, warn, error, not '{raw}'"),
                ));
            }
        },
    };
    let search = params.get("search").cloned();
    if search.as_ref().is_some_and(|s| s.len() > MAX_SEARCH_BYTES) {
        return Err(error(StatusCode::BAD_REQUEST, format!("search must be at most {MAX_SEARCH_BYTES} bytes")));
    }
    Ok(V2Query { cursor, limit: limit as usize, direction, level, search })
}

impl V2Query {
    fn keeps(&self, entry: &Parsed) -> bool {
        self.level.is_none_or(|min| entry.level >= min)
            && self.search.as_deref().is_none_or(|s| entry.message.contains(s))
            && match (self.direction, self.cursor) {
                (_, None) => true,
                (LogsDirection::Forward, Some(c)) => entry.unix_ms >= c,
                (LogsDirection::Backward, Some(c)) => entry.unix_ms <= c,
            }
    }
}

/// `GET /v2/sandboxes/{id}/logs`.
pub async fn logs_v2(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let query = match v2_query(&params) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let lines = match read(&state, &caller, &id, &query).await {
        Ok(lines) => lines,
        Err(e) => return e.into_response(),
    };
    let kept = lines.iter().map(Parsed::of).filter(|p| query.keeps(p));
    let logs = match query.direction {
        LogsDirection::Forward => kept.take(query.limit).map(|p| p.entry()).collect(),
        LogsDirection::Backward => {
            let mut all: Vec<Parsed> = kept.collect();
            all.reverse();
            all.into_iter().take(query.limit).map(|p| p.entry()).collect()
        }
    };
    Json(SandboxLogsV2Response { logs }).into_response()
}

/// The lines the query can answer from: forward, pages from the cursor until enough are kept; backward, every
/// line up to the cursor (the newest are at the end).
async fn read(state: &ApiState, caller: &Caller, id: &str, query: &V2Query) -> Result<Vec<LogLine>, LifecycleError> {
    let mut start_ms = match query.direction {
        LogsDirection::Forward => query.cursor.unwrap_or(0),
        LogsDirection::Backward => 0,
    };
    let mut out: Vec<LogLine> = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = LogQuery { start_ms, limit: LogQuery::MAX_LIMIT };
        let lines = state.lifecycle.sandbox_logs(&caller.team_id, id, page).await?;
        let full = lines.len() == LogQuery::MAX_LIMIT;
        let Some(last) = lines.last().map(|l| l.unix_ms) else { break };
        out.extend(lines);
        let enough = match query.direction {
            LogsDirection::Forward => out.iter().map(Parsed::of).filter(|p| query.keeps(p)).count() >= query.limit,
            LogsDirection::Backward => query.cursor.is_some_and(|c| last > c),
        };
        if !full || enough {
            break;
        }
        // The next page starts after this one's last millisecond (lines of that same millisecond past the
        // page's end are skipped: the node's page boundary is by count).
        start_ms = last + 1;
    }
    Ok(out)
}
