//! What the control plane needs from a node. One machine: the runtime in-process (`local_node`); a cluster:
//! node agents over HTTP (issue 7). The API and lifecycle code only see this trait.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use soulbox_templates::{BuildFailure, BuildJob, LogSink};

/// A template as the node knows it (ids and aliases are matched by the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateInfo {
    pub template_id: String,
    pub aliases: Vec<String>,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub envd_version: String,
    /// When the node wrote the template (unix ms); 0 when it cannot tell.
    #[serde(default)]
    pub created_at_ms: i64,
}

pub use soulbox_protocol::NetworkPolicy;

/// Everything a node needs to start a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    pub template_id: String,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub env_vars: BTreeMap<String, String>,
    pub envd_access_token: Option<String>,
    pub network: NetworkPolicy,
    pub metadata: BTreeMap<String, String>,
    /// The id the sandbox must have on the node (one moved from another node keeps its id); `None`: a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// Persistent volumes to mount (the node's volumes directory holds them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
}

/// A volume in a sandbox: `<volumes dir>/<volume_id>` at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub volume_id: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSandbox {
    pub sandbox_id: String,
    pub address: IpAddr,
}

/// Counters sampled from a sandbox's cgroup and veth (monotonic counters are totals since start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStats {
    pub cpu_usage_ns: u64,
    pub cpu_count: u32,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub mem_cache_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub process_count: u64,
}

/// Seed feature 10: node status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Connecting,
    Healthy,
    Degraded,
    Draining,
    Unhealthy,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Connecting => "connecting",
            NodeStatus::Healthy => "healthy",
            NodeStatus::Degraded => "degraded",
            NodeStatus::Draining => "draining",
            NodeStatus::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<NodeStatus> {
        [NodeStatus::Connecting, NodeStatus::Healthy, NodeStatus::Degraded, NodeStatus::Draining, NodeStatus::Unhealthy]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub node_id: String,
    pub status: NodeStatus,
    pub region: String,
    pub version: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub cpu_available: f64,
    pub memory_available_mb: u64,
    pub sandbox_count: u32,
    pub last_health_check_unix_ms: i64,
    /// Why the node reports itself degraded (runtime errors, resource pressure); `None` when all is well.
    #[serde(default)]
    pub trouble: Option<String>,
}

/// Where the proxy sends a sandbox's traffic: its address, and which boot of the sandbox answers there (the proxy
/// keeps idle connections per boot: `crate::upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficAddress {
    pub ip: IpAddr,
    pub boot: u64,
}

/// A snapshot a node took: the template it registered and whether that holds the sandbox's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTaken {
    pub template: TemplateInfo,
    pub memory: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("sandbox {0} not found on this node")]
    SandboxNotFound(String),
    #[error("template {0} not found")]
    TemplateNotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("not enough resources: {0}")]
    NoCapacity(String),
    #[error("node failure: {0}")]
    Failed(String),
    /// The node did not answer (cluster mode: down, partitioned, or removed). Its sandboxes' state is unknown.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    #[error("node {0} not found")]
    NodeNotFound(String),
}

