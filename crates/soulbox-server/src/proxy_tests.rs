//! The proxy over real sockets: streaming, cut-off on kill, WebSocket-style upgrades, the 502 shape.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::api::ApiState;
use crate::lifecycle::{CreateRequest, Lifecycle, LifecycleConfig};
use crate::metrics::MetricsStore;
use crate::store::Store;
use crate::testing::FakeNode;

/// A loopback "sandbox port": `/stream` sends a chunk every 20 ms forever; an upgrade request gets 101 and an
/// echo of whatever follows.
async fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let head = read_head(&mut sock).await;
                if head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                        )
                        .await;
                    let mut buf = [0u8; 64];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                } else {
                    let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                    while sock.write_all(b"5\r\ntick\n\r\n").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
    });
    port
}

async fn read_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn server() -> (Arc<Lifecycle>, u16, tempfile::TempDir) {
    server_with(crate::serve::HttpSettings::default()).await
}

/// The whole app behind the real HTTP front (`serve::serve`), with `http`'s limits.
async fn server_with(http: crate::serve::HttpSettings) -> (Arc<Lifecycle>, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
    let lifecycle = Lifecycle::start(store, Arc::new(FakeNode::default()), LifecycleConfig::default()).await.unwrap();
    let state = ApiState {
        lifecycle: lifecycle.clone(),
        metrics: Arc::new(MetricsStore::default()),
        domain: Some("sb.test".into()),
        started: std::time::Instant::now(),
    };
    let listener = crate::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = crate::server::app_with(state, &http);
    tokio::spawn(crate::serve::serve(listener, app, http, std::future::pending()));
    (lifecycle, port, dir)
}

async fn sandbox(lifecycle: &Lifecycle) -> String {
    let req = CreateRequest {
        team_id: crate::store::DEFAULT_TEAM_ID.into(),
        template: "base".into(),
        allow_internet: true,
        ..Default::default()
    };
    lifecycle.create(req).await.unwrap().id
}

#[tokio::test]
async fn streams_flow_and_are_cut_when_the_sandbox_is_killed() {
    let (lifecycle, port, _dir) = server().await;
    let target = upstream().await;
    let id = sandbox(&lifecycle).await;
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {target}\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Chunks arrive while the upstream produces them (not buffered until the end).
    while got.windows(5).filter(|w| w == b"tick\n").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    lifecycle.kill(crate::store::DEFAULT_TEAM_ID, &id).await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return rest,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the connection must close after kill");
    got.extend_from_slice(&rest);
    assert!(!got.ends_with(b"0\r\n\r\n"), "a killed sandbox's stream must not end cleanly");

    // Afterwards the sandbox answers like E2B's proxy.
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {id}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(response.contains(r#""message":"The sandbox was not found""#), "{response}");
    assert!(response.contains(&format!(r#""sandboxId":"{id}""#)), "{response}");
}

#[tokio::test]
async fn upgrades_pass_through_by_host_routing() {
    let (lifecycle, port, _dir) = server().await;
    let target = upstream().await;
    let id = sandbox(&lifecycle).await;
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET /ws HTTP/1.1\r\nHost: {target}-{id}.sb.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut client)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn closed_ports_and_unknown_sandboxes_are_502() {
    let (lifecycle, port, _dir) = server().await;
    let id = sandbox(&lifecycle).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port(); // bound then dropped
    for (sandbox, port_header, needle) in
        [(id.as_str(), closed, "port is not open"), ("nosuchsandbox", 49983, "The sandbox was not found")]
    {
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {sandbox}\r\nE2b-Sandbox-Port: {port_header}\r\nConnection: close\r\n\r\n"
        );
        client.write_all(req.as_bytes()).await.unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 502") && response.contains(needle), "{response}");
    }
}

/// A loopback "sandbox port" that reads a request with its body and answers 200 with the byte count.
async fn body_counter() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(sock);
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let n = http_body_util::BodyExt::collect(req.into_body()).await?.to_bytes().len();
                    Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
                        "got {n}"
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn proxied_bodies_over_the_limit_are_413_in_e2b_shape() {
    // Above the 64 KiB that serve.rs reads ahead, so the declared length is refused before any body is sent.
    let limit = 100_000u64;
    let (lifecycle, port, _dir) =
        server_with(crate::serve::HttpSettings { max_proxy_body_bytes: limit, ..Default::default() }).await;
    let target = body_counter().await;
    let id = sandbox(&lifecycle).await;
    let head = |extra: &str| {
        format!(
            "POST /files HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {target}\r\nConnection: close\r\n{extra}\r\n"
        )
    };
    let exchange = |request: Vec<u8>| async move {
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        client.write_all(&request).await.unwrap();
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut response))
            .await
            .expect("an answer");
        response
    };
    // Under the limit: passed on.
    let small = [head("Content-Length: 100\r\n").into_bytes(), vec![b'a'; 100]].concat();
    assert!(exchange(small).await.ends_with("got 100"));
    // A declared length over the limit: 413 before any of the body is sent.
    let declared = exchange(head("Content-Length: 200000\r\n").into_bytes()).await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains(r#""code":413"#) && declared.contains("over the limit"), "{declared}");
    // A chunked body that grows past it: cut and answered 413.
    let mut chunked = head("Transfer-Encoding: chunked\r\n").into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 60_000, "b".repeat(60_000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = exchange(chunked).await;
    assert!(streamed.starts_with("HTTP/1.1 413") && streamed.contains(r#""code":413"#), "{streamed}");
}

/// The status line of a `GET /stream` sent with `host` (the upstream streams forever: only the head is read).
async fn status_for_host(port: u16, host: &str) -> String {
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(format!("GET /stream HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut client)).await.unwrap();
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn localhost_port_urls_route_for_local_clients_even_with_a_domain() {
    // The server's domain is sb.test; a browser on this machine opens http://<port>-<id>.localhost:<port>.
    let (lifecycle, port, _dir) = server().await;
    let target = upstream().await;
    let id = sandbox(&lifecycle).await;
    assert_eq!(status_for_host(port, &format!("{target}-{id}.localhost:{port}")).await, "HTTP/1.1 200 OK");
    assert_eq!(status_for_host(port, &format!("{target}-{id}.sb.test")).await, "HTTP/1.1 200 OK");
    // Another domain goes to the API (which has no such route).
    assert!(!status_for_host(port, &format!("{target}-{id}.other.test")).await.starts_with("HTTP/1.1 200"));

    // Through a trusted proxy the client is not local, whatever the proxy's address: `.localhost` is the API's.
    let trusted = crate::forwarded::TrustedProxies::parse(&["127.0.0.1/32"]).unwrap();
    let (lifecycle, port, _dir) =
        server_with(crate::serve::HttpSettings { trusted_proxies: trusted, ..Default::default() }).await;
    let id = sandbox(&lifecycle).await;
    assert!(!status_for_host(port, &format!("{target}-{id}.localhost:{port}")).await.starts_with("HTTP/1.1 200"));
    assert_eq!(status_for_host(port, &format!("{target}-{id}.sb.test")).await, "HTTP/1.1 200 OK");
}
