//! The node-secret gate over real HTTP: the full router on 127.0.0.1:0, a raw HTTP/1.1 client, so exactly what
//! a caller that reaches the sandbox's address (without the node's proxy) gets back is checked.

use std::net::SocketAddr;

use soulbox_protocol::envd_secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::{AppState, InitRequest, SandboxConfig};

const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub(crate) async fn start(secret: Option<&str>, token: Option<&str>) -> (SocketAddr, AppState) {
    let config = SandboxConfig { access_token: token.map(str::to_owned), ..Default::default() };
    let state = AppState::with_node_secret(config, secret.map(str::to_owned));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = crate::server::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, state)
}

pub(crate) struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn refused_for_secret(&self) -> bool {
        self.status == 403
            && self.head.to_ascii_lowercase().contains(&format!(
                "{}: {}",
                envd_secret::REFUSED_HEADER,
                envd_secret::REFUSED_VALUE
            ))
    }
}

pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, head, body: String::from_utf8_lossy(&raw[split + 4..]).into_owned() }
}

fn connect_envelope(json: &str) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&(json.len() as u32).to_be_bytes());
    body.extend_from_slice(json.as_bytes());
    body
}

/// (method, target, headers, body)
type Probe = (&'static str, &'static str, Vec<(&'static str, &'static str)>, Vec<u8>);

