//! E2B's template endpoints (spec §1.4, §6.1) plus SoulBox's live build log stream.
//!
//! - `POST /v3/templates` → 202 `{templateID, buildID, public, names, tags, aliases}` (the template's id is its
//!   name; `name:tag` is accepted, only the default tag exists so far)
//! - `GET /templates/{id}/files/{hash}` → 201 `{present, url?}`; the URL is `PUT /templates/{id}/files/{hash}?token=`
//!   on this server (no API key: the token is an HMAC of the template and hash under a per-process secret)
//! - `POST /v2/templates/{id}/builds/{buildID}` → 202, the build runs in the background
//! - `GET /templates/{id}/builds/{buildID}/status?logsOffset=&limit=` → `TemplateBuildInfo`
//! - `GET /templates/{id}/builds/{buildID}/logs/stream` → NDJSON, one log entry per line as it is produced
//!   (replayed from the start), then `{"status": "ready"|"error", "reason"?}`; no polling: a broadcast per build
//! - `GET /templates/aliases/{alias}` → 200/404, `DELETE /templates/{id}` → 204/404

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};

use super::{BuildJob, LogLevel, LogSink, Recipe, sha256_hex};
use crate::api::{ApiState, error};
use crate::store::{BuildLogRecord, Store, now_ms};
use crate::time::rfc3339;

/// Defaults of E2B's build request.
const DEFAULT_CPU: i32 = 2;
const DEFAULT_MEMORY_MB: i32 = 1024;
/// Largest upload of a COPY context.
const MAX_UPLOAD_BYTES: u64 = 4 << 30;

fn build_timeout() -> Duration {
    let s = std::env::var("SOULBOX_TEMPLATE_BUILD_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(3600);
    Duration::from_secs(s)
}

/// Routes behind the API key.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v3/templates", post(request_build))
        .route("/templates/{id}", delete(delete_template))
        .route("/templates/aliases/{alias}", get(alias))
        .route("/templates/{id}/files/{hash}", get(file_link))
        .route("/v2/templates/{id}/builds/{build}", post(start_build))
        .route("/templates/{id}/builds/{build}/status", get(build_status))
        .route("/templates/{id}/builds/{build}/logs/stream", get(stream_logs))
}

/// The upload route: authenticated by its URL token, outside the JSON body limit.
pub fn upload_routes() -> Router<ApiState> {
    Router::new().route("/templates/{id}/files/{hash}", put(upload))
}

#[derive(Clone, Debug)]
enum StreamItem {
    Log(BuildLogRecord),
    End,
}

/// Live builds: one broadcast per build, from its creation until it finished.
static LIVE: LazyLock<Mutex<HashMap<String, broadcast::Sender<StreamItem>>>> = LazyLock::new(Default::default);
static UPLOAD_SECRET: LazyLock<String> = LazyLock::new(crate::ids::access_token);

fn live_subscribe(build: &str) -> Option<broadcast::Receiver<StreamItem>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).get(build).map(|s| s.subscribe())
}

fn upload_token(template: &str, hash: &str) -> String {
    sha256_hex(format!("{}:{template}:{hash}", *UPLOAD_SECRET).as_bytes())
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "template request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn valid_hash(h: &str) -> bool {
    !h.is_empty() && h.len() <= 128 && h.chars().all(|c| c.is_ascii_hexdigit())
}

