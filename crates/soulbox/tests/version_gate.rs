//! Seed feature 3 against a test double: an "old agent" (the create answer reports an old `envdVersion`).
//! Runs without a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::routing::{delete, post};
use soulbox::{Client, ConnectionConfig, Error, Sandbox};

async fn fake_api(envd_version: &'static str) -> (String, Arc<AtomicUsize>) {
    let kills = Arc::new(AtomicUsize::new(0));
    let k = kills.clone();
    let app = axum::Router::new()
        .route(
            "/v2/sandboxes",
            post(move || async move {
                (
                    http::StatusCode::CREATED,
                    Json(serde_json::json!({
                        "templateID": "base", "sandboxID": "iold", "clientID": "6532622b",
                        "envdVersion": envd_version, "envdAccessToken": "tok", "domain": null
                    })),
                )
            }),
        )
        .route(
            "/sandboxes/{id}",
            delete(move || {
                let k = k.clone();
                async move {
                    k.fetch_add(1, Ordering::SeqCst);
                    http::StatusCode::NO_CONTENT
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), kills)
}

fn client(url: &str) -> Client {
    Client::new(ConnectionConfig::default().with_api_url(url).with_sandbox_url(url).with_api_key("e2b_test")).unwrap()
}

#[tokio::test]
async fn features_are_gated_with_the_version_they_need() {
    let (url, _) = fake_api("0.1.3").await;
    let sbx = Sandbox::builder("base").client(client(&url)).create().await.unwrap();
    assert_eq!(sbx.envd_version().to_string(), "0.1.3");

    let err = sbx.files().watch("/tmp", true).await.err().expect("recursive watch must be refused");
    assert!(matches!(err, Error::Version(_)), "{err:?}");
    assert!(err.to_string().contains("recursive watch needs agent version 0.1.4"), "{err}");

    let err = sbx.commands().close_stdin(1).await.unwrap_err();
    assert!(err.to_string().contains("0.5.2"), "{err}");

    let meta = [("k".to_string(), "v".to_string())].into_iter().collect();
    let err = sbx.files().write_with_metadata("/tmp/a", "x", &meta).await.unwrap_err();
    assert!(err.to_string().contains("file metadata needs agent version 0.6.2"), "{err}");

    let err = sbx.commands().spawn_with("true", soulbox::CommandOptions::default().stdin(false)).await.unwrap_err();
    assert!(err.to_string().contains("0.3.0"), "{err}");
}

#[tokio::test]
async fn agents_below_the_minimum_are_refused_and_killed() {
    let (url, kills) = fake_api("0.0.9").await;
    let err = Sandbox::builder("base").client(client(&url)).create().await.unwrap_err();
    assert!(matches!(err, Error::Version(_)), "{err:?}");
    assert_eq!(err.to_string(), "agent version 0.0.9 is too old: the minimum supported version is 0.1.0");
    for _ in 0..100 {
        if kills.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the refused sandbox was not killed");
}

#[tokio::test]
async fn missing_api_key_is_an_auth_error_before_any_request() {
    let c = Client::new(ConnectionConfig::default().with_api_url("http://127.0.0.1:9")).unwrap();
    let err = c.get_info("x").await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
}
