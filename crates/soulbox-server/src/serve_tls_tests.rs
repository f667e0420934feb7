//! The HTTPS front over real loopback sockets: h2 and HTTP/1.1 through ALPN, a certificate reloaded when its
//! files change (a bad new file keeps the old one), and what the app learns about the client (`ClientOrigin`)
//! with and without a trusted proxy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::forwarded::{ClientOrigin, TrustedProxies};
use crate::serve::{self, HttpSettings};
use crate::tls::{TlsFiles, TlsFront};

/// `/who` answers "<scheme> <client address> <host>" as the front resolved them.
fn app() -> Router {
    Router::new().route(
        "/who",
        get(|Extension(o): Extension<ClientOrigin>| async move {
            format!("{} {} {}", o.scheme(), o.addr, o.host.unwrap_or_default())
        }),
    )
}

async fn start(settings: HttpSettings, tls: Option<Arc<TlsFront>>) -> std::net::SocketAddr {
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve_tls(listener, app(), settings, tls, std::future::pending()));
    addr
}

/// A self-signed certificate for `name` written to the files; returns it (the client's trust root).
fn write_cert(files: &TlsFiles, name: &str) -> CertificateDer<'static> {
    let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
    std::fs::write(&files.cert, made.cert.pem()).unwrap();
    made.cert.der().clone()
}

fn files_in(dir: &Path) -> TlsFiles {
    TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") }
}

/// A TLS connection trusting only `root`, offering `alpn`; the error if the handshake fails.
async fn connect(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from(name.to_owned()).unwrap(), tcp).await
}

/// One HTTP/1.1 `GET /who` on `io` (Connection: close), the response's body.
async fn h1_who<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: &mut S, extra: &str) -> String {
    io.write_all(format!("GET /who HTTP/1.1\r\nHost: api.sb.test\r\n{extra}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = io.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn https_speaks_h2_and_http1_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path());
    let first = write_cert(&files, "a.sb.test");
    let front = Arc::new(TlsFront::load(files.clone()).unwrap());
    let addr = start(HttpSettings::default(), Some(front)).await;

    // h2 through ALPN (what httpx with http2 and the JS SDK's fetch pick).
    let tls = connect(addr, &first, "a.sb.test", &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request =
        http::Request::get("https://a.sb.test/who").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), "https 127.0.0.1 a.sb.test");

    // HTTP/1.1 through ALPN, and with no ALPN at all.
    let mut tls = connect(addr, &first, "a.sb.test", &[b"http/1.1"]).await.unwrap();
    assert_eq!(h1_who(&mut tls, "").await, "https 127.0.0.1 api.sb.test");
    let mut tls = connect(addr, &first, "a.sb.test", &[]).await.unwrap();
    assert_eq!(h1_who(&mut tls, "").await, "https 127.0.0.1 api.sb.test");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("https 127.0.0.1"), "plain HTTP must not be served");

    // A renewed certificate applies to new connections (checked at most once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = write_cert(&files, "b.sb.test");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tls = connect(addr, &second, "b.sb.test", &[b"http/1.1"]).await.expect("the new certificate is served");
    assert_eq!(h1_who(&mut tls, "").await, "https 127.0.0.1 api.sb.test");
    assert!(connect(addr, &first, "a.sb.test", &[]).await.is_err(), "the old certificate is gone");

    // A broken renewal keeps the certificate that works.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tls = connect(addr, &second, "b.sb.test", &[]).await.expect("a bad new file keeps the old certificate");
    assert_eq!(h1_who(&mut tls, "").await, "https 127.0.0.1 api.sb.test");
}

#[tokio::test]
async fn forwarding_headers_count_only_from_a_trusted_proxy() {
    let forged = "X-Forwarded-For: 198.51.100.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: other.sb.test\r\n";
    let untrusted = start(HttpSettings::default(), None).await;
    let mut sock = TcpStream::connect(untrusted).await.unwrap();
    assert_eq!(h1_who(&mut sock, forged).await, "http 127.0.0.1 api.sb.test");

    let trusted = TrustedProxies::parse(&["127.0.0.1/32"]).unwrap();
    let behind_proxy = start(HttpSettings { trusted_proxies: trusted, ..HttpSettings::default() }, None).await;
    let mut sock = TcpStream::connect(behind_proxy).await.unwrap();
    assert_eq!(h1_who(&mut sock, forged).await, "https 198.51.100.4 other.sb.test");
}