fn valid_name(n: &str) -> bool {
    soulbox_runtime::template::check_name(n).is_ok() && !n.starts_with("sbbuild-")
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BuildRequestV3 {
    name: Option<String>,
    alias: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    cpu_count: Option<i32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<i32>,
}

async fn request_build(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let req: BuildRequestV3 = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let Some(full) = req.name.or(req.alias) else { return error(StatusCode::BAD_REQUEST, "name is required") };
    let (name, tag) = match full.split_once(':') {
        Some((n, t)) => (n.to_string(), t.to_string()),
        None => (full.clone(), "default".to_string()),
    };
    if !valid_name(&name) {
        return error(StatusCode::BAD_REQUEST, format!("invalid template name '{name}': use letters, digits, '-', '_' and '.'"));
    }
    if tag != "default" || req.tags.iter().any(|t| t != "default") {
        return error(StatusCode::BAD_REQUEST, "template tags other than 'default' are not supported yet");
    }
    let cpu = req.cpu_count.unwrap_or(DEFAULT_CPU);
    let mem = req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(1..=64).contains(&cpu) || !(128..=65536).contains(&mem) {
        return error(StatusCode::BAD_REQUEST, "cpuCount must be 1..64 and memoryMB 128..65536");
    }
    let build_id = uuid_like();
    if let Err(e) = state.lifecycle.store().create_template_build(&name, &build_id, cpu, mem).await {
        return internal(e);
    }
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).insert(build_id.clone(), broadcast::channel(4096).0);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "templateID": name, "buildID": build_id, "public": false,
            "names": [name], "tags": ["default"], "aliases": [name],
        })),
    )
        .into_response()
}

/// A random UUID-shaped id (lowercase hex), as E2B's build ids.
fn uuid_like() -> String {
    let t = crate::ids::access_token();
    format!("{}-{}-{}-{}-{}", &t[0..8], &t[8..12], &t[12..16], &t[16..20], &t[20..32])
}

async fn file_link(State(state): State<ApiState>, Path((id, hash)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if !valid_hash(&hash) {
        return error(StatusCode::BAD_REQUEST, "invalid files hash");
    }
    match state.lifecycle.store().get_template_record(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("template '{id}' not found")),
        Err(e) => return internal(e),
    }
    let Some(dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    if dir.join(&hash).is_file() {
        return (StatusCode::CREATED, Json(serde_json::json!({"present": true}))).into_response();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let url = format!(
        "http://{host}/templates/{}/files/{hash}?token={}",
        percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC),
        upload_token(&id, &hash)
    );
    (StatusCode::CREATED, Json(serde_json::json!({"present": false, "url": url}))).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn upload(
    State(state): State<ApiState>,
    Path((id, hash)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    body: Body,
) -> Response {
    let expected = upload_token(&id, &hash);
    let ok = q.token.as_deref().is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes())));
    if !ok || !valid_hash(&hash) {
        return error(StatusCode::FORBIDDEN, "invalid upload token");
    }
    let Some(dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return internal(e);
    }
    let tmp = dir.join(format!(".{hash}.{}", crate::ids::access_token()));
    let res: Result<u64, String> = async {
        let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| e.to_string())?;
        let mut stream = body.into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading the upload: {e}"))?;
            n += chunk.len() as u64;
            if n > MAX_UPLOAD_BYTES {
                return Err(format!("upload over {MAX_UPLOAD_BYTES} bytes"));
            }
            f.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        f.flush().await.map_err(|e| e.to_string())?;
        tokio::fs::rename(&tmp, dir.join(&hash)).await.map_err(|e| e.to_string())?;
        Ok(n)
    }
    .await;
    match res {
        Ok(n) => {
            tracing::info!(template = %id, hash = %hash, bytes = n, "template files uploaded");
            StatusCode::OK.into_response()
        }
        Err(m) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            error(StatusCode::BAD_REQUEST, m)
        }
    }
}

async fn start_build(State(state): State<ApiState>, Path((id, build)): Path<(String, String)>, body: axum::body::Bytes) -> Response {
    let recipe: Recipe = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let store = state.lifecycle.store().clone();
    let record = match store.get_build(&build).await {
        Ok(Some(b)) if b.template_id == id => b,
        Ok(_) => return error(StatusCode::NOT_FOUND, format!("build '{build}' of template '{id}' not found")),
        Err(e) => return internal(e),
    };
    let Some(files_dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    let recipe_json = serde_json::to_string(&recipe).unwrap_or_default();
    match store.start_build(&build, &recipe_json).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::CONFLICT, format!("build '{build}' was already started")),
        Err(e) => return internal(e),
    }
    let job = BuildJob {
        template_name: id,
        build_id: build,
        recipe,
        cpu_count: record.cpu_count as u32,
        memory_mb: record.memory_mb as u32,
        files_dir,
        timeout: build_timeout(),
    };
    tokio::spawn(run_build(state, job));
    StatusCode::ACCEPTED.into_response()
}

