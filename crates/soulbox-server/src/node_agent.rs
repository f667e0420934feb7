//! `soulbox node`: the node agent. It owns the runtime on its host (the same [`LocalNode`] a one-machine server
//! runs in-process), serves the node API and a header-routed sandbox proxy on one port — both only for callers
//! presenting the node's secret — and registers and heartbeats with the control plane.
//!
//! The secret (see [`crate::node_identity`]) is handed to the control plane inside the heartbeat, which is itself
//! authenticated with the cluster's node token: the token lets a node join, the secret lets the control plane in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use soulbox_protocol::ENVD_PORT;
use subtle::ConstantTimeEq;

use crate::api::volume_ops::ContentRequest;
use crate::cluster::wire::{
    AddressResponse, DeletedResponse, ErrorBody, HEARTBEAT_PATH, HOST_HEADER, HeartbeatRequest, HeartbeatResponse,
    LayerList, NODE_API_PREFIX, PauseRequest, SECRET_HEADER, SnapshotRequest,
};
use crate::local_node::LocalNode;
use crate::node::{LogQuery, NetworkPolicy, Node, NodeError, NodeInfo, NodeStatus, SandboxSpec};
use crate::proxy::{self, Upstream};
use crate::stream_cut::StreamCuts;

/// A sandbox created less recently than this is reported in heartbeats (younger ones may not be recorded by the
/// control plane yet, and would look unknown to it).
const REPORT_AFTER: Duration = Duration::from_secs(15);
/// How long a starting node agent waits for its control plane to answer (it needs the egress CA to start).
const EGRESS_CA_PATIENCE: Duration = Duration::from_secs(120);
/// A runtime error keeps the node Degraded this long.
const TROUBLE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: String,
    /// Control plane URL (any API replica).
    pub server_url: String,
    /// The cluster's node token.
    pub token: String,
    pub listen: SocketAddr,
    /// Where the control plane reaches this agent (default `http://<listen>`).
    pub advertise_url: String,
    pub region: String,
    pub heartbeat_interval: Duration,
}

pub struct Agent {
    node: LocalNode,
    config: AgentConfig,
    secret: String,
    /// Cancelled when a sandbox stops serving here (kill, pause): the agent's proxy cuts its open streams.
    streams: StreamCuts,
    created: Mutex<HashMap<String, Instant>>,
    last_error: Mutex<Option<(Instant, String)>>,
    client: crate::upstream::UpstreamClient,
}

impl Agent {
    pub fn new(node: LocalNode, config: AgentConfig, secret: String) -> Arc<Agent> {
        Arc::new(Agent {
            node,
            config,
            secret,
            streams: StreamCuts::default(),
            created: Mutex::default(),
            last_error: Mutex::default(),
            client: proxy::http_client(),
        })
    }

    pub fn local_node(&self) -> &LocalNode {
        &self.node
    }

