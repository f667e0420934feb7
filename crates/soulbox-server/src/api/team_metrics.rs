//! E2B's team metrics: `GET /teams/{teamID}/metrics?start=&end=` (seconds; default the last hour) → one
//! `TeamMetric` per step of the range (concurrent sandboxes at the step's end, sandboxes started per second
//! during the step), and `GET /teams/{teamID}/metrics/max?start=&end=&metric=concurrent_sandboxes|
//! sandbox_start_rate` → the largest value in the range and when it was.
//!
//! Computed from each sandbox's running stretches (`store/usage.rs`): "concurrent" counts running sandboxes
//! (paused ones do not run), "started" counts new sandboxes (not resumes). Steps: the range split into at most
//! [`MAX_STEPS`], at least 5 s each (E2B's resolution). A key sees its own team only: another team's id is a
//! 403, as in E2B. History is kept 30 days.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::{MaxTeamMetric, TeamMetric};

use super::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::store::{Caller, SandboxRun, now_ms};
use crate::time::rfc3339;

/// Most points one answer has.
const MAX_STEPS: i64 = 300;
/// Shortest step, seconds.
const MIN_STEP_S: i64 = 5;
/// Default range: the last hour.
const DEFAULT_RANGE_S: i64 = 3600;

/// One step: its end (unix s), running sandboxes then, and sandboxes started per second during it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub end_s: i64,
    pub concurrent: i32,
    pub start_rate: f32,
}

/// The range `[start, end]` in seconds, checked.
#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn range(params: &HashMap<String, String>) -> Result<(i64, i64), Response> {
    let number = |key: &str| -> Result<Option<i64>, Response> {
        params
            .get(key)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("{key} must be a unix time in seconds")))
            })
            .transpose()
    };
    // Rounded up: the last step then counts what started within the current second.
    let now_s = (now_ms() + 999) / 1000;
    let end = number("end")?.unwrap_or(now_s).min(now_s);
    let start = number("start")?.unwrap_or(end - DEFAULT_RANGE_S);
    if start > end {
        return Err(error(StatusCode::BAD_REQUEST, "start must not be after end"));
    }
    Ok((start, end))
}

/// The team's points over `[start_s, end_s]`.
pub fn points(runs: &[SandboxRun], start_s: i64, end_s: i64) -> Vec<Point> {
    let span = (end_s - start_s).max(1);
    let step = (span + MAX_STEPS - 1) / MAX_STEPS;
    let step = step.max(MIN_STEP_S);
    let mut out = Vec::new();
    let mut from = start_s;
    while from < end_s || out.is_empty() {
        let to = (from + step).min(end_s.max(from + 1));
        let (from_ms, to_ms) = (from * 1000, to * 1000);
        let concurrent =
            runs.iter().filter(|r| r.started_at_ms <= to_ms && r.ended_at_ms.is_none_or(|e| e > to_ms)).count() as i32;
        let started =
            runs.iter().filter(|r| !r.resumed && r.started_at_ms >= from_ms && r.started_at_ms < to_ms).count();
        out.push(Point { end_s: to, concurrent, start_rate: started as f32 / (to - from) as f32 });
        from = to;
    }
    out
}

async fn team_points(
    state: &ApiState,
    caller: &Caller,
    team_id: &str,
    params: &HashMap<String, String>,
) -> Result<Vec<Point>, Response> {
    if team_id != caller.team_id {
        return Err(error(StatusCode::FORBIDDEN, format!("you are not allowed to access team {team_id}")));
    }
    let (start, end) = range(params)?;
    let runs = state
        .lifecycle
        .store()
        .team_runs(team_id, start * 1000, end * 1000)
        .await
        .map_err(|e| LifecycleError::from(e).into_response())?;
    Ok(points(&runs, start, end))
}

/// `GET /teams/{teamID}/metrics`.
pub async fn metrics(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(team_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match team_points(&state, &caller, &team_id, &params).await {
        Ok(points) => Json(
            points
                .iter()
                .map(|p| TeamMetric {
                    concurrent_sandboxes: p.concurrent,
                    sandbox_start_rate: p.start_rate,
                    timestamp: rfc3339(p.end_s * 1000),
                    timestamp_unix: p.end_s,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /teams/{teamID}/metrics/max`.
pub async fn max(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(team_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let value: fn(&Point) -> f64 = match params.get("metric").map(String::as_str) {
        Some("concurrent_sandboxes") => |p| f64::from(p.concurrent),
        Some("sandbox_start_rate") => |p| f64::from(p.start_rate),
        _ => return error(StatusCode::BAD_REQUEST, "metric must be concurrent_sandboxes or sandbox_start_rate"),
    };
    let points = match team_points(&state, &caller, &team_id, &params).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // The first step with the largest value (an all-zero range answers 0 at its first step).
    let best = points.iter().fold(None::<&Point>, |best, p| match best {
        Some(b) if value(b) >= value(p) => Some(b),
        _ => Some(p),
    });
    let (value, end_s) = best.map_or((0.0, now_ms() / 1000), |p| (value(p), p.end_s));
    Json(MaxTeamMetric { timestamp: rfc3339(end_s * 1000), timestamp_unix: end_s, value }).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start_s: i64, end_s: Option<i64>, resumed: bool) -> SandboxRun {
        SandboxRun { started_at_ms: start_s * 1000, ended_at_ms: end_s.map(|e| e * 1000), resumed }
    }

    #[test]
    fn concurrency_and_start_rate_per_step() {
        // Two sandboxes start in the first 10 s step, one ends in the second, one resumes in the third.
        let runs = [run(1002, None, false), run(1005, Some(1013), false), run(1024, None, true)];
        let points = points(&runs, 1000, 1030);
        assert_eq!(points.iter().map(|p| p.end_s).collect::<Vec<_>>(), [1005, 1010, 1015, 1020, 1025, 1030]);
        assert_eq!(points.iter().map(|p| p.concurrent).collect::<Vec<_>>(), [2, 2, 1, 1, 2, 2]);
        let started: Vec<f32> = points.iter().map(|p| p.start_rate * 5.0).collect();
        assert_eq!(started, [1.0, 1.0, 0.0, 0.0, 0.0, 0.0], "resumes are not starts");
        // A long range keeps to MAX_STEPS points.
        assert!(super::points(&runs, 0, 10 * 24 * 3600).len() as i64 <= MAX_STEPS);
        assert_eq!(super::points(&[], 5, 5).len(), 1);
    }
}
