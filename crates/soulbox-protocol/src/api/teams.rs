//! Team-level bodies of E2B's document: team metrics, access tokens, key renames, the admin routes' results and
//! template updates.
//!
//! Fields are declared in the order of their JSON names (bytewise).

use serde::{Deserialize, Serialize};

use super::IdentifierMaskingDetails;

/// E2B's `TeamUser` (`createdBy` of templates and keys). SoulBox has no users: its creator is a key, so `id` is
/// the key's id and `email` is null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamUser {
    #[serde(default)]
    pub email: Option<String>,
    pub id: String,
}

/// `GET /teams/{teamID}/metrics` items: one per step of the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamMetric {
    pub concurrent_sandboxes: i32,
    /// Sandboxes started per second over the step.
    pub sandbox_start_rate: f32,
    /// RFC 3339 (deprecated in E2B, still required).
    pub timestamp: String,
    pub timestamp_unix: i64,
}

/// `GET /teams/{teamID}/metrics/max`: the largest value of one metric in the range, and when it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaxTeamMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub value: f64,
}

/// `POST /access-tokens` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccessToken {
    pub name: String,
}

/// `POST /access-tokens` answer: the token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAccessToken {
    pub created_at: String,
    pub id: String,
    pub mask: IdentifierMaskingDetails,
    pub name: String,
    pub token: String,
}

/// `PATCH /api-keys/{apiKeyID}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTeamApiKey {
    pub name: String,
}

/// `POST /admin/teams/{teamID}/sandboxes/kill` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminSandboxKillResult {
    pub failed_count: u32,
    pub killed_count: u32,
}

/// `POST /admin/teams/{teamID}/builds/cancel` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminBuildCancelResult {
    pub cancelled_count: u32,
    pub failed_count: u32,
}

/// `PATCH /templates/{id}` and `PATCH /v2/templates/{id}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateUpdateRequest {
    #[serde(default)]
    pub public: Option<bool>,
}

/// `PATCH /v2/templates/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateUpdateResponse {
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_bodies_match_e2b_names() {
        let metric = TeamMetric {
            concurrent_sandboxes: 2,
            sandbox_start_rate: 0.5,
            timestamp: "2026-01-01T00:00:00Z".into(),
            timestamp_unix: 1_767_225_600,
        };
        assert_eq!(
            serde_json::to_string(&metric).unwrap(),
            r#"{"concurrentSandboxes":2,"sandboxStartRate":0.5,"timestamp":"2026-01-01T00:00:00Z","timestampUnix":1767225600}"#
        );
        let kill = AdminSandboxKillResult { failed_count: 0, killed_count: 3 };
        assert_eq!(serde_json::to_string(&kill).unwrap(), r#"{"failedCount":0,"killedCount":3}"#);
        let cancel = AdminBuildCancelResult { cancelled_count: 1, failed_count: 0 };
        assert_eq!(serde_json::to_string(&cancel).unwrap(), r#"{"cancelledCount":1,"failedCount":0}"#);
        let user = TeamUser { email: None, id: "key_1".into() };
        assert_eq!(serde_json::to_string(&user).unwrap(), r#"{"email":null,"id":"key_1"}"#);
        assert_eq!(serde_json::from_str::<TemplateUpdateRequest>("{}").unwrap().public, None);
    }
}
