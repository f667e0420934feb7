//! Header rules (E2B's `rules: {host: [{transform: {headers}}]}`): connections to a host with rules are not
//! spliced but served. TLS is terminated with a certificate for the name the sandbox asked for, signed by the
//! installation's egress CA (which the sandbox trusts), and re-made to the destination with normal verification
//! (the node's trust store plus `egress_trusted_ca`); then every HTTP/1 request on the connection gets the rules'
//! headers, `${e2b.secrets.NAME}` replaced as it leaves. The secret never enters the sandbox: it exists only in
//! the request on its way out.
//!
//! Each request must still name the host the connection was judged for (its `Host` against the SNI or the first
//! request's `Host`): a connection cannot be reused for another host, with or without rules.
use crate::egress_ca::Signer;
use crate::egress_secrets::EgressSecrets;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use soulbox_protocol::HeaderRule;
use soulbox_protocol::network::{ValuePart, header_value_parts};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

type Body = BoxBody<Bytes, hyper::Error>;

/// Bytes read from the network at a time under each TLS connection.
const TLS_READ_BUFFER: usize = 256 * 1024;

/// What serving one intercepted connection needs.
pub(crate) struct Interception {
    pub(crate) sandbox: String,
    /// The name the connection was judged for (SNI or `Host`, normalized), or the destination address.
    pub(crate) name: String,
    pub(crate) rules: Vec<HeaderRule>,
    pub(crate) tls: bool,
    /// `None` only for plain HTTP (the gateway refuses TLS to ruled hosts without a CA before it gets here).
    pub(crate) signer: Option<Arc<Signer>>,
    pub(crate) upstream_tls: Arc<rustls::ClientConfig>,
    pub(crate) secrets: Option<Arc<dyn EgressSecrets>>,
}

/// The rules of `p` for a connection to `name` at `dst`, in order: host rules by name, address rules by
/// destination.
pub(crate) fn matching(rules: &[HeaderRule], name: Option<&str>, dst: std::net::Ipv4Addr) -> Vec<HeaderRule> {
    rules
        .iter()
        .filter(|r| match crate::firewall::cidr_contains_checked(&r.host, dst) {
            Some(contains) => contains,
            None => name.is_some_and(|n| soulbox_protocol::hosts::matches(&r.host, n)),
        })
        .cloned()
        .collect()
}

/// ring's cipher suites with AES-128-GCM first. The gateway encrypts and decrypts every byte of an intercepted
/// connection twice (both legs): AES-128 takes 10 rounds where AES-256 takes 14, which is most of the gateway's
/// cost on a bulk transfer, and is as standard (every TLS 1.3 stack has it). Upstream servers mostly follow the
/// client's order; the sandbox's leg follows ours (`ignore_client_order`).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| {
        use rustls::CipherSuite as C;
        match s.suite() {
            C::TLS13_AES_128_GCM_SHA256 => 0,
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
            _ => 2,
        }
    };
    // stable: the rest keep ring's order
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

