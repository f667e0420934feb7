//! The client connection's socket as the server's listener records it, so that a stream the proxy cuts (the
//! sandbox was killed or paused) can end in a connection reset instead of a clean close.

/// The client connection's socket, recorded per connection (the listener's address type, so
/// `into_make_service_with_connect_info::<ClientSocket>` puts it in every request) so a stream cut on kill can
/// reset the connection instead of closing it cleanly.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket {
    pub peer: std::net::SocketAddr,
    fd: Option<std::os::fd::RawFd>,
}

impl ClientSocket {
    pub(crate) fn new(peer: std::net::SocketAddr, fd: std::os::fd::RawFd) -> ClientSocket {
        ClientSocket { peer, fd: Some(fd) }
    }
}

/// The server's listener: TCP, `TCP_NODELAY` on every accepted connection, [`ClientSocket`] as its address.
pub struct ServerListener(pub tokio::net::TcpListener);

impl axum::serve::Listener for ServerListener {
    type Io = tokio::net::TcpStream;
    type Addr = ClientSocket;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, peer) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = io.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
        (io, ClientSocket { peer, fd: Some(fd) })
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(ClientSocket { peer: self.0.local_addr()?, fd: None })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ServerListener>> for ClientSocket {
    fn connect_info(stream: axum::serve::IncomingStream<'_, ServerListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Makes the next close of the socket an RST (SO_LINGER 0). E2B clients treat a reset mid-body as "the sandbox
/// was killed"; a FIN in the middle of a chunked body reads as a protocol error instead (e2b 2.45 then reports a
/// plain timeout).
///
/// Only called while hyper is polling the response body of an HTTP/1 connection, i.e. while the connection —
/// and so this descriptor — is open.
pub fn reset_on_close(socket: ClientSocket) {
    let Some(fd) = socket.fd else { return };
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the descriptor belongs to the live connection that is polling us (see above); setsockopt reads
    // `linger` only for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "proxy: could not set SO_LINGER on a cut stream");
    }
}
