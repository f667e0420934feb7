//! Persistent volumes: `POST/GET /volumes`, `GET/DELETE /volumes/{volumeID}` (E2B's `NewVolume`, `Volume`,
//! `VolumeAndToken`), `volumeMounts` on create and in a sandbox's detail (`SandboxVolumeMount`), and the content
//! API under `/volumecontent/{volumeID}/…` (E2B's `openapi-volumecontent.yml`: `VolumeEntryStat`).

use serde::{Deserialize, Serialize};

/// Body of `POST /volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVolume {
    pub name: String,
}

/// `GET /volumes` items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub name: String,
}

/// `POST /volumes` (201) and `GET /volumes/{volumeID}`: the volume and its content-API bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAndToken {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub name: String,
    pub token: String,
}

/// A volume in a sandbox: its name (the team's) and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxVolumeMount {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeEntryType {
    Unknown,
    File,
    Directory,
    Symlink,
}

/// A file, directory or link in a volume. `path` is absolute within the volume; times are RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntryStat {
    pub name: String,
    #[serde(rename = "type")]
    pub entry_type: VolumeEntryType,
    pub path: String,
    pub size: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: String,
    pub mtime: String,
    pub ctime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Body of `PATCH /volumecontent/{volumeID}/path`: what to change (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumePathUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}
