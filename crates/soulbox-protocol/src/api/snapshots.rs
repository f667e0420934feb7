//! Snapshots and forks: `POST /sandboxes/{id}/snapshots`, `GET /snapshots`, `POST /sandboxes/{id}/fork`
//! (E2B's `SandboxSnapshotRequest`, `SnapshotInfo`, `SandboxForkRequest`, `SandboxForkResult`).

use serde::{Deserialize, Serialize};

use super::{ApiError, Sandbox};

/// Body of `POST /sandboxes/{id}/snapshots` (may be `{}` or empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxSnapshotRequest {
    /// The snapshot template's name; a snapshot of that name the team already has is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether to keep the sandbox's memory (E2B's default: true). Where the node cannot, the snapshot holds
    /// the files only and says so in `mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

/// What a snapshot (or a pause) holds, as the SDKs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Memory and files: sandboxes started from it continue its processes.
    Full,
    /// Files only: sandboxes started from it boot cold from them.
    Filesystem,
}

/// A snapshot: a template a sandbox was captured into. `Sandbox.create(snapshotID)` starts sandboxes from it;
/// `DELETE /templates/{snapshotID}` deletes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// `<template>:default`.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// The names it was given (`<name>:default`); empty for an unnamed snapshot.
    pub names: Vec<String>,
    /// SoulBox: what the snapshot holds.
    pub mode: SnapshotMode,
    /// SoulBox: the sandbox it was taken from.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// SoulBox: RFC 3339.
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

/// Body of `POST /sandboxes/{id}/fork` (may be `{}` or empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxForkRequest {
    /// Seconds the forks live (E2B's default: 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    /// How many forks (E2B: 1 to 20, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
}

/// One requested fork: exactly one of `sandbox` and `error` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxForkResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_info_has_e2b_names() {
        let info = SnapshotInfo {
            snapshot_id: "snap:default".into(),
            names: vec!["snap:default".into()],
            mode: SnapshotMode::Filesystem,
            sandbox_id: "iabc".into(),
            created_at: "2026-12-06T12:00:00Z".into(),
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["snapshotID"], "snap:default");
        assert_eq!(v["names"][0], "snap:default");
        assert_eq!(v["mode"], "filesystem");
        assert_eq!(v["sandboxID"], "iabc");
    }

    #[test]
    fn fork_result_sets_one_side() {
        let failed = SandboxForkResult {
            sandbox: None,
            error: Some(ApiError { code: 429, message: "limit".into(), error_code: None }),
        };
        let v = serde_json::to_value(&failed).unwrap();
        assert!(v.get("sandbox").is_none());
        assert_eq!(v["error"]["code"], 429);
        let req: SandboxForkRequest = serde_json::from_str(r#"{"count":3}"#).unwrap();
        assert_eq!((req.count, req.timeout), (Some(3), None));
    }
}