#[async_trait]
pub trait Node: Send + Sync + 'static {
    async fn info(&self) -> NodeInfo;
    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError>;
    /// Starts a sandbox and returns once its envd answers. The node picks the id (`^[a-z0-9]+$`, unique on
    /// the node, random enough to be unique in a cluster) so it can hand out a pre-warmed slot.
    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError>;
    /// Freezes (keep_memory) or stops to disk (filesystem kept).
    async fn pause(&self, sandbox_id: &str, keep_memory: bool) -> Result<(), NodeError>;
    /// Thaws or restarts from disk; returns the (possibly new) address once envd answers.
    async fn resume(&self, sandbox_id: &str) -> Result<IpAddr, NodeError>;
    /// Replaces the sandbox's egress policy (running, paused or stopped on this node): connections it forbids are
    /// cut, new ones follow it, and a paused or stopped sandbox has it when it resumes.
    async fn update_network(&self, sandbox_id: &str, policy: &NetworkPolicy) -> Result<(), NodeError> {
        let _ = (sandbox_id, policy);
        Err(NodeError::Invalid("this node cannot change a sandbox's network".into()))
    }
    /// Kills and deletes everything the sandbox holds. Killing an unknown sandbox is not an error.
    async fn kill(&self, sandbox_id: &str) -> Result<(), NodeError>;
    async fn stats(&self, sandbox_id: &str) -> Result<SandboxStats, NodeError>;
    /// The sandbox's agent log (envd's stdout/stderr), oldest first: the lines `query` selects. The node keeps
    /// the log capped, so neither side ever holds more than the cap.
    async fn logs(&self, sandbox_id: &str, query: LogQuery) -> Result<Vec<LogLine>, NodeError>;
    /// Where the proxy sends traffic for a sandbox it reaches directly (the in-process node): the node's own
    /// answer, `None` when the sandbox does not run there — so traffic for a dead or removed sandbox goes nowhere,
    /// whatever address a record still names. Default: the address the control plane recorded.
    async fn traffic_address(&self, _sandbox_id: &str, recorded: Option<IpAddr>) -> Option<TrafficAddress> {
        recorded.map(|ip| TrafficAddress { ip, boot: 0 })
    }

    /// Builds a template (issue 5, `crate::templates`); on success the node has the template `job.template_name`.
    /// Every log line goes to `log` as it is produced. Nodes that cannot build say so.
    async fn build_template(&self, job: BuildJob, log: LogSink) -> Result<(), BuildFailure> {
        let _ = (job, log);
        Err(BuildFailure::new("this node cannot build templates", Some("base")))
    }
    /// Refuses a recipe before its build starts when its base is not allowed for a caller (a host path outside
    /// the node's `[templates] host_source_dirs`); the message names the setting. The build itself checks again.
    fn check_recipe(&self, recipe: &soulbox_templates::Recipe) -> Result<(), String> {
        let _ = recipe;
        Ok(())
    }
    /// Removes a template from the node (its layers may stay for other templates). `Ok(false)`: there was none.
    async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
        let _ = name;
        Err(NodeError::Invalid("this node cannot delete templates".into()))
    }
    /// Captures the sandbox (running, paused or stopped; it keeps its state) into the template `name` on this
    /// node, replacing a template of that name. Its files always; its memory where the runtime can (`memory`).
    async fn snapshot(&self, sandbox_id: &str, name: &str) -> Result<SnapshotTaken, NodeError> {
        let _ = (sandbox_id, name);
        Err(NodeError::Invalid("this node cannot take snapshots".into()))
    }
    /// Registers the template `from` also as `to` (same layers and settings; tags point names at builds).
    async fn copy_template(&self, from: &str, to: &str) -> Result<(), NodeError> {
        let _ = (from, to);
        Err(NodeError::Invalid("this node cannot copy templates".into()))
    }
    /// The secret the sandbox's envd requires from its node (`soulbox_protocol::envd_secret`), for the proxy
    /// to add on requests to envd's port. Cheap (from memory: it is called per request). Only a node whose
    /// sandboxes this process reaches directly knows it; a remote node's agent adds it itself.
    fn envd_secret(&self, sandbox_id: &str) -> Option<soulbox_runtime::EnvdSecret> {
        let _ = sandbox_id;
        None
    }
    /// Where uploaded COPY contexts are kept (`<dir>/<filesHash>`), when this node builds templates.
    fn template_files_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    // Node-local volumes (cluster mode without a shared volumes directory): a volume's files live on one node.

    /// Makes the empty volume `volume_id` in this node's volumes directory, of `size_bytes` (`None`: no limit).
    async fn create_volume(&self, volume_id: &str, size_bytes: Option<u64>) -> Result<(), NodeError> {
        let _ = (volume_id, size_bytes);
        Err(NodeError::Invalid("this node cannot hold volumes".into()))
    }
    /// Removes the volume `volume_id` and its files from this node; an unknown volume is not an error.
    async fn delete_volume(&self, volume_id: &str) -> Result<(), NodeError> {
        let _ = volume_id;
        Err(NodeError::Invalid("this node cannot hold volumes".into()))
    }
    /// This node's volumes directory, when this process reaches it directly (the in-process node): content
    /// requests for its volumes are then served here instead of forwarded to a node agent.
    fn volume_files(&self) -> Option<std::sync::Arc<soulbox_volumes::VolumeStore>> {
        None
    }

    // Moving a template between nodes (cluster mode, `crate::lifecycle::moves`): its description, the layers the
    // receiving node lacks as OCI layer tars, then the description again on the receiving node.

    /// The template `name` as this node stores it (settings and layer digests).
    async fn export_template(&self, name: &str) -> Result<TemplateMeta, NodeError> {
        let _ = name;
        Err(NodeError::Invalid("this node cannot move templates".into()))
    }
    /// Which of `layers` this node does not have.
    async fn missing_layers(&self, layers: &[String]) -> Result<Vec<String>, NodeError> {
        let _ = layers;
        Err(NodeError::Invalid("this node cannot move templates".into()))
    }
    /// The layer `digest` as an uncompressed OCI layer tar.
    async fn export_layer(&self, digest: &str) -> Result<ByteStream, NodeError> {
        let _ = digest;
        Err(NodeError::Invalid("this node cannot move templates".into()))
    }
    /// Stores the tar `tar` as layer `digest`, refused unless its content has that digest.
    async fn import_layer(&self, digest: &str, tar: ByteStream) -> Result<(), NodeError> {
        let _ = (digest, tar);
        Err(NodeError::Invalid("this node cannot move templates".into()))
    }
    /// Registers `template` (every layer must be here), replacing one of that name.
    async fn import_template(&self, template: TemplateMeta) -> Result<(), NodeError> {
        let _ = template;
        Err(NodeError::Invalid("this node cannot move templates".into()))
    }
}

/// A template's description as it moves between nodes: the runtime's own.
pub use soulbox_runtime::TemplateMeta;

/// Bytes moving between nodes (a layer's tar), read as they arrive.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Which lines of a sandbox log to read: stamped at or after `start_ms` (unix ms), at most `limit` — E2B's
/// `start` and `limit` of `GET /sandboxes/{id}/logs`, and the query of the node API's logs route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    #[serde(rename = "start", default)]
    pub start_ms: i64,
    #[serde(default = "LogQuery::default_limit")]
    pub limit: usize,
}

impl LogQuery {
    /// E2B's default `limit`.
    pub const DEFAULT_LIMIT: usize = 1000;
    /// The most lines one call returns.
    pub const MAX_LIMIT: usize = 10_000;

    fn default_limit() -> usize {
        Self::DEFAULT_LIMIT
    }
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery { start_ms: 0, limit: Self::DEFAULT_LIMIT }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub unix_ms: i64,
    pub line: String,
}
