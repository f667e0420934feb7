//! The E2B control-plane REST JSON models (spec §1.5), shared by the server and the Rust SDK.
//!
//! Field names follow E2B exactly (camelCase with `ID`, plus the snake_case quirk `allow_internet_access`).
//! Timestamps are RFC 3339 strings. SoulBox's own additions are marked as such.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod logs;
mod network;
mod nodes;
mod secrets;
mod snapshots;
mod system;
mod teams;
mod templates;
mod volumes;

pub use logs::{
    LogsDirection, SandboxLog, SandboxLogEntry, SandboxLogs, SandboxLogsV2Response, TemplateBuildLogsResponse,
};
pub use network::{
    EgressProxy, EgressProxyTls, MASK_PORT_PLACEHOLDER, NetworkRule, NetworkTransform, SandboxNetworkConfig,
    SandboxNetworkUpdate, TRAFFIC_ACCESS_TOKEN_HEADER,
};
pub use nodes::{EvacuationFailure, NodeEvacuation, NodeInfo};
pub use secrets::{NewSecret, Secret, SecretText, SecretUpdate};
pub use snapshots::{SandboxForkRequest, SandboxForkResult, SandboxSnapshotRequest, SnapshotInfo, SnapshotMode};
pub use system::{
    Health, HealthChecks, ProxyError, SandboxesMetrics, TemplateBuild, TemplateListEntry, TemplateWithBuilds,
};
pub use teams::{
    AdminBuildCancelResult, AdminSandboxKillResult, CreatedAccessToken, MaxTeamMetric, NewAccessToken, TeamMetric,
    TeamUser, TemplateUpdateRequest, TemplateUpdateResponse, UpdateTeamApiKey,
};
pub use templates::{
    AssignedTags, BuildEnd, BuildEndReason, BuildLogEntry, BuildReason, BuildStatus, BuildStreamLine, LogLevel,
    TemplateAlias, TemplateBuildInfo, TemplateBuildRequested, TemplateFilesLink, TemplateTag,
};
pub use volumes::{
    NewVolume, SandboxVolumeMount, Volume, VolumeAndToken, VolumeEntryStat, VolumeEntryType, VolumePathUpdate,
};

/// Every API error body: `code` equals the HTTP status (the JS SDK branches on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoResume {
    pub enabled: bool,
}

/// Body of `POST /sandboxes` (v1, has `secure`) and `POST /v2/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause_memory: Option<bool>,
    /// SoulBox (seed feature 4): with `autoPause`, pause only after this many seconds past the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause_grace_period: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<AutoResume>,
    #[serde(rename = "allow_internet_access", default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SandboxNetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<SandboxVolumeMount>>,
}

/// Response of create / connect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub traffic_access_token: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Kill,
    Pause,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    pub on_timeout: OnTimeout,
}

/// `GET /sandboxes/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub started_at: String,
    pub end_at: String,
    pub envd_version: String,
    pub cpu_count: i32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i32,
    pub state: SandboxState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SandboxNetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<SandboxVolumeMount>>,
}

/// `GET /v2/sandboxes` items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: i32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i32,
    pub state: SandboxState,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v2/sandboxes/{id}/connect` (v1 requires `timeout`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/resume` (E2B's deprecated resume). Its `autoPause` is not read: SoulBox keeps the pause policy set at create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumedSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
}

/// `POST /sandboxes/{id}/timeout`: end = now + timeout seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxTimeoutRequest {
    pub timeout: i32,
}

/// `POST /sandboxes/{id}/pause` (may be `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPauseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_healthy_guest: Option<bool>,
}

/// `POST /sandboxes/{id}/refreshes` (seed feature 7): extend by `duration` seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxRefreshRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i32>,
}

/// One metrics sample (all fields required by the SDKs). SoulBox adds the seed-8 counters as optional fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: i32,
    pub cpu_used_pct: f64,
    pub mem_used: i64,
    pub mem_total: i64,
    pub mem_cache: i64,
    pub disk_used: i64,
    pub disk_total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_count: Option<i64>,
}

