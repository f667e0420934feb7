//! Cluster mode (issue 7): the control plane places sandboxes on node agents (`soulbox node`) over HTTP.
//!
//! - [`NodeSet`] is what the lifecycle and proxy see: the node a sandbox lives on, placement of a new one, and the
//!   nodes for the admin API. [`SingleNode`] is one-machine mode (the in-process runtime is the only node);
//!   [`registry::Registry`] is cluster mode (every node from the store, so all API replicas agree).
//! - [`scheduler`] is the pure placement decision; [`remote::RemoteNode`] the `Node` over HTTP; [`wire`] the node
//!   API's JSON and its token and id rules.
//! - Above the cluster: `node_agent` (runtime + node API + sandbox proxy + heartbeats, `soulbox node`) and
//!   `cluster_control` (the server side of heartbeats, reconciliation and lost-node handling).

pub mod registry;
pub mod remote;
pub mod scheduler;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;

use crate::node::{Node, NodeError, NodeInfo};
pub use scheduler::Requirements;

/// A node as the admin API lists it: what it reported plus what only the control plane knows.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub info: NodeInfo,
    /// Node agent URL (cluster mode).
    pub address: Option<String>,
    pub draining: bool,
    pub registered_at_ms: Option<i64>,
    pub last_heartbeat_ms: Option<i64>,
}

/// How proxied traffic reaches a sandbox on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The sandbox's address is reachable from here (the in-process runtime).
    Direct,
    /// Through the node agent's header-routed proxy at `authority` (`host:port`), presenting `secret`.
    ViaNode { authority: String, secret: String },
}

/// Where a new sandbox goes, and the capacity hold taken there (cluster mode).
pub struct Placement {
    pub node_id: String,
    pub node: Arc<dyn Node>,
    /// The id of the hold in the store's `placements` table.
    pub hold: Option<String>,
}

#[async_trait]
pub trait NodeSet: Send + Sync + 'static {
    /// The node a sandbox recorded on `node_id` lives on. `Unreachable` when that node is removed or unhealthy.
    async fn get(&self, node_id: &str) -> Result<Arc<dyn Node>, NodeError>;
    /// Chooses a node for a new sandbox and holds its capacity there (`NoCapacity` with the reason when none
    /// fits). The caller releases the hold with [`NodeSet::release`] once the sandbox's record exists or the
    /// create failed.
    async fn place(&self, need: Requirements) -> Result<Placement, NodeError>;
    /// [`NodeSet::place`] on `node_id` only: a snapshot's sandboxes start where its layers are.
    async fn place_on(&self, node_id: &str, need: Requirements) -> Result<Placement, NodeError>;
    /// Drops a placement hold (its capacity now counts through the sandbox's record, or was not used).
    async fn release(&self, placement: &Placement) {
        let _ = placement;
    }
    /// Whether the operator drained `node_id`: what it holds on disk moves when it is next used
    /// (`lifecycle::moves`). Never on one machine.
    async fn is_draining(&self, node_id: &str) -> bool {
        let _ = node_id;
        false
    }
    /// How the proxy reaches sandboxes on `node_id`; `None` when it cannot right now.
    async fn route(&self, node_id: &str) -> Option<Route>;
    /// The node asked about templates (and, on one machine, the one that builds them).
    fn template_node(&self) -> Arc<dyn Node>;
    async fn list(&self) -> Result<Vec<NodeView>, NodeError>;
    async fn set_draining(&self, node_id: &str, draining: bool) -> Result<(), NodeError>;
    /// Forgets the node (its agent re-registers if it keeps heartbeating).
    async fn remove(&self, node_id: &str) -> Result<(), NodeError>;
    /// The cluster registry, when this is cluster mode.
    fn cluster(&self) -> Option<&registry::Registry> {
        None
    }
    /// Whether sandboxes run on several nodes (what node-local volumes are about).
    fn is_cluster(&self) -> bool {
        self.cluster().is_some()
    }
}

/// One machine: the in-process runtime is the only node, and every sandbox is on it.
pub struct SingleNode {
    node_id: String,
    node: Arc<dyn Node>,
}

impl SingleNode {
    pub fn new(node_id: impl Into<String>, node: Arc<dyn Node>) -> SingleNode {
        SingleNode { node_id: node_id.into(), node }
    }
}

#[async_trait]
impl NodeSet for SingleNode {
    async fn get(&self, _node_id: &str) -> Result<Arc<dyn Node>, NodeError> {
        // Records written before a rename of the local node still live on it: there is no other.
        Ok(self.node.clone())
    }

    async fn place(&self, _need: Requirements) -> Result<Placement, NodeError> {
        // As before cluster mode: the runtime itself refuses what does not fit.
        Ok(Placement { node_id: self.node_id.clone(), node: self.node.clone(), hold: None })
    }

    async fn place_on(&self, _node_id: &str, need: Requirements) -> Result<Placement, NodeError> {
        // Every sandbox is here, whatever node name an older record carries.
        self.place(need).await
    }

    async fn route(&self, _node_id: &str) -> Option<Route> {
        Some(Route::Direct)
    }

    fn template_node(&self) -> Arc<dyn Node> {
        self.node.clone()
    }

    async fn list(&self) -> Result<Vec<NodeView>, NodeError> {
        let info = self.node.info().await;
        Ok(vec![NodeView { info, address: None, draining: false, registered_at_ms: None, last_heartbeat_ms: None }])
    }

    async fn set_draining(&self, _node_id: &str, _draining: bool) -> Result<(), NodeError> {
        Err(NodeError::Invalid("draining needs cluster mode: this server runs its only node in-process".into()))
    }

    async fn remove(&self, _node_id: &str) -> Result<(), NodeError> {
        Err(NodeError::Invalid("the in-process node of a one-machine server cannot be removed".into()))
    }
}
