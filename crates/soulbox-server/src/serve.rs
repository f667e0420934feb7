//! The HTTP front of `soulbox server`: accepts connections and serves the app on them, holding up under abuse.
//!
//! - **Connection cap.** At most `max_connections` client connections at once (also bounded by the process's
//!   file descriptor limit, which the server raises to its hard limit at start). Beyond the cap a new connection
//!   is accepted and closed at once: the listen backlog stays drained, so a client over the cap fails fast
//!   instead of hanging in SYN retries, and established connections are not touched.
//! - **Header-read timeout.** A connection that is not serving a request must deliver a complete request head
//!   within `header_read_timeout` from its first byte (or from being accepted): a slowloris client that
//!   trickles headers, or connects and sends nothing, is closed.
//! - **Idle timeout.** A kept-alive connection with no request in flight and no bytes either way for
//!   `idle_timeout` is closed.
//! - Requests in flight are never timed out here (a process output or watch stream may be silent for long);
//!   their bodies are bounded per route instead (the API's JSON, the proxy, template uploads).
//!
//! hyper's own HTTP/1 `header_read_timeout` also starts while a kept-alive connection waits for its next
//! request, so it cannot tell the two timeouts apart, and it does not exist for HTTP/2 or while the protocol
//! is still being sniffed; this module tracks each connection's phase itself (bytes read, requests in flight)
//! and closes it with one per-connection watchdog that sleeps until the next deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client_socket::ClientSocket;
use crate::forwarded::{self, TrustedProxies};
use crate::tls::{self, ClientIo, TlsFront};