struct Pending {
    unix_ms: i64,
    level: LogLevel,
    message: String,
    step: Option<String>,
}

/// Runs a build: the node builds, its lines are stored (batched) and broadcast, then the status is final.
async fn run_build(state: ApiState, job: BuildJob) {
    let store = state.lifecycle.store().clone();
    let build_id = job.build_id.clone();
    let template = job.template_name.clone();
    let sender = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(build_id.clone())
        .or_insert_with(|| broadcast::channel(4096).0)
        .clone();
    let (tx, rx) = mpsc::unbounded_channel::<Pending>();
    let writer = tokio::spawn(write_logs(store.clone(), build_id.clone(), rx, sender.clone()));
    let log: LogSink = Arc::new(move |level, message, step| {
        let _ = tx.send(Pending { unix_ms: now_ms(), level, message, step });
    });
    log(LogLevel::Info, format!("Building template '{template}' (build {build_id})"), Some("base".into()));
    let started = std::time::Instant::now();
    let result = state.lifecycle.node().build_template(job, log.clone()).await;
    match &result {
        Ok(()) => log(LogLevel::Info, format!("Build finished in {:.1} s", started.elapsed().as_secs_f64()), Some("finalize".into())),
        Err(f) => log(LogLevel::Error, format!("Build failed: {}", f.message), f.step.clone()),
    }
    drop(log);
    let _ = writer.await;
    let (status, reason, step) = match &result {
        Ok(()) => ("ready", None, None),
        Err(f) => ("error", Some(f.message.as_str()), f.step.as_deref()),
    };
    if let Err(e) = store.finish_build(&build_id, status, reason, step).await {
        tracing::error!(build = %build_id, error = %e, "could not record the end of a build");
    }
    tracing::info!(template = %template, build = %build_id, status, "template build finished");
    let _ = sender.send(StreamItem::End);
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&build_id);
}

async fn write_logs(store: Store, build_id: String, mut rx: mpsc::UnboundedReceiver<Pending>, sender: broadcast::Sender<StreamItem>) {
    let mut seq = 0i64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let records: Vec<BuildLogRecord> = batch
            .into_iter()
            .map(|p| {
                let r = BuildLogRecord { seq, unix_ms: p.unix_ms, level: p.level.as_str().into(), message: p.message, step: p.step };
                seq += 1;
                r
            })
            .collect();
        if let Err(e) = store.append_build_logs(&build_id, &records).await {
            tracing::error!(build = %build_id, error = %e, "could not store build log lines");
        }
        for r in records {
            let _ = sender.send(StreamItem::Log(r));
        }
    }
}

