//! `soulbox server`: one process, one port for the API and for sandbox traffic, SQLite inside, the node runtime
//! in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::templates::UploadLimit;
use crate::api::{self, ApiState};
use crate::cluster::registry::{ClusterConfig, Registry};
use crate::config::ServerConfig;
use crate::forwarded::ClientOrigin;
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::local_node::LocalNode;
use crate::metrics::{self, MetricsStore};
use crate::node_setup::{self, RuntimeSettings};
use crate::proxy::{self, Proxy};
use crate::secret_box::{self, KeySource, SecretBox};
use crate::serve::{self, HttpSettings};
use crate::store::Store;
use crate::tls::TlsFront;

#[derive(Clone)]
struct Routing {
    proxy: Arc<Proxy>,
    domain: Option<String>,
}

/// Sandbox traffic goes to the proxy; everything else to the API.
async fn route_sandbox_traffic(State(routing): State<Routing>, request: Request, next: Next) -> Response {
    let local = request.extensions().get::<ClientOrigin>().is_some_and(ClientOrigin::is_local);
    match proxy::classify_for(request.method(), request.uri(), request.headers(), routing.domain.as_deref(), local) {
        Some(target) => {
            let sandbox = match &target {
                proxy::Target::Sandbox { id, .. } => Some(id.clone()),
                proxy::Target::BySignature => None,
            };
            let started = Instant::now();
            let mut response = routing.proxy.forward(target, request).await;
            crate::prom::latencies().proxy.observe(started.elapsed());
            if let Some(id) = sandbox {
                response.extensions_mut().insert(crate::access_log::ProxiedSandbox(id));
            }
            response
        }
        None => next.run(request).await,
    }
}

/// The whole HTTP surface: sandbox traffic to the proxy, the rest to the API (default limits).
pub fn app(state: ApiState) -> axum::Router {
    app_with(state, &HttpSettings::default())
}

/// The whole HTTP surface with the body limits of `http`: proxied request bodies and template uploads have
/// their own (the API's JSON limit is fixed, see `api::router`).
pub fn app_with(state: ApiState, http: &HttpSettings) -> axum::Router {
    let proxy = Proxy::new(state.lifecycle.clone()).with_max_body(http.max_proxy_body_bytes);
    let routing = Routing { proxy: Arc::new(proxy), domain: state.domain.clone() };
    api::router(state)
        .layer(axum::Extension(UploadLimit(http.max_upload_bytes)))
        .layer(axum::middleware::from_fn_with_state(routing, route_sandbox_traffic))
        // Outermost: every API and proxied request gets its id and its line.
        .layer(axum::middleware::from_fn(crate::access_log::log_requests))
}

pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    // The port first: a taken port fails the start before anything is made on the host.
    let listener = serve::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    // So is a certificate that does not load, or a bad proxy list.
    let tls = load_tls(&config)?;
    let trusted_proxies = config.http.trusted_proxies()?;
    let listener = Front { listener, tls, trusted_proxies };
    let store = Store::open(&config.database_url).await.context("opening the store")?;
    let store = store.with_secret_box(secrets_key(&config.data_dir)?);
    store.check_secrets_key().await.with_context(|| {
        format!(
            "the secrets key does not open the stored secrets: was {} replaced, or does {} differ from the other \
             replicas'?",
            config.data_dir.join(secret_box::KEY_FILE).display(),
            secret_box::KEY_ENV
        )
    })?;
    // Template builds run in this process: those a previous process left unfinished can never finish.
    match store.fail_unfinished_builds("the server stopped during the build").await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(builds = n, "marked template builds interrupted by a server stop as failed"),
        Err(e) => tracing::warn!(error = %e, "could not mark interrupted template builds"),
    }

    let lifecycle_config = LifecycleConfig {
        default_timeout_s: config.default_timeout_s,
        max_timeout_s: config.max_timeout_s,
        max_lifetime_s: config.max_lifetime_s,
        paused_retention: Duration::from_secs(u64::from(config.paused_retention_days) * 24 * 3600),
        node_id: "local".into(),
        team_limits: config.team_limits,
        allow_private_egress: config.allow_private_egress,
        volumes_dir: Some(config.volumes_dir()),
        volume_size_bytes: (config.volume_size_mb > 0).then_some(config.volume_size_mb << 20),
        volumes_shared: config.volumes_shared,
        ..LifecycleConfig::default()
    };
    let egress_ca = store.egress_ca().await.context("the installation's egress CA")?;
    match &config.node_token {
        // Cluster mode: no runtime here; node agents register with the token and run the sandboxes.
        Some(token) => {
            let mut cluster = ClusterConfig::new(token.clone());
            // The nodes' egress gateways sign with the installation's CA, which lives in the store.
            cluster.egress_ca = Some(egress_ca);
            cluster.heartbeat_timeout = Duration::from_secs(config.node_heartbeat_timeout_s.max(1));
            cluster.lost_after = Duration::from_secs(config.node_lost_after_s);
            let registry = Arc::new(Registry::new(store.clone(), cluster));
            let lifecycle = Lifecycle::start_with_nodes(store, registry, lifecycle_config)
                .await
                .map_err(|e| anyhow::anyhow!("starting the lifecycle: {e}"))?;
            crate::cluster_control::spawn_lost_node_sweep(lifecycle.clone());
            eprintln!(
                "cluster mode: waiting for node agents (`soulbox node --server <this URL> --token <node token>`)"
            );
            serve(&config, lifecycle, listener, started).await
        }
        None => {
            let reserved = recorded_addresses(&store).await?;
            let node = Arc::new(open_local_node(&config, &reserved, egress_ca).await?);
            node.runtime().set_egress_secrets(Arc::new(crate::egress_secrets::StoreSecrets { store: store.clone() }));
            // One machine: its volumes are the runtime's, with an image each (`volume_images.rs`).
            let lifecycle_config =
                LifecycleConfig { volume_backing: node.runtime().volume_backing(), ..lifecycle_config };
            // From here on a failure must give back what the runtime made (warm pool, firewall table).
            let started_node = async {
                let lifecycle = Lifecycle::start(store, node.clone(), lifecycle_config.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("starting the lifecycle: {e}"))?;
                reconcile_local_node(&node, &lifecycle).await?;
                Ok::<_, anyhow::Error>(lifecycle)
            }
            .await;
            let result = match started_node {
                Ok(lifecycle) => serve(&config, lifecycle, listener, started).await,
                Err(e) => Err(e),
            };
            close_local_node(&node).await;
            result
        }
    }
}

/// The key secrets are encrypted with: `SOULBOX_SECRETS_KEY`, else `<data_dir>/secrets.key` (made on the first
/// start). Read here, not through `ServerConfig`: that derives `Debug`, and a key must never be printable.
fn secrets_key(data_dir: &std::path::Path) -> anyhow::Result<SecretBox> {
    let env = std::env::var_os(secret_box::KEY_ENV);
    let (secret_box, source) = SecretBox::load(env.as_deref(), data_dir).context("loading the secrets key")?;
    match source {
        KeySource::Env => tracing::info!("secrets key from {}", secret_box::KEY_ENV),
        KeySource::File(path) => tracing::info!(path = %path.display(), "secrets key"),
        KeySource::Created(path) => tracing::warn!(
            path = %path.display(),
            "created the secrets key: back it up (secrets cannot be read without it); replicas sharing the \
             database need the same key (its content in {})",
            secret_box::KEY_ENV
        ),
    }
    Ok(secret_box)
}

/// The listening side: the port, its TLS if any, the proxies whose forwarding headers are believed.
struct Front {
    listener: tokio::net::TcpListener,
    tls: Option<Arc<TlsFront>>,
    trusted_proxies: crate::forwarded::TrustedProxies,
}

/// The HTTPS certificate, if configured (`[http] tls_cert`/`tls_key`, `SOULBOX_TLS_CERT`/`SOULBOX_TLS_KEY`).
fn load_tls(config: &ServerConfig) -> anyhow::Result<Option<Arc<TlsFront>>> {
    let files = config.http.tls_files(|name| std::env::var_os(name).filter(|v| !v.is_empty()).map(Into::into));
    let Some(files) = files.map_err(|e| anyhow::anyhow!(e))? else { return Ok(None) };
    let front = TlsFront::load(files.clone()).with_context(|| {
        format!("loading the TLS certificate {} and key {}", files.cert.display(), files.key.display())
    })?;
    tracing::info!(cert = %files.cert.display(), "serving HTTPS (the certificate is reloaded when its files change)");
    Ok(Some(Arc::new(front)))
}

