//! Template builds, their logs and tags (E2B's template endpoints plus SoulBox's live log stream).
//!
//! Fields are declared in the order of their JSON names (bytewise), which is also the order the server wrote
//! them in before these types existed: the bytes on the wire stay the same.

use serde::{Deserialize, Serialize};

/// `POST /v3/templates` → 202: the build that was created (the template's id is its name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBuildRequested {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(rename = "buildID")]
    pub build_id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(rename = "templateID")]
    pub template_id: String,
}

/// `GET /templates/{id}/files/{hash}` → 201: whether the COPY context is uploaded, else where to upload it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateFilesLink {
    /// Headers to send with the upload (E2B's; SoulBox sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Severity of a build log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Warn,
    Error,
    /// Also any level a reader does not know.
    #[serde(other)]
    Info,
}

/// One build log line: `step` is `"base"` (the FROM phase), the 1-based step number, or `"finalize"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLogEntry {
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// RFC 3339.
    pub timestamp: String,
}

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Waiting,
    Building,
    Ready,
    Error,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Waiting => "waiting",
            BuildStatus::Building => "building",
            BuildStatus::Ready => "ready",
            BuildStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<BuildStatus> {
        [BuildStatus::Waiting, BuildStatus::Building, BuildStatus::Ready, BuildStatus::Error]
            .into_iter()
            .find(|b| b.as_str() == s)
    }
}

/// Why a build failed, on the status page (E2B's `BuildStatusReason`: `step` only when known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildReason {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// `GET /templates/{id}/builds/{buildID}/status?logsOffset=&limit=` (E2B's `TemplateBuildInfo`): the status and
/// a page of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuildInfo {
    #[serde(rename = "buildID")]
    pub build_id: String,
    #[serde(default)]
    pub log_entries: Vec<BuildLogEntry>,
    /// The same lines as `[<timestamp>] <message>` (E2B's deprecated `logs`).
    #[serde(default)]
    pub logs: Vec<String>,
    /// Only when the build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<BuildReason>,
    pub status: BuildStatus,
    #[serde(rename = "templateID")]
    pub template_id: String,
}

/// Why a build failed, in the live stream's last line: both fields always present (`null` when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildEndReason {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub step: Option<String>,
}

/// The last line of `GET /templates/{id}/builds/{buildID}/logs/stream` (SoulBox's): the build's final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildEnd {
    /// Only when the build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<BuildEndReason>,
    pub status: BuildStatus,
}

/// One NDJSON line of the live build log stream: log entries, then the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BuildStreamLine {
    Entry(BuildLogEntry),
    End(BuildEnd),
}

/// `POST /templates/tags` → 201: the build the tags now point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedTags {
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub tags: Vec<String>,
}

/// One entry of `GET /templates/{id}/tags`: `name:tag` → build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateTag {
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// RFC 3339.
    pub created_at: String,
    pub tag: String,
}

/// `GET /templates/aliases/{alias}` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateAlias {
    pub public: bool,
    #[serde(rename = "templateID")]
    pub template_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T, json: &str) {
        assert_eq!(serde_json::to_string(value).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
    }

    #[test]
    fn build_request_and_files_link() {
        let requested = TemplateBuildRequested {
            aliases: vec!["app".into()],
            build_id: "b1".into(),
            names: vec!["app".into()],
            public: false,
            tags: vec!["v1".into(), "stable".into()],
            template_id: "app".into(),
        };
        round_trip(
            &requested,
            r#"{"aliases":["app"],"buildID":"b1","names":["app"],"public":false,"tags":["v1","stable"],"templateID":"app"}"#,
        );
        round_trip(&TemplateFilesLink { headers: None, present: true, url: None }, r#"{"present":true}"#);
        round_trip(
            &TemplateFilesLink {
                headers: None,
                present: false,
                url: Some("http://h/templates/app/files/ab?token=t".into()),
            },
            r#"{"present":false,"url":"http://h/templates/app/files/ab?token=t"}"#,
        );
    }

    #[test]
    fn build_status_page() {
        let entry = BuildLogEntry {
            level: LogLevel::Warn,
            message: "m".into(),
            step: Some("1".into()),
            timestamp: "2026-01-01T00:00:00Z".into(),
        };
        round_trip(&entry, r#"{"level":"warn","message":"m","step":"1","timestamp":"2026-01-01T00:00:00Z"}"#);
        let no_step = BuildLogEntry { step: None, level: LogLevel::Info, ..entry.clone() };
        round_trip(&no_step, r#"{"level":"info","message":"m","timestamp":"2026-01-01T00:00:00Z"}"#);
        let failed = TemplateBuildInfo {
            build_id: "b1".into(),
            log_entries: vec![entry],
            logs: vec!["[2026-01-01T00:00:00Z] m".into()],
            reason: Some(BuildReason { message: Some("boom".into()), step: None }),
            status: BuildStatus::Error,
            template_id: "app".into(),
        };
        round_trip(
            &failed,
            r#"{"buildID":"b1","logEntries":[{"level":"warn","message":"m","step":"1","timestamp":"2026-01-01T00:00:00Z"}],"logs":["[2026-01-01T00:00:00Z] m"],"reason":{"message":"boom"},"status":"error","templateID":"app"}"#,
        );
        let building = TemplateBuildInfo {
            reason: None,
            status: BuildStatus::Building,
            log_entries: vec![],
            logs: vec![],
            ..failed
        };
        round_trip(&building, r#"{"buildID":"b1","logEntries":[],"logs":[],"status":"building","templateID":"app"}"#);
        // Levels a reader does not know are `info`.
        assert_eq!(serde_json::from_str::<LogLevel>(r#""trace""#).unwrap(), LogLevel::Info);
        for s in [BuildStatus::Waiting, BuildStatus::Building, BuildStatus::Ready, BuildStatus::Error] {
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
    }

    #[test]
    fn stream_lines() {
        round_trip(
            &BuildStreamLine::End(BuildEnd { reason: None, status: BuildStatus::Ready }),
            r#"{"status":"ready"}"#,
        );
        round_trip(
            &BuildStreamLine::End(BuildEnd {
                reason: Some(BuildEndReason { message: Some("boom".into()), step: None }),
                status: BuildStatus::Error,
            }),
            r#"{"reason":{"message":"boom","step":null},"status":"error"}"#,
        );
        let entry = r#"{"level":"info","message":"x","timestamp":"t"}"#;
        assert!(matches!(serde_json::from_str::<BuildStreamLine>(entry).unwrap(), BuildStreamLine::Entry(_)));
    }

    #[test]
    fn tags_and_aliases() {
        round_trip(
            &AssignedTags { build_id: "b1".into(), tags: vec!["prod".into()] },
            r#"{"buildID":"b1","tags":["prod"]}"#,
        );
        round_trip(
            &TemplateTag { build_id: "b1".into(), created_at: "2026-01-01T00:00:00Z".into(), tag: "v1".into() },
            r#"{"buildID":"b1","createdAt":"2026-01-01T00:00:00Z","tag":"v1"}"#,
        );
        round_trip(
            &TemplateAlias { public: true, template_id: "base".into() },
            r#"{"public":true,"templateID":"base"}"#,
        );
    }
}