fn entry_json(r: &BuildLogRecord) -> serde_json::Value {
    let mut v = serde_json::json!({"timestamp": rfc3339(r.unix_ms), "level": r.level, "message": r.message});
    if let Some(s) = &r.step {
        v["step"] = s.clone().into();
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    logs_offset: Option<i64>,
    limit: Option<i64>,
}

async fn build_status(State(state): State<ApiState>, Path((id, build)): Path<(String, String)>, Query(q): Query<StatusQuery>) -> Response {
    let store = state.lifecycle.store();
    let record = match store.get_build(&build).await {
        Ok(Some(b)) if b.template_id == id => b,
        Ok(_) => return error(StatusCode::NOT_FOUND, format!("build '{build}' of template '{id}' not found")),
        Err(e) => return internal(e),
    };
    let limit = q.limit.unwrap_or(100).clamp(0, 100);
    let logs = match store.build_logs(&build, q.logs_offset.unwrap_or(0).max(0), limit).await {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let mut body = serde_json::json!({
        "templateID": id,
        "buildID": build,
        "status": record.status,
        "logEntries": logs.iter().map(entry_json).collect::<Vec<_>>(),
        "logs": logs.iter().map(|l| format!("[{}] {}", rfc3339(l.unix_ms), l.message)).collect::<Vec<_>>(),
    });
    if record.status == "error" {
        let mut reason = serde_json::json!({"message": record.reason.unwrap_or_else(|| "build failed".into())});
        if let Some(s) = record.reason_step {
            reason["step"] = s.into();
        }
        body["reason"] = reason;
    }
    Json(body).into_response()
}

/// NDJSON: every stored entry, then the live ones, then the final status line.
async fn stream_logs(State(state): State<ApiState>, Path((id, build)): Path<(String, String)>) -> Response {
    let store = state.lifecycle.store().clone();
    match store.get_build(&build).await {
        Ok(Some(b)) if b.template_id == id => {}
        Ok(_) => return error(StatusCode::NOT_FOUND, format!("build '{build}' of template '{id}' not found")),
        Err(e) => return internal(e),
    }
    // Subscribe before reading the store: an entry is stored before it is broadcast, so none is missed.
    let live = live_subscribe(&build);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let line = |v: serde_json::Value| Ok::<_, Infallible>(Bytes::from(format!("{v}\n")));
        let mut next = 0i64;
        async fn replay(
            store: &Store,
            build: &str,
            next: &mut i64,
            tx: &mpsc::Sender<Result<Bytes, Infallible>>,
        ) -> Result<(), ()> {
            loop {
                let page = store.build_logs(build, *next, 500).await.map_err(|_| ())?;
                if page.is_empty() {
                    return Ok(());
                }
                for r in page {
                    *next = r.seq + 1;
                    tx.send(Ok(Bytes::from(format!("{}\n", entry_json(&r))))).await.map_err(|_| ())?;
                }
            }
        }
        if replay(&store, &build, &mut next, &tx).await.is_err() {
            return;
        }
        if let Some(mut rx) = live {
            loop {
                match rx.recv().await {
                    Ok(StreamItem::Log(r)) => {
                        if r.seq >= next {
                            next = r.seq + 1;
                            if tx.send(line(entry_json(&r))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if replay(&store, &build, &mut next, &tx).await.is_err() {
                            return;
                        }
                    }
                    Ok(StreamItem::End) | Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            if replay(&store, &build, &mut next, &tx).await.is_err() {
                return;
            }
        }
        if let Ok(Some(b)) = store.get_build(&build).await {
            let mut end = serde_json::json!({"status": b.status});
            if b.status == "error" {
                end["reason"] = serde_json::json!({"message": b.reason, "step": b.reason_step});
            }
            let _ = tx.send(line(end)).await;
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }));
    ([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn alias(State(state): State<ApiState>, Path(alias): Path<String>) -> Response {
    let name = alias.strip_suffix(":default").unwrap_or(&alias);
    match state.lifecycle.node().templates().await {
        Ok(list) => match list.iter().find(|t| t.template_id == name || t.aliases.iter().any(|a| a == name)) {
            Some(t) => Json(serde_json::json!({"templateID": t.template_id, "public": false})).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("template '{alias}' not found")),
        },
        Err(e) => internal(e),
    }
}

async fn delete_template(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    if id == "base" {
        return error(StatusCode::BAD_REQUEST, "the base template cannot be deleted");
    }
    if !valid_name(&id) {
        return error(StatusCode::NOT_FOUND, format!("template '{id}' not found"));
    }
    let on_node = match state.lifecycle.node().delete_template(&id).await {
        Ok(b) => b,
        Err(crate::node::NodeError::Invalid(_)) => false,
        Err(e) => return internal(e),
    };
    let in_store = match state.lifecycle.store().delete_template_record(&id).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    if on_node || in_store { StatusCode::NO_CONTENT.into_response() } else { error(StatusCode::NOT_FOUND, format!("template '{id}' not found")) }
}