    fn note<T>(&self, result: Result<T, NodeError>) -> Result<T, NodeError> {
        if let Err(NodeError::Failed(message)) = &result {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), message.clone()));
        }
        result
    }

    /// The runtime's own report plus the agent's: recent runtime errors make the node Degraded.
    pub async fn info(&self) -> NodeInfo {
        let mut info = self.node.info().await;
        info.region = self.config.region.clone();
        let recent_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|(at, _)| at.elapsed() < TROUBLE_WINDOW)
            .map(|(at, m)| format!("runtime error {} s ago: {m}", at.elapsed().as_secs()));
        info.trouble = match (info.trouble.take(), recent_error) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        if info.trouble.is_some() {
            info.status = NodeStatus::Degraded;
        }
        info
    }

    /// Sandboxes the control plane should know about (see [`REPORT_AFTER`]).
    async fn reportable_sandboxes(&self) -> Vec<String> {
        use soulbox_runtime::Status;
        let created: std::collections::HashSet<String> = {
            let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
            created.retain(|_, at| at.elapsed() < REPORT_AFTER);
            created.keys().cloned().collect()
        };
        self.node
            .runtime()
            .list()
            .await
            .into_iter()
            .filter(|s| matches!(s.status, Status::Running | Status::Paused | Status::Stopped))
            .filter(|s| !created.contains(&s.id))
            .map(|s| s.id)
            .collect()
    }

    /// One heartbeat: report, then kill what the control plane no longer knows.
    async fn heartbeat(&self, http: &reqwest::Client) -> Result<NodeStatus, String> {
        let body = HeartbeatRequest {
            address: self.config.advertise_url.clone(),
            secret: self.secret.clone(),
            info: self.info().await,
            sandboxes: self.reportable_sandboxes().await,
        };
        let url = format!("{}{HEARTBEAT_PATH}", self.config.server_url.trim_end_matches('/'));
        let response = http
            .post(&url)
            .bearer_auth(&self.config.token)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(format!("{url} answered {status}: {}", response.text().await.unwrap_or_default()));
        }
        let answer: HeartbeatResponse = response.json().await.map_err(|e| format!("{url}: {e}"))?;
        for id in &answer.kill {
            tracing::info!(sandbox = %id, "reconcile: the control plane no longer knows this sandbox, killing it");
            self.streams.cut(id);
            if let Err(e) = self.note(self.node.kill(id).await) {
                tracing::warn!(sandbox = %id, error = %e, "reconcile: kill failed");
            }
        }
        Ok(answer.status)
    }
}

/// Heartbeats forever (first one at once). Failures are logged and retried at the next beat.
pub async fn heartbeat_loop(agent: Arc<Agent>) {
    let http = crate::cluster::remote::RemoteNode::http_client();
    let mut tick = tokio::time::interval(agent.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Result<NodeStatus, String>> = None;
    loop {
        tick.tick().await;
        let result = agent.heartbeat(&http).await;
        let changed = match (&last, &result) {
            (Some(Ok(a)), Ok(b)) => a != b,
            (Some(Err(_)), Err(_)) => false,
            _ => true,
        };
        if changed {
            match &result {
                Ok(status) => {
                    tracing::info!(node = %agent.config.node_id, status = status.as_str(), "heartbeat accepted")
                }
                Err(e) => tracing::warn!(node = %agent.config.node_id, error = %e, "heartbeat failed; retrying"),
            }
        }
        last = Some(result);
    }
}

/// The agent's HTTP surface: the node API under `/node/v1`, and sandbox traffic routed by `E2b-Sandbox-Id`.
pub fn router(agent: Arc<Agent>) -> axum::Router {
    let api = axum::Router::new()
        .route("/info", get(info))
        .route("/templates", get(templates))
        .route("/templates/{name}", get(export_template).put(import_template).delete(delete_template))
        .route("/layers/missing", post(missing_layers))
        .route("/layers/{digest}", get(export_layer).put(import_layer))
        .route("/sandboxes", post(create))
        .route("/sandboxes/{id}", axum::routing::delete(kill))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/network", axum::routing::put(update_network))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/snapshot", post(snapshot))
        .route("/sandboxes/{id}/stats", get(stats))
        .route("/sandboxes/{id}/logs", get(logs))
        .route("/volumes/{id}", axum::routing::put(create_volume).delete(delete_volume))
        .route("/volumes/{id}/{kind}", axum::routing::any(volume_content));
    axum::Router::new()
        .nest(NODE_API_PREFIX, api)
        .fallback(proxy_traffic)
        .layer(axum::middleware::from_fn_with_state(agent.clone(), require_secret))
        // The control plane's request id (its node client and proxy send it) names this node's lines too.
        .layer(axum::middleware::from_fn(crate::access_log::log_requests))
        .with_state(agent)
}

async fn require_secret(State(agent): State<Arc<Agent>>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !bool::from(presented.ct_eq(agent.secret.as_bytes())) {
        return crate::reply::error(
            StatusCode::UNAUTHORIZED,
            "this is a SoulBox node agent: only its control plane may call it",
        );
    }
    next.run(request).await
}

fn node_error(e: NodeError) -> Response {
    let (status, body) = ErrorBody::from_error(&e);
    (status, Json(body)).into_response()
}

