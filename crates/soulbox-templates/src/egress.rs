//! Where registry pulls may connect: a small forward proxy in this process that every request of a pull goes
//! through (oci-client's HTTP client is configured with it as its HTTP and HTTPS proxy).
//!
//! oci-client builds its reqwest client privately and exposes no resolver or connector hook, and a resolver hook
//! alone would not see IP-literal URLs anyway. The proxy sees every connection a pull makes — the registry, the
//! token realm its `WWW-Authenticate` names, every redirect (blob downloads redirect to CDNs), foreign layer
//! URLs — resolves the host itself, checks each address, and connects to the very address it checked, so DNS
//! rebinding cannot slip a different address in between. Loopback, link-local, private and other non-public
//! addresses are refused unless the host is named in the server's config (see [`EgressPolicy`]); the pull then
//! fails with a message naming the setting.
//!
//! HTTPS is tunnelled (`CONNECT`: TLS stays end to end between oci-client and the registry); plain HTTP (insecure
//! registries) is forwarded. The proxy listens on a random loopback port for the duration of one pull. It takes
//! no credential: reqwest drops `Proxy-Authorization` when a plain-HTTP request is redirected to another host,
//! which would break such redirects, and a credential would protect nothing — the proxy reaches only what the
//! pull may reach, host processes can reach those directly anyway, and sandboxes cannot reach the host's
//! loopback from their own network namespaces.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The config settings that let a pull reach a non-public address (named in every refusal).
pub const SETTINGS: &str =
    "[templates] insecure_registries, registry_auth, registry_private_hosts or an image_rewrites target";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether an address is outside the public internet: loopback, link-local (cloud metadata), private, shared
/// (CGNAT), unspecified, multicast, broadcast, documentation and reserved ranges, and the IPv6 forms of these
/// (IPv4-mapped and NAT64 addresses are judged by the IPv4 address inside).
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // 100.64/10 shared address space
                || (a == 192 && b == 0 && c == 0) // 192.0.0/24 IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // 198.18/15 benchmarking
                || a >= 240 // 240/4 reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_non_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
                || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
                || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
                || seg[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated) and ::/96
        }
    }
}

/// The hosts a pull may reach even at non-public addresses: those the administrator named in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// `host` (any port) or `host:port`, as written in the config; IPv6 in brackets.
    named: Vec<String>,
}

impl EgressPolicy {
    pub fn new(named: impl IntoIterator<Item = String>) -> EgressPolicy {
        EgressPolicy {
            named: named.into_iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect(),
        }
    }

    /// Whether `host:port` is named (an entry without a port names the host on every port).
    pub fn names(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.named.iter().any(|entry| {
            let (h, p) = split_host_port(entry);
            h == host && p.is_none_or(|p| p == port)
        })
    }

    /// Whether a connection to `addr` for `host:port` is allowed.
    pub fn allows(&self, host: &str, port: u16, addr: IpAddr) -> bool {
        !is_non_public(addr) || self.names(host, port)
    }
}

/// `host[:port]` / `[v6][:port]` → (host without brackets, port).
fn split_host_port(s: &str) -> (String, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
        return (h.to_string(), tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), Some(port)),
            Err(_) => (s.to_string(), None),
        },
        _ => (s.to_string(), None),
    }
}

/// Resolves `host:port` and picks the first address the policy allows; the caller connects to exactly that one.
async fn checked_address(policy: &EgressPolicy, host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port)).await.map_err(|e| format!("resolving {bare}: {e}"))?.collect(),
    };
    match addrs.iter().find(|a| policy.allows(bare, port, a.ip())) {
        Some(a) => Ok(*a),
        None => Err(match addrs.first() {
            Some(a) => format!(
                "{bare}:{port} resolves to {}, which is not a public address, and the host is not named in the server's config ({SETTINGS})",
                a.ip()
            ),
            None => format!("{bare} has no address"),
        }),
    }
}

async fn connect(policy: &EgressPolicy, host: &str, port: u16) -> Result<TcpStream, String> {
    let addr = checked_address(policy, host, port).await?;
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connecting to {host}:{port} ({addr}): {e}")),
        Err(_) => Err(format!("connecting to {host}:{port} ({addr}): timed out")),
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from(message)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

struct Shared {
    policy: EgressPolicy,
    /// The last refusal, so the pull's error can say why a connection failed (reqwest only reports a status).
    refused: Mutex<Option<String>>,
}

/// A running egress proxy; stops when dropped.
pub struct EgressProxy {
    url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EgressProxy {
    pub async fn start(policy: EgressPolicy) -> std::io::Result<EgressProxy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared { policy, refused: Mutex::new(None) });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(EgressProxy { url: format!("http://127.0.0.1:{port}"), shared, stop })
    }

    /// The proxy URL, for reqwest/oci-client.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Why the last connection was refused, if one was.
    pub fn last_refusal(&self) -> Option<String> {
        self.shared.refused.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<ProxyBody>, hyper::Error> {
    let (host, port) = match target(&req) {
        Some(t) => t,
        None => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "the proxy needs CONNECT host:port or an absolute http:// URL".into(),
            ));
        }
    };
    let upstream = match connect(&shared.policy, &host, port).await {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(host = %host, port, reason = %why, "registry pull: connection refused by the egress policy");
            *shared.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            return Ok(text(StatusCode::FORBIDDEN, why));
        }
    };
    if req.method() == Method::CONNECT {
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(client) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = upstream;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "egress proxy: CONNECT upgrade failed"),
            }
        });
        return Ok(Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()));
    }
    forward(req, upstream).await
}