/// Serves the API and sandbox traffic until SIGINT/SIGTERM.
async fn serve(config: &ServerConfig, lifecycle: Arc<Lifecycle>, front: Front, started: Instant) -> anyhow::Result<()> {
    // The first key is made only once everything else has started: made earlier, a start that failed in between
    // left a key in the store that was never shown nor written anywhere.
    let fresh_key = first_admin_key(lifecycle.store()).await?;
    let metrics_store = Arc::new(MetricsStore::default());
    let _sampler = metrics::spawn_sampler(
        lifecycle.store().clone(),
        lifecycle.nodes().clone(),
        metrics_store.clone(),
        Duration::from_secs(config.metrics_interval_s.max(1)),
    );

    let mut http = config.http.settings();
    http.max_connections = serve::raise_fd_limit_and_cap(http.max_connections);
    http.trusted_proxies = front.trusted_proxies;
    let app = app_with(ApiState { lifecycle, metrics: metrics_store, domain: config.domain.clone(), started }, &http)
        .layer(axum::Extension(crate::prom::MetricsToken(config.metrics_token.clone())));

    let scheme = if front.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", config.listen);
    println!(
        "SoulBox is running on {url} (ready in {} ms). To use the E2B SDKs against it:",
        started.elapsed().as_millis()
    );
    println!("export E2B_API_URL={url}");
    println!("export E2B_SANDBOX_URL={url}");
    match fresh_key {
        Some(key) => {
            let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let line = crate::admin_key::announce(&config.data_dir, &key, on_terminal)
                .with_context(|| format!("writing the first admin key to {}", config.data_dir.display()))?;
            println!("{line}");
        }
        None => println!("export E2B_API_KEY=<a key from `soulbox keys create [--team NAME] [--admin]`>"),
    }
    if let (Some(domain), Some(_)) = (&config.domain, &front.tls) {
        println!("# or, with DNS for api.{domain} and *.{domain} pointing here: export E2B_DOMAIN={domain}");
    }
    serve::serve_tls(front.listener, app, http, front.tls, shutdown_signal()).await;
    tracing::info!("server stopped; sandboxes keep running and are re-adopted on the next start");
    Ok(())
}

/// Pre-warmed slots are not sandboxes: their namespaces and addresses go back, and so does the firewall
/// table when no sandbox needs it (after a failed start or at a stop).
async fn close_local_node(node: &LocalNode) {
    if let Err(e) = node.runtime().close().await {
        tracing::warn!(error = %e, "could not release what the node runtime holds for itself");
    }
}

/// The addresses the store's records name (sandbox id, address): the runtime hands none of them to a new
/// sandbox until [`reconcile_local_node`] has made the records agree with what the runtime has.
async fn recorded_addresses(store: &Store) -> anyhow::Result<Vec<(String, std::net::Ipv4Addr)>> {
    let records = store.list_sandboxes().await.context("listing sandboxes")?;
    Ok(records.iter().filter_map(|r| Some((r.id.clone(), r.address.as_deref()?.parse().ok()?))).collect())
}

