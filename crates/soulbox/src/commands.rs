//! Commands: run to completion, or spawn and watch through a [`CommandHandle`] (seed feature 5).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use soulbox_protocol::process::{
    self, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, StartRequest, process_event, process_input,
    process_selector,
};
use soulbox_protocol::version::Feature;
use tokio::sync::watch;

use crate::envd::{Envd, RpcStream};
use crate::error::{Error, Result};

/// Default command timeout (E2B's): the process is killed by the agent when it passes.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Output callback: called with each chunk as it arrives (lossy UTF-8 for stdout/stderr).
pub type OutputCallback = Arc<dyn Fn(&str) + Send + Sync>;
/// Raw bytes callback (PTY output).
pub type DataCallback = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// How to run a command.
#[derive(Clone, Default)]
pub struct CommandOptions {
    pub envs: HashMap<String, String>,
    pub cwd: Option<String>,
    /// User to run as (default: the sandbox's default user).
    pub user: Option<String>,
    /// Process lifetime, sent as `Connect-Timeout-Ms` (the agent kills the process when it passes) and enforced
    /// locally by [`CommandHandle::wait`]. `None` = [`DEFAULT_COMMAND_TIMEOUT`]; `Some(Duration::ZERO)` = no limit.
    pub timeout: Option<Duration>,
    /// Keep stdin open for [`CommandHandle::send_stdin`] (needs agent ≥ 0.3.0 to be turned off).
    pub stdin: Option<bool>,
    /// A tag to find the process again with [`Commands::connect_tag`].
    pub tag: Option<String>,
    pub on_stdout: Option<OutputCallback>,
    pub on_stderr: Option<OutputCallback>,
    /// The shell the command runs with, as `<shell> -c <cmd>` (no login shell); `None`: `/bin/bash -l -c`.
    pub shell: Option<String>,
    /// Pass output to the callbacks only, without keeping it for [`CommandHandle::stdout`] and
    /// [`CommandResult`]: for long-running or chatty processes (a build step, a server).
    pub discard_output: bool,
}

impl std::fmt::Debug for CommandOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandOptions")
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CommandOptions {
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.envs.insert(k.into(), v.into());
        self
    }
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    pub fn stdin(mut self, on: bool) -> Self {
        self.stdin = Some(on);
        self
    }
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }
    pub fn on_stdout(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_stdout = Some(Arc::new(f));
        self
    }
    pub fn on_stderr(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_stderr = Some(Arc::new(f));
        self
    }
    pub fn shell(mut self, shell: impl Into<String>) -> Self {
        self.shell = Some(shell.into());
        self
    }
    pub fn discard_output(mut self, on: bool) -> Self {
        self.discard_output = on;
        self
    }
    fn effective_timeout(&self) -> Option<Duration> {
        match self.timeout {
            None => Some(DEFAULT_COMMAND_TIMEOUT),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The agent's error text (e.g. the process could not be started, or was killed by a signal).
    pub error: Option<String>,
}

/// A process running in the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: Option<String>,
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: HashMap<String, String>,
    pub cwd: Option<String>,
}

/// Run and manage processes in a sandbox.
#[derive(Clone)]
pub struct Commands {
    pub(crate) envd: Arc<Envd>,
}

impl Commands {
    /// Runs `cmd` with `/bin/bash -l -c` and waits for it. A non-zero exit is [`Error::CommandExit`] carrying
    /// the output.
    pub async fn run(&self, cmd: &str) -> Result<CommandResult> {
        self.run_with(cmd, CommandOptions::default()).await
    }

    /// [`Commands::run`] with options (callbacks, timeout, user, …).
    pub async fn run_with(&self, cmd: &str, opts: CommandOptions) -> Result<CommandResult> {
        self.spawn_with(cmd, opts).await?.wait().await
    }

    /// Starts `cmd` in the background; the handle's output so far, state and exit code can be read any time.
    pub async fn spawn(&self, cmd: &str) -> Result<CommandHandle> {
        self.spawn_with(cmd, CommandOptions::default()).await
    }