fn respond<T: serde::Serialize>(result: Result<T, NodeError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => node_error(e),
    }
}

async fn info(State(agent): State<Arc<Agent>>) -> Response {
    Json(agent.info().await).into_response()
}

async fn templates(State(agent): State<Arc<Agent>>) -> Response {
    respond(agent.node.templates().await)
}

async fn create(State(agent): State<Arc<Agent>>, Json(spec): Json<SandboxSpec>) -> Response {
    let result = agent.note(agent.node.create(spec).await);
    if let Ok(created) = &result {
        agent.created.lock().unwrap_or_else(|p| p.into_inner()).insert(created.sandbox_id.clone(), Instant::now());
        tracing::info!(sandbox = %created.sandbox_id, "sandbox created");
    }
    respond(result)
}

async fn kill(State(agent): State<Arc<Agent>>, Path(id): Path<String>) -> Response {
    agent.streams.cut(&id);
    match agent.note(agent.node.kill(&id).await) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn pause(State(agent): State<Arc<Agent>>, Path(id): Path<String>, Json(req): Json<PauseRequest>) -> Response {
    agent.streams.cut(&id);
    match agent.note(agent.node.pause(&id, req.keep_memory).await) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn update_network(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    Json(policy): Json<NetworkPolicy>,
) -> Response {
    match agent.note(agent.node.update_network(&id, &policy).await) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn delete_template(State(agent): State<Arc<Agent>>, Path(name): Path<String>) -> Response {
    respond(agent.note(agent.node.delete_template(&name).await).map(|deleted| DeletedResponse { deleted }))
}

async fn snapshot(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    Json(req): Json<SnapshotRequest>,
) -> Response {
    respond(agent.note(agent.node.snapshot(&id, &req.name).await))
}

async fn export_template(State(agent): State<Arc<Agent>>, Path(name): Path<String>) -> Response {
    respond(agent.node.export_template(&name).await)
}

async fn import_template(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    Json(template): Json<crate::node::TemplateMeta>,
) -> Response {
    if template.name != name {
        return node_error(NodeError::Invalid(format!(
            "the template in the body is {:?}, not {name:?}",
            template.name
        )));
    }
    match agent.note(agent.node.import_template(template).await) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn missing_layers(State(agent): State<Arc<Agent>>, Json(list): Json<LayerList>) -> Response {
    respond(agent.node.missing_layers(&list.layers).await.map(|layers| LayerList { layers }))
}

async fn export_layer(State(agent): State<Arc<Agent>>, Path(digest): Path<String>) -> Response {
    match agent.node.export_layer(&digest).await {
        Ok(stream) => axum::body::Body::from_stream(stream).into_response(),
        Err(e) => node_error(e),
    }
}

/// The body streams into the store as it arrives (no body limit: the node secret is the gate).
async fn import_layer(State(agent): State<Arc<Agent>>, Path(digest): Path<String>, request: Request) -> Response {
    use futures::StreamExt;
    let body = request.into_body().into_data_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed();
    match agent.note(agent.node.import_layer(&digest, body).await) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn resume(State(agent): State<Arc<Agent>>, Path(id): Path<String>) -> Response {
    respond(agent.note(agent.node.resume(&id).await).map(|address| AddressResponse { address }))
}

async fn stats(State(agent): State<Arc<Agent>>, Path(id): Path<String>) -> Response {
    respond(agent.node.stats(&id).await)
}

async fn logs(State(agent): State<Arc<Agent>>, Path(id): Path<String>, Query(query): Query<LogQuery>) -> Response {
    let query = LogQuery { limit: query.limit.min(LogQuery::MAX_LIMIT), ..query };
    respond(agent.node.logs(&id, query).await)
}

async fn create_volume(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    Json(new): Json<crate::cluster::wire::NewNodeVolume>,
) -> Response {
    match agent.node.create_volume(&id, new.size_bytes).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn delete_volume(State(agent): State<Arc<Agent>>, Path(id): Path<String>) -> Response {
    match agent.node.delete_volume(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

/// The content API for a volume on this node, forwarded by the control plane once it authorised the caller
/// (`api::volume_content`): the same operations, answered in E2B's shapes.
async fn volume_content(
    State(agent): State<Arc<Agent>>,
    Path((id, kind)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let Some(files) = agent.node.volume_files() else {
        return node_error(NodeError::Invalid("this node has no volumes directory".into()));
    };
    let (parts, body) = request.into_parts();
    let size_limit = parts
        .headers
        .get(crate::cluster::wire::VOLUME_LIMIT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let request = ContentRequest { volume_id: id, kind, method: parts.method, params, size_limit, body };
    crate::api::volume_ops::serve(files, request).await
}

/// Sandbox traffic from the control plane's proxy: `E2b-Sandbox-Id` (+ `E2b-Sandbox-Port`) name the sandbox,
/// which must be running on this node.
async fn proxy_traffic(State(agent): State<Arc<Agent>>, request: Request) -> Response {
    let Some((id, port)) = crate::names::sandbox_route(request.headers()) else {
        return crate::reply::error(StatusCode::NOT_FOUND, "no such route");
    };
    // Only a running sandbox has an endpoint.
    let Some(endpoint) = agent.node.runtime().endpoint(&id) else { return proxy::not_found(&id) };
    let ip = std::net::IpAddr::V4(endpoint.ip);
    let liveness = agent.streams.token(&id);
    let envd_secret = if port == ENVD_PORT { agent.node.envd_secret(&id) } else { None };
    // The sandbox's masked host, from the control plane (the only caller this route accepts).
    let masked = request.headers().get(HOST_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let upstream = Upstream {
        authority: crate::upstream::sandbox_authority(ip, endpoint.boot, port),
        host: Some(masked.unwrap_or_else(|| std::net::SocketAddr::new(ip, port).to_string())),
        headers: http::HeaderMap::new(),
        sandbox_id: id,
        port,
        envd_secret,
    };
    proxy::forward_to(&agent.client, upstream, liveness, request).await
}

/// Runs the agent until SIGINT/SIGTERM: binds, starts heartbeating, serves. Sandboxes keep running when it stops
/// and are re-adopted by the next start (the control plane reconciles them).
pub async fn serve(
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = match crate::serve::bind(agent.config.listen) {
        Ok(listener) => listener,
        Err(e) => {
            close_runtime(&agent).await;
            return Err(anyhow::anyhow!("binding {}: {e}", agent.config.listen));
        }
    };
    let beats = tokio::spawn(heartbeat_loop(agent.clone()));
    tracing::info!(node = %agent.config.node_id, listen = %agent.config.listen, server = %agent.config.server_url, "node agent running");
    let app = router(agent.clone());
    // The same HTTP front as the server's (header-read and idle timeouts, connection cap).
    let mut http = crate::serve::HttpSettings::default();
    http.max_connections = crate::serve::raise_fd_limit_and_cap(http.max_connections);
    crate::serve::serve(listener, app, http, shutdown).await;
    beats.abort();
    close_runtime(&agent).await;
    Ok(())
}

/// The warm pool (and the firewall table, when no sandbox needs it) goes back; sandboxes keep running.
async fn close_runtime(agent: &Agent) {
    if let Err(e) = agent.node.runtime().close().await {
        tracing::warn!(error = %e, "could not release what the node runtime holds for itself");
    }
}

/// Everything `soulbox node` needs besides the agent's own settings: how to open the runtime.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub agent: AgentConfig,
    pub data_dir: std::path::PathBuf,
    /// Template store shared by several agents on one host (layers are read-only); default: the data dir.
    pub template_dir: Option<std::path::PathBuf>,
    pub runtime: String,
    /// See `crate::node_setup::RuntimeSettings::extra_runtimes`.
    pub extra_runtimes: Option<Vec<String>>,
    pub envd_path: std::path::PathBuf,
    pub warm_pool: usize,
    /// Sandboxes booted ahead (`--booted-pool`).
    pub pool: crate::config::PoolConfig,
    /// `soulbox_runtime::RuntimeConfig::pause_to_disk` (`--runsc-pause-to-disk`; the runtime uses it on runsc).
    pub pause_to_disk: bool,
    pub prefix: String,
    pub user_namespaces: bool,
    pub userns_base: Option<u32>,
    pub userns_mode: soulbox_runtime::userns::UsernsMode,
    pub network_pool: String,
    pub debian_mirror: String,
    /// allowOut may open private, link-local and metadata ranges (the runtime's firewall drops them otherwise).
    pub allow_private_egress: bool,
    /// Extra CAs the egress gateway trusts upstream (`--egress-trusted-ca`, like the control plane's setting).
    pub egress_trusted_ca: Option<std::path::PathBuf>,
    /// Persistent volumes (`--volumes-dir`) [default: `<data_dir>/volumes`]: the control plane's volumes
    /// directory, shared (NFS, CephFS) and mounted at this path (`volumes_shared = true`), or this node's own
    /// volumes (the volumes homed here).
    pub volumes_dir: Option<std::path::PathBuf>,
}

/// `soulbox node`: opens the runtime (re-adopting what runs), makes sure the `base` template exists, and serves.
pub async fn run(settings: NodeSettings) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let secret = crate::node_identity::node_secret(&settings.data_dir)?;
    // Every node signs intercepted TLS with the installation's CA (a sandbox that moves keeps trusting its gateway).
    let http = crate::cluster::remote::RemoteNode::http_client();
    let (server_url, token) = (&settings.agent.server_url, &settings.agent.token);
    let egress_ca = crate::egress_secrets::fetch_egress_ca(&http, server_url, token, EGRESS_CA_PATIENCE)
        .await
        .map_err(|e| anyhow::anyhow!("getting the installation's egress CA from the control plane: {e}"))?;
    let runtime_config = crate::node_setup::runtime_config(crate::node_setup::RuntimeSettings {
        data_dir: &settings.data_dir,
        template_dir: settings.template_dir.clone(),
        runtime: settings.runtime.clone(),
        extra_runtimes: settings.extra_runtimes.clone(),
        envd_path: &settings.envd_path,
        warm_pool: settings.warm_pool,
        pool: settings.pool.clone(),
        default_disk_mb: None,
        pause_to_disk: settings.pause_to_disk,
        prefix: settings.prefix.clone(),
        user_namespaces: settings.user_namespaces,
        userns_base: settings.userns_base,
        userns_mode: settings.userns_mode,
        network_pool: &settings.network_pool,
        allow_private_egress: settings.allow_private_egress,
        egress_ca: Some(egress_ca),
        egress_trusted_ca: settings.egress_trusted_ca.clone(),
        volumes_dir: Some(settings.volumes_dir.clone().unwrap_or_else(|| settings.data_dir.join("volumes"))),
    })?;
    let runtime = soulbox_runtime::Runtime::open(runtime_config).await.context("starting the node runtime")?;
    runtime.set_egress_secrets(Arc::new(crate::egress_secrets::RemoteSecrets {
        http,
        server_url: server_url.clone(),
        token: token.clone(),
        node_id: settings.agent.node_id.clone(),
    }));
    // The same `base` as `soulbox server`'s: the build engine's recipe (a node agent has no [templates] section,
    // and base needs no registry).
    let engine = soulbox_templates::config::TemplatesConfig::default().engine_config(&settings.debian_mirror);
    let node = LocalNode::with_engine_config(runtime, settings.agent.node_id.clone(), engine);
    eprintln!("preparing the base template (first start builds Debian 12 with mmdebstrap; later starts reuse it)");
    if let Err(e) = node.ensure_base_template().await {
        // A failed start gives back what the runtime made for itself (warm pool, firewall table).
        if let Err(e2) = node.runtime().close().await {
            tracing::warn!(error = %e2, "could not release what the node runtime holds for itself");
        }
        anyhow::bail!("building the base template: {}", e.message);
    }
    node.runtime().refill_booted();
    serve(Agent::new(node, settings.agent, secret), crate::server::shutdown_signal()).await
}
