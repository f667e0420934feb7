//! The control plane's side of the cluster: node registration and heartbeats (with reconciliation), and the
//! lost-node sweep. Both are safe with several API replicas: everything they decide is read from and written to
//! the shared store, and every write is idempotent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::registry::{ClusterConfig, Registry};
use crate::cluster::wire::{HeartbeatRequest, HeartbeatResponse, valid_node_id};
use crate::lifecycle::Lifecycle;
use crate::node::{Node, NodeError, NodeStatus};
use crate::store::{NodeRecord, now_ms};

/// A store record younger than this is never dropped because its node did not report it: the node's report
/// may predate the create.
const RECONCILE_MIN_AGE_MS: i64 = 30_000;
/// How long the control plane waits for a node to answer the check that confirms it.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Records a heartbeat (registering the node on its first), confirms the node by calling it back when it is
/// new or changed, and reconciles its sandboxes with the store. Answers with its status and what to kill.
pub async fn heartbeat(
    lifecycle: &Lifecycle,
    registry: &Registry,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, NodeError> {
    let node_id = req.info.node_id.clone();
    if !valid_node_id(&node_id) {
        return Err(NodeError::Invalid(format!("invalid node id {node_id:?}: use [a-z0-9-], at most 63 characters")));
    }
    if !(req.address.starts_with("http://") || req.address.starts_with("https://")) || req.secret.len() < 16 {
        return Err(NodeError::Invalid(
            "a node registers with an http(s) address and a secret of at least 16 characters".into(),
        ));
    }
    let store = registry.store();
    let now = now_ms();
    let previous = store.get_node(&node_id).await.ok();
    let record = NodeRecord {
        id: node_id.clone(),
        address: req.address.clone(),
        api_secret: req.secret.clone(),
        region: req.info.region.clone(),
        version: req.info.version.clone(),
        cpu_count: req.info.cpu_count,
        memory_mb: req.info.memory_mb,
        cpu_available: req.info.cpu_available,
        memory_available_mb: req.info.memory_available_mb,
        sandbox_count: req.info.sandbox_count,
        trouble: req.info.trouble.clone(),
        confirmed: false,
        draining: false,
        registered_at_ms: now,
        last_heartbeat_ms: now,
        last_health_check_ms: req.info.last_health_check_unix_ms,
    };
    let mut stored = store.record_node_heartbeat(&record).await.map_err(|e| NodeError::Failed(e.to_string()))?;
    let returning = previous.as_ref().is_some_and(|p| registry.status(p) == NodeStatus::Unhealthy);
    if previous.is_none() {
        tracing::info!(node = %node_id, address = %req.address, "node registered");
    } else if returning {
        tracing::info!(node = %node_id, "node is back after missing heartbeats");
    }
    if !stored.confirmed {
        // Registered, not yet confirmed: the control plane must be able to reach the node's API with its secret.
        let client = registry.client(&stored);
        match tokio::time::timeout(CONFIRM_TIMEOUT, client.info()).await {
            Ok(info) if info.node_id == node_id && info.status != NodeStatus::Unhealthy => {
                if store.confirm_node(&node_id, &stored.address, &stored.api_secret).await.unwrap_or(false) {
                    stored.confirmed = true;
                    tracing::info!(node = %node_id, "node confirmed");
                }
            }
            Ok(info) => {
                tracing::warn!(node = %node_id, trouble = ?info.trouble, "node registered but its API does not answer")
            }
            Err(_) => tracing::warn!(node = %node_id, "node registered but its API did not answer in time"),
        }
    }
    let kill = reconcile(lifecycle, &node_id, &req.sandboxes).await?;
    Ok(HeartbeatResponse { status: registry.status(&stored), kill })
}

/// The node's sandboxes against the store's: the node kills what the control plane no longer knows (forgotten
/// while the node was lost, or killed while it was unreachable); records of sandboxes the node no longer has are
/// dropped. Everything else is kept.
async fn reconcile(lifecycle: &Lifecycle, node_id: &str, reported: &[String]) -> Result<Vec<String>, NodeError> {
    let known: HashMap<String, i64> = lifecycle
        .store()
        .sandboxes_on_node(node_id)
        .await
        .map_err(|e| NodeError::Failed(e.to_string()))?
        .into_iter()
        .collect();
    let reported_set: HashSet<&str> = reported.iter().map(String::as_str).collect();
    let kill: Vec<String> = reported.iter().filter(|id| !known.contains_key(*id)).cloned().collect();
    let cutoff = now_ms() - RECONCILE_MIN_AGE_MS;
    for (id, started_at) in &known {
        if *started_at < cutoff
            && !reported_set.contains(id.as_str())
            && let Err(e) = lifecycle.forget(id, "its node no longer has it").await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not drop the record of a vanished sandbox");
        }
    }
    if !kill.is_empty() {
        tracing::info!(node = %node_id, sandboxes = ?kill, "node holds sandboxes the control plane does not know: killing them");
    }
    Ok(kill)
}

/// Every replica runs this: sandboxes on a node without heartbeats for `heartbeat_timeout + lost_after` are
/// lost — their records go, so they answer 404 — and the node kills them if it ever comes back. Paused sandboxes
/// are kept: what they need (a memory image, frozen processes, their files) is on the node's disk or host and
/// outlives an agent crash or a reboot; they resume when the node is back, and a kill meanwhile drops the record
/// at once (the returning node kills what is unknown). Removing the node drops them.
pub fn spawn_lost_node_sweep(lifecycle: Arc<Lifecycle>) {
    let Some(config) = lifecycle.nodes().cluster().map(|r| r.config().clone()) else { return };
    let period = (config.heartbeat_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2));
    let weak = Arc::downgrade(&lifecycle);
    drop(lifecycle);
    tokio::spawn(async move {
        // Missed heartbeats have no event to wait for: the sweep is a timer by nature.
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(lifecycle) = weak.upgrade() else { return };
            if let Err(e) = sweep_lost(&lifecycle, &config).await {
                tracing::warn!(error = %e, "lost-node sweep failed");
            }
        }
    });
}

async fn sweep_lost(lifecycle: &Lifecycle, config: &ClusterConfig) -> Result<(), crate::store::StoreError> {
    let lost_after_ms = (config.heartbeat_timeout + config.lost_after).as_millis() as i64;
    let now = now_ms();
    for node in lifecycle.store().list_nodes().await? {
        if now - node.last_heartbeat_ms <= lost_after_ms {
            continue;
        }
        for id in lifecycle.store().unpaused_sandboxes_on_node(&node.id).await? {
            if let Err(e) =
                lifecycle.forget(&id, &format!("node {} has been unhealthy past the grace period", node.id)).await
            {
                tracing::warn!(sandbox = %id, error = %e, "could not mark a sandbox lost");
            }
        }
    }
    Ok(())
}