/// After a crash the runtime and the store can disagree. The runtime's view of its own sandboxes wins:
/// - a sandbox the runtime has but the store does not (a create or a template build sandbox interrupted by the
///   crash) is deleted;
/// - a record whose sandbox the runtime no longer has (its files are gone) is forgotten, so it answers 404
///   instead of failing every call;
/// - a running record whose sandbox died (the runtime keeps its files as stopped) becomes paused without an
///   address — connect or resume starts it again from its files; a paused-with-memory record whose sandbox
///   died loses its address the same way;
/// - a record whose address differs from the one its sandbox holds gets the sandbox's;
/// - a record that says paused while its sandbox runs (a crash mid-resume) has the sandbox paused again.
///
/// Then the address reservations made at open are lifted (or kept for records that could not be corrected).
/// Nothing else runs on this node yet, so there is no in-flight create to spare.
async fn reconcile_local_node(node: &LocalNode, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    use soulbox_protocol::api::SandboxState;
    use soulbox_runtime::Status;
    let runtime = node.runtime();
    let store = lifecycle.store();
    let records = store.list_sandboxes().await.context("listing sandboxes")?;
    let known: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let present: std::collections::HashMap<String, soulbox_runtime::SandboxInfo> =
        runtime.list().await.into_iter().map(|s| (s.id.clone(), s)).collect();
    for id in present.keys().filter(|id| !known.contains(id.as_str())) {
        tracing::warn!(sandbox = %id, "reconcile: the runtime has a sandbox the store does not know (left by a crash); deleting it");
        if let Err(e) = runtime.delete(id).await {
            tracing::warn!(sandbox = %id, error = %e, "reconcile: delete failed");
        }
    }
    for record in &records {
        let Some(info) = present.get(&record.id) else {
            lifecycle.forget(&record.id, "the node no longer has it").await.map_err(|e| anyhow::anyhow!("{e}"))?;
            continue;
        };
        let held = info.ip.map(|ip| ip.to_string());
        let (state, address) = match (record.state, info.status) {
            (SandboxState::Running, Status::Running) => (SandboxState::Running, held),
            (SandboxState::Running | SandboxState::Paused, Status::Paused) => (SandboxState::Paused, held),
            (SandboxState::Paused, Status::Running) => {
                tracing::warn!(sandbox = %record.id, "reconcile: the record says paused but the sandbox runs; pausing it");
                runtime.pause(&record.id).await.with_context(|| format!("pausing {}", record.id))?;
                (SandboxState::Paused, held)
            }
            (_, Status::Stopped) => {
                if record.state == SandboxState::Running || record.address.is_some() {
                    tracing::warn!(sandbox = %record.id, "reconcile: the sandbox's processes died; it is paused now (its files are kept, connect starts it again)");
                }
                (SandboxState::Paused, None)
            }
            (_, other) => {
                tracing::warn!(sandbox = %record.id, status = %other, "reconcile: unexpected runtime state; forgetting the record");
                lifecycle.forget(&record.id, "the node has it half made").await.map_err(|e| anyhow::anyhow!("{e}"))?;
                continue;
            }
        };
        if state != record.state || address != record.address {
            lifecycle.correct_record(record, state, address.as_deref()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    // Records now name only addresses their own sandboxes hold: nothing left to keep from the pool.
    let still_named = recorded_addresses(store).await?;
    let unbacked: Vec<_> = still_named.into_iter().filter(|(id, ip)| runtime.address(id) != Some(*ip)).collect();
    runtime.set_reserved_addresses(&unbacked);
    Ok(())
}

/// The runtime in-process, as the one node of a one-machine server. `reserved`: addresses the store's records
/// name, kept from the warm pool. A failure after the runtime opened gives back what it made.
async fn open_local_node(
    config: &ServerConfig,
    reserved: &[(String, std::net::Ipv4Addr)],
    egress_ca: soulbox_runtime::egress_ca::CaPem,
) -> anyhow::Result<LocalNode> {
    let runtime_config = node_setup::runtime_config(RuntimeSettings {
        data_dir: &config.data_dir,
        template_dir: config.template_dir.clone(),
        runtime: config.runtime.clone(),
        extra_runtimes: config.extra_runtimes.clone(),
        envd_path: &config.envd_path,
        warm_pool: config.warm_pool,
        pool: config.pool.clone(),
        default_disk_mb: config.default_disk_mb,
        pause_to_disk: config.runsc_pause_to_disk,
        prefix: config.prefix.clone(),
        user_namespaces: config.user_namespaces,
        userns_base: config.userns_base,
        userns_mode: config.userns_mode,
        network_pool: &config.network_pool,
        allow_private_egress: config.allow_private_egress,
        egress_ca: Some(egress_ca),
        egress_trusted_ca: config.egress_trusted_ca.clone(),
        volumes_dir: Some(config.volumes_dir()),
    })?;
    let runtime = soulbox_runtime::Runtime::open_reserving(runtime_config, reserved)
        .await
        .context("starting the node runtime")?;
    let node = LocalNode::with_engine_config(runtime, "local", config.templates.engine_config(&config.debian_mirror));
    eprintln!(
        "preparing the base template (the first start bootstraps Debian 12 with mmdebstrap; later starts reuse it)"
    );
    match node.ensure_base_template().await {
        Ok(took) => {
            eprintln!("base template ready in {} ms", took.as_millis());
            // Built now (or found): the booted pool can boot it.
            node.runtime().refill_booted();
            Ok(node)
        }
        Err(f) => {
            close_local_node(&node).await;
            Err(anyhow::anyhow!(
                "building the base template failed at step {}: {}",
                f.step.as_deref().unwrap_or("?"),
                f.message
            ))
        }
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// The first admin key (team `default`) when the store has no active key; `None` otherwise, with a warning when
/// no active key is an admin.
async fn first_admin_key(store: &Store) -> anyhow::Result<Option<String>> {
    if store.count_active_api_keys().await? == 0 {
        let (_, key) =
            store.create_api_key_in("admin", crate::store::DEFAULT_TEAM_NAME, crate::store::Role::Admin).await?;
        return Ok(Some(key.secret));
    }
    // Keys made with `soulbox keys create` before the first start are members: say how to get an admin.
    let keys = store.list_api_keys().await?;
    if !keys.iter().any(|k| k.revoked_at_ms.is_none() && k.role == crate::store::Role::Admin) {
        tracing::warn!(
            "no active admin key: nodes and keys cannot be managed through the API until `soulbox keys create --admin`"
        );
    }
    Ok(None)
}
