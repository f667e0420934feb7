//! Cutting a sandbox's live streams. Whoever proxies traffic to a sandbox (the control plane's proxy, a node
//! agent's proxy) holds a token per sandbox and ends every open stream when it is cancelled; whoever stops a
//! sandbox (the lifecycle on kill, pause and timeout, a node agent on its node's kill and pause) cancels it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::client_socket::{ClientSocket, reset_on_close};

/// The live streams of every sandbox, and which sandboxes are being stopped.
#[derive(Debug, Default)]
pub struct StreamCuts {
    live: Mutex<HashMap<String, CancellationToken>>,
    /// Sandboxes being killed or paused: from the moment their streams are cut until the operation ends, they
    /// get no new streams (their record still says running, but envd is going away).
    stopping: Mutex<HashSet<String>>,
}

impl StreamCuts {
    /// A token cancelled when the sandbox's streams are cut.
    pub fn token(&self, id: &str) -> CancellationToken {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_owned()).or_default().clone()
    }

    /// The token for a new stream to the sandbox, or `None` while it is being stopped.
    pub fn serving(&self, id: &str) -> Option<CancellationToken> {
        // Token first, then the check: `stop` marks before it cancels, so a token handed out here is either
        // cancelled by it or refused by the check.
        let token = self.token(id);
        let stopping = self.stopping.lock().unwrap_or_else(|p| p.into_inner()).contains(id);
        (!stopping).then_some(token)
    }

    /// Cuts the sandbox's open streams (later ones get a fresh token).
    pub fn cut(&self, id: &str) {
        if let Some(token) = self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            token.cancel();
        }
    }

    /// Marks the sandbox as stopping and cuts its open streams. Undo with [`StreamCuts::done_stopping`].
    pub fn stop(&self, id: &str) {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned());
        self.cut(id);
    }

    pub fn done_stopping(&self, id: &str) {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// A proxied response body that breaks off when its sandbox's streams are cut, or when the upstream breaks off
/// mid-body; either way an HTTP/1 client connection is reset (not closed cleanly), which E2B clients read as a
/// killed sandbox. Data passes through as it comes: the cut token is checked with an atomic load per chunk and
/// only waited on (a waker registered) while the upstream has nothing to give, so a fast download costs no
/// allocation or lock per chunk. Trailers are dropped, as they were by the body's data stream before.
pub struct CutBody<B> {
    inner: B,
    liveness: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    socket: Option<ClientSocket>,
    done: bool,
}

impl<B> CutBody<B> {
    pub fn new(inner: B, liveness: CancellationToken, socket: Option<ClientSocket>) -> Self {
        let cancelled = Box::pin(liveness.clone().cancelled_owned());
        CutBody { inner, liveness, cancelled, socket, done: false }
    }

    fn break_off(&mut self, error: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.done = true;
        if let Some(socket) = self.socket {
            reset_on_close(socket);
        }
        Poll::Ready(Some(Err(error)))
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "sandbox stopped")
}

impl<B> Body for CutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.liveness.is_cancelled() {
                return this.break_off(stopped());
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_data() => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Ok(_trailers))) => continue,
                // The upstream broke off (envd died, or the node agent cut the stream because the sandbox stopped
                // there): pass the break on the same way.
                Poll::Ready(Some(Err(e))) => return this.break_off(std::io::Error::other(e.into())),
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(this.cancelled.as_mut().poll(cx));
                    return this.break_off(stopped());
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && !self.liveness.is_cancelled())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_cuts_streams_and_refuses_new_ones_until_done() {
        let cuts = StreamCuts::default();
        let open = cuts.serving("a").unwrap();
        let other = cuts.serving("b").unwrap();
        cuts.stop("a");
        assert!(open.is_cancelled() && !other.is_cancelled());
        assert!(cuts.serving("a").is_none(), "no new stream while stopping");
        cuts.done_stopping("a");
        let fresh = cuts.serving("a").unwrap();
        assert!(!fresh.is_cancelled());
        cuts.cut("a");
        assert!(fresh.is_cancelled() && cuts.serving("a").is_some(), "a cut alone does not refuse new streams");
    }
}