/// The `[http]` section of the server config (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Client connections served at once; more are accepted and closed at once [default: 4096].
    pub max_connections: Option<usize>,
    /// Seconds a connection has to send a complete request head [default: 15].
    pub header_read_timeout_s: Option<u64>,
    /// Seconds a kept-alive connection may sit without a request [default: 90].
    pub idle_timeout_s: Option<u64>,
    /// Largest request body proxied to a sandbox, in MiB [default: 10240].
    pub max_proxy_body_mb: Option<u64>,
    /// Largest template COPY context upload, in MiB [default: 4096].
    pub max_upload_mb: Option<u64>,
    /// PEM certificate chain: the port serves HTTPS (with `tls_key`; `SOULBOX_TLS_CERT` overrides). Reloaded
    /// when the file changes.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert` (`SOULBOX_TLS_KEY` overrides).
    pub tls_key: Option<std::path::PathBuf>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For/-Proto/-Host` are believed [default:
    /// none].
    pub trusted_proxies: Option<Vec<String>>,
}

/// The default of `[http] max_upload_mb`: 4 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 4 << 30;

/// The effective HTTP limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_proxy_body_bytes: u64,
    pub max_upload_bytes: u64,
    /// How long a shutdown waits for open connections to finish.
    pub shutdown_grace: Duration,
    /// Peers whose forwarding headers are believed (`forwarded.rs`).
    pub trusted_proxies: TrustedProxies,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(90),
            max_proxy_body_bytes: 10 << 30,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            shutdown_grace: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl HttpConfig {
    pub fn settings(&self) -> HttpSettings {
        let d = HttpSettings::default();
        HttpSettings {
            max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
            header_read_timeout: self
                .header_read_timeout_s
                .map_or(d.header_read_timeout, |s| Duration::from_secs(s.max(1))),
            idle_timeout: self.idle_timeout_s.map_or(d.idle_timeout, |s| Duration::from_secs(s.max(1))),
            max_proxy_body_bytes: self.max_proxy_body_mb.map_or(d.max_proxy_body_bytes, |m| m << 20),
            max_upload_bytes: self.max_upload_mb.map_or(d.max_upload_bytes, |m| m << 20),
            shutdown_grace: d.shutdown_grace,
            trusted_proxies: d.trusted_proxies,
        }
    }

    /// The `trusted_proxies` list, checked.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, crate::forwarded::BadProxyEntry> {
        TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or_default())
    }

    /// The certificate and key to serve HTTPS with: `SOULBOX_TLS_CERT`/`SOULBOX_TLS_KEY` (`env`), else the
    /// config's; both or neither.
    pub fn tls_files(
        &self,
        env: impl Fn(&str) -> Option<std::path::PathBuf>,
    ) -> Result<Option<crate::tls::TlsFiles>, &'static str> {
        let cert = env(crate::tls::CERT_ENV).or_else(|| self.tls_cert.clone());
        let key = env(crate::tls::KEY_ENV).or_else(|| self.tls_key.clone());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles { cert, key })),
            (None, None) => Ok(None),
            _ => Err(
                "HTTPS needs both a certificate and a key ([http] tls_cert and tls_key, or SOULBOX_TLS_CERT and SOULBOX_TLS_KEY)",
            ),
        }
    }
}

/// File descriptors kept back from client connections for the runtime, the database, logs and the like.
const FD_RESERVE: u64 = 512;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the connection cap it allows: each
/// client connection may hold two descriptors (its socket and, through the proxy, one to a sandbox).
pub fn raise_fd_limit_and_cap(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        limit.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let allowed = usize::try_from(soft.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX).max(1);
    if allowed < configured {
        tracing::warn!(
            configured,
            allowed,
            open_file_limit = soft,
            "the connection cap is lowered to fit the open-file limit"
        );
    }
    configured.min(allowed)
}

/// A listener with a deep backlog (bursts of connections wait in the kernel, not in SYN retries).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, asks every connection to finish
/// and waits for them (at most `settings.shutdown_grace`).
pub async fn serve(listener: TcpListener, app: Router, settings: HttpSettings, shutdown: impl Future<Output = ()>) {
    serve_tls(listener, app, settings, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (the handshake runs in the connection's task, within the
/// header-read timeout, so a slow handshake holds up no other connection).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    tls: Option<Arc<TlsFront>>,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(OpenConnections::default());
    let stop = CancellationToken::new();
    let settings = Arc::new(settings);
    let mut shed = ShedLog::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept: nothing to serve; a
                // short pause keeps a persistent error from spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.count.load(Ordering::SeqCst) >= settings.max_connections {
            drop(stream);
            shed.note(settings.max_connections);
            continue;
        }
        let slot = OpenConnections::enter(&open);
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let (app, settings, stop) = (app.clone(), settings.clone(), stop.clone());
        tokio::spawn(async move {
            let io = match &tls {
                Some(front) => match tls::handshake(front, stream, settings.header_read_timeout).await {
                    Some(io) => io,
                    None => return,
                },
                None => ClientIo::Plain(stream),
            };
            serve_connection(io, peer, slot, app, settings, stop).await
        });
    }
    stop.cancel();
    let drained = tokio::time::timeout(settings.shutdown_grace, open.all_closed()).await;
    if drained.is_err() {
        tracing::warn!(
            open = open.count.load(Ordering::SeqCst),
            "shutdown: connections still open after the grace period"
        );
    }
}

/// Counts open client connections (an upgraded connection counts until its socket closes).
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    closed: Notify,
}

impl OpenConnections {
    fn enter(this: &Arc<OpenConnections>) -> Slot {
        this.count.fetch_add(1, Ordering::SeqCst);
        Slot(this.clone())
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct Slot(Arc<OpenConnections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.closed.notify_waiters();
    }
}

/// Logs shed connections at most every 10 s.
#[derive(Default)]
struct ShedLog {
    since_last: u64,
    last: Option<Instant>,
}

impl ShedLog {
    fn note(&mut self, cap: usize) {
        self.since_last += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(cap, shed = self.since_last, "connection cap reached: new connections are closed at once");
            self.since_last = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// What the watchdog knows about one connection.
struct Phase {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` of the last byte read or written, or of the last request's end.
    last_activity_ms: AtomicU64,
    /// Milliseconds since `born` + 1 when the current request head began; 0 while no head is being read.
    head_started_ms: AtomicU64,
    /// The connection speaks HTTP/2 (its control frames while idle do not start a request head).
    h2: AtomicBool,
    first_bytes_seen: AtomicBool,
    /// Set when hyper ended the connection itself (not a timeout, the cap or shutdown): its close lingers.
    linger_on_close: AtomicBool,
    changed: Notify,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl Phase {
    fn new() -> Phase {
        Phase {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
            // A fresh connection must send its first request head within the header timeout.
            head_started_ms: AtomicU64::new(1),
            h2: AtomicBool::new(false),
            first_bytes_seen: AtomicBool::new(false),
            linger_on_close: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn on_read(&self, data: &[u8]) {
        let now = self.now_ms();
        self.last_activity_ms.store(now, Ordering::Relaxed);
        // "PRI" starts no HTTP/1 method, so three bytes tell the prior-knowledge h2 preface apart.
        if !self.first_bytes_seen.swap(true, Ordering::Relaxed)
            && data.len() >= 3
            && H2_PREFACE.starts_with(&data[..data.len().min(H2_PREFACE.len())])
        {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::SeqCst) == 0
            && !self.h2.load(Ordering::Relaxed)
            && self.head_started_ms.compare_exchange(0, now + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_activity_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_started_ms.store(0, Ordering::SeqCst);
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        self.last_activity_ms.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Resolves when the connection has outstayed a timeout (never while a request is in flight).
    async fn expired(&self, header: Duration, idle: Duration) -> &'static str {
        loop {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                self.changed.notified().await;
                continue;
            }
            let (since, limit, why) = match self.head_started_ms.load(Ordering::SeqCst) {
                0 => (self.last_activity_ms.load(Ordering::Relaxed), idle, "idle timeout"),
                started => (started - 1, header, "header read timeout"),
            };
            let deadline = self.born + Duration::from_millis(since) + limit;
            if Instant::now() >= deadline {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// The client socket, reporting its traffic to the connection's [`Phase`].
struct TrackedIo {
    inner: ClientIo,
    phase: Arc<Phase>,
    _slot: Slot,
}

impl AsyncRead for TrackedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.on_read(&buf.filled()[before..]);
        }
        res
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.on_write();
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.on_write();
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        if self.phase.linger_on_close.load(Ordering::Relaxed) && !resets_on_close(self.inner.tcp()) {
            linger(self.inner.tcp());
        }
    }
}

/// How long, and for how many bytes, a closing connection keeps reading what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_BYTES: usize = 64 << 20;

/// A lingering close (nginx's `lingering_close`): a response sent before the request body was read (a 413, a
/// 401) is lost when the socket closes while the client is still sending — the kernel answers the client's next
/// segment with a reset, its write fails, and it never reads the answer. So stop sending (FIN), read and discard
/// what still comes for a bounded time and size, then close. A duplicate descriptor keeps the socket open after
/// hyper drops its own.
fn linger(stream: &TcpStream) {
    use std::os::fd::AsFd;
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    let Ok(fd) = stream.as_fd().try_clone_to_owned() else { return };
    let socket = std::net::TcpStream::from(fd);
    if socket.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let Ok(socket) = TcpStream::from_std(socket) else { return };
    handle.spawn(async move {
        let mut socket = socket;
        let mut buf = vec![0u8; 16 * 1024];
        let mut drained = 0usize;
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut socket, &mut buf)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    });
}

/// Whether the proxy asked for a reset on close (`SO_LINGER` 0: how a cut sandbox stream reads as "killed"):
/// lingering would turn that reset into a clean FIN.
fn resets_on_close(stream: &TcpStream) -> bool {
    let mut linger = libc::linger { l_onoff: 0, l_linger: 0 };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `linger`, which lives for the call.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&mut linger as *mut libc::linger).cast(),
            &mut len,
        )
    };
    rc == 0 && linger.l_onoff != 0 && linger.l_linger == 0
}

