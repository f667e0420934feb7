//! The node's egress gateway (issue 14): where a sandbox with host-name rules (`allowOut: ["api.example.com"]`)
//! has its HTTP and TLS sent. The firewall redirects the sandbox's TCP to ports 80 and 443 here (`sb_nat`); the
//! sandbox sees a plain connection to where it connected.
//!
//! For each connection the gateway finds the sandbox by its source address, the destination it asked for
//! (`SO_ORIGINAL_DST`), and the name it asks for from its first bytes (TLS SNI, HTTP `Host`: `peek.rs`), then
//! applies the sandbox's policy (`decide.rs`: allow wins over deny; private, metadata and pool addresses never).
//! A named connection must also go where its name resolves (`resolve.rs`, the sandbox's own DNS servers): an SNI
//! that names an allowed host while connecting elsewhere is refused. Passed connections are spliced to the
//! destination byte for byte (TLS is not terminated: nothing is read but the opening). A live policy update
//! re-judges the sandbox's open connections and cuts those it no longer allows.
//!
//! The same address on UDP answers the sandbox's DNS (`dns.rs`): names its policy can never reach get NXDOMAIN at
//! once, the rest go to the runtime's DNS servers.
//!
//! A sandbox with a SOCKS5 proxy (E2B's `egressProxy`) has all of its TCP redirected here; what its policy allows
//! is dialled through the proxy (RFC 1928, with RFC 1929 credentials when given), never directly: a proxy that
//! fails fails the connection. UDP (DNS, QUIC) is not tunnelled, as in E2B.
//!
//! Hosts with header rules (E2B's `rules`) are not spliced but served (`intercept.rs`): TLS terminated with the
//! installation's egress CA, each HTTP request given the rules' headers with its secrets filled in.
//!
//! Not here yet: TLS to the SOCKS5 proxy.
mod decide;
mod dns;
mod intercept;
mod peek;
mod resolve;

use crate::firewall::Firewall;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Per-direction copy buffer: large enough that a download costs few syscalls per MiB (tokio's default 8 KiB
/// made a 256 MiB download through the gateway a third as fast as straight out).
const SPLICE_BUFFER: usize = 256 * 1024;

/// How long the gateway waits for the destination to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds the sandbox that owns an address (the runtime's serving map).
pub(crate) type SandboxOf = Box<dyn Fn(Ipv4Addr) -> Option<String> + Send + Sync>;

/// Where header rules' secrets come from, set by whoever runs the runtime (`Runtime::set_egress_secrets`).
pub(crate) type Secrets = Arc<std::sync::RwLock<Option<Arc<dyn crate::egress_secrets::EgressSecrets>>>>;

/// What the gateway needs besides the firewall: the egress CA, extra upstream CAs, the secrets.
pub(crate) struct Options<'a> {
    pub(crate) ca: Option<&'a crate::egress_ca::CaPem>,
    pub(crate) trusted_ca: Option<&'a std::path::Path>,
    pub(crate) secrets: Secrets,
}

pub(crate) struct Gateway {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    dns: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    fw: Arc<Firewall>,
    /// Signs the certificates of intercepted TLS (`None`: no egress CA configured; TLS to hosts with header rules
    /// is refused rather than passed without its headers).
    signer: Option<Arc<crate::egress_ca::Signer>>,
    upstream_tls: Arc<rustls::ClientConfig>,
    secrets: Secrets,
    names: resolve::Names,
    sandbox_of: SandboxOf,
    /// Open connections per sandbox, for re-judging them when its policy changes.
    open: std::sync::Mutex<HashMap<String, Vec<Open>>>,
    next: AtomicU64,
}

/// One passed connection: what it asked for, and how to cut it.
struct Open {
    key: u64,
    name: Option<String>,
    dst: Ipv4Addr,
    port: u16,
    cut: CancellationToken,
}

