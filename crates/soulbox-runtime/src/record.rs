//! The on-disk record of a sandbox (`sandbox.json` in its directory): the single source of truth.
use crate::envd_secret::EnvdSecret;
use crate::error::Result;
use crate::spec::{SandboxSpec, Status};
use crate::template::TemplateMeta;
use crate::util;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub status: Status,
    /// Template metadata as it was at create time.
    pub template: Option<TemplateMeta>,
    pub spec: Option<SandboxSpec>,
    /// What envd requires from the node (`None`: a pooled slot, or a sandbox made before envd had secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_secret: Option<EnvdSecret>,
}

impl Record {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("sandbox.json")
    }
    pub fn load(dir: &Path) -> Result<Record> {
        util::read_json(&Self::file(dir))
    }
    /// Written owner-only (it holds the envd secret and the access token).
    pub fn save(&self, dir: &Path) -> Result<()> {
        util::write_json_private(&Self::file(dir), self)
    }
}
