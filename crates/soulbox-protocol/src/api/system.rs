//! The remaining REST bodies the server writes: the template list, `GET /health`, the batch metrics of
//! `GET /sandboxes/metrics`, and the proxy's 502 answers.
//!
//! Fields are declared in the order of their JSON names (bytewise): the order the server wrote them in before
//! these types existed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{SandboxMetric, TeamUser};

/// One template of `GET /templates` (E2B's `Template`, every field its schema requires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateListEntry {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(rename = "buildID", default)]
    pub build_id: String,
    /// Always `ready`: a template is listed once a build has made it.
    #[serde(default)]
    pub build_status: String,
    /// How many builds the template has had (1 for a server template: it was built once, at setup).
    #[serde(default)]
    pub build_count: i32,
    #[serde(default)]
    pub cpu_count: u32,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
    /// The key that first built it; null for the server's own templates.
    #[serde(default)]
    pub created_by: Option<TeamUser>,
    /// The sandboxes' disk limit (the template's own, else the node's default).
    #[serde(rename = "diskSizeMB", default)]
    pub disk_size_mb: u32,
    #[serde(default)]
    pub envd_version: String,
    /// When a sandbox last started from it (RFC 3339); null if never.
    #[serde(default)]
    pub last_spawned_at: Option<String>,
    #[serde(rename = "memoryMB", default)]
    pub memory_mb: u32,
    /// E2B's newer name for `aliases`.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub public: bool,
    /// Sandboxes started from it.
    #[serde(default)]
    pub spawn_count: i64,
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: String,
}

/// `GET /templates/{id}` (E2B's `TemplateWithBuilds`): a template and its builds, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateWithBuilds {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub builds: Vec<TemplateBuild>,
    pub created_at: String,
    #[serde(default)]
    pub last_spawned_at: Option<String>,
    #[serde(default)]
    pub names: Vec<String>,
    pub public: bool,
    #[serde(default)]
    pub spawn_count: i64,
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub updated_at: String,
}

/// One build of [`TemplateWithBuilds`] (E2B's `TemplateBuild`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuild {
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub cpu_count: u32,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    /// `waiting` | `building` | `ready` | `error`.
    pub status: String,
    pub updated_at: String,
}

/// `GET /health` (SoulBox's): 200 when healthy, 503 with the same body when not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub checks: HealthChecks,
    /// `healthy` | `unhealthy`.
    pub status: String,
    pub uptime_seconds: u64,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthChecks {
    /// The node's status (`healthy`, `draining`, `unhealthy`, ...).
    pub node: String,
    pub store: bool,
}

/// `GET /sandboxes/metrics?sandbox_ids=...`: the latest sample of each of the caller's running sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxesMetrics {
    pub sandboxes: BTreeMap<String, SandboxMetric>,
}

/// The proxy's 502 for a sandbox that does not run, or a port nothing listens on (E2B's shape: the SDKs read
/// `sandboxId` and `port`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyError {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub sandbox_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_list_entry_bytes() {
        let entry = TemplateListEntry {
            aliases: vec!["base".into()],
            build_id: "base".into(),
            build_count: 1,
            build_status: "ready".into(),
            cpu_count: 2,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: None,
            disk_size_mb: 10240,
            envd_version: "0.6.13".into(),
            last_spawned_at: None,
            memory_mb: 512,
            names: vec!["base".into()],
            public: true,
            spawn_count: 0,
            template_id: "base".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let json = r#"{"aliases":["base"],"buildID":"base","buildStatus":"ready","buildCount":1,"cpuCount":2,"createdAt":"2026-01-01T00:00:00Z","createdBy":null,"diskSizeMB":10240,"envdVersion":"0.6.13","lastSpawnedAt":null,"memoryMB":512,"names":["base"],"public":true,"spawnCount":0,"templateID":"base","updatedAt":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(serde_json::to_string(&entry).unwrap(), json);
        assert_eq!(serde_json::from_str::<TemplateListEntry>(json).unwrap(), entry);
    }

    #[test]
    fn health_and_proxy_error_bytes() {
        let health = Health {
            checks: HealthChecks { node: "healthy".into(), store: true },
            status: "healthy".into(),
            uptime_seconds: 5,
            version: "0.1.0".into(),
        };
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            r#"{"checks":{"node":"healthy","store":true},"status":"healthy","uptime_seconds":5,"version":"0.1.0"}"#
        );
        let gone =
            ProxyError { code: 502, message: "The sandbox was not found".into(), port: None, sandbox_id: "s".into() };
        assert_eq!(
            serde_json::to_string(&gone).unwrap(),
            r#"{"code":502,"message":"The sandbox was not found","sandboxId":"s"}"#
        );
        let closed = ProxyError { port: Some(8080), ..gone };
        assert_eq!(
            serde_json::to_string(&closed).unwrap(),
            r#"{"code":502,"message":"The sandbox was not found","port":8080,"sandboxId":"s"}"#
        );
        let empty = SandboxesMetrics { sandboxes: BTreeMap::new() };
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"sandboxes":{}}"#);
    }
}
