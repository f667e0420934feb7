//! Reading a process's stdout, stderr or pty master and publishing it in bounded chunks as it arrives.
//!
//! When the process itself exits, its output may still be held open by something it started in the
//! background (`cmd &`). We do not wait for that (newer E2B envd does not either; the old behaviour hung
//! `commands.run` until the background job ended): once the process has exited, the pump reads what is already
//! buffered — everything the process wrote before exiting — and reports itself drained, so the end event
//! follows all of the process's own output. It then keeps reading and discarding until EOF, so a background
//! job writing to the inherited descriptor does not die of SIGPIPE (or, on a pty, of a hangup).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use rustix::io::Errno;
use soulbox_protocol::process::process_event::DataEvent;
use soulbox_protocol::process::process_event::data_event::Output;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use crate::process_table::fanout::Fanout;

/// Chunk sizes E2B envd uses: 32 KiB for pipes, 16 KiB for a pty.
const PIPE_CHUNK: usize = 32 << 10;
const PTY_CHUNK: usize = 16 << 10;
/// At most this much is read after the process exited before the end event is sent; more than a pipe or
/// pty buffer holds, so it only bounds a background job that keeps writing.
const DRAIN_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stdout,
    Stderr,
    Pty,
}

impl Kind {
    fn chunk(self) -> usize {
        if self == Kind::Pty { PTY_CHUNK } else { PIPE_CHUNK }
    }

    fn event(self, bytes: Bytes) -> DataEvent {
        let output = match self {
            Kind::Stdout => Output::Stdout(bytes),
            Kind::Stderr => Output::Stderr(bytes),
            Kind::Pty => Output::Pty(bytes),
        };
        DataEvent { output: Some(output) }
    }
}

enum Read {
    Data(Bytes),
    Eof,
    WouldBlock,
}

/// One non-blocking read. A pty master reports "all slave ends closed" as EIO: that is its EOF.
fn read_chunk(fd: &OwnedFd, buf: &mut [u8], kind: Kind) -> Read {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Read::Eof,
            Ok(n) => return Read::Data(Bytes::copy_from_slice(&buf[..n])),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Read::WouldBlock,
            Err(Errno::IO) if kind == Kind::Pty => return Read::Eof,
            Err(e) => {
                tracing::warn!(error = %e, ?kind, "reading process output failed");
                return Read::Eof;
            }
        }
    }
}

/// Pumps `fd` (non-blocking) into `fanout` until EOF; see the module docs for what happens at exit.
/// `drained` fires once everything the process wrote has been published.
pub async fn pump(
    fd: Arc<AsyncFd<OwnedFd>>,
    kind: Kind,
    fanout: Arc<Fanout>,
    mut exited: watch::Receiver<bool>,
    drained: oneshot::Sender<()>,
) {
    let mut buf = vec![0u8; kind.chunk()];
    loop {
        tokio::select! {
            biased;
            // (The watch guard must not live in the select's output: it is not Send.)
            _ = async { let _ = exited.wait_for(|done| *done).await; } => break,
            ready = fd.readable() => {
                let mut guard = match ready {
                    Ok(guard) => guard,
                    Err(e) => {
                        tracing::warn!(error = %e, ?kind, "waiting for process output failed");
                        let _ = drained.send(());
                        return;
                    }
                };
                match read_chunk(guard.get_inner(), &mut buf, kind) {
                    Read::Data(bytes) => fanout.publish(kind.event(bytes)).await,
                    Read::Eof => {
                        let _ = drained.send(());
                        return;
                    }
                    Read::WouldBlock => guard.clear_ready(),
                }
            }
        }
    }

    // The process has exited: everything it wrote is in the buffer now. Read it straight from the fd (not
    // through the reactor's cached readiness, which may lag behind).
    let mut budget = DRAIN_LIMIT;
    loop {
        match read_chunk(fd.get_ref(), &mut buf, kind) {
            Read::Data(bytes) => {
                budget = budget.saturating_sub(bytes.len());
                fanout.publish(kind.event(bytes)).await;
                if budget == 0 {
                    break;
                }
            }
            Read::Eof => {
                let _ = drained.send(());
                return;
            }
            Read::WouldBlock => break,
        }
    }
    let _ = drained.send(());

    // Something the process started still holds the write end: keep it from SIGPIPE, drop what it writes.
    loop {
        let Ok(mut guard) = fd.readable().await else { return };
        match read_chunk(guard.get_inner(), &mut buf, kind) {
            Read::Data(_) => {}
            Read::Eof => return,
            Read::WouldBlock => guard.clear_ready(),
        }
    }
}
