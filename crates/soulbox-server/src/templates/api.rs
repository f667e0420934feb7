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
//! - tags: `POST /templates/tags` `{target: "name:tag", tags}` → 201 `{buildID, tags}`, `DELETE /templates/tags`
//!   `{name, tags}` → 204, `GET /templates/{id}/tags` → 200 `[{tag, buildID, createdAt}]`
//!
//! Tags: every successful build is registered on the node as its own runtime template `sbb-<buildID>`; the store
//! maps `(template, tag)` → build, and the `default` tag is also the runtime template `<name>` (a copy of the
//! build's metadata: same layers), so `Sandbox.create("name")` needs no lookup.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, mpsc};

use super::access::{self, own_build, own_template, template_not_found};
use super::build_log::{self, BoundedLog, Line};
use super::uploads::{Stored, UploadError, Uploads};
use super::{BuildJob, LogLevel, LogSink, Recipe, sha256_hex};
use crate::api::{ApiState, error};
use crate::lifecycle::LifecycleError;
use crate::store::{BuildLogRecord, Caller, Store, now_ms};
use crate::names::{build_template_name, is_internal_template, is_valid_files_hash, is_valid_tag, is_valid_template_name, split_tag};
use crate::time::rfc3339;

/// Defaults of E2B's build request.
const DEFAULT_CPU: i32 = 2;
const DEFAULT_MEMORY_MB: i32 = 1024;
/// Largest upload of a COPY context (`[http] max_upload_mb`), set on the router by `server::app_with`.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimit(pub u64);

impl Default for UploadLimit {
    fn default() -> Self {
        UploadLimit(crate::serve::HttpSettings::default().max_upload_bytes)
    }
}

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
        .route("/templates/tags", post(assign_tags).delete(remove_tags))
        .route("/templates/{id}/tags", get(list_tags))
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

/// Binds an upload URL to the team, template and hash it was issued for.
fn upload_token(team_id: &str, template: &str, hash: &str) -> String {
    sha256_hex(format!("{}:{team_id}:{template}:{hash}", *UPLOAD_SECRET).as_bytes())
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "template request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
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
    /// Deprecated in E2B; the key decides the team, so another team's id is refused.
    #[serde(rename = "teamID")]
    team_id: Option<String>,
}

async fn request_build(State(state): State<ApiState>, Extension(caller): Extension<Caller>, body: axum::body::Bytes) -> Response {
    let req: BuildRequestV3 = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if let Some(refused) = access::foreign_team_id(&caller, req.team_id.as_deref()) {
        return refused;
    }
    let Some(full) = req.name.or(req.alias) else { return error(StatusCode::BAD_REQUEST, "name is required") };
    let name = full.split_once(':').map_or(full.as_str(), |(n, _)| n).to_string();
    if !is_valid_template_name(&name) {
        return error(StatusCode::BAD_REQUEST, format!("invalid template name '{name}': use letters, digits, '-', '_' and '.'"));
    }
    // The tag in the name plus `tags`; `default` when neither names one.
    let mut tags: Vec<String> = full.split_once(':').map(|(_, t)| t.to_string()).into_iter().chain(req.tags).collect();
    if tags.is_empty() {
        tags.push("default".into());
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    if let Some(bad) = tags.iter().find(|t| !is_valid_tag(t)) {
        return error(StatusCode::BAD_REQUEST, format!("invalid tag '{bad}': use letters, digits, '-', '_' and '.'"));
    }
    let cpu = req.cpu_count.unwrap_or(DEFAULT_CPU);
    let mem = req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(1..=64).contains(&cpu) || !(128..=65536).contains(&mem) {
        return error(StatusCode::BAD_REQUEST, "cpuCount must be 1..64 and memoryMB 128..65536");
    }
    if let Err(r) = access::check_not_a_server_template(&state, &name).await {
        return r;
    }
    let build_id = crate::ids::uuid_like();
    if let Err(e) = state.lifecycle.store().create_template_build(&caller.team_id, &name, &build_id, cpu, mem, &tags).await {
        return LifecycleError::from(e).into_response();
    }
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).insert(build_id.clone(), broadcast::channel(4096).0);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "templateID": name, "buildID": build_id, "public": false,
            "names": [name], "tags": tags, "aliases": [name],
        })),
    )
        .into_response()
}


