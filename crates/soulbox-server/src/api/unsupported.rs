//! Routes of E2B's API document that SoulBox answers with a clear 501 and what to use instead (the README's
//! compatibility table lists them). All are E2B's deprecated template build flows, which current SDKs and the
//! CLI no longer call.

use axum::response::Response;
use http::StatusCode;

use super::error;

fn not_implemented(what: &str, instead: &str) -> Response {
    error(StatusCode::NOT_IMPLEMENTED, format!("{what} is not implemented in SoulBox: {instead}"))
}

/// `POST /templates` (E2B's deprecated v1 build request).
pub async fn create_template_v1() -> Response {
    not_implemented(
        "POST /templates (the v1 template build)",
        "build with POST /v3/templates and POST /v2/templates/{templateID}/builds/{buildID} (the SDKs' \
         Template.build, `e2b template create`, `soulbox template build`)",
    )
}

/// `POST /v2/templates` (E2B's deprecated v2 build request).
pub async fn create_template_v2() -> Response {
    not_implemented("POST /v2/templates (the v2 template build request)", "use POST /v3/templates")
}

/// `POST /templates/{id}` (E2B's deprecated rebuild).
pub async fn rebuild_template_v1() -> Response {
    not_implemented(
        "POST /templates/{templateID} (the v1 rebuild)",
        "request a new build of the same name with POST /v3/templates",
    )
}

/// `POST /templates/{id}/builds/{buildID}` (E2B's deprecated v1 build start).
pub async fn start_build_v1() -> Response {
    not_implemented(
        "POST /templates/{templateID}/builds/{buildID} (the v1 build start)",
        "use POST /v2/templates/{templateID}/builds/{buildID}",
    )
}
