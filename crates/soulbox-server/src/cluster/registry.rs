//! Cluster mode's [`NodeSet`]: every node comes from the store (so all API replicas see the same set) and is
//! reached through a [`RemoteNode`]. A node's status is derived from its row when read — heartbeat age, the
//! control plane's confirmation, the operator's drain flag, the node's own trouble report — so no replica runs a
//! timer to flip it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::remote::RemoteNode;
use super::scheduler::{self, Candidate, PlacementError, Policy, Requirements};
use super::{NodeSet, NodeView, Placement, Route};
use crate::node::{
    CreatedSandbox, LogLine, LogQuery, Node, NodeError, NodeInfo, NodeStatus, SandboxSpec, SandboxStats, TemplateInfo,
};
use crate::store::{NodeRecord, NodeReservation, Store, StoreError, now_ms};

/// How long a placement hold outlives a replica that died mid-create (a create with a slow ready command fits).
const PLACEMENT_HOLD_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// What node agents present to register and heartbeat (`Authorization: Bearer`).
    pub node_token: String,
    /// No heartbeat for this long: Unhealthy.
    pub heartbeat_timeout: Duration,
    /// Unhealthy (no heartbeat) for this long: the node's sandboxes are lost.
    pub lost_after: Duration,
    pub policy: Policy,
    /// The installation's egress CA, handed to node agents (`GET /cluster/egress-ca`).
    pub egress_ca: Option<soulbox_runtime::egress_ca::CaPem>,
}

impl ClusterConfig {
    pub fn new(node_token: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            node_token: node_token.into(),
            heartbeat_timeout: Duration::from_secs(10),
            lost_after: Duration::from_secs(60),
            policy: Policy::default(),
            egress_ca: None,
        }
    }
}

/// Status from a node's row at `now_ms`.
pub fn derive_status(node: &NodeRecord, now_ms: i64, heartbeat_timeout: Duration) -> NodeStatus {
    if now_ms - node.last_heartbeat_ms > heartbeat_timeout.as_millis() as i64 {
        NodeStatus::Unhealthy
    } else if node.draining {
        NodeStatus::Draining
    } else if !node.confirmed {
        NodeStatus::Connecting
    } else if node.trouble.is_some() {
        NodeStatus::Degraded
    } else {
        NodeStatus::Healthy
    }
}

pub struct Registry {
    store: Store,
    config: ClusterConfig,
    http: reqwest::Client,
    /// One client per node, replaced when the node re-registers with another address or secret.
    clients: Mutex<HashMap<String, Arc<RemoteNode>>>,
    client_keys: Mutex<HashMap<String, (String, String)>>,
    template_node: Arc<dyn Node>,
}

impl Registry {
    pub fn new(store: Store, config: ClusterConfig) -> Registry {
        let http = RemoteNode::http_client();
        let template_node = Arc::new(ClusterTemplates {
            store: store.clone(),
            http: http.clone(),
            heartbeat_timeout: config.heartbeat_timeout,
        });
        Registry { store, config, http, clients: Mutex::default(), client_keys: Mutex::default(), template_node }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn status(&self, node: &NodeRecord) -> NodeStatus {
        derive_status(node, now_ms(), self.config.heartbeat_timeout)
    }

    /// The (cached) client for a node's current address and secret.
    pub fn client(&self, node: &NodeRecord) -> Arc<RemoteNode> {
        let key = (node.address.clone(), node.api_secret.clone());
        let mut keys = self.client_keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if keys.get(&node.id) != Some(&key) || !clients.contains_key(&node.id) {
            let client =
                Arc::new(RemoteNode::new(node.id.clone(), &node.address, node.api_secret.clone(), self.http.clone()));
            clients.insert(node.id.clone(), client);
            keys.insert(node.id.clone(), key);
        }
        clients[&node.id].clone()
    }

    fn view(&self, node: &NodeRecord) -> NodeView {
        NodeView {
            info: NodeInfo {
                node_id: node.id.clone(),
                status: self.status(node),
                region: node.region.clone(),
                version: node.version.clone(),
                cpu_count: node.cpu_count,
                memory_mb: node.memory_mb,
                cpu_available: node.cpu_available,
                memory_available_mb: node.memory_available_mb,
                sandbox_count: node.sandbox_count,
                last_health_check_unix_ms: node.last_health_check_ms,
                trouble: node.trouble.clone(),
            },
            address: Some(node.address.clone()),
            draining: node.draining,
            registered_at_ms: Some(node.registered_at_ms),
            last_heartbeat_ms: Some(node.last_heartbeat_ms),
        }
    }

    async fn usable(&self, node_id: &str) -> Result<NodeRecord, NodeError> {
        let node = match self.store.get_node(node_id).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => return Err(NodeError::Unreachable(format!("node {node_id} was removed"))),
            Err(e) => return Err(NodeError::Failed(e.to_string())),
        };
        if self.status(&node) == NodeStatus::Unhealthy {
            return Err(NodeError::Unreachable(format!("node {node_id} is unhealthy (no heartbeat)")));
        }
        Ok(node)
    }
}