/// The upstream TLS configuration: the node's trust store and the extra CAs in `extra` (a PEM file).
pub(crate) fn upstream_tls(extra: Option<&std::path::Path>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "egress gateway: reading the node's trust store");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        use rustls::pki_types::pem::PemObject;
        match rustls::pki_types::CertificateDer::pem_file_iter(path) {
            Ok(certs) => {
                let (extra, bad) = roots.add_parsable_certificates(certs.filter_map(|c| c.ok()));
                tracing::info!(path = %path.display(), added = extra, bad, "egress gateway: extra trusted CAs");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "egress gateway: cannot read egress_trusted_ca")
            }
        }
    }
    tracing::debug!(roots = added, "egress gateway: upstream trust store");
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The TLS server the sandbox talks to, with `key` (a certificate for the name it asked for).
fn sandbox_side_tls(key: Arc<rustls::sign::CertifiedKey>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    // HTTP/1 only: the headers are set per request, and h2 would need its own server.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Serves the sandbox's side of the connection (`head` already read from it) against `upstream`.
pub(crate) async fn serve(client: TcpStream, head: Vec<u8>, upstream: TcpStream, i: Interception) {
    let client = Prefixed { head, at: 0, inner: client };
    let i = Arc::new(i);
    if !i.tls {
        return proxy(client, upstream, i).await;
    }
    let Some(signer) = &i.signer else { return };
    let key = match signer.certified_key(&i.name) {
        Ok(k) => k,
        Err(e) => return tracing::warn!(name = %i.name, error = %e, "egress gateway: cannot issue a certificate"),
    };
    let config = match sandbox_side_tls(key) {
        Ok(config) => config,
        Err(e) => return tracing::warn!(error = %e, "egress gateway: TLS configuration"),
    };
    let client = match tokio_rustls::TlsAcceptor::from(config).accept(client).await {
        Ok(mut c) => {
            // A body chunk (up to hyper's read buffer) becomes one vectored send instead of one per 64 KiB.
            c.get_mut().1.set_buffer_limit(Some(TLS_READ_BUFFER));
            c
        }
        Err(e) => {
            return tracing::info!(sandbox = %i.sandbox, name = %i.name, error = %e, "egress gateway: sandbox TLS failed");
        }
    };
    let server_name = match rustls::pki_types::ServerName::try_from(i.name.clone()) {
        Ok(n) => n,
        Err(e) => return tracing::info!(name = %i.name, error = %e, "egress gateway: not a TLS server name"),
    };
    // rustls reads its input 4 KiB at a time: buffered below it, a download costs one receive per 256 KiB instead
    // (a 256 MiB HTTPS download through the gateway went from about 430 to 530 MiB/s here).
    let upstream = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, upstream);
    let upstream = match tokio_rustls::TlsConnector::from(i.upstream_tls.clone()).connect(server_name, upstream).await {
        Ok(u) => u,
        Err(e) => {
            // The sandbox sees a response that says why, not a bare reset.
            tracing::info!(sandbox = %i.sandbox, name = %i.name, error = %e, "egress gateway: upstream TLS failed");
            let why = format!("the upstream TLS of {} failed: {e}", i.name);
            return answer_only(client, StatusCode::BAD_GATEWAY, why).await;
        }
    };
    proxy(client, upstream, i).await
}

/// Relays HTTP/1 requests from `client` to `upstream`, one at a time, with the rules applied.
async fn proxy<C, U>(client: C, upstream: U, i: Arc<Interception>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = match hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(upstream))
        .await
    {
        Ok(pair) => pair,
        Err(e) => return tracing::info!(error = %e, "egress gateway: upstream HTTP"),
    };
    let upstream_task = tokio::spawn(connection);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (sender, i) = (sender.clone(), i.clone());
        async move {
            let response = match prepare(request, &i).await {
                Err((status, why)) => error_response(status, why),
                Ok(request) => {
                    let mut sender = sender.lock().await;
                    match sender.ready().await {
                        Ok(()) => match sender.send_request(request).await {
                            Ok(r) => r.map(|b| b.boxed()),
                            Err(e) => error_response(StatusCode::BAD_GATEWAY, format!("the upstream failed: {e}")),
                        },
                        Err(e) => error_response(StatusCode::BAD_GATEWAY, format!("the upstream closed: {e}")),
                    }
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    // The sandbox's header names go out as it wrote them (some servers care, though they should not); a client
    // that shuts its sending side after the last request still gets the answers.
    let served = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .half_close(true)
        .serve_connection(TokioIo::new(client), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "egress gateway: intercepted connection ended");
    }
    upstream_task.abort();
}

/// The request as it leaves: checked to be for the connection's host, with the rules' headers set.
async fn prepare(mut request: Request<Incoming>, i: &Interception) -> Result<Request<Incoming>, (StatusCode, String)> {
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let host = match (hosts.next().and_then(|h| h.to_str().ok()), hosts.next()) {
        (Some(h), None) => soulbox_protocol::hosts::normalize(h),
        _ => return Err((StatusCode::BAD_REQUEST, "a request needs exactly one Host header".into())),
    };
    if host != i.name {
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            format!("this connection is for {}; a request for {host} needs its own", i.name),
        ));
    }
    for rule in &i.rules {
        for (name, template) in &rule.headers {
            let value = render(template, i).await?;
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| (StatusCode::BAD_GATEWAY, format!("header rule {name:?} is not a header name")))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| (StatusCode::BAD_GATEWAY, format!("the value for header {name} is not a header value")))?;
            request.headers_mut().insert(name, value);
        }
    }
    Ok(request)
}

