//! HTTPS on the server's own port (`[http] tls_cert` / `tls_key`, or `SOULBOX_TLS_CERT` / `SOULBOX_TLS_KEY`).
//!
//! The certificate is reloaded when its files change, so a renewal (certbot, an ACME client, a secret mount)
//! needs no restart: on a new connection, at most once a second, the two files' modification times are
//! compared with those last read; a change reloads both. A new certificate applies to new connections only. A
//! file that does not load (half written, a key that does not match the certificate) keeps the old one and
//! logs an error once per change, so a renewal that writes the certificate and the key one after the other
//! goes through when the second file lands.
//!
//! ALPN offers `h2` and `http/1.1`: hyper's connection builder serves either (the SDKs use both).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// The environment variables that override `[http] tls_cert` / `tls_key`.
pub const CERT_ENV: &str = "SOULBOX_TLS_CERT";
pub const KEY_ENV: &str = "SOULBOX_TLS_KEY";

/// How often at most the files' modification times are looked at.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The PEM files a TLS listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS side of the listener: the current acceptor, reloaded when the files change.
pub struct TlsFront {
    files: TlsFiles,
    state: Mutex<State>,
}

struct State {
    acceptor: TlsAcceptor,
    /// The modification times of (cert, key) when they were last read, whether that load worked or not.
    seen: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl TlsFront {
    /// Loads the certificate chain and key; an error here fails the server's start.
    pub fn load(files: TlsFiles) -> Result<TlsFront, TlsError> {
        let seen = mtimes(&files);
        let acceptor = acceptor(&files)?;
        Ok(TlsFront { files, state: Mutex::new(State { acceptor, seen, checked: Instant::now() }) })
    }

    /// The acceptor for a new connection, after reloading the files if they changed.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let now = mtimes(&self.files);
            if now != state.seen {
                state.seen = now;
                match acceptor(&self.files) {
                    Ok(fresh) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        state.acceptor = fresh;
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "the changed TLS certificate or key does not load; new connections keep the previous one"
                    ),
                }
            }
        }
        state.acceptor.clone()
    }
}

fn mtimes(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(&files.cert), at(&files.key))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// A rustls server configuration from the PEM files (ring, the crypto the workspace's rustls is built with).
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: files.cert.clone(), message: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Pem { path: files.key.clone(), message: format!("no usable private key: {e}") })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(files)?)))
}

/// A client connection: plain TCP, or TLS over it.
pub(crate) enum ClientIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientIo {
    /// The TCP socket underneath (for socket options: lingering, a reset on close).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            ClientIo::Plain(s) => s,
            ClientIo::Tls(s) => s.get_ref().0,
        }
    }

    /// The client chose HTTP/2 through ALPN.
    pub(crate) fn alpn_h2(&self) -> bool {
        matches!(self, ClientIo::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2"))
    }
}

/// The TLS handshake of a new connection, bounded by `limit` (a client that opens a connection and stalls the
/// handshake is a slowloris like one that stalls its request head). `None`: the handshake failed or timed out.
pub(crate) async fn handshake(front: &TlsFront, stream: TcpStream, limit: Duration) -> Option<ClientIo> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(limit, front.acceptor().accept(stream)).await {
        Ok(Ok(tls)) => Some(ClientIo::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, data),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(s) => s.is_write_vectored(),
            ClientIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn loads_a_pair_and_refuses_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "a.test");
        let config = server_config(&files).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        assert!(matches!(server_config(&files), Err(TlsError::Config(_))), "a mismatched key must not load");
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(matches!(server_config(&files), Err(TlsError::NoCertificate { .. })));
        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: files.key.clone() };
        assert!(matches!(server_config(&missing), Err(TlsError::Read { .. })));
    }
}
