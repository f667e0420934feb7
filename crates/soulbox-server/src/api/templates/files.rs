//! COPY context uploads: `GET /templates/{id}/files/{hash}` hands out an upload URL (or says the files are
//! there), `PUT` on that URL stores them. The URL's token is an HMAC of the team, template and hash under a
//! per-process secret, so the upload needs no API key and lands only where it was issued for.

use std::sync::LazyLock;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use soulbox_protocol::api::TemplateFilesLink;
use subtle::ConstantTimeEq;

use super::access::own_template;
use super::{UploadLimit, internal};
use crate::api::{ApiState, error};
use crate::builds::uploads::{Stored, UploadError, Uploads};
use crate::names::{is_valid_files_hash, is_valid_template_name};
use crate::store::Caller;
use soulbox_templates::sha256_hex;

static UPLOAD_SECRET: LazyLock<String> = LazyLock::new(crate::ids::access_token);

/// Binds an upload URL to the team, template and hash it was issued for.
fn upload_token(team_id: &str, template: &str, hash: &str) -> String {
    sha256_hex(format!("{}:{team_id}:{template}:{hash}", *UPLOAD_SECRET).as_bytes())
}

pub(super) async fn file_link(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, hash)): Path<(String, String)>,
    origin: Option<Extension<crate::forwarded::ClientOrigin>>,
    headers: HeaderMap,
) -> Response {
    if !is_valid_files_hash(&hash) {
        return error(StatusCode::BAD_REQUEST, "invalid files hash");
    }
    if let Err(r) = own_template(&state, &caller, &id).await {
        return r;
    }
    let Some(dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    if Uploads::for_team(&dir, &caller.team_id).present(&id, &hash) {
        return (StatusCode::CREATED, Json(TemplateFilesLink { headers: None, present: true, url: None }))
            .into_response();
    }
    // The URL as the client reached us: https through our TLS or a trusted proxy that says so (forwarded.rs).
    let (scheme, host) = match &origin {
        Some(Extension(o)) => (o.scheme(), o.host.as_deref()),
        None => ("http", headers.get(header::HOST).and_then(|h| h.to_str().ok())),
    };
    let host = host.unwrap_or("127.0.0.1");
    let url = format!(
        "{scheme}://{host}/templates/{}/files/{hash}?token={}",
        percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC),
        upload_token(&caller.team_id, &id, &hash)
    );
    (StatusCode::CREATED, Json(TemplateFilesLink { headers: None, present: false, url: Some(url) })).into_response()
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

pub(super) async fn upload(
    State(state): State<ApiState>,
    Path((id, hash)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    limit: Option<axum::Extension<UploadLimit>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The token names the team it was issued to; the upload lands in that team's directory.
    let team = match state.lifecycle.store().get_template_record(&id).await {
        Ok(record) => record.map(|r| r.team_id).unwrap_or_default(),
        Err(e) => return internal(e),
    };
    let expected = upload_token(&team, &id, &hash);
    let ok =
        !team.is_empty() && q.token.as_deref().is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes())));
    if !ok || !is_valid_files_hash(&hash) || !is_valid_template_name(&id) {
        return error(StatusCode::FORBIDDEN, "invalid upload token");
    }
    let max = limit.map(|l| l.0).unwrap_or_default().0;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("upload of {n} bytes is over the limit of {max} bytes"));
    }
    let Some(dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    match Uploads::for_team(&dir, &team).store(&id, &hash, body.into_data_stream(), max).await {
        Ok(Stored::New(n)) => {
            tracing::info!(template = %id, hash = %hash, bytes = n, "template files uploaded");
            StatusCode::OK.into_response()
        }
        Ok(Stored::AlreadyPresent) => {
            tracing::info!(template = %id, hash = %hash, "template files uploaded again: the first upload is kept");
            StatusCode::OK.into_response()
        }
        Err(e @ UploadError::TooLarge { .. }) => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Err(e @ UploadError::Body(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ UploadError::Io(_)) => internal(e),
    }
}