/// A header value with its secrets filled in; a secret that does not exist fails the request (sending the
/// placeholder would hand the destination a confusing credential).
async fn render(template: &str, i: &Interception) -> Result<String, (StatusCode, String)> {
    let parts = header_value_parts(template).map_err(|e| (StatusCode::BAD_GATEWAY, e))?;
    let mut value = String::new();
    for part in parts {
        match part {
            ValuePart::Text(t) => value.push_str(t),
            ValuePart::Secret(name) => {
                let Some(secrets) = &i.secrets else {
                    return Err((StatusCode::BAD_GATEWAY, "secrets are not available on this node".into()));
                };
                match secrets.secret(&i.sandbox, name).await {
                    Ok(Some(v)) => value.push_str(&v),
                    Ok(None) => {
                        return Err((
                            StatusCode::BAD_GATEWAY,
                            format!("secret {name:?} does not exist (header rules name it as ${{e2b.secrets.{name}}})"),
                        ));
                    }
                    Err(e) => return Err((StatusCode::BAD_GATEWAY, format!("secret {name:?}: {e}"))),
                }
            }
        }
    }
    Ok(value)
}

fn error_response(status: StatusCode, why: String) -> Response<Body> {
    tracing::info!(%status, why, "egress gateway: refused a request");
    let body = Full::new(Bytes::from(format!("soulbox egress gateway: {why}\n"))).map_err(|never| match never {});
    let mut response = Response::new(body.boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

/// Answers every request on `client` with `status` and `why` (the upstream could not be reached as it must be).
async fn answer_only<C>(client: C, status: StatusCode, why: String)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
        let response = error_response(status, why.clone());
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service).await;
}

/// The sandbox's stream with the bytes the gateway read to find the name put back in front.
struct Prefixed {
    head: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    // rustls hands over its queued records as one vectored write; without these the default sends only the first
    // record per call, one ~16 KiB send(2) per record.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_name_or_destination() {
        let rule = |host: &str| HeaderRule { host: host.into(), headers: [("x".into(), host.into())].into() };
        let rules = [rule("api.test"), rule("*.wild.test"), rule("203.0.113.0/24"), rule("10.0.0.1")];
        let out = "203.0.113.9".parse().unwrap();
        let elsewhere = "198.51.100.1".parse().unwrap();
        let hosts =
            |name: Option<&str>, dst| matching(&rules, name, dst).into_iter().map(|r| r.host).collect::<Vec<_>>();
        assert_eq!(hosts(Some("api.test"), elsewhere), ["api.test"]);
        assert_eq!(hosts(Some("a.wild.test"), out), ["*.wild.test", "203.0.113.0/24"]);
        assert_eq!(hosts(None, out), ["203.0.113.0/24"]);
        assert!(hosts(Some("other.test"), elsewhere).is_empty());
    }

    /// A client that prefers AES-256 (rustls' and OpenSSL's default order) gets AES-128 on the sandbox's leg, and
    /// the upstream leg offers AES-128 first.
    #[test]
    fn both_legs_prefer_aes_128() {
        let ca = crate::egress_ca::CaPem::generate().unwrap();
        let signer = crate::egress_ca::Signer::new(&ca).unwrap();
        let server = sandbox_side_tls(signer.certified_key("api.test").unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(signer.ca_der.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        assert_eq!(client.crypto_provider().cipher_suites[0].suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        while c.is_handshaking() || s.is_handshaking() {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            wire.clear();
            s.write_tls(&mut wire).unwrap();
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        let negotiated = s.negotiated_cipher_suite().map(|s| s.suite());
        assert_eq!(negotiated, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        let upstream = upstream_tls(None);
        assert_eq!(upstream.crypto_provider().cipher_suites[0].suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