/// `CONNECT host:port`, or the host and port of an absolute `http://` URL.
fn target(req: &Request<Incoming>) -> Option<(String, u16)> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let authority = uri.authority()?;
        return Some((authority.host().to_string(), authority.port_u16()?));
    }
    if uri.scheme_str() != Some("http") {
        return None;
    }
    Some((uri.host()?.to_string(), uri.port_u16().unwrap_or(80)))
}

/// Plain HTTP: the request in origin form over the checked connection.
async fn forward(req: Request<Incoming>, upstream: TcpStream) -> Result<Response<ProxyBody>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let host = parts.uri.authority().map(|a| a.as_str().to_string());
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "invalid path".into())),
    };
    for name in ["proxy-authorization", "proxy-connection"] {
        parts.headers.remove(name);
    }
    if let Some(h) = host.and_then(|h| http::HeaderValue::from_str(&h).ok()) {
        parts.headers.insert(http::header::HOST, h);
    }
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
        Ok(pair) => pair,
        Err(e) => return Ok(text(StatusCode::BAD_GATEWAY, format!("upstream: {e}"))),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed)),
        Err(e) => Ok(text(StatusCode::BAD_GATEWAY, format!("upstream: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for a in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.5",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "::127.0.0.1",
            "203.0.113.7",
        ] {
            assert!(is_non_public(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_non_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn named_hosts_match_with_or_without_a_port() {
        let p = EgressPolicy::new(["127.0.0.1:5000".to_string(), "Mirror.LAN".to_string(), "[::1]:5001".to_string()]);
        assert!(p.names("127.0.0.1", 5000));
        assert!(!p.names("127.0.0.1", 5001));
        assert!(p.names("mirror.lan", 443) && p.names("mirror.lan", 80));
        assert!(p.names("[::1]", 5001) && p.names("::1", 5001) && !p.names("::1", 5000));
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.allows("127.0.0.1", 5000, loopback));
        assert!(!p.allows("127.0.0.1", 6000, loopback));
        assert!(!p.allows("evil.example", 5000, loopback), "a name that resolves to loopback is not the named host");
        assert!(p.allows("registry.example", 443, "8.8.8.8".parse().unwrap()));
    }

    /// A loopback HTTP server that counts its connections; `/redirect` answers 302 to `location`.
    async fn origin(location: Option<String>) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let location = location.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).await.unwrap_or(0) == 1 {
                        head.push(b[0]);
                    }
                    let answer = match &location {
                        Some(l) => format!(
                            "HTTP/1.1 302 Found\r\nLocation: {l}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        None => "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\norigin".to_string(),
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, hits)
    }

    fn client(proxy: &EgressProxy) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder().proxy(reqwest::Proxy::all(proxy.url()).unwrap()).build().unwrap()
    }

    fn hits(h: &std::sync::atomic::AtomicUsize) -> usize {
        h.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn non_public_addresses_are_reached_only_when_named() {
        let (port, seen) = origin(None).await;
        let refusing = EgressProxy::start(EgressPolicy::default()).await.unwrap();
        for url in [format!("http://127.0.0.1:{port}/v2/"), format!("http://localhost:{port}/v2/")] {
            let r = client(&refusing).get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
            assert!(r.text().await.unwrap().contains("insecure_registries"), "the refusal names the settings");
        }
        assert!(refusing.last_refusal().unwrap().contains("127.0.0.1"));
        assert_eq!(hits(&seen), 0, "no connection reached the loopback server");

        let named = EgressProxy::start(EgressPolicy::new([format!("127.0.0.1:{port}")])).await.unwrap();
        let r = client(&named).get(format!("http://127.0.0.1:{port}/v2/")).send().await.unwrap();
        assert_eq!((r.status(), r.text().await.unwrap().as_str()), (StatusCode::OK, "origin"));
        assert_eq!(hits(&seen), 1);
    }

    #[tokio::test]
    async fn a_redirect_from_a_named_registry_to_an_unnamed_address_is_refused() {
        let (hidden, hidden_seen) = origin(None).await;
        let (registry, _) = origin(Some(format!("http://127.0.0.1:{hidden}/secret"))).await;
        let proxy = EgressProxy::start(EgressPolicy::new([format!("127.0.0.1:{registry}")])).await.unwrap();
        let r = client(&proxy).get(format!("http://127.0.0.1:{registry}/v2/blobs/x")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(hits(&hidden_seen), 0);
    }

    #[tokio::test]
    async fn tunnels_follow_the_policy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (port, seen) = origin(None).await;
        let proxy = EgressProxy::start(EgressPolicy::new([format!("127.0.0.1:{port}")])).await.unwrap();
        let proxy_addr = proxy.url().trim_start_matches("http://").to_string();
        async fn connect_via(proxy_addr: &str, target: &str) -> (String, TcpStream) {
            let mut s = TcpStream::connect(proxy_addr).await.unwrap();
            s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).await.unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            (String::from_utf8_lossy(&head).into_owned(), s)
        }
        let target = format!("127.0.0.1:{port}");
        assert!(connect_via(&proxy_addr, "127.0.0.2:80").await.0.starts_with("HTTP/1.1 403"));
        assert!(connect_via(&proxy_addr, "169.254.169.254:80").await.0.starts_with("HTTP/1.1 403"));
        assert_eq!(hits(&seen), 0);
        let (head, mut tunnel) = connect_via(&proxy_addr, &target).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tunnel.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tunnel.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("origin"), "{answer}");
        assert_eq!(hits(&seen), 1);
    }
}
