//! E2B's plain-HTTP error body, shared by the access gates and the HTTP endpoints.

use axum::body::Body;
use axum::response::Response;
use http::{StatusCode, header};

/// E2B's plain-HTTP error body: `{"code": <status>, "message": "..."}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}
