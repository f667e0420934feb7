//! Test doubles shared by the crate's tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use crate::node::*;

/// An in-memory node: sandboxes are names in a map, every address is 127.0.0.1 (so the proxy reaches servers
/// the test runs on loopback).
#[derive(Default)]
pub struct FakeNode {
    next: AtomicU32,
    pub sandboxes: Mutex<HashMap<String, bool>>, // id → paused
    /// Each sandbox's envd secret, as a real node's runtime keeps it.
    pub secrets: Mutex<HashMap<String, soulbox_runtime::EnvdSecret>>,
    /// Templates snapshots made (besides `base`), and the template each sandbox was created from.
    pub snapshots: Mutex<Vec<String>>,
    pub created_from: Mutex<HashMap<String, String>>,
    /// The policy of each sandbox whose network was updated.
    pub networks: Mutex<HashMap<String, NetworkPolicy>>,
    /// Volumes made on this node, and where their files go (`None`: names only).
    pub volumes: Mutex<std::collections::HashSet<String>>,
    pub volume_store: Option<std::sync::Arc<soulbox_volumes::VolumeStore>>,
    /// Put in the ids of its sandboxes (several fake nodes in one test make distinct ids).
    id_prefix: String,
}

impl FakeNode {
    /// A node holding volumes of its own in `files` (and mounting only those), its sandbox ids `f<prefix>…`.
    pub fn with_volumes(files: soulbox_volumes::VolumeStore, id_prefix: &str) -> FakeNode {
        FakeNode { volume_store: Some(std::sync::Arc::new(files)), id_prefix: id_prefix.into(), ..FakeNode::default() }
    }

    fn template(name: &str) -> TemplateInfo {
        TemplateInfo {
            template_id: name.into(),
            aliases: vec![name.into()],
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            envd_version: "0.6.13".into(),
            created_at_ms: 0,
        }
    }
}

#[async_trait]
impl Node for FakeNode {
    async fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: "fake".into(),
            status: NodeStatus::Healthy,
            region: "test".into(),
            version: "0".into(),
            cpu_count: 2,
            memory_mb: 1024,
            cpu_available: 2.0,
            memory_available_mb: 1024,
            sandbox_count: self.sandboxes.lock().unwrap().len() as u32,
            last_health_check_unix_ms: 0,
            trouble: None,
        }
    }
    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        let mut all = vec![Self::template("base")];
        all.extend(self.snapshots.lock().unwrap().iter().map(|n| Self::template(n)));
        Ok(all)
    }
    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        if spec.template_id != "base" && !self.snapshots.lock().unwrap().contains(&spec.template_id) {
            return Err(NodeError::TemplateNotFound(spec.template_id));
        }
        // As a real node's runtime: a node with volumes of its own mounts only those.
        if let Some(files) = &self.volume_store
            && let Some(v) = spec.volumes.iter().find(|v| !files.exists(&v.volume_id).unwrap_or(false))
        {
            return Err(NodeError::Invalid(format!("volume {} is not on this node", v.volume_id)));
        }
        let id = format!("f{}{}", self.id_prefix, self.next.fetch_add(1, Ordering::SeqCst));
        self.created_from.lock().unwrap().insert(id.clone(), spec.template_id);
        self.sandboxes.lock().unwrap().insert(id.clone(), false);
        self.secrets.lock().unwrap().insert(id.clone(), soulbox_runtime::EnvdSecret::generate());
        Ok(CreatedSandbox { sandbox_id: id, address: IpAddr::V4(Ipv4Addr::LOCALHOST) })
    }
    async fn pause(&self, id: &str, _keep_memory: bool) -> Result<(), NodeError> {
        self.sandboxes.lock().unwrap().insert(id.into(), true);
        Ok(())
    }
    async fn resume(&self, id: &str) -> Result<IpAddr, NodeError> {
        self.sandboxes.lock().unwrap().insert(id.into(), false);
        Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    async fn update_network(&self, id: &str, policy: &NetworkPolicy) -> Result<(), NodeError> {
        if !self.sandboxes.lock().unwrap().contains_key(id) {
            return Err(NodeError::SandboxNotFound(id.into()));
        }
        self.networks.lock().unwrap().insert(id.into(), policy.clone());
        Ok(())
    }
    async fn kill(&self, id: &str) -> Result<(), NodeError> {
        self.sandboxes.lock().unwrap().remove(id);
        self.secrets.lock().unwrap().remove(id);
        Ok(())
    }
    async fn snapshot(&self, id: &str, name: &str) -> Result<SnapshotTaken, NodeError> {
        if !self.sandboxes.lock().unwrap().contains_key(id) {
            return Err(NodeError::SandboxNotFound(id.into()));
        }
        let mut snapshots = self.snapshots.lock().unwrap();
        if !snapshots.iter().any(|n| n == name) {
            snapshots.push(name.into());
        }
        Ok(SnapshotTaken { template: Self::template(name), memory: false })
    }
    async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
        let mut snapshots = self.snapshots.lock().unwrap();
        let before = snapshots.len();
        snapshots.retain(|n| n != name);
        Ok(snapshots.len() < before)
    }
    async fn create_volume(&self, id: &str, size_bytes: Option<u64>) -> Result<(), NodeError> {
        if let Some(files) = &self.volume_store {
            files.create_sized(id, size_bytes).map_err(|e| NodeError::Failed(e.to_string()))?;
        }
        self.volumes.lock().unwrap().insert(id.into());
        Ok(())
    }
    async fn delete_volume(&self, id: &str) -> Result<(), NodeError> {
        if let Some(files) = &self.volume_store
            && self.volumes.lock().unwrap().contains(id)
        {
            files.delete(id).map_err(|e| NodeError::Failed(e.to_string()))?;
        }
        self.volumes.lock().unwrap().remove(id);
        Ok(())
    }
    async fn stats(&self, _id: &str) -> Result<SandboxStats, NodeError> {
        Ok(SandboxStats { cpu_count: 2, ..Default::default() })
    }
    fn envd_secret(&self, id: &str) -> Option<soulbox_runtime::EnvdSecret> {
        self.secrets.lock().unwrap().get(id).cloned()
    }
    async fn logs(&self, _id: &str, query: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        // envd's format (tracing's text): time, level, target, message.
        let lines = [
            (5, "2026-01-01T00:00:00.005Z  INFO soulbox_envd: envd listening"),
            (7, "2026-01-01T00:00:00.007Z  WARN soulbox_envd::process: second line"),
            (9, "2026-01-01T00:00:00.009Z ERROR soulbox_envd::process: third line"),
        ];
        Ok(lines
            .into_iter()
            .filter(|(ms, _)| *ms >= query.start_ms)
            .take(query.limit)
            .map(|(unix_ms, line)| LogLine { unix_ms, line: line.into() })
            .collect())
    }
}