async fn file_link(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, hash)): Path<(String, String)>,
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
    if Uploads::new(access::team_files_dir(&dir, &caller.team_id)).present(&id, &hash) {
        return (StatusCode::CREATED, Json(serde_json::json!({"present": true}))).into_response();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let url = format!(
        "http://{host}/templates/{}/files/{hash}?token={}",
        percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC),
        upload_token(&caller.team_id, &id, &hash)
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
    let ok = !team.is_empty() && q.token.as_deref().is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes())));
    if !ok || !is_valid_files_hash(&hash) || !is_valid_template_name(&id) {
        return error(StatusCode::FORBIDDEN, "invalid upload token");
    }
    let max = limit.map(|l| l.0).unwrap_or_default().0;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("upload of {n} bytes is over the limit of {max} bytes"));
    }
    let Some(dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    match Uploads::new(access::team_files_dir(&dir, &team)).store(&id, &hash, body, max).await {
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

async fn start_build(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, build)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut recipe: Recipe = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let store = state.lifecycle.store().clone();
    let record = match own_build(&state, &caller, &id, &build).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // `fromTemplate: "name:tag"` builds on that tag's build (of a template the team may see).
    let mut tag_build = None;
    if let Some((base, tag)) = recipe.from_template.clone().as_deref().and_then(|f| f.split_once(':')).filter(|(_, t)| *t != "default") {
        let base_not_found = || error(StatusCode::BAD_REQUEST, format!("base template '{base}:{tag}' not found"));
        match state.lifecycle.template_visible(&caller.team_id, base).await {
            Ok(true) => {}
            Ok(false) => return base_not_found(),
            Err(e) => return e.into_response(),
        }
        match store.tag_build(base, tag).await {
            Ok(Some(b)) => {
                recipe.from_template = Some(build_template_name(&b));
                tag_build = recipe.from_template.clone();
            }
            Ok(None) => return base_not_found(),
            Err(e) => return internal(e),
        }
    }
    let base_access = match access::base_access(&state, &caller, tag_build).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    // Before any check below touches uploads a running build may be using.
    if record.status != "waiting" {
        return error(StatusCode::CONFLICT, format!("build '{build}' was already started"));
    }
    let Some(files_dir) = state.lifecycle.node().template_files_dir() else {
        return error(StatusCode::NOT_IMPLEMENTED, "this node cannot build templates");
    };
    // A base the caller may not use (a host path outside the config's allowed dirs), or uploaded files that are
    // not what their hash says, are refused now, with nothing started or registered: the build stays `waiting`
    // and can be started again.
    if let Err(m) = state.lifecycle.node().check_recipe(&recipe) {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let uploads = Uploads::new(access::team_files_dir(&files_dir, &caller.team_id));
    if let Err(m) = uploads.verify_recipe(&id, &recipe).await {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let files_dir = uploads.dir(&id);
    let recipe_json = serde_json::to_string(&recipe).unwrap_or_default();
    match store.start_build(&build, &recipe_json, &state.lifecycle.config().team_limits).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::CONFLICT, format!("build '{build}' was already started")),
        Err(e) => return LifecycleError::from(e).into_response(),
    }
    let job = BuildJob {
        template_name: build_template_name(&build),
        build_id: build,
        recipe,
        cpu_count: record.cpu_count as u32,
        memory_mb: record.memory_mb as u32,
        files_dir,
        timeout: build_timeout(),
        base_access,
    };
    tokio::spawn(run_build(state, job, id, record.tags));
    StatusCode::ACCEPTED.into_response()
}

/// Longest failure reason stored with a build (it quotes the failed step's last output lines).
const MAX_REASON_BYTES: usize = 16 * 1024;

/// Runs a build: the node builds, its lines are stored (batched) and broadcast, then the status is final.
async fn run_build(state: ApiState, job: BuildJob, template: String, tags: Vec<String>) {
    let store = state.lifecycle.store().clone();
    let build_id = job.build_id.clone();
    let sender = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(build_id.clone())
        .or_insert_with(|| broadcast::channel(4096).0)
        .clone();
    let (tx, rx) = mpsc::unbounded_channel::<Line>();
    let writer = tokio::spawn(write_logs(store.clone(), build_id.clone(), rx, sender.clone()));
    // What is stored is bounded (build_log.rs), and so is what waits in the channel for the writer.
    let bounded = Arc::new(Mutex::new(BoundedLog::new(build_log::Limits::default())));
    let (sink_tx, sink_log) = (tx.clone(), bounded.clone());
    let log: LogSink = Arc::new(move |level, message, step| {
        let lines = sink_log.lock().unwrap_or_else(|e| e.into_inner()).push(Line { unix_ms: now_ms(), level, message, step });
        for line in lines {
            let _ = sink_tx.send(line);
        }
    });
    log(LogLevel::Info, format!("Building template '{template}' (build {build_id})"), Some("base".into()));
    let started = std::time::Instant::now();
    let mut result = state.lifecycle.node().build_template(job, log.clone()).await;
    if result.is_ok() {
        result = point_tags(&state, &template, &build_id, &tags).await.map_err(|m| super::BuildFailure::new(m, Some("finalize")));
        if result.is_ok() {
            log(LogLevel::Info, format!("Tags {} of '{template}' point at this build", tags.join(", ")), Some("finalize".into()));
        }
    }
    match &result {
        Ok(()) => log(LogLevel::Info, format!("Build finished in {:.1} s", started.elapsed().as_secs_f64()), Some("finalize".into())),
        Err(f) => log(LogLevel::Error, format!("Build failed: {}", f.message), f.step.clone()),
    }
    drop(log);
    for line in bounded.lock().unwrap_or_else(|e| e.into_inner()).finish(now_ms()) {
        let _ = tx.send(line);
    }
    drop(tx);
    let _ = writer.await;
    let reason = result.as_ref().err().map(|f| build_log::cut_line(f.message.clone(), MAX_REASON_BYTES));
    let (status, step) = match &result {
        Ok(()) => ("ready", None),
        Err(f) => ("error", f.step.as_deref()),
    };
    if let Err(e) = store.finish_build(&build_id, status, reason.as_deref(), step).await {
        tracing::error!(build = %build_id, error = %e, "could not record the end of a build");
    }
    tracing::info!(template = %template, build = %build_id, status, "template build finished");
    let _ = sender.send(StreamItem::End);
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&build_id);
}