impl Gateway {
    /// Listens on `addr` (the pool's gateway address, bound before any veth carries it). `None` when it cannot:
    /// sandboxes with host rules then get no HTTP or TLS out (their redirected connections are refused).
    pub(crate) fn start(
        addr: SocketAddrV4,
        fw: Arc<Firewall>,
        dns_servers: &[Ipv4Addr],
        sandbox_of: SandboxOf,
        options: Options<'_>,
    ) -> Option<Gateway> {
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "egress gateway: cannot listen; sandboxes with host rules get no HTTP/TLS out");
                return None;
            }
        };
        let signer = options.ca.and_then(|ca| match crate::egress_ca::Signer::new(ca) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(error = %e, "egress gateway: the egress CA is unusable; TLS header rules are refused");
                None
            }
        });
        let shared = Arc::new(Shared {
            fw,
            signer,
            upstream_tls: intercept::upstream_tls(options.trusted_ca),
            secrets: options.secrets,
            names: resolve::Names::new(dns_servers),
            sandbox_of,
            open: Default::default(),
            next: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        let dns = match bind_udp(addr) {
            Ok(socket) => Some(tokio::spawn(dns::serve(socket, dns_servers.to_vec(), shared.clone()))),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "egress gateway: no DNS for sandboxes with host rules");
                None
            }
        };
        tracing::debug!(%addr, "egress gateway listening");
        Some(Gateway { shared, accept, dns })
    }

    /// Re-judges the open connections of sandbox `id` under its current policy (none: it is gone, or has no host
    /// rules any more) and cuts those it does not allow.
    pub(crate) fn recheck(&self, id: &str) {
        let policy = self.shared.fw.gateway_policy(id);
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(conns) = open.get_mut(id) else { return };
        conns.retain(|c| {
            let allowed = policy.as_ref().is_some_and(|p| {
                decide::verdict(&self.shared.fw, p, c.name.as_deref(), c.dst, c.port).is_ok()
            });
            if !allowed {
                tracing::info!(sandbox = id, name = ?c.name, dst = %c.dst, port = c.port, "egress gateway: cut a connection the policy no longer allows");
                c.cut.cancel();
            }
            allowed
        });
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(dns) = &self.dns {
            dns.abort();
        }
        for conns in self.shared.open.lock().unwrap_or_else(|e| e.into_inner()).values() {
            conns.iter().for_each(|c| c.cut.cancel());
        }
    }
}

