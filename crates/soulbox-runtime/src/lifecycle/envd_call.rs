//! The runtime's own calls to a sandbox's envd (the booted pool's claim, the quiesce before a gVisor checkpoint,
//! the health check after a restore): one request with the node secret over a connection of its own, which this
//! side closes once the answer is read. Closing first matters on gVisor: the side that closes second does not
//! linger in TIME_WAIT, a state gVisor's save refuses.

use std::net::Ipv4Addr;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ENVD_PORT;
use crate::envd_secret::EnvdSecret;

/// The most of an answer's body kept (envd's refusals are short JSON messages).
const BODY_LIMIT: usize = 64 * 1024;

/// A request to envd: method, path and an optional JSON body.
pub(super) struct EnvdRequest<'a> {
    pub method: http::Method,
    pub path: &'a str,
    pub json: Option<Vec<u8>>,
}

/// envd's answer.
pub(super) struct EnvdAnswer {
    pub status: http::StatusCode,
    pub body: bytes::Bytes,
}

impl EnvdAnswer {
    /// `"<status>: <body>"`, for errors and logs.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.status, String::from_utf8_lossy(&self.body).trim())
    }
}

/// After the answer: drop the connection, or also wait (within the call's time limit) until envd has closed its
/// end — then envd's socket is gone, epoll registration and all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    Drop,
    AwaitPeer,
}

/// Sends `request` with the node secret to the envd at `ip`; `Err` says what failed (connect, protocol, time).
pub(super) async fn call(
    ip: Ipv4Addr,
    secret: &EnvdSecret,
    request: EnvdRequest<'_>,
    close: Close,
    limit: Duration,
) -> std::result::Result<EnvdAnswer, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((ip, ENVD_PORT)).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Gives the socket back once the exchange is over, instead of closing it, so that this side closes it.
        let conn = tokio::spawn(conn.without_shutdown());
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(request.path)
            .header(http::header::HOST, format!("{ip}:{ENVD_PORT}"))
            .header(soulbox_protocol::envd_secret::HEADER, secret.expose());
        if request.json.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let body = http_body_util::Full::new(bytes::Bytes::from(request.json.unwrap_or_default()));
        let response = sender.send_request(builder.body(body).map_err(|e| e.to_string())?).await;
        let response = response.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), BODY_LIMIT).collect().await;
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        drop(sender);
        let parts = conn.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let mut stream = parts.io.into_inner();
        if close == Close::AwaitPeer {
            stream.shutdown().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 512];
            while stream.read(&mut buf).await.map_err(|e| e.to_string())? > 0 {}
        }
        Ok(EnvdAnswer { status, body })
    };
    tokio::time::timeout(limit, exchange).await.map_err(|_| format!("no answer in {limit:?}"))?
}
