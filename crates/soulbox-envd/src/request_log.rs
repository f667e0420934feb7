//! Request ids from the control plane: every request that carries `X-Request-Id` (set by the server's proxy) runs
//! in a span with that id, so whatever envd logs while serving it names the API request it belongs to, and a
//! debug line records its end (method, path, status, duration).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The proxy only forwards ids it accepted or made (≤ 64 of `[A-Za-z0-9._-]`); anything else is not logged.
fn sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub async fn log_request(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(soulbox_protocol::envd_init::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_owned);
    let Some(id) = id else { return next.run(request).await };
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = std::time::Instant::now();
    let span = tracing::info_span!("request", request_id = %id);
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            %method,
            path,
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "request served"
        )
    });
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_sane_ids_are_taken() {
        assert!(super::sane("req-1.A_b"));
        assert!(!super::sane(""));
        assert!(!super::sane("a b"));
        assert!(!super::sane(&"a".repeat(65)));
    }
}