fn bind(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // The gateway address is on the sandboxes' veths, which may not exist yet.
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn bind_udp(addr: SocketAddrV4) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, SocketAddr::V4(peer))) => {
                tokio::spawn(handle(stream, *peer.ip(), shared.clone()));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "egress gateway: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, source: Ipv4Addr, shared: Arc<Shared>) {
    let Some(id) = (shared.sandbox_of)(source) else { return };
    let (Some(policy), Some(original)) = (shared.fw.gateway_policy(&id), original_destination(&stream)) else { return };
    let (dst, port) = (*original.ip(), original.port());
    // Only HTTP and TLS are judged by name: other protocols may wait for the server to speak first.
    let (opening, head) = match policy.has_host_rules() && (port == 80 || port == 443) {
        true => peek::opening(&mut stream).await,
        false => (peek::Opening::Other, Vec::new()),
    };
    let (name, tls) = match &opening {
        peek::Opening::Tls(name) => (name.clone(), true),
        peek::Opening::Http(name) => (name.clone(), false),
        peek::Opening::Other => (None, false),
    };
    let refused = match decide::verdict(&shared.fw, &policy, name.as_deref(), dst, port) {
        Err(why) => Some(why),
        Ok(false) => None,
        Ok(true) => {
            let name = soulbox_protocol::hosts::normalize(name.as_deref().unwrap_or_default());
            let resolves = match decide::dns_servers(&shared.fw, &policy) {
                Some(servers) => shared.names.resolves_to(&name, dst, &servers).await,
                None => false,
            };
            (!resolves).then_some(decide::Refusal::Mismatch)
        }
    };
    if let Some(why) = refused {
        tracing::info!(sandbox = %id, name = ?name, %dst, port, ?why, "egress gateway: refused");
        return;
    }
    // Header rules for this host: the connection is served, not spliced.
    let judged = name.as_deref().map(soulbox_protocol::hosts::normalize).unwrap_or_else(|| dst.to_string());
    let rules = match opening {
        peek::Opening::Other => vec![],
        _ => intercept::matching(&policy.rules, Some(&judged), dst),
    };
    if !rules.is_empty() && tls && shared.signer.is_none() {
        tracing::warn!(sandbox = %id, name = %judged, "egress gateway: refused TLS to a host with header rules (no egress CA)");
        return;
    }
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, dial(policy.egress_proxy.as_ref(), dst, port)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(sandbox = %id, %dst, port, error = %e, "egress gateway: could not reach the destination");
            return;
        }
        Err(_) => {
            tracing::info!(sandbox = %id, %dst, port, "egress gateway: timed out reaching the destination");
            return;
        }
    };
    // The sandbox's own writes decide the segments: a relay that waited on Nagle would add delayed-ACK stalls
    // (40 ms) where the sandbox's stack would have sent at once.
    let _ = stream.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let cut = CancellationToken::new();
    let key = shared.next.fetch_add(1, Ordering::Relaxed);
    let open = Open { key, name: name.clone(), dst, port, cut: cut.clone() };
    shared.open.lock().unwrap_or_else(|e| e.into_inner()).entry(id.clone()).or_default().push(open);
    // A policy change between the verdict and the registration must not miss this connection.
    if shared
        .fw
        .gateway_policy(&id)
        .as_ref()
        .is_none_or(|p| decide::verdict(&shared.fw, p, name.as_deref(), dst, port).is_err())
    {
        cut.cancel();
    }
    match (rules.is_empty(), shared.signer.clone()) {
        (true, _) => splice(stream, upstream, head, &cut).await,
        (false, signer) => {
            let interception = intercept::Interception {
                sandbox: id.clone(),
                name: judged,
                rules,
                tls,
                signer,
                upstream_tls: shared.upstream_tls.clone(),
                secrets: shared.secrets.read().unwrap_or_else(|e| e.into_inner()).clone(),
            };
            tracing::debug!(sandbox = %id, %dst, port, "egress gateway: intercepting for header rules");
            tokio::select! {
                _ = intercept::serve(stream, head, upstream, interception) => {}
                _ = cut.cancelled() => {}
            }
        }
    }
    let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(conns) = open.get_mut(&id) {
        conns.retain(|c| c.key != key);
        if conns.is_empty() {
            open.remove(&id);
        }
    }
}

/// The connection to `dst:port`: straight, or tunnelled through the sandbox's SOCKS5 proxy. A proxy that is
/// unreachable, refuses the credentials or the destination fails the connection: never a direct fallback.
async fn dial(proxy: Option<&soulbox_protocol::SocksProxy>, dst: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let Some(proxy) = proxy else { return TcpStream::connect((dst, port)).await };
    let at: SocketAddrV4 = proxy.address.parse().map_err(std::io::Error::other)?;
    let target = SocketAddrV4::new(dst, port);
    let tunnel = match (&proxy.username, &proxy.password) {
        (Some(user), password) => {
            tokio_socks::tcp::Socks5Stream::connect_with_password(at, target, user, password.as_deref().unwrap_or(""))
                .await
        }
        (None, _) => tokio_socks::tcp::Socks5Stream::connect(at, target).await,
    };
    tunnel.map(|t| t.into_inner()).map_err(std::io::Error::other)
}

/// Sends `head` (what was read to find the name) and then both directions until either side ends or `cut`.
async fn splice(mut client: TcpStream, mut upstream: TcpStream, head: Vec<u8>, cut: &CancellationToken) {
    let relay = async {
        upstream.write_all(&head).await?;
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, SPLICE_BUFFER, SPLICE_BUFFER).await
    };
    tokio::select! {
        _ = relay => {}
        _ = cut.cancelled() => {}
    }
}

/// Where the sandbox connected before the redirect.
fn original_destination(stream: &TcpStream) -> Option<SocketAddrV4> {
    // SAFETY: getsockopt(2) writes at most `len` bytes into a zeroed sockaddr_in that lives for the call.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
        (rc == 0)
            .then(|| SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)), u16::from_be(addr.sin_port)))
    }
}
