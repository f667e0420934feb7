//! E2B's volume content API (`openapi-volumecontent.yml`): `GET|PATCH|DELETE /volumecontent/{volumeID}/path`,
//! `GET|POST …/dir`, `GET|PUT …/file`, all with `?path=`. No sandbox needs to run: the server works on the
//! volume's files itself, confined to the volume (`soulbox-volumes`). Authorised by the volume's token
//! (`Authorization: Bearer`, what the SDKs send) or by an API key of the volume's team; anything else is a 401,
//! and a volume the caller may not see is a 404 like an unknown one.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, http::HeaderMap};
use futures::StreamExt;
use http::StatusCode;
use soulbox_protocol::api::{VolumeEntryStat, VolumeEntryType, VolumePathUpdate};
use soulbox_volumes::{CreateOptions, EntryStat, EntryType, MetadataChange};

use super::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::store::VolumeRecord;

/// Outside the JSON body limit (uploads are files) and outside the API-key check (the token is enough).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/volumecontent/{id}/path", get(stat).patch(update).delete(remove))
        .route("/volumecontent/{id}/dir", get(list).post(make_dir))
        .route("/volumecontent/{id}/file", get(download).put(upload))
}

type Params = Query<HashMap<String, String>>;

fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    crate::time::rfc3339(ms)
}

fn entry(e: EntryStat) -> VolumeEntryStat {
    VolumeEntryStat {
        name: e.name,
        entry_type: match e.entry_type {
            EntryType::File => VolumeEntryType::File,
            EntryType::Directory => VolumeEntryType::Directory,
            EntryType::Symlink => VolumeEntryType::Symlink,
            EntryType::Unknown => VolumeEntryType::Unknown,
        },
        path: e.path,
        size: i64::try_from(e.size).unwrap_or(i64::MAX),
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        atime: rfc3339(e.atime),
        mtime: rfc3339(e.mtime),
        ctime: rfc3339(e.ctime),
        target: e.target,
    }
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

#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn path_of(params: &HashMap<String, String>) -> Result<String, Response> {
    match params.get("path") {
        Some(p) if !p.is_empty() => Ok(p.clone()),
        _ => Err(error(StatusCode::BAD_REQUEST, "the path query parameter is required")),
    }
}

#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn number<T: std::str::FromStr>(params: &HashMap<String, String>, name: &str) -> Result<Option<T>, Response> {
    match params.get(name) {
        None => Ok(None),
        Some(raw) => {
            raw.parse().map(Some).map_err(|_| error(StatusCode::BAD_REQUEST, format!("invalid {name}: {raw}")))
        }
    }
}

#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn create_options(params: &HashMap<String, String>) -> Result<CreateOptions, Response> {
    let force = match params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(error(StatusCode::BAD_REQUEST, format!("invalid force: {other}"))),
    };
    Ok(CreateOptions { uid: number(params, "uid")?, gid: number(params, "gid")?, mode: number(params, "mode")?, force })
}

/// Authorises, reads `path`, and runs `op` on the volume's files.
macro_rules! content {
    ($state:expr, $id:expr, $headers:expr, $params:expr, |$files:ident, $vid:ident, $path:ident| $op:expr) => {{
        let volume = match authorise(&$state, &$id, &$headers).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        let $path = match path_of(&$params) {
            Ok(p) => p,
            Err(r) => return r,
        };
        $state.lifecycle.volume_content(&volume, move |$files, $vid| $op).await
    }};
}

async fn stat(State(state): State<ApiState>, Path(id): Path<String>, headers: HeaderMap, Query(q): Params) -> Response {
    match content!(state, id, headers, q, |files, vid, path| files.stat(vid, &path)) {
        Ok(e) => Json(entry(e)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(State(state): State<ApiState>, Path(id): Path<String>, headers: HeaderMap, Query(q): Params) -> Response {
    let depth = match number::<u32>(&q, "depth") {
        Ok(d) => d.unwrap_or(1),
        Err(r) => return r,
    };
    match content!(state, id, headers, q, |files, vid, path| files.list(vid, &path, depth)) {
        Ok(entries) => Json(entries.into_iter().map(entry).collect::<Vec<_>>()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn make_dir(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let options = match create_options(&q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    match content!(state, id, headers, q, |files, vid, path| files.make_dir(vid, &path, options)) {
        Ok(e) => (StatusCode::CREATED, Json(entry(e))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let change: VolumePathUpdate = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(_) => return error(StatusCode::BAD_REQUEST, r#"invalid body: expected {"uid"?, "gid"?, "mode"?}"#),
    };
    let change = MetadataChange { uid: change.uid, gid: change.gid, mode: change.mode };
    match content!(state, id, headers, q, |files, vid, path| files.set_metadata(vid, &path, change)) {
        Ok(e) => Json(entry(e)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    match content!(state, id, headers, q, |files, vid, path| files.remove(vid, &path)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn download(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    match content!(state, id, headers, q, |files, vid, path| files.read_file(vid, &path)) {
        Ok((file, size)) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            Response::builder()
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(http::header::CONTENT_LENGTH, size)
                .body(Body::from_stream(stream))
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => e.into_response(),
    }
}

/// Bytes gathered before each write to the file (one blocking call per batch, not per frame).
const UPLOAD_BATCH: usize = 1 << 20;

async fn upload(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    request: Request,
) -> Response {
    let options = match create_options(&q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let started = content!(state, id, headers, q, |files, vid, path| files.write_file(vid, &path, options, None));
    let mut upload = match started {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let mut body = request.into_body().into_data_stream();
    let mut batch = Vec::with_capacity(UPLOAD_BATCH);
    loop {
        let next = body.next().await;
        let done = next.is_none();
        match next {
            Some(Ok(bytes)) => batch.extend_from_slice(&bytes),
            Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")),
            None => {}
        }
        if batch.len() >= UPLOAD_BATCH || done {
            let chunk = std::mem::take(&mut batch);
            let wrote = tokio::task::spawn_blocking(move || upload.write_chunk(&chunk).map(|()| upload)).await;
            upload = match wrote {
                Ok(Ok(u)) => u,
                // The upload is dropped with the error: its temp file goes, nothing is left behind.
                Ok(Err(e)) => return crate::lifecycle::volume_error(e).into_response(),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        }
        if done {
            break;
        }
    }
    match tokio::task::spawn_blocking(move || upload.finish()).await {
        Ok(Ok(e)) => (StatusCode::CREATED, Json(entry(e))).into_response(),
        Ok(Err(e)) => crate::lifecycle::volume_error(e).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
