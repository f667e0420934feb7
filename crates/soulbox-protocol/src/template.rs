//! E2B's template build recipe (the body of `POST /v2/templates/{id}/builds/{buildID}`), shared by the server
//! that builds it and the SDK/CLI that send it, and the Dockerfile front end that produces one.

pub mod dockerfile;

use serde::{Deserialize, Serialize};

/// E2B's `TemplateStep {type, args, force?, filesHash?}` (`forceUpload` is a client-side flag, ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStep {
    /// `RUN`, `COPY`, `ENV`, `WORKDIR` or `USER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RUN `[cmd, user?]`, COPY `[src, dest, user, mode]`, ENV `[k1, v1, …]`, WORKDIR `[path]`, USER `[user]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Re-run this step (and every later one) even when cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// COPY: sha256 of the copied files (clients compute it when building).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_hash: Option<String>,
}

impl TemplateStep {
    pub fn new(kind: &str, args: Vec<String>) -> TemplateStep {
        TemplateStep { kind: kind.to_string(), args, force: None, files_hash: None }
    }
}

/// What a build starts from and does: the body of `POST /v2/templates/{id}/builds/{buildID}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_template: Option<String>,
    #[serde(default)]
    pub steps: Vec<TemplateStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
    #[serde(default)]
    pub force: bool,
}