fn store_error(e: StoreError) -> NodeError {
    match e {
        StoreError::NotFound(what) => NodeError::NodeNotFound(what.trim_start_matches("node ").to_owned()),
        other => NodeError::Failed(other.to_string()),
    }
}

impl Registry {
    /// Chooses among the nodes (`only`: just that one) and holds the capacity there (`NodeSet::place`).
    async fn place_among(&self, need: Requirements, only: Option<&str>) -> Result<Placement, NodeError> {
        let mut passed_over: Vec<String> = Vec::new();
        loop {
            let nodes = self.store.list_nodes().await.map_err(store_error)?;
            let reservations = self.store.node_reservations().await.map_err(store_error)?;
            let now = now_ms();
            let candidates: Vec<Candidate> = nodes
                .iter()
                .filter(|n| !passed_over.contains(&n.id) && only.is_none_or(|o| o == n.id))
                .map(|n| {
                    let held = reservations.get(&n.id).copied().unwrap_or_default();
                    Candidate {
                        node_id: n.id.clone(),
                        status: derive_status(n, now, self.config.heartbeat_timeout),
                        cpu_count: n.cpu_count,
                        memory_mb: n.memory_mb,
                        memory_available_mb: n.memory_available_mb,
                        reserved_cpu: held.cpu,
                        reserved_memory_mb: held.memory_mb,
                        sandbox_count: held.sandboxes,
                    }
                })
                .collect();
            let chosen =
                scheduler::place(&candidates, &need, &self.config.policy, &mut rand::rng()).map_err(|e| match e {
                    PlacementError::NoNodes | PlacementError::NoHealthyNode(_) | PlacementError::NoCapacity { .. } => {
                        NodeError::NoCapacity(e.to_string())
                    }
                })?;
            // The choice was made on a snapshot; the hold re-checks under the node's lock, so another replica's
            // create in the meantime cannot make two sandboxes share the last room.
            let hold = crate::ids::access_token();
            let fits = |held: NodeReservation| {
                Candidate {
                    reserved_cpu: held.cpu,
                    reserved_memory_mb: held.memory_mb,
                    sandbox_count: held.sandboxes,
                    ..chosen.clone()
                }
                .fits(&need, &self.config.policy)
            };
            let held = self
                .store
                .hold_placement(&hold, &chosen.node_id, need.cpu_count, need.memory_mb, PLACEMENT_HOLD_MS, fits)
                .await
                .map_err(store_error)?;
            if held {
                let record = nodes
                    .iter()
                    .find(|n| n.id == chosen.node_id)
                    .ok_or_else(|| NodeError::Failed("placement lost its node".into()))?;
                return Ok(Placement { node_id: record.id.clone(), node: self.client(record), hold: Some(hold) });
            }
            tracing::debug!(node = %chosen.node_id, "placement: the node filled up meanwhile; choosing again");
            passed_over.push(chosen.node_id.clone());
        }
    }
}

#[async_trait]
impl NodeSet for Registry {
    async fn get(&self, node_id: &str) -> Result<Arc<dyn Node>, NodeError> {
        let node = self.usable(node_id).await?;
        Ok(self.client(&node))
    }

    async fn place(&self, need: Requirements) -> Result<Placement, NodeError> {
        self.place_among(need, None).await
    }

    async fn place_on(&self, node_id: &str, need: Requirements) -> Result<Placement, NodeError> {
        self.place_among(need, Some(node_id)).await
    }

