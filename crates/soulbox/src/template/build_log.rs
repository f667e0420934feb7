//! Following a build's log: the live NDJSON stream (`GET /templates/{id}/builds/{build}/logs/stream`), with
//! E2B's status polling as the fallback where a server has no stream or it breaks.
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use soulbox_protocol::api::BuildStreamLine as StreamLine;

use super::{BuildHandle, BuildLogEntry, BuildReason, BuildStatus};
use crate::client::{api_error, seg};
use crate::error::{Error, Result};

/// Log lines a [`Error::Build`] carries.
const LAST_LOG_LINES: usize = 20;
/// How often the polling fallback asks for the status (E2B's SDKs poll at this rate).
const POLL_INTERVAL: Duration = Duration::from_millis(200);

impl BuildHandle {
    /// The build's log from its first entry, each entry as soon as the server has it; the stream ends when the
    /// build ended — after the last entry, or with `Err(Error::Build { .. })` when it failed. Reads the live
    /// NDJSON stream; when the server has none (or it breaks), continues by polling the status endpoint.
    pub fn logs(&self) -> impl Stream<Item = Result<BuildLogEntry>> + Send + 'static {
        let state = Follow {
            handle: self.clone(),
            phase: Phase::Connect,
            seen: 0,
            buf: BytesMut::new(),
            last: VecDeque::new(),
            pending: VecDeque::new(),
        };
        futures::stream::unfold(state, |mut st| async move { st.next().await.map(|item| (item, st)) })
    }

    /// Waits for the end of the build (following the live log); `Err(Error::Build)` when it failed.
    pub async fn wait(&self) -> Result<()> {
        let mut logs = std::pin::pin!(self.logs());
        while let Some(item) = logs.next().await {
            item?;
        }
        Ok(())
    }

    /// Waits by polling the status endpoint only (E2B's way; for servers without the live stream).
    pub async fn wait_polling(&self) -> Result<()> {
        let mut state = Follow {
            handle: self.clone(),
            phase: Phase::Poll,
            seen: 0,
            buf: BytesMut::new(),
            last: VecDeque::new(),
            pending: VecDeque::new(),
        };
        while let Some(item) = state.next().await {
            item?;
        }
        Ok(())
    }

    fn failure(&self, reason: Option<BuildReason>, last: &VecDeque<String>) -> Error {
        let reason = reason.unwrap_or(BuildReason { message: None, step: None });
        Error::Build {
            template_id: self.template_id.clone(),
            build_id: self.build_id.clone(),
            step: reason.step,
            message: reason.message.unwrap_or_else(|| "the build failed".into()),
            last_logs: last.iter().cloned().collect(),
        }
    }
}

enum Phase {
    Connect,
    Streaming(Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>),
    Poll,
    Done,
}

/// The state of [`BuildHandle::logs`]: entries already delivered (`seen`) let the polling fallback resume
/// where the stream stopped.
struct Follow {
    handle: BuildHandle,
    phase: Phase,
    seen: usize,
    buf: BytesMut,
    last: VecDeque<String>,
    pending: VecDeque<Result<BuildLogEntry>>,
}

impl Follow {
    fn remember(&mut self, entry: &BuildLogEntry) {
        self.seen += 1;
        if self.last.len() == LAST_LOG_LINES {
            self.last.pop_front();
        }
        self.last.push_back(entry.message.clone());
    }

    fn end(&mut self, status: BuildStatus, reason: Option<BuildReason>) -> Option<Result<BuildLogEntry>> {
        self.phase = Phase::Done;
        (status == BuildStatus::Error).then(|| Err(self.handle.failure(reason, &self.last)))
    }

    async fn next(&mut self) -> Option<Result<BuildLogEntry>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Connect => {
                    let h = &self.handle;
                    let path = format!("/templates/{}/builds/{}/logs/stream", seg(&h.template_id), seg(&h.build_id));
                    let url = format!("{}{path}", h.client.config().api_url.trim_end_matches('/'));
                    let Some(key) = h.client.config().api_key.clone() else {
                        self.phase = Phase::Done;
                        return Some(Err(Error::Auth("no API key".into())));
                    };
                    // No request timeout: the stream lasts as long as the build.
                    match h.client.http().get(url).header("X-API-Key", key).send().await {
                        Ok(r) if r.status().is_success() => self.phase = Phase::Streaming(Box::pin(r.bytes_stream())),
                        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                            self.phase = Phase::Done;
                            return Some(Err(api_error(r).await));
                        }
                        // No live stream on this server (or a transient failure): poll.
                        Ok(_) | Err(_) => self.phase = Phase::Poll,
                    }
                }
                Phase::Streaming(body) => {
                    if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                        let line = self.buf.split_to(nl + 1);
                        let text = &line[..nl];
                        if text.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        match serde_json::from_slice::<StreamLine>(text) {
                            Ok(StreamLine::Entry(e)) => {
                                self.remember(&e);
                                return Some(Ok(e));
                            }
                            Ok(StreamLine::End(end)) => match self
                                .end(end.status, end.reason.map(|r| BuildReason { message: r.message, step: r.step }))
                            {
                                Some(err) => return Some(err),
                                None => return None,
                            },
                            Err(e) => {
                                self.phase = Phase::Done;
                                return Some(Err(Error::Other(format!(
                                    "bad build log line: {e}: {}",
                                    String::from_utf8_lossy(text)
                                ))));
                            }
                        }
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => self.buf.extend_from_slice(chunk.chunk()),
                        // The stream broke or ended without the status line: continue from the status endpoint.
                        Some(Err(_)) | None => {
                            self.buf.clear();
                            self.phase = Phase::Poll;
                        }
                    }
                }
                Phase::Poll => {
                    let page = match self.handle.status(self.seen).await {
                        Ok(p) => p,
                        Err(e) => {
                            self.phase = Phase::Done;
                            return Some(Err(e));
                        }
                    };
                    let empty = page.log_entries.is_empty();
                    for e in page.log_entries {
                        self.remember(&e);
                        self.pending.push_back(Ok(e));
                    }
                    match page.status {
                        // Finished: drain the remaining pages first (a page holds at most 100 entries).
                        BuildStatus::Ready | BuildStatus::Error if empty => {
                            if let Some(err) = self.end(page.status, page.reason) {
                                self.pending.push_back(err);
                            }
                        }
                        BuildStatus::Ready | BuildStatus::Error => {}
                        BuildStatus::Waiting | BuildStatus::Building if empty => {
                            tokio::time::sleep(POLL_INTERVAL).await
                        }
                        BuildStatus::Waiting | BuildStatus::Building => {}
                    }
                }
            }
        }
    }
}