/// Points `tags` of `template` at a successful build; the `default` tag also becomes the runtime template `<name>`.
async fn point_tags(state: &ApiState, template: &str, build_id: &str, tags: &[String]) -> Result<(), String> {
    if tags.iter().any(|t| t == "default") {
        state.lifecycle.node().copy_template(&build_template_name(build_id), template).await.map_err(|e| format!("registering '{template}': {e}"))?;
    }
    state.lifecycle.store().set_tags(template, build_id, tags).await.map_err(|e| format!("storing the tags: {e}"))
}

async fn write_logs(store: Store, build_id: String, mut rx: mpsc::UnboundedReceiver<Line>, sender: broadcast::Sender<StreamItem>) {
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

async fn build_status(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, build)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let store = state.lifecycle.store();
    let record = match own_build(&state, &caller, &id, &build).await {
        Ok(b) => b,
        Err(r) => return r,
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
async fn stream_logs(State(state): State<ApiState>, Extension(caller): Extension<Caller>, Path((id, build)): Path<(String, String)>) -> Response {
    let store = state.lifecycle.store().clone();
    if let Err(r) = own_build(&state, &caller, &id, &build).await {
        return r;
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

async fn alias(State(state): State<ApiState>, Extension(caller): Extension<Caller>, Path(alias): Path<String>) -> Response {
    let (name, tag) = split_tag(&alias);
    let found = || Json(serde_json::json!({"templateID": name, "public": false})).into_response();
    let store = state.lifecycle.store();
    // Another team's template is not confirmed to exist; the server's own are public.
    match state.lifecycle.template_visible(&caller.team_id, name).await {
        Ok(true) => {}
        Ok(false) => return template_not_found(&alias),
        Err(e) => return e.into_response(),
    }
    // A built template with that tag, or with any tag for a plain name (also one built only under other tags
    // than `default`); a template whose builds all failed has none.
    if alias.contains(':') && tag != "default" {
        return match store.tag_build(name, tag).await {
            Ok(Some(_)) => found(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("template '{alias}' not found")),
            Err(e) => internal(e),
        };
    }
    match store.tags(name).await {
        Ok(tags) if !tags.is_empty() => return found(),
        Ok(_) => {}
        Err(e) => return internal(e),
    }
    if is_internal_template(name) {
        return error(StatusCode::NOT_FOUND, format!("template '{alias}' not found"));
    }
    match state.lifecycle.node().templates().await {
        Ok(list) => match list.iter().find(|t| t.template_id == name || t.aliases.iter().any(|a| a == name)) {
            Some(t) => Json(serde_json::json!({"templateID": t.template_id, "public": true})).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("template '{alias}' not found")),
        },
        Err(e) => internal(e),
    }
}

async fn delete_template(State(state): State<ApiState>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    if id == "base" {
        return error(StatusCode::BAD_REQUEST, "the base template cannot be deleted");
    }
    if !is_valid_template_name(&id) {
        return error(StatusCode::NOT_FOUND, format!("template '{id}' not found"));
    }
    // A team deletes its own templates; a server template (no record, public) only the admin.
    match state.lifecycle.store().get_template_record(&id).await {
        Ok(Some(r)) if r.team_id == caller.team_id => {}
        Ok(Some(_)) => return template_not_found(&id),
        Ok(None) if caller.is_admin() => {}
        Ok(None) => match state.lifecycle.node().templates().await {
            Ok(list) if list.iter().any(|t| t.template_id == id) => {
                return error(StatusCode::FORBIDDEN, format!("template '{id}' is a server template: only an admin key may delete it"));
            }
            Ok(_) => return template_not_found(&id),
            Err(e) => return internal(e),
        },
        Err(e) => return internal(e),
    }
    let on_node = match state.lifecycle.node().delete_template(&id).await {
        Ok(b) => b,
        Err(crate::node::NodeError::Invalid(_)) => false,
        Err(e) => return internal(e),
    };
    // Every build of it is a runtime template too (what its tags point at).
    let builds = match state.lifecycle.store().ready_build_ids(&id).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    for b in builds {
        if let Err(e) = state.lifecycle.node().delete_template(&build_template_name(&b)).await {
            tracing::warn!(template = %id, build = %b, error = %e, "could not delete a build's runtime template");
        }
    }
    let in_store = match state.lifecycle.store().delete_template_record(&id).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    if let Some(dir) = state.lifecycle.node().template_files_dir() {
        Uploads::new(access::team_files_dir(&dir, &caller.team_id)).remove_template(&id).await;
    }
    if on_node || in_store { StatusCode::NO_CONTENT.into_response() } else { error(StatusCode::NOT_FOUND, format!("template '{id}' not found")) }
}

#[derive(Deserialize)]
struct AssignTags {
    target: String,
    tags: Vec<String>,
}

/// `POST /templates/tags`: points `tags` at the build `target` (`name:tag`, `name` = `name:default`) names.
async fn assign_tags(State(state): State<ApiState>, Extension(caller): Extension<Caller>, body: axum::body::Bytes) -> Response {
    let req: AssignTags = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if req.tags.is_empty() {
        return error(StatusCode::BAD_REQUEST, "tags must not be empty");
    }
    if let Some(bad) = req.tags.iter().find(|t| !is_valid_tag(t)) {
        return error(StatusCode::BAD_REQUEST, format!("invalid tag '{bad}': use letters, digits, '-', '_' and '.'"));
    }
    let (name, tag) = split_tag(&req.target);
    if own_template(&state, &caller, name).await.is_err() {
        return template_not_found(&req.target);
    }
    let build = match state.lifecycle.store().tag_build(name, tag).await {
        Ok(Some(b)) => b,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("template '{}' not found", req.target)),
        Err(e) => return internal(e),
    };
    if let Err(m) = point_tags(&state, name, &build, &req.tags).await {
        return internal(m);
    }
    (StatusCode::CREATED, Json(serde_json::json!({"buildID": build, "tags": req.tags}))).into_response()
}

#[derive(Deserialize)]
struct RemoveTags {
    name: String,
    tags: Vec<String>,
}

/// `DELETE /templates/tags`: removes tags; removing `default` also removes the runtime template `<name>`.
async fn remove_tags(State(state): State<ApiState>, Extension(caller): Extension<Caller>, body: axum::body::Bytes) -> Response {
    let req: RemoveTags = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let name = split_tag(&req.name).0;
    if let Err(r) = own_template(&state, &caller, name).await {
        return r;
    }
    if let Err(e) = state.lifecycle.store().remove_tags(name, &req.tags).await {
        return internal(e);
    }
    if req.tags.iter().any(|t| t == "default")
        && let Err(e) = state.lifecycle.node().delete_template(name).await
    {
        return internal(e);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /templates/{id}/tags` → `[{tag, buildID, createdAt}]`.
async fn list_tags(State(state): State<ApiState>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let store = state.lifecycle.store();
    if let Err(r) = own_template(&state, &caller, &id).await {
        return r;
    }
    match store.tags(&id).await {
        Ok(tags) => Json(
            tags.iter()
                .map(|t| serde_json::json!({"tag": t.tag, "buildID": t.build_id, "createdAt": rfc3339(t.created_at_ms)}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Tags over the API with a node that "builds" by registering templates in memory (the harness is shared
    //! with `access_tests.rs`).

    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    use async_trait::async_trait;
    use http::Request;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::lifecycle::{Lifecycle, LifecycleConfig};
    use crate::node::*;

    #[derive(Default)]
    pub(crate) struct BuildingNode {
        pub(crate) templates: Mutex<BTreeMap<String, TemplateInfo>>,
        pub(crate) created_from: Mutex<Vec<String>>,
        /// Where uploads go (default: the system temp dir).
        pub(crate) files_dir: Option<std::path::PathBuf>,
    }

    fn info(name: &str, cpu: u32) -> TemplateInfo {
        TemplateInfo {
            template_id: name.into(),
            aliases: vec![name.into()],
            cpu_count: cpu,
            memory_mb: 512,
            disk_size_mb: 0,
            envd_version: "0.6.13".into(),
        }
    }

    #[async_trait]
    impl Node for BuildingNode {
        async fn info(&self) -> NodeInfo {
            crate::testing::FakeNode::default().info().await
        }
        async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
            let mut all = vec![info("base", 2)];
            all.extend(self.templates.lock().unwrap().values().cloned());
            Ok(all)
        }
        async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
            let mut created = self.created_from.lock().unwrap();
            created.push(spec.template_id);
            Ok(CreatedSandbox { sandbox_id: format!("t{}", created.len()), address: IpAddr::V4(Ipv4Addr::LOCALHOST) })
        }
        async fn pause(&self, _: &str, _: bool) -> Result<(), NodeError> {
            Ok(())
        }
        async fn resume(&self, _: &str) -> Result<IpAddr, NodeError> {
            Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        async fn kill(&self, _: &str) -> Result<(), NodeError> {
            Ok(())
        }
        async fn stats(&self, _: &str) -> Result<SandboxStats, NodeError> {
            Err(NodeError::Failed("no stats".into()))
        }
        async fn logs(&self, _: &str, _: LogQuery) -> Result<Vec<LogLine>, NodeError> {
            Ok(vec![])
        }
        /// The build's cpu count marks which build a template came from.
        async fn build_template(&self, job: BuildJob, log: LogSink) -> Result<(), super::super::BuildFailure> {
            log(LogLevel::Info, format!("[1/1] building {}", job.template_name), Some("1".into()));
            self.templates.lock().unwrap().insert(job.template_name.clone(), info(&job.template_name, job.cpu_count));
            Ok(())
        }
        async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
            Ok(self.templates.lock().unwrap().remove(name).is_some())
        }
        async fn copy_template(&self, from: &str, to: &str) -> Result<(), NodeError> {
            let mut t = self.templates.lock().unwrap();
            let mut copy = t.get(from).cloned().ok_or_else(|| NodeError::TemplateNotFound(from.into()))?;
            copy.template_id = to.into();
            copy.aliases = vec![to.into()];
            t.insert(to.into(), copy);
            Ok(())
        }
        fn template_files_dir(&self) -> Option<std::path::PathBuf> {
            Some(self.files_dir.clone().unwrap_or_else(std::env::temp_dir))
        }
    }

    pub(crate) struct Harness {
        app: axum::Router,
        pub(crate) key: String,
        /// A member key of another team.
        pub(crate) key_b: String,
        pub(crate) node: Arc<BuildingNode>,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        pub(crate) async fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
            let (_, key) = store.create_api_key("test").await.unwrap();
            let (_, key_b) = store.create_api_key_in("b", "other", crate::store::Role::Member).await.unwrap();
            let node = Arc::new(BuildingNode { files_dir: Some(dir.path().join("uploads")), ..Default::default() });
            let lifecycle = Lifecycle::start(store, node.clone(), LifecycleConfig::default()).await.unwrap();
            let state = ApiState {
                lifecycle,
                metrics: Arc::new(crate::metrics::MetricsStore::default()),
                domain: None,
                started: std::time::Instant::now(),
            };
            Harness { app: crate::api::router(state), key: key.secret, key_b: key_b.secret, node, _dir: dir }
        }

        pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
            self.call_as(&self.key, method, path, body).await
        }

        pub(crate) async fn call_as(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .header("x-api-key", key)
                .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
                .unwrap();
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
        }

        /// Requests and runs a build; the live stream ends with the build, so reading it to the end waits for it.
        pub(crate) async fn build(&self, name: &str, tags: &[&str], cpu: i32) -> (String, Value) {
            let (status, req) = self.call("POST", "/v3/templates", Some(json!({"name": name, "tags": tags, "cpuCount": cpu}))).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{req}");
            let (id, build) = (req["templateID"].as_str().unwrap().to_string(), req["buildID"].as_str().unwrap().to_string());
            let (status, _) = self.call("POST", &format!("/v2/templates/{id}/builds/{build}"), Some(json!({"fromTemplate": "base"}))).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            let (status, log) = self.call("GET", &format!("/templates/{id}/builds/{build}/logs/stream"), None).await;
            assert_eq!(status, StatusCode::OK);
            let last = log.as_str().unwrap().lines().last().unwrap().to_string();
            assert_eq!(serde_json::from_str::<Value>(&last).unwrap()["status"], "ready", "{log}");
            (build, req)
        }

        pub(crate) async fn create_from(&self, template: &str) -> (StatusCode, Option<String>) {
            let (status, body) = self.call("POST", "/v2/sandboxes", Some(json!({"templateID": template}))).await;
            (status, (status == StatusCode::CREATED).then(|| self.node.created_from.lock().unwrap().last().cloned().unwrap()).inspect(|_| {
                assert!(body["sandboxID"].is_string());
            }))
        }
    }

    #[tokio::test]
    async fn tags_point_names_at_builds() {
        let h = Harness::new().await;
        // `name:tag` plus `tags`: the build gets both, not `default`.
        let (b1, req) = h.build("app:v1", &["stable"], 1).await;
        assert_eq!(req["tags"], json!(["v1", "stable"]));
        assert_eq!(h.create_from("app:v1").await, (StatusCode::CREATED, Some(build_template_name(&b1))));
        assert_eq!(h.create_from("app:stable").await.1, Some(build_template_name(&b1)));
        assert_eq!(h.create_from("app").await.0, StatusCode::NOT_FOUND, "no default tag yet");
        assert_eq!(h.call("GET", "/templates/aliases/app:v1", None).await.0, StatusCode::OK);
        assert_eq!(h.call("GET", "/templates/aliases/app:nope", None).await.0, StatusCode::NOT_FOUND);

        // A plain name is the `default` tag: the runtime template `app` is that build.
        let (b2, req) = h.build("app", &[], 3).await;
        assert_eq!(req["tags"], json!(["default"]));
        assert_eq!(h.create_from("app").await.1.as_deref(), Some("app"));
        assert_eq!(h.node.templates.lock().unwrap()["app"].cpu_count, 3);

        let (status, tags) = h.call("GET", "/templates/app/tags", None).await;
        assert_eq!(status, StatusCode::OK);
        let pairs: Vec<(String, String)> = tags
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                assert!(t["createdAt"].as_str().is_some_and(|c| c.ends_with('Z')), "{t}");
                (t["tag"].as_str().unwrap().into(), t["buildID"].as_str().unwrap().into())
            })
            .collect();
        assert_eq!(pairs, [("default".into(), b2.clone()), ("stable".into(), b1.clone()), ("v1".into(), b1.clone())]);

        // Assign: new tags on v1's build; `default` moves and re-registers `app` as that build.
        let (status, body) = h.call("POST", "/templates/tags", Some(json!({"target": "app:v1", "tags": ["prod", "default"]}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body, json!({"buildID": b1, "tags": ["prod", "default"]}));
        assert_eq!(h.create_from("app:prod").await.1, Some(build_template_name(&b1)));
        assert_eq!(h.node.templates.lock().unwrap()["app"].cpu_count, 1, "`app` is now build 1");
        let (status, _) = h.call("POST", "/templates/tags", Some(json!({"target": "app:nope", "tags": ["x"]}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = h.call("POST", "/templates/tags", Some(json!({"target": "app:v1", "tags": ["bad tag"]}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Remove: the tag no longer resolves; removing `default` removes `app` as a startable name.
        let (status, _) = h.call("DELETE", "/templates/tags", Some(json!({"name": "app", "tags": ["prod", "default"]}))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(h.create_from("app:prod").await.0, StatusCode::NOT_FOUND);
        assert_eq!(h.create_from("app").await.0, StatusCode::NOT_FOUND);
        assert_eq!(h.create_from("app:v1").await.0, StatusCode::CREATED, "other tags stay");
        let (status, _) = h.call("DELETE", "/templates/tags", Some(json!({"name": "nope", "tags": ["v1"]}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h.call("GET", "/templates/nope/tags", None).await.0, StatusCode::NOT_FOUND);

        // Build runtime templates are not listed; deleting the template removes every build of it.
        let (_, list) = h.call("GET", "/templates", None).await;
        assert!(list.as_array().unwrap().iter().all(|t| !t["templateID"].as_str().unwrap().starts_with("sbb-")), "{list}");
        assert_eq!(h.call("DELETE", "/templates/app", None).await.0, StatusCode::NO_CONTENT);
        assert!(h.node.templates.lock().unwrap().is_empty(), "{:?}", h.node.templates.lock().unwrap().keys());
        assert_eq!(h.call("GET", "/templates/app/tags", None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(h.call("POST", "/v3/templates", Some(json!({"name": "sbb-x"}))).await.0, StatusCode::BAD_REQUEST);
    }
}