    pub async fn spawn_with(&self, cmd: &str, opts: CommandOptions) -> Result<CommandHandle> {
        let (program, args) = match &opts.shell {
            Some(shell) => (shell.clone(), vec!["-c".into(), cmd.into()]),
            None => ("/bin/bash".into(), vec!["-l".into(), "-c".into(), cmd.into()]),
        };
        let config = ProcessConfig { cmd: program, args, envs: opts.envs.clone(), cwd: opts.cwd.clone() };
        if opts.stdin == Some(false) {
            self.envd.require(Feature::CommandsStdin)?;
        }
        let req = StartRequest { process: Some(config), pty: None, tag: opts.tag.clone(), stdin: opts.stdin };
        let stream = self
            .envd
            .stream::<_, process::StartResponse>(
                "process.Process/Start",
                &req,
                opts.user.as_deref(),
                opts.effective_timeout(),
            )
            .await?;
        let events = stream.map(|r| r.map(|m| m.event)).boxed();
        let keep = !opts.discard_output;
        CommandHandle::start(
            self.envd.clone(),
            events,
            opts.effective_timeout(),
            opts.on_stdout,
            opts.on_stderr,
            None,
            keep,
        )
        .await
    }

    /// Attaches to a running process by pid; output from now on is collected.
    pub async fn connect(&self, pid: u32) -> Result<CommandHandle> {
        self.connect_selector(process_selector::Selector::Pid(pid), CommandOptions::default()).await
    }

    /// Attaches to a running process by tag.
    pub async fn connect_tag(&self, tag: &str) -> Result<CommandHandle> {
        self.connect_selector(process_selector::Selector::Tag(tag.into()), CommandOptions::default()).await
    }

    /// Attaches with callbacks.
    pub async fn connect_with(&self, pid: u32, opts: CommandOptions) -> Result<CommandHandle> {
        self.connect_selector(process_selector::Selector::Pid(pid), opts).await
    }

    async fn connect_selector(&self, sel: process_selector::Selector, opts: CommandOptions) -> Result<CommandHandle> {
        let req = process::ConnectRequest { process: Some(ProcessSelector { selector: Some(sel) }) };
        let stream =
            self.envd.stream::<_, process::ConnectResponse>("process.Process/Connect", &req, None, None).await?;
        let events = stream.map(|r| r.map(|m| m.event)).boxed();
        let keep = !opts.discard_output;
        CommandHandle::start(self.envd.clone(), events, None, opts.on_stdout, opts.on_stderr, None, keep).await
    }

    /// Processes running in the sandbox.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>> {
        let resp: process::ListResponse =
            self.envd.unary("process.Process/List", &process::ListRequest {}, None, None).await?;
        Ok(resp
            .processes
            .into_iter()
            .map(|p| {
                let c = p.config.unwrap_or_default();
                ProcessInfo { pid: p.pid, tag: p.tag, cmd: c.cmd, args: c.args, envs: c.envs, cwd: c.cwd }
            })
            .collect())
    }

    /// Sends SIGKILL; `Ok(false)` when no such process.
    pub async fn kill(&self, pid: u32) -> Result<bool> {
        signal(&self.envd, pid, process::Signal::Sigkill).await
    }

    /// Writes to the process's stdin.
    pub async fn send_stdin(&self, pid: u32, data: impl Into<Bytes>) -> Result<()> {
        send_input(&self.envd, pid, process_input::Input::Stdin(data.into())).await
    }

    /// Closes the process's stdin (EOF). Needs agent ≥ 0.5.2.
    pub async fn close_stdin(&self, pid: u32) -> Result<()> {
        self.envd.require(Feature::CloseStdin)?;
        let req = process::CloseStdinRequest { process: Some(pid_selector(pid)) };
        let _: process::CloseStdinResponse = self.envd.unary("process.Process/CloseStdin", &req, None, None).await?;
        Ok(())
    }
}

