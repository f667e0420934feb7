//! Preparing a template SoulBox ships (`code-interpreter-v1`) ahead of its first use:
//! `POST /templates/{name}/prepare` answers with the build's live log in the build log stream's NDJSON shape.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use soulbox_protocol::api::{BuildStatus, BuildStreamLine};

use super::BuildLogEntry;
use crate::client::{Client, api_error, seg};
use crate::error::{Error, Result};

/// Log lines a [`Error::Build`] carries.
const LAST_LOG_LINES: usize = 20;

impl Client {
    /// Builds the shipped template `name` on the server now (cached steps are reused; a template this server
    /// built already is only reported ready). The stream yields the build's log entries as they come and ends
    /// after the last one, or with `Err(Error::Build { .. })` when the build failed. A name SoulBox does not
    /// ship is `Error::NotFound`; a team's own template of that name is `Error::Invalid` (409).
    pub async fn prepare_template(
        &self,
        name: &str,
    ) -> Result<impl Stream<Item = Result<BuildLogEntry>> + Send + 'static> {
        let key = self.config().api_key.clone().ok_or_else(|| Error::Auth("no API key".into()))?;
        let url = format!("{}/templates/{}/prepare", self.config().api_url.trim_end_matches('/'), seg(name));
        // No request timeout: the answer lasts as long as the build (minutes when nothing is cached).
        let resp = self.http().post(url).header("X-API-Key", key).send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        let follow = Follow {
            name: name.to_string(),
            body: Box::pin(resp.bytes_stream()),
            buf: BytesMut::new(),
            last: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(follow, |mut f| async move { f.next().await.map(|item| (item, f)) }))
    }
}

struct Follow {
    name: String,
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: BytesMut,
    last: VecDeque<String>,
    done: bool,
}

impl Follow {
    fn failed(&mut self, step: Option<String>, message: String) -> Option<Result<BuildLogEntry>> {
        self.done = true;
        Some(Err(Error::Build {
            template_id: self.name.clone(),
            build_id: String::new(),
            step,
            message,
            last_logs: self.last.iter().cloned().collect(),
        }))
    }

    async fn next(&mut self) -> Option<Result<BuildLogEntry>> {
        while !self.done {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                let text = &line[..nl];
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return match serde_json::from_slice::<BuildStreamLine>(text) {
                    Ok(BuildStreamLine::Entry(e)) => {
                        if self.last.len() == LAST_LOG_LINES {
                            self.last.pop_front();
                        }
                        self.last.push_back(e.message.clone());
                        Some(Ok(e))
                    }
                    Ok(BuildStreamLine::End(end)) if end.status == BuildStatus::Ready => {
                        self.done = true;
                        None
                    }
                    Ok(BuildStreamLine::End(end)) => {
                        let reason =
                            end.reason.unwrap_or(soulbox_protocol::api::BuildEndReason { message: None, step: None });
                        self.failed(reason.step, reason.message.unwrap_or_else(|| "the build failed".into()))
                    }
                    Err(e) => {
                        self.done = true;
                        Some(Err(Error::Other(format!("bad build log line: {e}: {}", String::from_utf8_lossy(text)))))
                    }
                };
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(chunk.chunk()),
                Some(Err(e)) => {
                    return self.failed(None, format!("the server's answer broke off (the build goes on there): {e}"));
                }
                None => return self.failed(None, "the server's answer ended before the build did".into()),
            }
        }
        None
    }
}
