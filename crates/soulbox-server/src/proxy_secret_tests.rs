//! The proxy's handling of the envd secret over real sockets (issue 11): a client's copy is dropped on every
//! port, the node's is added on envd's port only, `/init` never reaches envd from a client, and envd refusing
//! the secret reads as E2B's 502 "sandbox not found".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use soulbox_protocol::ENVD_PORT;
use soulbox_protocol::envd_secret;
use soulbox_runtime::EnvdSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::lifecycle::{CreateRequest, Lifecycle, LifecycleConfig};
use crate::metrics::MetricsStore;
use crate::proxy::{self, Upstream};
use crate::store::Store;
use crate::testing::FakeNode;

/// How the fake upstream answers.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    /// 200 with the request's head as the body (and a stray secret header, which must not reach the client).
    Echo,
    /// What envd answers to a request without its secret.
    RefuseSecret,
}

/// A loopback upstream that records the head of every request it gets.
pub(crate) struct Recorder {
    pub(crate) port: u16,
    pub(crate) heads: Arc<Mutex<Vec<String>>>,
}

pub(crate) async fn upstream(answer: Answer) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let head = read_head(&mut sock).await;
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = sock.read_exact(&mut body).await;
                seen.lock().unwrap().push(head.clone());
                let response = match answer {
                    Answer::Echo => format!(
                        "HTTP/1.1 200 OK\r\n{}: leaked\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                        envd_secret::HEADER,
                        head.len()
                    ),
                    Answer::RefuseSecret => {
                        let body =
                            r#"{"code":403,"message":"this agent answers only the node that started its sandbox"}"#;
                        format!(
                            "HTTP/1.1 403 Forbidden\r\n{}: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            envd_secret::REFUSED_HEADER,
                            envd_secret::REFUSED_VALUE,
                            body.len()
                        )
                    }
                };
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    Recorder { port, heads }
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