/// Ends a request's in-flight span when dropped: with its response body, or with the handler if the client left.
struct InFlight(Arc<Phase>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that holds its request's [`InFlight`] until the body is done or dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Request bodies up to this declared length are read before the app sees the request.
const SMALL_BODY: u64 = 64 * 1024;

/// Reads a small body (declared `Content-Length` ≤ [`SMALL_BODY`]) before the app runs. A handler that answers
/// without reading the body (a 401 from the key check, a 404) otherwise leaves hyper with an unread body: if
/// its bytes have not all arrived yet, hyper closes the connection after the response, without having said so,
/// and a client that already reused the kept-alive connection for its next request sees "server disconnected".
/// Bigger and chunked bodies stream to the app as they come.
async fn read_small_body(request: Request<Incoming>) -> Result<Request<Body>, http::Response<Body>> {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    match declared {
        Some(n) if n > 0 && n <= SMALL_BODY => {
            match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, SMALL_BODY as usize)).await {
                Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
                Err(e) => {
                    Err(crate::reply::error(http::StatusCode::BAD_REQUEST, format!("reading the request body: {e}")))
                }
            }
        }
        _ => Ok(Request::from_parts(parts, Body::new(body))),
    }
}

async fn serve_connection(
    stream: ClientIo,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    settings: Arc<HttpSettings>,
    stop: CancellationToken,
) {
    let socket = ClientSocket::new(peer, std::os::fd::AsRawFd::as_raw_fd(stream.tcp()));
    let over_tls = !matches!(stream, ClientIo::Plain(_));
    let phase = Arc::new(Phase::new());
    if stream.alpn_h2() {
        phase.h2.store(true, Ordering::Relaxed);
    }
    let io = TrackedIo { inner: stream, phase: phase.clone(), _slot: slot };
    let service_phase = phase.clone();
    let trusted = settings.clone();
    let service = tower::service_fn(move |mut request: Request<Incoming>| {
        let authority = request.uri().authority().map(|a| a.as_str().to_owned());
        let origin = forwarded::resolve(
            peer.ip(),
            over_tls,
            authority.as_deref(),
            request.headers_mut(),
            &trusted.trusted_proxies,
        );
        request.extensions_mut().insert(origin);
        request.extensions_mut().insert(axum::extract::ConnectInfo(socket));
        service_phase.request_started();
        let in_flight = InFlight(service_phase.clone());
        let app = app.clone();
        async move {
            let request = match read_small_body(request).await {
                Ok(r) => r,
                Err(response) => return Ok(response),
            };
            let response = tower::ServiceExt::oneshot(app, request).await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|inner| Body::new(TrackedBody { inner, _in_flight: in_flight })),
            )
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            phase.linger_on_close.store(true, Ordering::Relaxed);
        }
        why = phase.expired(settings.header_read_timeout, settings.idle_timeout) => {
            tracing::debug!(%peer, reason = why, "closing a client connection");
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(settings.shutdown_grace, conn.as_mut()).await;
        }
    }
}