/// `GET /teams` items: the team of the key that asks (a SoulBox key belongs to exactly one team).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    #[serde(rename = "teamID")]
    pub team_id: String,
    pub name: String,
    /// The key the request was made with (E2B returns the team's key here).
    pub api_key: String,
    pub is_default: bool,
    /// SoulBox: the team's effective limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TeamLimits>,
}

/// SoulBox: what a team may run at once (`[teams]` defaults with the team's overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamLimits {
    pub max_sandboxes: u64,
    pub max_vcpus: u64,
    #[serde(rename = "maxMemoryMB")]
    pub max_memory_mb: u64,
    pub max_builds: u64,
}

/// How a key is shown without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentifierMaskingDetails {
    pub prefix: String,
    pub value_length: u32,
    pub masked_value_prefix: String,
    pub masked_value_suffix: String,
}

/// `GET /api-keys` items (E2B's `TeamAPIKey`, plus SoulBox's team and role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamApiKey {
    pub id: String,
    pub name: String,
    pub mask: IdentifierMaskingDetails,
    pub created_at: String,
    #[serde(default)]
    pub created_by: Option<serde_json::Value>,
    #[serde(default)]
    pub last_used: Option<String>,
    /// SoulBox: the key's team and role (`admin` | `member`).
    #[serde(rename = "teamID", default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `POST /api-keys` answer: the key's secret, shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTeamApiKey {
    pub id: String,
    pub key: String,
    pub mask: IdentifierMaskingDetails,
    pub name: String,
    pub created_at: String,
    #[serde(default)]
    pub created_by: Option<serde_json::Value>,
    #[serde(default)]
    pub last_used: Option<String>,
}

/// `POST /api-keys` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTeamApiKey {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_names_match_e2b() {
        let raw = r#"{"templateID":"base","timeout":300,"autoPause":true,"allow_internet_access":false,
            "metadata":{},"envVars":{"A":"1"},"secure":true,"autoResume":{"enabled":true},"mcp":null}"#;
        let req: NewSandbox = serde_json::from_str(raw).unwrap();
        assert_eq!(req.template_id, "base");
        assert_eq!(req.allow_internet_access, Some(false));
        assert_eq!(req.auto_resume, Some(AutoResume { enabled: true }));
        assert_eq!(req.env_vars.unwrap()["A"], "1");
    }

    #[test]
    fn sandbox_response_has_required_keys() {
        let s = Sandbox {
            template_id: "base".into(),
            sandbox_id: "iabc".into(),
            client_id: "6532622b".into(),
            envd_version: "0.6.13".into(),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        for key in ["templateID", "sandboxID", "clientID", "envdVersion", "domain"] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        let detail_json = r#"{"templateID":"t","sandboxID":"s","clientID":"c","startedAt":"2026-01-01T00:00:00Z",
            "endAt":"2026-01-01T00:05:00Z","envdVersion":"0.6.13","cpuCount":2,"memoryMB":512,"diskSizeMB":1024,"state":"paused"}"#;
        let d: SandboxDetail = serde_json::from_str(detail_json).unwrap();
        assert_eq!(d.state, SandboxState::Paused);
        assert_eq!(serde_json::to_value(&d).unwrap()["memoryMB"], 512);
    }

    #[test]
    fn team_and_key_shapes_match_e2b() {
        let team =
            Team { team_id: "t".into(), name: "a".into(), api_key: "e2b_1".into(), is_default: true, limits: None };
        let v = serde_json::to_value(&team).unwrap();
        for key in ["teamID", "name", "apiKey", "isDefault"] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        let mask = IdentifierMaskingDetails {
            prefix: "e2b_".into(),
            value_length: 44,
            masked_value_prefix: "abcdef".into(),
            masked_value_suffix: String::new(),
        };
        let key = TeamApiKey {
            id: "key_1".into(),
            name: "ci".into(),
            mask,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: None,
            last_used: None,
            team_id: None,
            role: None,
        };
        let v = serde_json::to_value(&key).unwrap();
        for key in ["id", "name", "mask", "createdAt", "createdBy", "lastUsed"] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["mask"]["valueLength"], 44);
    }
}