/// One request with `Connection: close`; the whole response as text.
pub(crate) async fn send(port: u16, request: &str) -> String {
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// Values of `name` in a request or response head (case-insensitive name).
pub(crate) fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// `forward_to` behind a one-route server, as the one-machine proxy and the node agent use it: every request
/// goes to `target` as if to the sandbox port `port`, with `secret` as the sandbox's envd secret.
async fn front(target: u16, port: u16, secret: &EnvdSecret) -> u16 {
    let client = proxy::http_client();
    let secret = secret.clone();
    let app = axum::Router::new().fallback(move |request: Request| {
        let (client, secret) = (client.clone(), secret.clone());
        async move {
            let upstream = Upstream {
                authority: crate::upstream::sandbox_authority(std::net::Ipv4Addr::LOCALHOST.into(), 1, target),
                host: Some(format!("127.0.0.1:{target}")),
                headers: http::HeaderMap::new(),
                sandbox_id: "isbx".into(),
                port,
                envd_secret: Some(secret),
            };
            proxy::forward_to(&client, upstream, CancellationToken::new(), request).await
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn envds_port_gets_the_nodes_secret_and_only_that() {
    let secret = EnvdSecret::generate();
    let echo = upstream(Answer::Echo).await;
    let proxy = front(echo.port, ENVD_PORT, &secret).await;
    // A client trying to smuggle its own value (twice) in.
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{h}: smuggled\r\n{h}: again\r\nConnection: close\r\n\r\n",
        h = envd_secret::HEADER
    );
    let response = send(proxy, &request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let heads = echo.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    assert_eq!(header_values(&heads[0], envd_secret::HEADER), vec![secret.expose().to_owned()], "{}", heads[0]);
    // Nothing about the secret comes back to the client.
    let (head, _) = response.split_once("\r\n\r\n").unwrap();
    assert!(header_values(head, envd_secret::HEADER).is_empty(), "{head}");
}

#[tokio::test]
async fn a_users_port_never_sees_a_secret() {
    let secret = EnvdSecret::generate();
    let echo = upstream(Answer::Echo).await;
    let proxy = front(echo.port, 8000, &secret).await;
    let request =
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}: smuggled\r\nConnection: close\r\n\r\n", envd_secret::HEADER);
    assert!(send(proxy, &request).await.starts_with("HTTP/1.1 200"));
    // A user's service may have its own /init: it is not envd's and goes through.
    assert!(
        send(proxy, "POST /init HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let heads = echo.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    for head in heads {
        assert!(header_values(&head, envd_secret::HEADER).is_empty(), "{head}");
        assert!(!head.contains(secret.expose()), "{head}");
    }
}

#[tokio::test]
async fn init_never_reaches_envd_however_it_is_spelled() {
    let secret = EnvdSecret::generate();
    let echo = upstream(Answer::Echo).await;
    let proxy = front(echo.port, ENVD_PORT, &secret).await;
    for path in ["/init", "/init/", "//init", "/%69nit", "/INIT", "/x/../init", "/init?x=1"] {
        for method in ["POST", "GET", "PUT"] {
            let body = r#"{"accessToken":"attacker"}"#;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let response = send(proxy, &request).await;
            assert!(response.starts_with("HTTP/1.1 403"), "{method} {path}: {response}");
            let json: serde_json::Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
            assert_eq!(json["code"], 403, "E2B's error shape: {json}");
            assert!(json["message"].as_str().unwrap().contains("/init"), "{json}");
        }
    }
    assert!(echo.heads.lock().unwrap().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn the_pool_claim_never_reaches_envd_from_a_client() {
    let secret = EnvdSecret::generate();
    let echo = upstream(Answer::Echo).await;
    let proxy = front(echo.port, ENVD_PORT, &secret).await;
    for path in ["/soulbox/claim", "/SOULBOX/claim/", "/soulbox/%63laim"] {
        let body = r#"{"envdSecret":"attacker","accessToken":"attacker"}"#;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = send(proxy, &request).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{path}: {response}");
        assert!(response.contains("/soulbox/claim is reserved"), "{response}");
    }
    assert!(echo.heads.lock().unwrap().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn envd_refusing_the_secret_is_the_sandbox_not_found() {
    let secret = EnvdSecret::generate();
    let refusing = upstream(Answer::RefuseSecret).await;
    let proxy = front(refusing.port, ENVD_PORT, &secret).await;
    let response = send(proxy, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    let json: serde_json::Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(json, serde_json::json!({"sandboxId": "isbx", "message": "The sandbox was not found", "code": 502}));

    // On a user's port the same answer is just that service's answer.
    let proxy = front(refusing.port, 8000, &secret).await;
    let response = send(proxy, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
}

/// The whole server (API + proxy) on a fake node whose sandboxes are on 127.0.0.1.
pub(crate) async fn server() -> (Arc<Lifecycle>, Arc<FakeNode>, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
    let node = Arc::new(FakeNode::default());
    let lifecycle = Lifecycle::start(store, node.clone(), LifecycleConfig::default()).await.unwrap();
    let state = ApiState {
        lifecycle: lifecycle.clone(),
        metrics: Arc::new(MetricsStore::default()),
        domain: Some("sb.test".into()),
        started: std::time::Instant::now(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, crate::server::app(state)).await });
    (lifecycle, node, port, dir)
}

#[tokio::test]
async fn through_the_server_init_is_refused_by_header_and_by_host() {
    let (lifecycle, _node, port, _dir) = server().await;
    let id = lifecycle
        .create(CreateRequest {
            template: "base".into(),
            allow_internet: true,
            team_id: crate::store::DEFAULT_TEAM_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let routes = [
        format!("Host: x\r\nE2b-Sandbox-Id: {id}\r\n"),
        format!("Host: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {ENVD_PORT}\r\n"),
        format!("Host: {ENVD_PORT}-{id}.sb.test\r\n"),
    ];
    for route in routes {
        let body = r#"{"accessToken":"attacker"}"#;
        let request = format!(
            "POST /init HTTP/1.1\r\n{route}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = send(port, &request).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{route}: {response}");
        assert!(response.contains(r#""code":403"#), "{response}");
    }
}

#[tokio::test]
async fn through_the_server_a_users_port_never_sees_the_secret() {
    let (lifecycle, node, port, _dir) = server().await;
    let echo = upstream(Answer::Echo).await;
    let id = lifecycle
        .create(CreateRequest {
            template: "base".into(),
            allow_internet: true,
            team_id: crate::store::DEFAULT_TEAM_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let secret = node.secrets.lock().unwrap().get(&id).cloned().expect("the node has the sandbox's secret");
    let h = envd_secret::HEADER;
    for route in [
        format!("Host: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {}\r\n", echo.port),
        format!("Host: {}-{id}.sb.test\r\n", echo.port),
    ] {
        let request = format!("GET /headers HTTP/1.1\r\n{route}{h}: smuggled\r\nConnection: close\r\n\r\n");
        let response = send(port, &request).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let heads = echo.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    for head in heads {
        assert!(header_values(&head, h).is_empty(), "{head}");
        assert!(!head.contains(secret.expose()), "{head}");
    }
}
