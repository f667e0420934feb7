//! The name a connection asks for, read from its first bytes without consuming them for the upstream: the TLS
//! ClientHello's SNI (parsed by rustls' `Acceptor`) or the HTTP/1 request's `Host` (parsed by `httparse`).
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Most bytes read while looking for the name (a ClientHello or a request head is far smaller).
const MAX_PEEK: usize = 16 * 1024;
/// How long a client may take to send them.
pub(crate) const PEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the first bytes said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A TLS ClientHello (with its SNI, if any).
    Tls(Option<String>),
    /// An HTTP/1 request (with its `Host`, if any).
    Http(Option<String>),
    /// Neither, or not complete within the limit.
    Other,
}

/// Reads from `stream` until its opening is known; returns it and every byte read (to be sent upstream first).
pub(crate) async fn opening(stream: &mut TcpStream) -> (Opening, Vec<u8>) {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return Opening::Other;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(found) = parse(&buf) {
                return found;
            }
            if buf.len() >= MAX_PEEK {
                return Opening::Other;
            }
        }
    };
    let found = tokio::time::timeout(PEEK_TIMEOUT, read).await.unwrap_or(Opening::Other);
    (found, buf)
}

/// The opening of `buf`, or `None` while more bytes are needed.
pub(crate) fn parse(buf: &[u8]) -> Option<Opening> {
    // A TLS record of type handshake (22).
    if buf.first() == Some(&0x16) {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut input = buf;
        if acceptor.read_tls(&mut input).is_err() {
            return Some(Opening::Other);
        }
        return match acceptor.accept() {
            Ok(Some(accepted)) => Some(Opening::Tls(accepted.client_hello().server_name().map(str::to_owned))),
            Ok(None) => None,
            Err(_) => Some(Opening::Other),
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let mut hosts = request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
            let host = match (hosts.next(), hosts.next()) {
                (Some(h), None) => std::str::from_utf8(h.value).ok().map(|v| v.trim().to_owned()),
                // None, or two (which one an upstream honours is the ambiguity an attacker wants): no name.
                _ => None,
            };
            Some(Opening::Http(host))
        }
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Opening::Other),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real ClientHello for `name`, as rustls' client sends it.
    pub(crate) fn client_hello(name: &str) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn tls_sni_and_http_host() {
        let hello = client_hello("api.example.com");
        assert_eq!(parse(&hello), Some(Opening::Tls(Some("api.example.com".into()))));
        assert_eq!(parse(&hello[..hello.len() / 2]), None, "half a ClientHello needs more bytes");
        let get = b"GET / HTTP/1.1\r\nHost: api.example.com:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(parse(get), Some(Opening::Http(Some("api.example.com:8080".into()))));
        assert_eq!(parse(&get[..20]), None);
        let two = b"GET / HTTP/1.1\r\nHost: good.test\r\nHost: bad.test\r\n\r\n";
        assert_eq!(parse(two), Some(Opening::Http(None)), "two Host headers name nothing");
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n"), Some(Opening::Other));
        assert_eq!(parse(b"\x16\x03\x01\x00\x05hello"), Some(Opening::Other));
    }
}
