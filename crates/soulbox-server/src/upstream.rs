//! The proxy's HTTP client and the names it connects by.
//!
//! hyper pools idle connections by the request's authority. Were that a sandbox's `ip:port`, a connection kept
//! from one boot of a sandbox could be reused for the next sandbox at that address (or the same sandbox after a
//! stop and start): the new network stack knows nothing of it and resets it, and the request fails ("port is not
//! open"). A runc sandbox's kernel closes its connections when it is killed, so hyper drops them in time; a killed
//! gVisor sandbox never does. So a sandbox's authority names its boot too — `b<boot>-<a>-<b>-<c>-<d>.sandbox:port`
//! ([`sandbox_authority`]) — and [`Resolver`] reads the address back out of the name (no lookup); every other
//! name (node agents) goes to the system resolver.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower::Service;

/// The suffix of sandbox authorities: not a real domain (`.sandbox` is no TLD), never sent to DNS.
const SUFFIX: &str = ".sandbox";

pub type UpstreamClient = Client<HttpConnector<Resolver>, Body>;

/// The proxy's client: pooled (idle connections kept 60 s), `TCP_NODELAY`, 5 s connect timeout.
pub fn http_client() -> UpstreamClient {
    let mut connector = HttpConnector::new_with_resolver(Resolver::default());
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build(connector)
}

/// The authority the proxy connects to a sandbox by: its address and boot (module docs). IPv6 addresses (not
/// used by any runtime today) are written as they are, unpooled by boot.
pub fn sandbox_authority(ip: IpAddr, boot: u64, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("b{boot}-{a}-{b}-{c}-{d}{SUFFIX}:{port}")
        }
        IpAddr::V6(_) => SocketAddr::new(ip, port).to_string(),
    }
}

/// The address a [`sandbox_authority`] host names, if it is one.
fn sandbox_address(host: &str) -> Option<Ipv4Addr> {
    let rest = host.strip_suffix(SUFFIX)?.strip_prefix('b')?;
    let mut parts = rest.split('-');
    parts.next()?.parse::<u64>().ok()?;
    let octets: Vec<u8> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [a, b, c, d] = octets.try_into().ok()?;
    Some(Ipv4Addr::new(a, b, c, d))
}

#[derive(Clone)]
pub struct Resolver {
    system: GaiResolver,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver { system: GaiResolver::new() }
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl Service<Name> for Resolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if let Some(ip) = sandbox_address(name.as_str()) {
            // The connector sets the port from the URI.
            return Box::pin(std::future::ready(Ok(vec![SocketAddr::new(IpAddr::V4(ip), 0)].into_iter())));
        }
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_authorities_carry_address_and_boot() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 4));
        let first = sandbox_authority(ip, 7, 49983);
        assert_eq!(first, "b7-10-77-0-4.sandbox:49983");
        assert_ne!(first, sandbox_authority(ip, 8, 49983), "another boot, another pool key");
        assert_eq!(sandbox_address("b7-10-77-0-4.sandbox"), Some(Ipv4Addr::new(10, 77, 0, 4)));
        for not_ours in
            ["10.77.0.4", "node1.example", "b7-10-77-0.sandbox", "b7-10-77-0-400.sandbox", "bx-1-2-3-4.sandbox"]
        {
            assert_eq!(sandbox_address(not_ours), None, "{not_ours}");
        }
    }

    /// The whole path: a pooled client reaches a listener by a sandbox authority, and two boots at one address
    /// do not share a connection.
    #[tokio::test]
    async fn boots_get_connections_of_their_own() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let client = http_client();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for boot in [1, 1, 2, 2] {
            let uri: http::Uri = format!("http://{}/", sandbox_authority(loopback, boot, port)).parse().unwrap();
            let response = client.request(http::Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
            let _ = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one connection per boot, reused within it");
    }
}