    async fn release(&self, placement: &Placement) {
        if let Some(hold) = &placement.hold
            && let Err(e) = self.store.release_placement(hold).await
        {
            tracing::warn!(node = %placement.node_id, error = %e, "could not release a placement hold; it expires on its own");
        }
    }

    async fn is_draining(&self, node_id: &str) -> bool {
        match self.store.get_node(node_id).await {
            Ok(node) => self.status(&node) == NodeStatus::Draining,
            Err(_) => false,
        }
    }

    async fn route(&self, node_id: &str) -> Option<Route> {
        let node = self.usable(node_id).await.ok()?;
        let authority = node.address.strip_prefix("http://").unwrap_or(&node.address).trim_end_matches('/').to_owned();
        Some(Route::ViaNode { authority, secret: node.api_secret })
    }

    fn template_node(&self) -> Arc<dyn Node> {
        self.template_node.clone()
    }

    async fn list(&self) -> Result<Vec<NodeView>, NodeError> {
        let nodes = self.store.list_nodes().await.map_err(store_error)?;
        Ok(nodes.iter().map(|n| self.view(n)).collect())
    }

    async fn set_draining(&self, node_id: &str, draining: bool) -> Result<(), NodeError> {
        self.store.set_node_draining(node_id, draining).await.map_err(store_error)
    }

    async fn remove(&self, node_id: &str) -> Result<(), NodeError> {
        if !self.store.delete_node(node_id).await.map_err(store_error)? {
            return Err(NodeError::NodeNotFound(node_id.to_owned()));
        }
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(node_id);
        Ok(())
    }

    fn cluster(&self) -> Option<&Registry> {
        Some(self)
    }
}

/// Template questions in cluster mode go to a live node (every node serves the same templates: each builds or
/// is given the `base` template at start). Sandbox operations never come here: they go to the sandbox's node.
struct ClusterTemplates {
    store: Store,
    http: reqwest::Client,
    heartbeat_timeout: Duration,
}

