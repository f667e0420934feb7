//! `soulbox server`: one process, one port for the API and for sandbox traffic, SQLite inside, the node runtime
//! in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::{self, ApiState};
use crate::cluster::registry::{ClusterConfig, Registry};
use crate::config::ServerConfig;
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::local_node::LocalNode;
use crate::metrics::{self, MetricsStore};
use crate::proxy::{self, Proxy};
use crate::store::Store;

#[derive(Clone)]
struct Routing {
    proxy: Arc<Proxy>,
    domain: Option<String>,
}

/// Sandbox traffic goes to the proxy; everything else to the API.
async fn route_sandbox_traffic(State(routing): State<Routing>, request: Request, next: Next) -> Response {
    match proxy::classify(request.method(), request.uri(), request.headers(), routing.domain.as_deref()) {
        Some(target) => routing.proxy.forward(target, request).await,
        None => next.run(request).await,
    }
}

/// The whole HTTP surface: sandbox traffic to the proxy, the rest to the API.
pub fn app(state: ApiState) -> axum::Router {
    let routing = Routing { proxy: Arc::new(Proxy::new(state.lifecycle.clone())), domain: state.domain.clone() };
    api::router(state).layer(axum::middleware::from_fn_with_state(routing, route_sandbox_traffic))
}

pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = Store::open(&config.database_url).await.context("opening the store")?;
    // Template builds run in this process: those a previous process left unfinished can never finish.
    match store.fail_unfinished_builds("the server stopped during the build").await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(builds = n, "marked template builds interrupted by a server stop as failed"),
        Err(e) => tracing::warn!(error = %e, "could not mark interrupted template builds"),
    }

    let fresh_key = if store.count_active_api_keys().await? == 0 {
        let (_, key) = store.create_api_key("admin").await?;
        Some(key.secret)
    } else {
        None
    };

    let lifecycle_config = LifecycleConfig {
        default_timeout_s: config.default_timeout_s,
        max_timeout_s: config.max_timeout_s,
        max_lifetime_s: config.max_lifetime_s,
        node_id: "local".into(),
        ..LifecycleConfig::default()
    };
    let (lifecycle, local_node) = match &config.node_token {
        // Cluster mode: no runtime here; node agents register with the token and run the sandboxes.
        Some(token) => {
            let mut cluster = ClusterConfig::new(token.clone());
            cluster.heartbeat_timeout = Duration::from_secs(config.node_heartbeat_timeout_s.max(1));
            cluster.lost_after = Duration::from_secs(config.node_lost_after_s);
            let registry = Arc::new(Registry::new(store.clone(), cluster));
            let lifecycle = Lifecycle::start_with_nodes(store, registry, lifecycle_config)
                .await
                .map_err(|e| anyhow::anyhow!("starting the lifecycle: {e}"))?;
            crate::cluster::control::spawn_lost_node_sweep(lifecycle.clone());
            eprintln!("cluster mode: waiting for node agents (`soulbox node --server <this URL> --token <node token>`)");
            (lifecycle, None)
        }
        None => {
            let node = Arc::new(open_local_node(&config).await?);
            let lifecycle = Lifecycle::start(store, node.clone(), lifecycle_config)
                .await
                .map_err(|e| anyhow::anyhow!("starting the lifecycle: {e}"))?;
            reconcile_local_node(&node, &lifecycle).await?;
            (lifecycle, Some(node))
        }
    };
    let metrics_store = Arc::new(MetricsStore::default());
    metrics::spawn_sampler(lifecycle.clone(), metrics_store.clone(), Duration::from_secs(config.metrics_interval_s.max(1)));

    let app = app(ApiState { lifecycle, metrics: metrics_store, domain: config.domain.clone(), started });

    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let url = format!("http://{}", config.listen);
    println!("SoulBox is running on {url} (ready in {} ms). To use the E2B SDKs against it:", started.elapsed().as_millis());
    println!("export E2B_API_URL={url}");
    println!("export E2B_SANDBOX_URL={url}");
    match fresh_key {
        Some(key) => println!("export E2B_API_KEY={key}    # shown once; manage keys with `soulbox keys`"),
        None => println!("export E2B_API_KEY=<a key from `soulbox keys create`>"),
    }
    let listener = proxy::ServerListener(listener);
    axum::serve(listener, app.into_make_service_with_connect_info::<proxy::ClientSocket>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Pre-warmed slots are not sandboxes: give their namespaces and addresses back.
    if let Some(node) = local_node
        && let Err(e) = node.runtime().drain_pool().await
    {
        tracing::warn!(error = %e, "could not release the warm pool");
    }
    tracing::info!("server stopped; sandboxes keep running and are re-adopted on the next start");
    Ok(())
}

/// After a crash the runtime and the store can disagree: a sandbox the runtime has but the store does not (a
/// create or a template build sandbox interrupted by the crash) is deleted; a record whose sandbox the runtime
/// no longer has (its files are gone) is forgotten, so it answers 404 instead of failing every call. Nothing else
/// runs on this node yet, so there is no in-flight create to spare.
async fn reconcile_local_node(node: &LocalNode, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    let records = lifecycle.store().list_sandboxes().await.context("listing sandboxes")?;
    let known: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let present: std::collections::HashSet<String> = node.runtime().list().await.into_iter().map(|s| s.id).collect();
    for id in present.iter().filter(|id| !known.contains(id.as_str())) {
        tracing::warn!(sandbox = %id, "reconcile: the runtime has a sandbox the store does not know (left by a crash); deleting it");
        if let Err(e) = node.runtime().delete(id).await {
            tracing::warn!(sandbox = %id, error = %e, "reconcile: delete failed");
        }
    }
    for record in records.iter().filter(|r| !present.contains(&r.id)) {
        lifecycle.forget(&record.id, "the node no longer has it").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// The runtime in-process, as the one node of a one-machine server.
async fn open_local_node(config: &ServerConfig) -> anyhow::Result<LocalNode> {
    let mut runtime_config = soulbox_runtime::RuntimeConfig::new(config.data_dir.join("node"));
    runtime_config.runtime_bin = config.runtime.clone();
    runtime_config.envd_path = std::fs::canonicalize(&config.envd_path).with_context(|| {
        format!("the static envd binary {} is missing: build it with scripts/build-envd.sh", config.envd_path.display())
    })?;
    runtime_config.pool_size = config.warm_pool;
    if let Some(mb) = config.default_disk_mb {
        runtime_config.default_disk_mb = mb;
    }
    runtime_config.prefix = config.prefix.clone();
    let (pool_net, pool_len) = crate::config::parse_cidr(&config.network_pool)?;
    runtime_config.pool_net = pool_net;
    runtime_config.pool_prefix_len = pool_len;
    let runtime = soulbox_runtime::Runtime::open(runtime_config).await.context("starting the node runtime")?;
    let node = LocalNode::with_engine_config(runtime, "local", config.templates.engine_config(&config.debian_mirror));
    eprintln!("preparing the base template (the first start bootstraps Debian 12 with mmdebstrap; later starts reuse it)");
    let took = node.ensure_base_template().await.map_err(|f| {
        anyhow::anyhow!("building the base template failed at step {}: {}", f.step.as_deref().unwrap_or("?"), f.message)
    })?;
    eprintln!("base template ready in {} ms", took.as_millis());
    Ok(node)
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
