//! Logs and metrics over a real HTTP front (`serve::serve`, loopback sockets, a fake node): the request id
//! answered and passed through the proxy, the latency histograms filled by real requests, `/metrics` auth.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::api::ApiState;
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::metrics::MetricsStore;
use crate::prom::MetricsToken;
use crate::store::{Role, Store};
use crate::testing::FakeNode;

struct Server {
    url: String,
    key: String,
    _dir: tempfile::TempDir,
}

async fn server(metrics_token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
    let (_, key) = store.create_api_key_in("t", crate::store::DEFAULT_TEAM_NAME, Role::Admin).await.unwrap();
    let lifecycle = Lifecycle::start(store, Arc::new(FakeNode::default()), LifecycleConfig::default()).await.unwrap();
    let state = ApiState {
        lifecycle,
        metrics: Arc::new(MetricsStore::default()),
        domain: None,
        started: std::time::Instant::now(),
    };
    let http = crate::serve::HttpSettings::default();
    let listener = crate::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app =
        crate::server::app_with(state, &http).layer(axum::Extension(MetricsToken(metrics_token.map(str::to_owned))));
    tokio::spawn(crate::serve::serve(listener, app, http, std::future::pending()));
    Server { url: format!("http://127.0.0.1:{port}"), key: key.secret, _dir: dir }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

/// The value of a sample line `name value` in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A sandbox port that answers 200 and reports the request head it got.
async fn capturing_upstream() -> (u16, tokio::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).await.is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).to_lowercase()).await;
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
        }
    });
    (port, rx)
}

#[tokio::test]
async fn a_create_fills_its_histogram_and_the_request_id_comes_back() {
    let s = server(None).await;
    let http = client();
    let created = http
        .post(format!("{}/sandboxes", s.url))
        .header("X-API-Key", &s.key)
        .header("X-Request-Id", "test-create-1")
        .json(&serde_json::json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-request-id"], "test-create-1", "a sane client id is answered as given");
    let id = created.json::<serde_json::Value>().await.unwrap()["sandboxID"].as_str().unwrap().to_owned();

    // A proxied request: the sandbox port gets the id the client is answered with (a fresh one: the client's
    // has a space in it).
    let (port, mut heads) = capturing_upstream().await;
    let proxied = http
        .get(format!("{}/hello?signature=secret", s.url))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", port.to_string())
        .header("X-Request-Id", "not sane")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    let answered = proxied.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(answered != "not sane" && crate::access_log::is_sane(&answered), "{answered}");
    let head = tokio::time::timeout(Duration::from_secs(10), heads.recv()).await.unwrap().unwrap();
    assert!(head.contains(&format!("x-request-id: {}", answered.to_lowercase())), "{head}");

    let text = http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    let creates = sample(&text, "soulbox_sandbox_create_duration_seconds_bucket{le=\"+Inf\"}").unwrap();
    assert!(creates >= 1.0, "{text}");
    assert!(sample(&text, "soulbox_sandbox_create_duration_seconds_count").unwrap() >= 1.0);
    assert!(sample(&text, "soulbox_proxy_request_duration_seconds_count").unwrap() >= 1.0, "{text}");
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(text.contains("soulbox_build_info{version=\""), "{text}");
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let s = server(Some("scrape-me")).await;
    let http = client();
    let url = format!("{}/metrics", s.url);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    // An API key is not the metrics token.
    assert_eq!(http.get(&url).header("X-API-Key", &s.key).send().await.unwrap().status(), 401);
    let ok = http.get(&url).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("soulbox_sandboxes{state=\"running\"}"));
    // Without a token configured it is open (the other test's server).
    let open = server(None).await;
    assert_eq!(http.get(format!("{}/metrics", open.url)).send().await.unwrap().status(), 200);
}
