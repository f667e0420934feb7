//! Interactive terminals (PTY).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use soulbox_protocol::process::{self, ProcessConfig, StartRequest, process_input};

use crate::commands::{CommandHandle, DataCallback, pid_selector, send_input, signal};
use crate::envd::Envd;
use crate::error::Result;

/// Terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u32,
    pub rows: u32,
}

/// Options of a new terminal.
#[derive(Clone, Default)]
pub struct PtyOptions {
    pub envs: HashMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// Lifetime of the shell (`None` = no limit).
    pub timeout: Option<Duration>,
    /// Called with every chunk of terminal output.
    pub on_data: Option<DataCallback>,
}

impl PtyOptions {
    pub fn on_data(mut self, f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.on_data = Some(Arc::new(f));
        self
    }
}

/// Terminals in a sandbox.
#[derive(Clone)]
pub struct Pty {
    pub(crate) envd: Arc<Envd>,
}

impl Pty {
    /// Starts `/bin/bash -i -l` on a new terminal of `size`; output goes to `opts.on_data` and is also collected
    /// in the handle's [`CommandHandle::stdout`].
    pub async fn create(&self, size: PtySize, opts: PtyOptions) -> Result<CommandHandle> {
        let mut envs = opts.envs.clone();
        envs.entry("TERM".into()).or_insert_with(|| "xterm-256color".into());
        envs.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
        envs.entry("LC_ALL".into()).or_insert_with(|| "C.UTF-8".into());
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/bash".into(),
                args: vec!["-i".into(), "-l".into()],
                envs,
                cwd: opts.cwd.clone(),
            }),
            pty: Some(process::Pty { size: Some(process::pty::Size { cols: size.cols, rows: size.rows }) }),
            tag: None,
            stdin: None,
        };
        let stream = self
            .envd
            .stream::<_, process::StartResponse>("process.Process/Start", &req, opts.user.as_deref(), opts.timeout)
            .await?;
        let events = stream.map(|r| r.map(|m| m.event)).boxed();
        CommandHandle::start(self.envd.clone(), events, opts.timeout, None, None, opts.on_data, true).await
    }

    /// Types into the terminal.
    pub async fn send_input(&self, pid: u32, data: impl Into<Bytes>) -> Result<()> {
        send_input(&self.envd, pid, process_input::Input::Pty(data.into())).await
    }

    /// Resizes the terminal.
    pub async fn resize(&self, pid: u32, size: PtySize) -> Result<()> {
        let req = process::UpdateRequest {
            process: Some(pid_selector(pid)),
            pty: Some(process::Pty { size: Some(process::pty::Size { cols: size.cols, rows: size.rows }) }),
        };
        let _: process::UpdateResponse = self.envd.unary("process.Process/Update", &req, None, None).await?;
        Ok(())
    }

    /// Kills the terminal's shell; `Ok(false)` when it had already ended.
    pub async fn kill(&self, pid: u32) -> Result<bool> {
        signal(&self.envd, pid, process::Signal::Sigkill).await
    }
}
