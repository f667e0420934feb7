//! `GET /metrics`: the sandbox's resource usage as seen from inside.

use axum::response::Response;
use http::StatusCode;

use crate::http::json_error;

#[derive(Default)]
pub struct MetricsSampler {}

pub async fn handler() -> Response {
    json_error(StatusCode::NOT_IMPLEMENTED, "not yet")
}
