//! `GET /files` (download) and `POST /files` (upload).

use axum::response::Response;
use http::StatusCode;

use crate::http::json_error;

pub async fn download() -> Response {
    json_error(StatusCode::NOT_IMPLEMENTED, "not yet")
}

pub async fn upload() -> Response {
    json_error(StatusCode::NOT_IMPLEMENTED, "not yet")
}
