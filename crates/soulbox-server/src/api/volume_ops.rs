//! The HTTP side of E2B's volume content operations on a volumes directory (`soulbox-volumes`): one function,
//! [`serve`], that both the API (`volume_content.rs`, volumes in the control plane's directory) and the node agent
//! (node-local volumes, requests the control plane forwards) call, so both answer exactly alike.
//!
//! `kind` is the last segment of E2B's routes: `path` (`GET` stat, `PATCH` chmod/chown, `DELETE` remove), `dir`
//! (`GET` list, `POST` mkdir), `file` (`GET` download, `PUT` upload); `?path=` names the entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{Method, StatusCode};
use soulbox_protocol::api::{VolumeEntryStat, VolumeEntryType, VolumePathUpdate};
use soulbox_volumes::{CreateOptions, EntryStat, EntryType, MetadataChange, VolumeError, VolumeStore};

use super::error;
use crate::lifecycle::volume_error;

/// Bytes gathered before each write to the file (one blocking call per batch, not per frame).
const UPLOAD_BATCH: usize = 1 << 20;
/// The largest chmod/chown body read.
const UPDATE_BODY_LIMIT: usize = 64 * 1024;

/// What one content request asks, once authorised.
pub struct ContentRequest {
    pub volume_id: String,
    /// `path`, `dir` or `file`.
    pub kind: String,
    pub method: Method,
    pub params: HashMap<String, String>,
    /// The volume's size limit in bytes for uploads; `None`: the store's own.
    pub size_limit: Option<u64>,
    pub body: Body,
}

/// Runs the operation `request` names on `files` and answers it as E2B's content API does.
pub async fn serve(files: Arc<VolumeStore>, request: ContentRequest) -> Response {
    let ContentRequest { volume_id: id, kind, method, params, size_limit, body } = request;
    let path = match params.get("path") {
        Some(p) if !p.is_empty() => p.clone(),
        _ => return error(StatusCode::BAD_REQUEST, "the path query parameter is required"),
    };
    let result = match (kind.as_str(), method) {
        ("path", Method::GET) => blocking(move || files.stat(&id, &path)).await.map(|e| ok(entry(e))),
        ("path", Method::PATCH) => {
            let change = match axum::body::to_bytes(body, UPDATE_BODY_LIMIT)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<VolumePathUpdate>(&b).ok())
            {
                Some(c) => MetadataChange { uid: c.uid, gid: c.gid, mode: c.mode },
                None => return error(StatusCode::BAD_REQUEST, r#"invalid body: expected {"uid"?, "gid"?, "mode"?}"#),
            };
            blocking(move || files.set_metadata(&id, &path, change)).await.map(|e| ok(entry(e)))
        }
        ("path", Method::DELETE) => {
            blocking(move || files.remove(&id, &path)).await.map(|()| StatusCode::NO_CONTENT.into_response())
        }
        ("dir", Method::GET) => {
            let depth = match number::<u32>(&params, "depth") {
                Ok(d) => d.unwrap_or(1),
                Err(r) => return r,
            };
            let listed = blocking(move || files.list(&id, &path, depth)).await;
            listed.map(|entries| ok(entries.into_iter().map(entry).collect::<Vec<_>>()))
        }
        ("dir", Method::POST) => {
            let options = match create_options(&params) {
                Ok(o) => o,
                Err(r) => return r,
            };
            blocking(move || files.make_dir(&id, &path, options)).await.map(|e| created(entry(e)))
        }
        ("file", Method::GET) => blocking(move || files.read_file(&id, &path)).await.map(download),
        ("file", Method::PUT) => {
            let options = match create_options(&params) {
                Ok(o) => o,
                Err(r) => return r,
            };
            return upload(files, id, path, options, size_limit, body).await;
        }
        ("path" | "dir" | "file", method) => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not a volume content operation on /{kind}"),
            );
        }
        _ => return error(StatusCode::NOT_FOUND, format!("no volume content route /{kind}")),
    };
    result.unwrap_or_else(|e| volume_error(e).into_response())
}

fn ok<T: serde::Serialize>(value: T) -> Response {
    Json(value).into_response()
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn download((file, size): (std::fs::File, u64)) -> Response {
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, size)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Streams the body into an upload, batch by batch; a failure drops the upload, which leaves nothing behind.
async fn upload(
    files: Arc<VolumeStore>,
    id: String,
    path: String,
    options: CreateOptions,
    size_limit: Option<u64>,
    body: Body,
) -> Response {
    let mut upload = match blocking(move || files.write_file(&id, &path, options, size_limit)).await {
        Ok(u) => u,
        Err(e) => return volume_error(e).into_response(),
    };
    let mut body = body.into_data_stream();
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
            upload = match blocking(move || upload.write_chunk(&chunk).map(|()| upload)).await {
                Ok(u) => u,
                Err(e) => return volume_error(e).into_response(),
            };
        }
        if done {
            break;
        }
    }
    match blocking(move || upload.finish()).await {
        Ok(e) => created(entry(e)),
        Err(e) => volume_error(e).into_response(),
    }
}

/// A volume store call on a blocking thread (they are filesystem calls).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(VolumeError::Io { op: "volume operation", path: String::new(), source: std::io::Error::other(e) })
    })
}

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