#[async_trait]
impl Node for ClusterTemplates {
    async fn info(&self) -> NodeInfo {
        let nodes = self.store.list_nodes().await.unwrap_or_default();
        let now = now_ms();
        let live: Vec<&NodeRecord> =
            nodes.iter().filter(|n| derive_status(n, now, self.heartbeat_timeout) != NodeStatus::Unhealthy).collect();
        NodeInfo {
            node_id: "cluster".into(),
            status: if live.is_empty() { NodeStatus::Unhealthy } else { NodeStatus::Healthy },
            region: String::new(),
            version: soulbox_protocol::version::SOULBOX_VERSION.into(),
            cpu_count: live.iter().map(|n| n.cpu_count).sum(),
            memory_mb: live.iter().map(|n| n.memory_mb).sum(),
            cpu_available: live.iter().map(|n| n.cpu_available).sum(),
            memory_available_mb: live.iter().map(|n| n.memory_available_mb).sum(),
            sandbox_count: live.iter().map(|n| n.sandbox_count).sum(),
            last_health_check_unix_ms: live.iter().map(|n| n.last_health_check_ms).max().unwrap_or(0),
            trouble: None,
        }
    }

    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        let nodes = self.store.list_nodes().await.map_err(store_error)?;
        let now = now_ms();
        let mut last_error = NodeError::NoCapacity("no node is available to list templates".into());
        for node in nodes.iter().filter(|n| {
            matches!(
                derive_status(n, now, self.heartbeat_timeout),
                NodeStatus::Healthy | NodeStatus::Degraded | NodeStatus::Draining
            )
        }) {
            match RemoteNode::new(node.id.clone(), &node.address, node.api_secret.clone(), self.http.clone())
                .templates()
                .await
            {
                Ok(t) => return Ok(t),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn create(&self, _spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        Err(not_here())
    }
    async fn pause(&self, _id: &str, _keep_memory: bool) -> Result<(), NodeError> {
        Err(not_here())
    }
    async fn resume(&self, _id: &str) -> Result<IpAddr, NodeError> {
        Err(not_here())
    }
    async fn kill(&self, _id: &str) -> Result<(), NodeError> {
        Err(not_here())
    }
    async fn stats(&self, _id: &str) -> Result<SandboxStats, NodeError> {
        Err(not_here())
    }
    async fn logs(&self, _id: &str, _query: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        Err(not_here())
    }
}

fn not_here() -> NodeError {
    NodeError::Failed("sandbox operations in cluster mode go to the sandbox's node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(last_heartbeat_ms: i64, confirmed: bool, draining: bool, trouble: Option<&str>) -> NodeRecord {
        NodeRecord {
            id: "n".into(),
            address: "http://127.0.0.1:1".into(),
            api_secret: "s".into(),
            region: "r".into(),
            version: "v".into(),
            cpu_count: 1,
            memory_mb: 1,
            cpu_available: 1.0,
            memory_available_mb: 1,
            sandbox_count: 0,
            trouble: trouble.map(str::to_owned),
            confirmed,
            draining,
            registered_at_ms: 0,
            last_heartbeat_ms,
            last_health_check_ms: 0,
        }
    }

    #[test]
    fn status_model() {
        let timeout = Duration::from_secs(10);
        let now = 100_000;
        assert_eq!(derive_status(&record(now - 1_000, false, false, None), now, timeout), NodeStatus::Connecting);
        assert_eq!(derive_status(&record(now - 1_000, true, false, None), now, timeout), NodeStatus::Healthy);
        assert_eq!(derive_status(&record(now - 1_000, true, false, Some("oom")), now, timeout), NodeStatus::Degraded);
        assert_eq!(derive_status(&record(now - 1_000, true, true, Some("oom")), now, timeout), NodeStatus::Draining);
        assert_eq!(derive_status(&record(now - 10_001, true, true, None), now, timeout), NodeStatus::Unhealthy);
        assert_eq!(derive_status(&record(now - 10_000, true, false, None), now, timeout), NodeStatus::Healthy);
    }

    crate::store::test_db::store_test!(replicas_placing_at_once_never_overfill_a_node, |db| {
        // Two replicas (own connection pools) on one database, two nodes with room for four 512 MiB sandboxes
        // each (1 GiB × memory overcommit 2): sixteen concurrent placements whose sandboxes are still being
        // created (holds not released) must get exactly eight, four per node.
        let now = now_ms();
        let replicas = [db.open().await, db.open().await];
        for id in ["n1", "n2"] {
            let node = NodeRecord {
                id: id.into(),
                address: "http://127.0.0.1:1".into(),
                api_secret: "s".into(),
                region: "r".into(),
                version: "v".into(),
                cpu_count: 8,
                memory_mb: 1024,
                cpu_available: 8.0,
                memory_available_mb: 4096,
                sandbox_count: 0,
                trouble: None,
                confirmed: false,
                draining: false,
                registered_at_ms: now,
                last_heartbeat_ms: now,
                last_health_check_ms: now,
            };
            replicas[0].record_node_heartbeat(&node).await.unwrap();
            assert!(replicas[0].confirm_node(id, "http://127.0.0.1:1", "s").await.unwrap());
        }
        let registries: Vec<Arc<Registry>> =
            replicas.iter().map(|store| Arc::new(Registry::new(store.clone(), ClusterConfig::new("token")))).collect();
        let need = Requirements { cpu_count: 1, memory_mb: 512 };
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let registry = registries[i % 2].clone();
                tokio::spawn(async move { registry.place(need).await })
            })
            .collect();
        let mut placed: HashMap<String, usize> = HashMap::new();
        let mut holds = Vec::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(p) => {
                    *placed.entry(p.node_id.clone()).or_default() += 1;
                    holds.push(p);
                }
                Err(NodeError::NoCapacity(_)) => refused += 1,
                Err(e) => panic!("unexpected placement error: {e}"),
            }
        }
        assert_eq!(placed, HashMap::from([("n1".to_string(), 4), ("n2".to_string(), 4)]), "{refused} refused");
        assert_eq!(refused, 8);
        let held = replicas[1].node_reservations().await.unwrap();
        assert_eq!((held["n1"].memory_mb, held["n2"].memory_mb), (2048, 2048));

        // Released holds give the room back.
        let placement = registries[0].place(need).await;
        assert!(matches!(placement, Err(NodeError::NoCapacity(_))));
        for p in holds.iter().filter(|p| p.node_id == "n1") {
            registries[0].release(p).await;
        }
        let again = registries[1].place(need).await.unwrap();
        assert_eq!(again.node_id, "n1");
        registries[1].release(&again).await;
        assert_eq!(replicas[0].node_reservations().await.unwrap().get("n1").map(|r| r.sandboxes), None);
    });
}
