//! E2B's volume content API (`openapi-volumecontent.yml`): `GET|PATCH|DELETE /volumecontent/{volumeID}/path`,
//! `GET|POST …/dir`, `GET|PUT …/file`, all with `?path=`. No sandbox needs to run: the operations run on the
//! volume's files (`volume_ops`), confined to the volume (`soulbox-volumes`) — here, when this server reaches
//! them, or on the node agent that holds a node-local volume, the request and its answer streamed through.
//! Authorised by the volume's token (`Authorization: Bearer`, what the SDKs send) or by an API key of the
//! volume's team; anything else is a 401, and a volume the caller may not see is a 404 like an unknown one.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Router, http::HeaderMap};
use futures::TryStreamExt;
use http::StatusCode;

use super::volume_ops::{self, ContentRequest};
use super::{ApiState, error};
use crate::cluster::wire::{NODE_API_PREFIX, SECRET_HEADER, VOLUME_LIMIT_HEADER, volume_path};
use crate::lifecycle::{LifecycleError, VolumeSite};
use crate::store::VolumeRecord;

/// How long a forwarded request may take (an upload or download of a large file).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Outside the JSON body limit (uploads are files) and outside the API-key check (the token is enough).
pub fn routes() -> Router<ApiState> {
    Router::new().route("/volumecontent/{id}/{kind}", any(content))
}

/// The volume the request may act on, or the answer that refuses it.
#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
async fn authorise(state: &ApiState, id: &str, headers: &HeaderMap) -> Result<VolumeRecord, Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let lifecycle = &state.lifecycle;
    let volume = if let Some(token) = header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        lifecycle.volume_for_token(id, token.trim()).await
    } else if let Some(key) = header("x-api-key") {
        match lifecycle.store().authenticate_api_key(key).await {
            Ok(Some(caller)) => lifecycle
                .team_volume(&caller.team_id, id)
                .await
                .map(|(v, _)| Some(v))
                .or_else(|e| if matches!(e, LifecycleError::NotFound(_)) { Ok(None) } else { Err(e) }),
            Ok(None) => return Err(error(StatusCode::UNAUTHORIZED, "invalid API key")),
            Err(e) => Err(e.into()),
        }
    } else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing volume token: set Authorization: Bearer <token>"));
    };
    match volume {
        Ok(Some(v)) => Ok(v),
        // A wrong token for a real volume reads like an unknown volume: ids are not probed with it.
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("volume {id} not found"))),
        Err(e) => Err(e.into_response()),
    }
}

async fn content(
    State(state): State<ApiState>,
    Path((id, kind)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let volume = match authorise(&state, &id, request.headers()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let site = match state.lifecycle.volume_site(&volume).await {
        Ok(site) => site,
        Err(e) => return e.into_response(),
    };
    match site {
        VolumeSite::Here { files, size_limit } => {
            let (parts, body) = request.into_parts();
            let request = ContentRequest { volume_id: id, kind, method: parts.method, params, size_limit, body };
            volume_ops::serve(files, request).await
        }
        VolumeSite::Node { authority, secret, size_limit } => {
            forward(&volume, &authority, &secret, size_limit, &kind, request).await
        }
    }
}

/// Streams the request to the node agent holding the volume (`node_agent`'s volume routes run the same
/// `volume_ops::serve` there) and its answer back. Only the body and its type go: the caller's credentials stay
/// here, where they were checked.
async fn forward(
    volume: &VolumeRecord,
    authority: &str,
    secret: &str,
    size_limit: Option<u64>,
    kind: &str,
    request: Request,
) -> Response {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(crate::cluster::remote::RemoteNode::http_client);
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("http://{authority}{NODE_API_PREFIX}{}/{kind}{query}", volume_path(&volume.id));
    let mut outgoing = client
        .request(parts.method, &url)
        .header(SECRET_HEADER, secret)
        .timeout(FORWARD_TIMEOUT)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    if let Some(limit) = size_limit {
        outgoing = outgoing.header(VOLUME_LIMIT_HEADER, limit);
    }
    for name in [http::header::CONTENT_TYPE, http::header::CONTENT_LENGTH] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            let node = volume.node_id.as_deref().unwrap_or_default();
            tracing::warn!(volume = %volume.id, node, error = %e, "forwarding a volume content request failed");
            return LifecycleError::Unavailable(format!(
                "volume '{}' lives on node {node}, which did not answer: {e}",
                volume.name
            ))
            .into_response();
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in [http::header::CONTENT_TYPE, http::header::CONTENT_LENGTH] {
        if let Some(value) = answer.headers().get(&name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other)))
        .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, e.to_string()))
}
