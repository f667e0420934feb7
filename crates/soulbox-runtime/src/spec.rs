//! What the caller asks for when creating a sandbox, and what it gets back.
use crate::envd_secret::EnvdSecret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub use soulbox_protocol::{HeaderRule, NetworkPolicy, SocksProxy};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    pub template: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Overrides of the template defaults.
    #[serde(default)]
    pub cpu_count: Option<u32>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// Disk size limit of the writable layer in MiB (overrides the template's `diskMb`, which
    /// overrides `RuntimeConfig::default_disk_mb`; 0 = no limit).
    #[serde(default)]
    pub disk_mb: Option<u64>,
    #[serde(default)]
    pub access_token: Option<String>,
    pub network: NetworkPolicy,
    /// The OCI runtime by name (`runc`, `runsc`), overriding the template's `runtime` (template builds run their
    /// steps on the runtime the template will run on).
    #[serde(default)]
    pub runtime: Option<String>,
    /// The id the sandbox must have (one moved from another node keeps its id); `None`: a new one. Refused when
    /// a sandbox of that id is on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// Persistent volumes bind-mounted into the sandbox (`RuntimeConfig::volumes_dir`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
}

/// A persistent volume in a sandbox: the directory `<volumes_dir>/<volume_id>` at `path` (absolute, normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub volume_id: String,
    pub path: String,
}

impl SandboxSpec {
    pub fn new(template: &str) -> Self {
        SandboxSpec {
            template: template.into(),
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            cpu_count: None,
            memory_mb: None,
            pids_limit: None,
            disk_mb: None,
            access_token: None,
            network: NetworkPolicy::open(),
            runtime: None,
            sandbox_id: None,
            volumes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A prepared network slot in the warm pool (not a sandbox yet).
    Pooled,
    Creating,
    Running,
    Paused,
    /// Stopped to disk: upper dir kept, no process, no network.
    Stopped,
    Deleting,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    pub status: Status,
    pub ip: Option<Ipv4Addr>,
    /// `ip:49983` while the sandbox has a network.
    pub envd_addr: Option<String>,
    pub spec: SandboxSpec,
    /// What the node sends envd in `X-Soulbox-Envd-Secret` (see [`crate::envd_secret`]); never serialized.
    #[serde(skip)]
    pub envd_secret: Option<EnvdSecret>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub oom_kills: u64,
    pub pids: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// Writable layer: bytes used and the limit (0 when disk limits are off).
    #[serde(default)]
    pub disk_used_bytes: u64,
    #[serde(default)]
    pub disk_limit_bytes: u64,
}
