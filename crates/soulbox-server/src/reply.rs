//! E2B's error answer, `{"code": <status>, "message": ...}`: what every HTTP surface of the server (the API, the
//! sandbox proxy, the node agent) answers a refusal with, so E2B's SDKs can always parse it.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::ApiError;

/// An E2B error response: `{"code": <status>, "message": ...}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError { code: status.as_u16(), message: message.into(), error_code: None };
    (status, axum::Json(body)).into_response()
}
