//! A sandbox's logs: `GET /sandboxes/{id}/logs` (E2B's `SandboxLogs`) and `GET /v2/sandboxes/{id}/logs`
//! (`SandboxLogsV2Response`).
//!
//! Fields are declared in the order of their JSON names (bytewise): the order the server wrote them in before
//! these types existed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One line of a sandbox's log (E2B's deprecated `logs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLog {
    pub line: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// One structured entry of a sandbox's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLogEntry {
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// RFC 3339.
    pub timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxLogs {
    #[serde(default)]
    pub log_entries: Vec<SandboxLogEntry>,
    #[serde(default)]
    pub logs: Vec<SandboxLog>,
}

/// `GET /v2/sandboxes/{id}/logs` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLogsV2Response {
    #[serde(default)]
    pub logs: Vec<SandboxLogEntry>,
}

/// `GET /templates/{id}/builds/{buildID}/logs` answer (E2B's `TemplateBuildLogsResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBuildLogsResponse {
    #[serde(default)]
    pub logs: Vec<super::BuildLogEntry>,
}

/// The `direction` of `GET /v2/sandboxes/{id}/logs`: oldest first from the cursor, or newest first back from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogsDirection {
    #[default]
    Forward,
    Backward,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_round_trip() {
        let logs = SandboxLogs {
            log_entries: vec![SandboxLogEntry {
                fields: BTreeMap::new(),
                level: "info".into(),
                message: "hello".into(),
                timestamp: "2026-01-01T00:00:00Z".into(),
            }],
            logs: vec![SandboxLog { line: "hello".into(), timestamp: "2026-01-01T00:00:00Z".into() }],
        };
        let json = r#"{"logEntries":[{"fields":{},"level":"info","message":"hello","timestamp":"2026-01-01T00:00:00Z"}],"logs":[{"line":"hello","timestamp":"2026-01-01T00:00:00Z"}]}"#;
        assert_eq!(serde_json::to_string(&logs).unwrap(), json);
        assert_eq!(serde_json::from_str::<SandboxLogs>(json).unwrap(), logs);
        assert_eq!(serde_json::from_str::<SandboxLogs>("{}").unwrap(), SandboxLogs::default());
    }
}