pub(crate) fn pid_selector(pid: u32) -> ProcessSelector {
    ProcessSelector { selector: Some(process_selector::Selector::Pid(pid)) }
}

pub(crate) async fn signal(envd: &Envd, pid: u32, sig: process::Signal) -> Result<bool> {
    let req = process::SendSignalRequest { process: Some(pid_selector(pid)), signal: sig as i32 };
    match envd.unary::<_, process::SendSignalResponse>("process.Process/SendSignal", &req, None, None).await {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) async fn send_input(envd: &Envd, pid: u32, input: process_input::Input) -> Result<()> {
    let req = process::SendInputRequest {
        process: Some(pid_selector(pid)),
        input: Some(ProcessInput { input: Some(input) }),
    };
    let _: process::SendInputResponse = envd.unary("process.Process/SendInput", &req, None, None).await?;
    Ok(())
}

#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// (exit code, error text) once ended.
    end: Option<(i32, Option<String>)>,
    failure: Option<String>,
    failure_kind: Option<FailureKind>,
}

#[derive(Clone, Copy)]
enum FailureKind {
    Killed,
    Timeout,
    Other,
}

/// A process started by [`Commands::spawn`] or attached with [`Commands::connect`].
///
/// A background task reads the process's events as they arrive, so [`CommandHandle::stdout`],
/// [`CommandHandle::stderr`], [`CommandHandle::is_finished`] and [`CommandHandle::exit_code`] answer
/// immediately with what has been received so far. Dropping the handle stops reading (the process keeps
/// running); [`CommandHandle::kill`] ends it.
pub struct CommandHandle {
    envd: Arc<Envd>,
    pid: u32,
    state: Arc<Mutex<Collected>>,
    done: watch::Receiver<bool>,
    timeout: Option<Duration>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle").field("pid", &self.pid).field("finished", &self.is_finished()).finish()
    }
}