/// Every kind of request a stranger could send: each route (and an unknown one, and a CORS preflight).
fn every_route() -> Vec<Probe> {
    let start = connect_envelope(r#"{"process":{"cmd":"/bin/echo","args":["pwned"]}}"#);
    vec![
        ("GET", "/health", vec![], vec![]),
        ("POST", "/init", vec![("Content-Type", "application/json")], br#"{"accessToken":"attacker"}"#.to_vec()),
        ("GET", "/envs", vec![], vec![]),
        ("GET", "/metrics", vec![], vec![]),
        ("GET", "/files?path=/etc/hostname", vec![], vec![]),
        ("POST", "/files?path=/tmp/pwned", vec![("Content-Type", "application/octet-stream")], b"x".to_vec()),
        ("POST", "/process.Process/Start", vec![("Content-Type", "application/connect+json")], start),
        ("POST", "/process.Process/List", vec![("Content-Type", "application/json")], b"{}".to_vec()),
        (
            "POST",
            "/filesystem.Filesystem/ListDir",
            vec![("Content-Type", "application/json")],
            br#"{"path":"/"}"#.to_vec(),
        ),
        ("OPTIONS", "/health", vec![("Origin", "http://evil.test"), ("Access-Control-Request-Method", "GET")], vec![]),
        ("GET", "/no/such/route", vec![], vec![]),
    ]
}

#[tokio::test]
async fn without_the_secret_every_route_is_refused() {
    let (addr, state) = start(Some(SECRET), None).await;
    for (method, target, headers, body) in every_route() {
        let reply = request(addr, method, target, &headers, &body).await;
        assert!(reply.refused_for_secret(), "{method} {target} without the secret: {} {}", reply.head, reply.body);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["code"], 403, "E2B's error shape: {}", reply.body);
    }
    // Nothing got through: no token installed, no file written.
    assert_eq!(state.config().access_token, None);
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let (addr, _) = start(Some(SECRET), None).await;
    let shorter = &SECRET[..SECRET.len() - 1];
    let longer = format!("{SECRET}0");
    let other = SECRET.replace('0', "1");
    for wrong in ["", "x", shorter, longer.as_str(), other.as_str()] {
        let reply = request(addr, "GET", "/health", &[(envd_secret::HEADER, wrong)], b"").await;
        assert!(reply.refused_for_secret(), "secret {wrong:?}: {}", reply.head);
    }
    // The access token is not the secret.
    let reply = request(addr, "GET", "/health", &[("X-Access-Token", SECRET)], b"").await;
    assert!(reply.refused_for_secret(), "{}", reply.head);
}

#[tokio::test]
async fn with_the_secret_every_route_answers_as_before() {
    let (addr, _) = start(Some(SECRET), None).await;
    for (method, target, mut headers, body) in every_route() {
        if target == "/init" || target.starts_with("/files?path=/tmp") {
            continue; // these change the agent or the machine; covered below
        }
        headers.push((envd_secret::HEADER, SECRET));
        let reply = request(addr, method, target, &headers, &body).await;
        assert!(
            !reply.refused_for_secret() && reply.status != 401,
            "{method} {target} with the secret: {} {}",
            reply.head,
            reply.body
        );
    }
    let health = request(addr, "GET", "/health", &[(envd_secret::HEADER, SECRET)], b"").await;
    assert_eq!(health.status, 200, "{}", health.body);
}

#[tokio::test]
async fn the_secret_comes_before_the_access_token_and_does_not_replace_it() {
    let (addr, _) = start(Some(SECRET), Some("tok")).await;
    let list = |headers: Vec<(&'static str, &'static str)>| async move {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend(headers);
        request(addr, "POST", "/process.Process/List", &h, b"{}").await
    };
    // A valid access token without the secret: still refused by the node gate.
    assert!(list(vec![("X-Access-Token", "tok")]).await.refused_for_secret());
    // The secret without the token: the sandbox's own token check answers (a 401, not the node's refusal).
    let reply = list(vec![(envd_secret::HEADER, SECRET)]).await;
    assert_eq!(reply.status, 401, "{}", reply.head);
    assert!(!reply.refused_for_secret());
    assert_eq!(list(vec![(envd_secret::HEADER, SECRET), ("X-Access-Token", "tok")]).await.status, 200);
}

#[tokio::test]
async fn init_cannot_set_or_change_the_secret() {
    let (addr, state) = start(Some(SECRET), None).await;
    let body = br#"{"envdSecret":"attacker-secret","envVars":{"A":"1"}}"#;
    let reply =
        request(addr, "POST", "/init", &[(envd_secret::HEADER, SECRET), ("Content-Type", "application/json")], body)
            .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(state.config().env_vars.get("A").map(String::as_str), Some("1"), "the rest of /init applies");
    assert!(
        request(addr, "GET", "/health", &[(envd_secret::HEADER, "attacker-secret")], b"").await.refused_for_secret()
    );
    assert_eq!(request(addr, "GET", "/health", &[(envd_secret::HEADER, SECRET)], b"").await.status, 200);

    // A standalone agent cannot be locked by /init either: the field is ignored there too.
    let (standalone, _) = start(None, None).await;
    assert_eq!(request(standalone, "POST", "/init", &[("Content-Type", "application/json")], body).await.status, 204);
    assert_eq!(request(standalone, "GET", "/health", &[], b"").await.status, 200);
}

#[tokio::test]
async fn a_standalone_agent_checks_no_secret() {
    let (addr, _) = start(None, None).await;
    for headers in [vec![], vec![(envd_secret::HEADER, "anything")]] {
        let reply = request(addr, "GET", "/health", &headers, b"").await;
        assert_eq!(reply.status, 200, "{}", reply.head);
    }
}

#[test]
fn the_boot_field_is_the_protocols() {
    let init: InitRequest = serde_json::from_str(&format!(r#"{{"{}":"s"}}"#, envd_secret::INIT_FIELD)).unwrap();
    assert_eq!(init.envd_secret.as_deref(), Some("s"));
}

/// The compat suite's `test_sdk_run_without_token` once saw "broken pipe" instead of the 401: the SDK writes a
/// Connect call's body after its head, and envd had answered and closed in between. The refused body is now read,
/// so the answer arrives and the connection stays usable for the next request.
#[tokio::test]
async fn a_refused_call_whose_body_comes_after_the_answer_keeps_its_connection() {
    let (addr, _) = start(None, Some("the-token")).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = connect_envelope(&format!(r#"{{"process":{{"cmd":"/bin/true","args":["{}"]}}}}"#, "x".repeat(1 << 20)));
    let head = format!(
        "POST /process.Process/Start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/connect+json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    assert!(read_head(&mut stream).await.expect("the refusal").starts_with("HTTP/1.1 401"));
    stream.write_all(&body).await.expect("the body is still read after the refusal");
    stream.write_all(b"GET /envs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    let second = read_head(&mut stream).await.expect("the connection outlived the refused body");
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
}

/// One response head and its Content-Length body; None when the connection was closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .and_then(Result::ok)
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(head)
}
