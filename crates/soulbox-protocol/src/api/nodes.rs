//! The admin API's nodes (SoulBox's, seed feature 10): `GET /nodes`, `GET /nodes/{id}`, and the drain routes
//! that answer with the node.
//!
//! Fields are declared in the order of their JSON names (bytewise): the order the server wrote them in before
//! these types existed.

use serde::{Deserialize, Serialize};

/// A node with its status and capacity, plus what only the control plane knows (cluster mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The node agent's URL (cluster mode; `null` on one machine).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub cpu_available: f64,
    #[serde(default)]
    pub cpu_count: u32,
    #[serde(default)]
    pub draining: bool,
    /// RFC 3339.
    #[serde(default)]
    pub last_health_check: Option<String>,
    /// RFC 3339 (cluster mode).
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    #[serde(rename = "memoryAvailableMB", default)]
    pub memory_available_mb: u64,
    #[serde(rename = "memoryMB", default)]
    pub memory_mb: u64,
    #[serde(rename = "nodeID")]
    pub node_id: String,
    #[serde(default)]
    pub region: String,
    /// RFC 3339 (cluster mode).
    #[serde(default)]
    pub registered_at: Option<String>,
    #[serde(default)]
    pub sandbox_count: u32,
    /// `healthy`, `degraded`, `draining`, `connecting` or `unhealthy`.
    pub status: String,
    /// Why the node reports itself degraded.
    #[serde(default)]
    pub trouble: Option<String>,
    #[serde(default)]
    pub version: String,
}

/// `POST /nodes/{id}/evacuate`: what moved off a drained node, and what stays on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvacuation {
    /// What could not move, and why.
    #[serde(default)]
    pub failed: Vec<EvacuationFailure>,
    /// Sandboxes paused to disk, now paused on another node.
    #[serde(default)]
    pub moved_sandboxes: Vec<String>,
    /// Snapshots (their `snapshotID`) now held by another node.
    #[serde(default)]
    pub moved_snapshots: Vec<String>,
    /// Sandboxes that stay: running ones (they end on their own or are killed) and ones paused with their memory
    /// (which cannot move).
    #[serde(default)]
    pub remaining: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvacuationFailure {
    pub id: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trips_with_nulls_kept() {
        let node = NodeInfo {
            address: None,
            cpu_available: 2.0,
            cpu_count: 4,
            draining: false,
            last_health_check: Some("2026-01-01T00:00:00Z".into()),
            last_heartbeat: None,
            memory_available_mb: 1024,
            memory_mb: 4096,
            node_id: "local".into(),
            region: "".into(),
            registered_at: None,
            sandbox_count: 1,
            status: "healthy".into(),
            trouble: None,
            version: "0.1.0".into(),
        };
        let json = r#"{"address":null,"cpuAvailable":2.0,"cpuCount":4,"draining":false,"lastHealthCheck":"2026-01-01T00:00:00Z","lastHeartbeat":null,"memoryAvailableMB":1024,"memoryMB":4096,"nodeID":"local","region":"","registeredAt":null,"sandboxCount":1,"status":"healthy","trouble":null,"version":"0.1.0"}"#;
        assert_eq!(serde_json::to_string(&node).unwrap(), json);
        assert_eq!(serde_json::from_str::<NodeInfo>(json).unwrap(), node);
        // An older server's node (no cluster fields) still reads.
        let old: NodeInfo = serde_json::from_str(r#"{"nodeID":"n","status":"healthy"}"#).unwrap();
        assert_eq!((old.node_id.as_str(), old.address, old.draining), ("n", None, false));
    }
}
