//! Connection behaviour (seed 6) against local test doubles: safe retries, redirect limits, redirects off.
//! Runs without a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::{get, post};
use soulbox::{Client, ConnectionConfig, Error, Redirects};

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn client(url: &str) -> ConnectionConfig {
    ConnectionConfig::default().with_api_url(url).with_sandbox_url(url).with_api_key("e2b_test")
}

#[tokio::test]
async fn gets_are_retried_on_503_but_posts_are_not() {
    let gets = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (g, p) = (gets.clone(), posts.clone());
    let app = axum::Router::new()
        .route(
            "/nodes",
            get(move || {
                let g = g.clone();
                async move {
                    if g.fetch_add(1, Ordering::SeqCst) < 2 {
                        (
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            r#"{"code":503,"message":"busy"}"#.to_owned(),
                        )
                    } else {
                        (
                            http::StatusCode::OK,
                            [("retry-after", "0")],
                            r#"[{"nodeID":"n1","status":"healthy"}]"#.to_owned(),
                        )
                    }
                }
            }),
        )
        .route(
            "/sandboxes/{id}/timeout",
            post(move || {
                let p = p.clone();
                async move {
                    p.fetch_add(1, Ordering::SeqCst);
                    (http::StatusCode::SERVICE_UNAVAILABLE, r#"{"code":503,"message":"busy"}"#)
                }
            }),
        );
    let url = serve(app).await;
    let c = Client::new(client(&url)).unwrap();
    let nodes = c.list_nodes().await.unwrap();
    assert_eq!(nodes[0].node_id, "n1");
    assert_eq!(gets.load(Ordering::SeqCst), 3);
    let err = c.set_timeout("x", std::time::Duration::from_secs(5)).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(posts.load(Ordering::SeqCst), 1, "a POST must not be replayed");

    // 429 surfaces as RateLimit with the server's hint once retries are exhausted.
    let app = axum::Router::new().route(
        "/nodes",
        get(|| async {
            (http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], r#"{"code":429,"message":"slow down"}"#)
        }),
    );
    let url = serve(app).await;
    let err = Client::new(client(&url).with_retries(1)).unwrap().list_nodes().await.unwrap_err();
    assert!(matches!(err, Error::RateLimit { .. }), "{err:?}");
}

#[tokio::test]
async fn redirect_loops_stop_at_the_limit_and_off_means_off() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/nodes",
        get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                (http::StatusCode::TEMPORARY_REDIRECT, [(http::header::LOCATION, "/nodes")])
            }
        }),
    );
    let url = serve(app).await;
    let err = Client::new(client(&url).with_redirects(Redirects::Follow(3)).with_retries(0))
        .unwrap()
        .list_nodes()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redirect"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 4, "the first request plus 3 redirects");

    hits.store(0, Ordering::SeqCst);
    let err = Client::new(client(&url).with_redirects(Redirects::Off)).unwrap().list_nodes().await.unwrap_err();
    assert!(err.to_string().contains("redirect to /nodes not followed"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn config_from_env_prefers_soulbox_names() {
    // Only this test touches these variables.
    unsafe {
        std::env::set_var("E2B_API_KEY", "e2b_from_e2b");
        std::env::set_var("SOULBOX_API_KEY", "e2b_from_soulbox");
        std::env::set_var("E2B_DOMAIN", "example.test");
        std::env::set_var("SOULBOX_MAX_REDIRECTS", "0");
    }
    let c = ConnectionConfig::from_env();
    assert_eq!(c.api_key.as_deref(), Some("e2b_from_soulbox"));
    assert_eq!(c.domain, "example.test");
    assert_eq!(c.redirects, Redirects::Off);
    if std::env::var("SOULBOX_API_URL").is_err() && std::env::var("E2B_API_URL").is_err() {
        assert_eq!(c.api_url, "https://api.example.test");
    }
}