/// Several fake nodes as a cluster: placement goes round the nodes that are up, `place_on` refuses a node that
/// is down, and the proxy's routes are whatever the test sets (a test's stand-in for a node agent).
pub struct FakeCluster {
    pub nodes: Vec<(String, std::sync::Arc<FakeNode>)>,
    next: std::sync::atomic::AtomicUsize,
    pub down: Mutex<std::collections::HashSet<String>>,
    pub routes: Mutex<HashMap<String, crate::cluster::Route>>,
}

impl FakeCluster {
    pub fn new(nodes: Vec<(String, std::sync::Arc<FakeNode>)>) -> FakeCluster {
        FakeCluster { nodes, next: Default::default(), down: Default::default(), routes: Default::default() }
    }

    pub fn node(&self, id: &str) -> &FakeNode {
        &self.nodes.iter().find(|(n, _)| n == id).expect("a node of the fake cluster").1
    }

    fn up(&self, id: &str) -> Result<std::sync::Arc<FakeNode>, NodeError> {
        match self.nodes.iter().find(|(n, _)| n == id) {
            Some(_) if self.down.lock().unwrap().contains(id) => {
                Err(NodeError::Unreachable(format!("node {id} is unhealthy (no heartbeat)")))
            }
            Some((_, node)) => Ok(node.clone()),
            None => Err(NodeError::Unreachable(format!("node {id} was removed"))),
        }
    }

    fn placement(&self, id: &str, node: std::sync::Arc<FakeNode>) -> crate::cluster::Placement {
        crate::cluster::Placement { node_id: id.into(), node, hold: None }
    }
}

#[async_trait]
impl crate::cluster::NodeSet for FakeCluster {
    async fn get(&self, node_id: &str) -> Result<std::sync::Arc<dyn Node>, NodeError> {
        Ok(self.up(node_id)?)
    }
    async fn place(&self, _need: crate::cluster::Requirements) -> Result<crate::cluster::Placement, NodeError> {
        for _ in 0..self.nodes.len() {
            let (id, _) = &self.nodes[self.next.fetch_add(1, Ordering::SeqCst) % self.nodes.len()];
            if let Ok(node) = self.up(id) {
                return Ok(self.placement(id, node));
            }
        }
        Err(NodeError::NoCapacity("no healthy node".into()))
    }
    async fn place_on(
        &self,
        node_id: &str,
        _need: crate::cluster::Requirements,
    ) -> Result<crate::cluster::Placement, NodeError> {
        let node = self.up(node_id).map_err(|e| NodeError::NoCapacity(e.to_string()))?;
        Ok(self.placement(node_id, node))
    }
    async fn route(&self, node_id: &str) -> Option<crate::cluster::Route> {
        self.up(node_id).ok()?;
        self.routes.lock().unwrap().get(node_id).cloned()
    }
    fn template_node(&self) -> std::sync::Arc<dyn Node> {
        self.nodes[0].1.clone()
    }
    async fn list(&self) -> Result<Vec<crate::cluster::NodeView>, NodeError> {
        let mut views = Vec::new();
        for (id, node) in &self.nodes {
            let info = NodeInfo { node_id: id.clone(), ..node.info().await };
            views.push(crate::cluster::NodeView {
                info,
                address: None,
                draining: false,
                registered_at_ms: None,
                last_heartbeat_ms: None,
            });
        }
        Ok(views)
    }
    async fn set_draining(&self, _node_id: &str, _draining: bool) -> Result<(), NodeError> {
        Err(NodeError::Invalid("not in the fake cluster".into()))
    }
    async fn remove(&self, _node_id: &str) -> Result<(), NodeError> {
        Err(NodeError::Invalid("not in the fake cluster".into()))
    }
    fn is_cluster(&self) -> bool {
        true
    }
}
