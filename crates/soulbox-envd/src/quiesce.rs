//! What lets gVisor save a running agent: a listener whose socket is never in an epoll set, and connections the
//! node can close on demand (`POST /soulbox/quiesce`, `http/quiesce.rs`).
//!
//! gVisor's checkpoint (the Debian 12 release) refuses to save a TCP endpoint that anything still waits on, and an
//! epoll registration waits for as long as it exists: tokio's listener and every kept-alive connection would make
//! each checkpoint fail (and a failed checkpoint ends the sandbox). A thread blocked in `accept(2)` is different:
//! the checkpoint interrupts the call and the restored thread makes it again. So the listening socket is served by
//! such a thread, and each accepted connection carries a token that ends it when cancelled.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The agent's open connections, each with the token that closes it.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, CancellationToken>>,
    next_id: AtomicU64,
    changed: Notify,
}

impl Connections {
    fn open(self: &Arc<Self>) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        (id, token)
    }

    fn closed(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every connection except `keep` and waits until their sockets are closed (their streams dropped),
    /// at most `limit`. Returns how many were closed, or the number still open when the limit passed.
    pub async fn close_all_but(&self, keep: u64, limit: Duration) -> Result<usize, usize> {
        let closing: Vec<u64> = {
            let open = self.lock();
            open.iter()
                .filter(|(id, _)| **id != keep)
                .map(|(id, token)| {
                    token.cancel();
                    *id
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            let left = self.lock().keys().filter(|id| closing.contains(id)).count();
            if left == 0 {
                return Ok(closing.len());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(left);
            }
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A connection's number, for handlers (`ConnectInfo<ConnectionId>`): the quiesce route keeps its own open.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionId(pub u64);

impl Connected<IncomingStream<'_, BlockingAcceptListener>> for ConnectionId {
    fn connect_info(stream: IncomingStream<'_, BlockingAcceptListener>) -> Self {
        ConnectionId(stream.io().id)
    }
}

/// Accepts on a thread of its own (blocking `accept(2)`, never in an epoll set) and hands each connection, with
/// `TCP_NODELAY`, to tokio.
pub struct BlockingAcceptListener {
    accepted: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
    connections: Arc<Connections>,
}

impl BlockingAcceptListener {
    pub fn bind(addr: SocketAddr, connections: Arc<Connections>) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        std::thread::Builder::new().name("envd-accept".into()).spawn(move || {
            loop {
                match listener.accept() {
                    Ok(conn) => {
                        if tx.blocking_send(conn).is_err() {
                            return; // the server is gone
                        }
                    }
                    // Out of descriptors and the like: the same pause as hyper's own accept loop.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
        Ok(BlockingAcceptListener { accepted, local, connections })
    }
}

impl axum::serve::Listener for BlockingAcceptListener {
    type Io = ClosableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((stream, addr)) = self.accepted.recv().await else {
                // The accept thread cannot end while this receiver lives; never busy-loop if it did.
                std::future::pending::<()>().await;
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                // Small Connect messages must not wait for Nagle: without NODELAY each request can stall ~40 ms.
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
            let stream = match stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "could not take an accepted connection");
                    continue;
                }
            };
            let (id, token) = self.connections.open();
            let closed = Box::pin(token.cancelled_owned());
            return (ClosableStream { stream: Some(stream), id, closed, connections: self.connections.clone() }, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// An accepted connection that is reset, and fails every read and write, once its token is cancelled, so that
/// hyper drops it even while it waits for a request. Its shutdown closes the socket rather than only sending a
/// FIN: a peer that reads the end of the stream knows the socket is gone, epoll registration and all (the node
/// checkpoints the moment the quiesce connection ends).
pub struct ClosableStream {
    stream: Option<tokio::net::TcpStream>,
    id: u64,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    connections: Arc<Connections>,
}

impl ClosableStream {
    /// The socket, unless the connection was closed (for a checkpoint, or by its shutdown).
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<Pin<&mut tokio::net::TcpStream>> {
        if self.closed.as_mut().poll(cx).is_ready()
            && let Some(stream) = self.stream.take()
        {
            // A reset, not a FIN: the connection is being cut anyway, and an actively closed TCP endpoint would
            // wait in TIME_WAIT, a state gVisor's save refuses.
            let _ = stream.set_zero_linger();
        }
        match self.stream.as_mut() {
            Some(stream) => Ok(Pin::new(stream)),
            None => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed")),
        }
    }
}

impl Drop for ClosableStream {
    fn drop(&mut self) {
        self.connections.closed(self.id);
    }
}

impl AsyncRead for ClosableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.open(cx)?.poll_read(cx, buf)
    }
}

impl AsyncWrite for ClosableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.open(cx)?.poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.open(cx)?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.open(cx)?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing sends the FIN once nothing is left to send, like a shutdown, and ends the socket first.
        self.stream = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn closing_ends_idle_connections_and_keeps_the_asker_and_new_ones() {
        let connections = Arc::new(Connections::default());
        let mut listener =
            BlockingAcceptListener::bind("127.0.0.1:0".parse().unwrap(), connections.clone()).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..3 {
            clients.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
            let (mut io, _) = listener.accept().await;
            let id = io.id;
            // Each server side waits for a request, as an idle kept-alive connection does.
            served.push((id, tokio::spawn(async move { io.read(&mut [0u8; 8]).await })));
        }
        assert_eq!(connections.len(), 3);
        let keep = served[0].0;
        let closed = connections.close_all_but(keep, Duration::from_secs(5)).await;
        assert_eq!(closed, Ok(2));
        assert_eq!(connections.len(), 1);
        // The closed ones are reset (no TIME_WAIT left behind); the kept one still talks.
        for client in &mut clients[1..] {
            let read = client.read(&mut [0u8; 8]).await;
            assert!(matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset), "{read:?}");
        }
        clients[0].write_all(b"x").await.expect("write");
        assert_eq!(served.remove(0).1.await.expect("join").expect("read"), 1);
        // A connection made after the close is served.
        let _late = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (io, _) = listener.accept().await;
        assert_eq!(connections.len(), 1, "the kept one ended with its task; the late one is open");
        drop(io);
        assert_eq!(connections.len(), 0);
    }
}
