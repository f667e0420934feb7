//! `POST /templates/{name}/prepare` (SoulBox's own; `soulbox template prepare NAME`): builds a template SoulBox
//! ships (`code-interpreter-v1`) now rather than at the first create naming it. The answer is the build's live
//! log as NDJSON in the build log stream's shape (`BuildStreamLine`: entries, then `{"status": ...}`), so a
//! client follows it as it follows any build. Refusals come before any line, as plain E2B errors: 404 for a
//! name SoulBox does not ship, 409 when a team's own template has the name, 503 when this node cannot build.
//! Any API key may ask: the first create naming the template would build it just the same. The build does not
//! depend on the request: a client that goes away leaves it running.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header;
use soulbox_protocol::api::{BuildEnd, BuildEndReason, BuildLogEntry, BuildStatus, BuildStreamLine, LogLevel};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use crate::api::ApiState;
use crate::lifecycle::{LifecycleError, ShippedLogLine, ShippedSkip};
use crate::time::rfc3339;

type Preparing = JoinHandle<Result<ShippedSkip, LifecycleError>>;

pub(super) async fn prepare(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    let mut lines = state.lifecycle.follow_shipped_builds();
    let lifecycle = state.lifecycle.clone();
    let wanted = name.clone();
    let mut task: Preparing = tokio::spawn(async move { lifecycle.prepare_shipped_template(&wanted).await });
    // Until the build says something, its refusal can still be an HTTP status.
    let first = loop {
        tokio::select! {
            // Lines first: a build that logged and ended at once is answered with its log.
            biased;
            line = lines.recv() => match line {
                Ok(line) if line.template == name => break line,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                // The sender is a static: never closed; wait for the task alone.
                Err(RecvError::Closed) => {
                    return match joined(task.await) {
                        Err(e) => e.into_response(),
                        Ok(_) => already_current(&name),
                    };
                }
            },
            ended = &mut task => {
                return match joined(ended) {
                    Err(e) => e.into_response(),
                    Ok(_) => already_current(&name),
                };
            }
        }
    };
    let follow = Follow { name, lines, task: Some(task), queue: VecDeque::from([entry(&first)]) };
    ndjson(futures::stream::unfold(follow, |mut f| async move {
        let line = f.next().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line_bytes(&line))), f))
    }))
}

/// The NDJSON answer: log entries, then the end line.
struct Follow {
    name: String,
    lines: broadcast::Receiver<ShippedLogLine>,
    /// `None` once it ended and its end line is queued.
    task: Option<Preparing>,
    queue: VecDeque<BuildStreamLine>,
}

impl Follow {
    async fn next(&mut self) -> Option<BuildStreamLine> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(line);
            }
            let task = self.task.as_mut()?;
            tokio::select! {
                ended = task => {
                    self.task = None;
                    // Every line the build sent before it ended is already in the receiver.
                    while let Ok(line) = self.lines.try_recv() {
                        if line.template == self.name {
                            self.queue.push_back(entry(&line));
                        }
                    }
                    self.queue.push_back(end_line(joined(ended)));
                }
                line = self.lines.recv() => match line {
                    Ok(line) if line.template == self.name => self.queue.push_back(entry(&line)),
                    Err(RecvError::Lagged(missed)) => self.queue.push_back(BuildStreamLine::Entry(BuildLogEntry {
                        level: LogLevel::Warn,
                        message: format!("{missed} log lines were lost on the way to this client (the server's stderr has them)"),
                        step: None,
                        timestamp: rfc3339(crate::store::now_ms()),
                    })),
                    Ok(_) | Err(RecvError::Closed) => {}
                },
            }
        }
    }
}

fn joined(
    ended: Result<Result<ShippedSkip, LifecycleError>, tokio::task::JoinError>,
) -> Result<ShippedSkip, LifecycleError> {
    ended.map_err(|e| LifecycleError::Internal(format!("the template build task failed: {e}")))?
}

fn ready_line() -> BuildStreamLine {
    BuildStreamLine::End(BuildEnd { reason: None, status: BuildStatus::Ready })
}

/// The answer when the build had nothing to log: this server process made the template current before.
fn already_current(name: &str) -> Response {
    let said = BuildStreamLine::Entry(BuildLogEntry {
        level: LogLevel::Info,
        message: format!("'{name}' is ready: this server built or checked it already"),
        step: None,
        timestamp: rfc3339(crate::store::now_ms()),
    });
    let lines = [said, ready_line()].map(|l| Ok::<_, Infallible>(Bytes::from(line_bytes(&l))));
    ndjson(futures::stream::iter(lines))
}

fn end_line(result: Result<ShippedSkip, LifecycleError>) -> BuildStreamLine {
    match result {
        Ok(_) => ready_line(),
        Err(e) => BuildStreamLine::End(BuildEnd {
            reason: Some(BuildEndReason { message: Some(e.to_string()), step: None }),
            status: BuildStatus::Error,
        }),
    }
}

fn entry(line: &ShippedLogLine) -> BuildStreamLine {
    let level = match line.level {
        soulbox_templates::LogLevel::Debug => LogLevel::Debug,
        soulbox_templates::LogLevel::Info => LogLevel::Info,
        soulbox_templates::LogLevel::Warn => LogLevel::Warn,
        soulbox_templates::LogLevel::Error => LogLevel::Error,
    };
    BuildStreamLine::Entry(BuildLogEntry {
        level,
        message: line.message.clone(),
        step: line.step.clone(),
        timestamp: rfc3339(line.unix_ms),
    })
}

fn line_bytes(line: &BuildStreamLine) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn ndjson<S>(lines: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    ([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(lines))
        .into_response()
}
