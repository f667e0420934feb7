//! One started process as the service sees it: what was asked for, where its input goes, and who watches it.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use rustix::process::{Pid, Signal};
use soulbox_protocol::connect::{Code, RpcError};
use soulbox_protocol::process as pb;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot};

use super::fanout::Fanout;

pub struct ProcessHandle {
    pub pid: u32,
    /// The configuration exactly as requested (reported by `List`).
    pub config: pb::ProcessConfig,
    pub tag: Option<String>,
    pub fanout: Arc<Fanout>,
    input: Input,
}

/// Where input for the process goes. Writes are done by one task per process ([`run_input`]), so concurrent
/// `SendInput` calls never interleave partial writes and no lock is held across the write.
pub enum Input {
    /// `stdin: false`: the process reads `/dev/null`.
    Disabled,
    Pipe(mpsc::Sender<InputOp>),
    Pty {
        master: Arc<AsyncFd<OwnedFd>>,
        ops: mpsc::Sender<InputOp>,
    },
}

pub enum InputOp {
    Write(Bytes, oneshot::Sender<io::Result<()>>),
    Close(oneshot::Sender<io::Result<()>>),
}

/// What the input task writes to.
pub enum InputTarget {
    Pipe(ChildStdin),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

const STDIN_CLOSED: &str = "stdin not enabled or closed";

impl ProcessHandle {
    pub fn new(pid: u32, config: pb::ProcessConfig, tag: Option<String>, fanout: Arc<Fanout>, input: Input) -> Self {
        ProcessHandle { pid, config, tag, fanout, input }
    }

    pub fn info(&self) -> pb::ProcessInfo {
        pb::ProcessInfo { config: Some(self.config.clone()), pid: self.pid, tag: self.tag.clone() }
    }

    /// Routes one `ProcessInput` (stdin bytes or pty bytes) with E2B's error codes and wording.
    pub async fn send_input(&self, input: Option<pb::ProcessInput>) -> Result<(), RpcError> {
        use pb::process_input::Input as In;
        match input.and_then(|i| i.input) {
            Some(In::Stdin(data)) => self.write_stdin(data).await,
            Some(In::Pty(data)) => self.write_pty(data).await,
            None => Err(RpcError::unimplemented("invalid input type: no input given")),
        }
    }

    async fn write_stdin(&self, data: Bytes) -> Result<(), RpcError> {
        let failed = |why: String| RpcError::internal(format!("error writing to stdin: {why}"));
        let ops = match &self.input {
            Input::Pipe(ops) => ops,
            Input::Disabled => return Err(failed(STDIN_CLOSED.to_owned())),
            Input::Pty { .. } => {
                return Err(failed(
                    "tty assigned to process — input should be written to the pty, not the stdin".into(),
                ));
            }
        };
        submit(ops, |reply| InputOp::Write(data, reply))
            .await
            .map_err(|e| failed(describe_write_error(self.pid, "stdin", &e)))
    }

    async fn write_pty(&self, data: Bytes) -> Result<(), RpcError> {
        let Input::Pty { ops, .. } = &self.input else {
            return Err(RpcError::internal(
                "error writing to tty: tty not assigned to process — input should be written to the stdin, not the tty",
            ));
        };
        submit(ops, |reply| InputOp::Write(data, reply)).await.map_err(|e| {
            RpcError::internal(format!("error writing to tty: {}", describe_write_error(self.pid, "tty", &e)))
        })
    }

    /// Closes stdin so the process reads EOF. Closing twice, or with stdin disabled, is not an error.
    pub async fn close_stdin(&self) -> Result<(), RpcError> {
        match &self.input {
            Input::Pty { .. } => Err(RpcError::new(
                Code::Unknown,
                "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead",
            )),
            Input::Disabled => Ok(()),
            Input::Pipe(ops) => submit(ops, InputOp::Close)
                .await
                .map_err(|e| RpcError::new(Code::Unknown, format!("error closing stdin: {e}"))),
        }
    }

    pub fn resize(&self, size: Option<pb::pty::Size>) -> Result<(), RpcError> {
        let Input::Pty { master, .. } = &self.input else {
            return Err(RpcError::internal("error resizing tty: tty not assigned to process"));
        };
        let size = size.unwrap_or_default();
        rustix::termios::tcsetwinsize(master.get_ref(), winsize(size.cols, size.rows))
            .map_err(|e| RpcError::internal(format!("error resizing tty: {e}")))
    }

    /// Signals the process's whole process group (every process is started as a session leader), so that
    /// `bash -c "sleep 100"` style children die with it; falls back to the process alone if the group is gone.
    pub fn signal(&self, signal: Signal) -> Result<(), RpcError> {
        let Some(pid) = Pid::from_raw(self.pid as i32) else {
            return Err(RpcError::internal("error sending signal: invalid pid"));
        };
        rustix::process::kill_process_group(pid, signal)
            .or_else(|_| rustix::process::kill_process(pid, signal))
            .map_err(|e| RpcError::internal(format!("error sending signal: {e}")))
    }
}

pub fn winsize(cols: u32, rows: u32) -> rustix::termios::Winsize {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    rustix::termios::Winsize { ws_row: clamp(rows), ws_col: clamp(cols), ws_xpixel: 0, ws_ypixel: 0 }
}

async fn submit(
    ops: &mpsc::Sender<InputOp>,
    op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> InputOp,
) -> io::Result<()> {
    let (reply, done) = oneshot::channel();
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, STDIN_CLOSED);
    ops.send(op(reply)).await.map_err(|_| gone())?;
    done.await.map_err(|_| gone())?
}

fn describe_write_error(pid: u32, what: &str, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotConnected {
        STDIN_CLOSED.to_owned()
    } else {
        format!("error writing to {what} of process '{pid}': {e}")
    }
}

/// The per-process input task: performs writes and the close in order, until the handle goes away.
pub async fn run_input(target: InputTarget, mut ops: mpsc::Receiver<InputOp>) {
    let mut pipe = None;
    let mut pty = None;
    match target {
        InputTarget::Pipe(stdin) => pipe = Some(stdin),
        InputTarget::Pty(master) => pty = Some(master),
    }
    while let Some(op) = ops.recv().await {
        match op {
            InputOp::Write(data, reply) => {
                let result = match (&mut pipe, &pty) {
                    (Some(stdin), _) => stdin.write_all(&data).await,
                    (None, Some(master)) => write_all_fd(master, &data).await,
                    // Closed by CloseStdin: reported as E2B's "stdin not enabled or closed".
                    (None, None) => Err(io::Error::from(io::ErrorKind::NotConnected)),
                };
                let _ = reply.send(result);
            }
            InputOp::Close(reply) => {
                let result = match pipe.take() {
                    Some(mut stdin) => stdin.shutdown().await,
                    None => Ok(()),
                };
                let _ = reply.send(result);
            }
        }
    }
}

async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| rustix::io::write(inner.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}
