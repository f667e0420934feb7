//! The access log and request ids: one line per API or proxied request (method, path without the query — signed
//! URLs and upload tokens travel there —, status, duration, request id, sandbox when proxied).
//!
//! The id is the client's `X-Request-Id` when it is sane (≤ 64 of `[A-Za-z0-9._-]`, so it cannot forge log
//! fields or headers), else a new one. It is answered in the response's `X-Request-Id`, set on the request
//! before routing (so the proxy passes it on to envd and to node agents, whose logs then name it), and kept in
//! a task-local for the control plane's own calls to node agents ([`current`]).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use soulbox_protocol::envd_init::REQUEST_ID_HEADER;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Set by the proxy front on a response it forwarded: the sandbox the request went to.
#[derive(Clone, Debug)]
pub struct ProxiedSandbox(pub String);

/// The id of the request this task serves, if any (for requests the control plane makes on its behalf).
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `f` as if serving the request `id` (tests of what is sent on a request's behalf).
#[cfg(test)]
pub async fn scoped<F: std::future::Future>(id: &str, f: F) -> F::Output {
    REQUEST_ID.scope(id.to_owned(), f).await
}

/// Whether a client's id may be used as given.
pub fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The client's id when sane, else a new random one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(|| crate::ids::access_token()[..20].to_owned(), str::to_owned)
}

fn polled(path: &str) -> bool {
    path == "/health" || path == "/metrics" || path.ends_with("/stats")
}

/// Middleware: the access log line and the request id.
pub async fn log_requests(mut request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    let sandbox = response.extensions().get::<ProxiedSandbox>().map(|s| s.0.as_str());
    let status = response.status().as_u16();
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(target: "soulbox::access", %method, path, status, duration_ms, request_id = %id, sandbox, "request")
        };
    }
    // What machines poll (health checks, scrapes, the metrics sampler's per-sandbox stats on node agents) would
    // drown the rest: debug.
    if polled(&path) {
        line!(debug);
    } else {
        line!(info);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn app() -> axum::Router {
        axum::Router::new()
            .route(
                "/echo",
                axum::routing::get(|headers: http::HeaderMap| async move {
                    // What the handler (and so the proxy and the node client) sees.
                    let seen = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    format!("{seen}|{}", current().unwrap_or_default())
                }),
            )
            .layer(axum::middleware::from_fn(log_requests))
    }

    async fn call(id: Option<&str>) -> (String, String) {
        let mut request = http::Request::get("/echo?token=secret");
        if let Some(id) = id {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        let response = app().oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let answered = response.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        (answered, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_sane_client_id_is_kept_and_passed_on() {
        let (answered, seen) = call(Some("req-42.A_b")).await;
        assert_eq!(answered, "req-42.A_b");
        assert_eq!(seen, "req-42.A_b|req-42.A_b");
    }

    #[tokio::test]
    async fn an_insane_or_missing_id_is_replaced() {
        let long = "x".repeat(65);
        for given in [None, Some("has space"), Some(long.as_str()), Some("a\"b")] {
            let (answered, seen) = call(given).await;
            assert!(is_sane(&answered) && Some(answered.as_str()) != given, "{given:?} -> {answered}");
            assert_eq!(seen, format!("{answered}|{answered}"));
        }
    }
}