impl CommandHandle {
    pub(crate) async fn start(
        envd: Arc<Envd>,
        mut events: RpcStream<Option<ProcessEvent>>,
        timeout: Option<Duration>,
        on_stdout: Option<OutputCallback>,
        on_stderr: Option<OutputCallback>,
        on_pty: Option<DataCallback>,
        keep_output: bool,
    ) -> Result<CommandHandle> {
        // The first event carries the pid.
        let pid = loop {
            match events.next().await {
                Some(Ok(Some(ProcessEvent { event: Some(process_event::Event::Start(s)) }))) => break s.pid,
                Some(Ok(_)) => continue, // keepalive
                Some(Err(e)) => return Err(e),
                None => return Err(Error::Other("process stream ended before the start event".into())),
            }
        };
        let state = Arc::new(Mutex::new(Collected::default()));
        let (tx, done) = watch::channel(false);
        let st = state.clone();
        let reader = tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    Ok(Some(ProcessEvent { event: Some(ev) })) => match ev {
                        process_event::Event::Data(d) => match d.output {
                            Some(process_event::data_event::Output::Stdout(b)) => {
                                if let Some(f) = &on_stdout {
                                    f(&String::from_utf8_lossy(&b));
                                }
                                if keep_output {
                                    lock(&st).stdout.extend_from_slice(&b);
                                }
                            }
                            Some(process_event::data_event::Output::Stderr(b)) => {
                                if let Some(f) = &on_stderr {
                                    f(&String::from_utf8_lossy(&b));
                                }
                                if keep_output {
                                    lock(&st).stderr.extend_from_slice(&b);
                                }
                            }
                            Some(process_event::data_event::Output::Pty(b)) => {
                                if let Some(f) = &on_pty {
                                    f(&b);
                                }
                                if keep_output {
                                    lock(&st).stdout.extend_from_slice(&b);
                                }
                            }
                            None => {}
                        },
                        process_event::Event::End(e) => {
                            lock(&st).end = Some((e.exit_code, e.error.filter(|s| !s.is_empty())));
                        }
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(e) => {
                        let mut g = lock(&st);
                        if g.end.is_none() {
                            g.failure_kind = Some(match e {
                                Error::SandboxKilled(_) => FailureKind::Killed,
                                Error::Timeout(_) => FailureKind::Timeout,
                                _ => FailureKind::Other,
                            });
                            g.failure = Some(e.to_string());
                        }
                        break;
                    }
                }
            }
            {
                let mut g = lock(&st);
                if g.end.is_none() && g.failure.is_none() {
                    g.failure = Some("process stream ended without an end event".into());
                    g.failure_kind = Some(FailureKind::Other);
                }
            }
            let _ = tx.send(true);
        });
        Ok(CommandHandle { envd, pid, state, done, timeout, reader })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Stdout (or PTY output) received so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&lock(&self.state).stdout).into_owned()
    }
    /// Stderr received so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.state).stderr).into_owned()
    }
    /// Raw stdout bytes received so far.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        lock(&self.state).stdout.clone()
    }
    /// Whether the process has ended (or its stream failed).
    pub fn is_finished(&self) -> bool {
        *self.done.borrow()
    }
    /// The exit code, once the process has ended.
    pub fn exit_code(&self) -> Option<i32> {
        lock(&self.state).end.as_ref().map(|e| e.0)
    }

    /// Waits for the end. A non-zero exit is [`Error::CommandExit`]; the stream being cut is
    /// [`Error::SandboxKilled`]; the command's timeout passing is [`Error::Timeout`].
    pub async fn wait(&self) -> Result<CommandResult> {
        let mut done = self.done.clone();
        let wait = done.wait_for(|d| *d);
        match self.timeout {
            // A little slack: the agent's own deadline normally ends the process first and reports it.
            Some(t) => match tokio::time::timeout(t + Duration::from_secs(2), wait).await {
                Ok(_) => {}
                Err(_) => return Err(Error::Timeout(format!("command {} did not finish within {t:?}", self.pid))),
            },
            None => {
                let _ = wait.await;
            }
        }
        let g = lock(&self.state);
        let stdout = String::from_utf8_lossy(&g.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&g.stderr).into_owned();
        match (&g.end, &g.failure) {
            (Some((0, error)), _) => Ok(CommandResult { exit_code: 0, stdout, stderr, error: error.clone() }),
            (Some((code, error)), _) => {
                if error.as_deref().is_some_and(|e| e.contains("deadline")) {
                    return Err(Error::Timeout(format!("command {}: {}", self.pid, error.clone().unwrap_or_default())));
                }
                Err(Error::CommandExit { exit_code: *code, stdout, stderr, error: error.clone() })
            }
            (None, failure) => {
                let msg = failure.clone().unwrap_or_default();
                Err(match g.failure_kind {
                    Some(FailureKind::Killed) => Error::SandboxKilled(self.envd.sandbox_id.clone()),
                    Some(FailureKind::Timeout) => Error::Timeout(msg),
                    _ => Error::Other(msg),
                })
            }
        }
    }

    /// Kills the process (SIGKILL); `Ok(false)` when it had already ended.
    pub async fn kill(&self) -> Result<bool> {
        signal(&self.envd, self.pid, process::Signal::Sigkill).await
    }
    pub async fn send_stdin(&self, data: impl Into<Bytes>) -> Result<()> {
        send_input(&self.envd, self.pid, process_input::Input::Stdin(data.into())).await
    }
    pub async fn close_stdin(&self) -> Result<()> {
        Commands { envd: self.envd.clone() }.close_stdin(self.pid).await
    }
    /// Stops reading the output without killing the process.
    pub fn disconnect(self) {
        self.reader.abort();
    }
}

impl Drop for CommandHandle {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock(m: &Mutex<Collected>) -> std::sync::MutexGuard<'_, Collected> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
