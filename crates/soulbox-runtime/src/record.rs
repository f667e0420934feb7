//! The on-disk record of a sandbox (`sandbox.json` in its directory): the single source of truth.
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
}

impl Record {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("sandbox.json")
    }
    pub fn load(dir: &Path) -> Result<Record> {
        util::read_json(&Self::file(dir))
    }
    pub fn save(&self, dir: &Path) -> Result<()> {
        util::write_json(&Self::file(dir), self)
    }
}
