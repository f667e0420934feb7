//! Volume mounts of a create: the team's volumes by name, checked paths, and the rows that remember them.

use std::sync::Arc;

use soulbox_protocol::api::SandboxVolumeMount;
use soulbox_volumes::{VolumeError, VolumeStore};
use subtle::ConstantTimeEq;

use super::{Lifecycle, LifecycleError, Result};
use crate::cluster::{Requirements, Route};
use crate::node::VolumeMount;
use crate::store::{SecretValue, StoreError, VolumeMountRecord, VolumeRecord};

impl Lifecycle {
    /// The team's volumes the create names, with their paths checked: 400 for an unknown name or a bad path,
    /// before any node is asked.
    pub(super) async fn resolve_mounts(
        &self,
        team_id: &str,
        wanted: &[SandboxVolumeMount],
    ) -> Result<Vec<VolumeMountRecord>> {
        let mut out = Vec::with_capacity(wanted.len());
        for m in wanted {
            let volume = match self.store.volume_named(team_id, &m.name).await {
                Ok(v) => v,
                Err(StoreError::NotFound(_)) => {
                    return Err(LifecycleError::BadRequest(format!("volume '{}' not found", m.name)));
                }
                Err(e) => return Err(e.into()),
            };
            soulbox_runtime::volumes::check_path(&m.path).map_err(|e| LifecycleError::BadRequest(e.to_string()))?;
            out.push(VolumeMountRecord {
                volume_id: volume.id,
                name: volume.name,
                path: m.path.clone(),
                home_node: volume.node_id,
            });
        }
        if out.len() > soulbox_runtime::volumes::MAX_MOUNTS {
            return Err(LifecycleError::BadRequest(format!(
                "at most {} volume mounts per sandbox",
                soulbox_runtime::volumes::MAX_MOUNTS
            )));
        }
        Ok(out)
    }

    /// A sandbox's mounts as its create named them (for forks and moves).
    pub async fn volume_mounts(&self, sandbox_id: &str) -> Result<Vec<VolumeMountRecord>> {
        Ok(self.store.volume_mounts(sandbox_id).await?)
    }
}

/// What a node mounts for `mounts`.
pub(super) fn node_mounts(mounts: &[VolumeMountRecord]) -> Vec<VolumeMount> {
    mounts.iter().map(|m| VolumeMount { volume_id: m.volume_id.clone(), path: m.path.clone() }).collect()
}

/// `mounts` as a create names them.
pub(super) fn as_requested(mounts: &[VolumeMountRecord]) -> Vec<SandboxVolumeMount> {
    mounts.iter().map(|m| SandboxVolumeMount { name: m.name.clone(), path: m.path.clone() }).collect()
}

/// The volume routes' answers: the catalogue (store) and the files (`soulbox-volumes`) kept in step.
impl Lifecycle {
    fn volume_files(&self) -> Result<&Arc<VolumeStore>> {
        self.volume_files
            .as_ref()
            .ok_or_else(|| LifecycleError::NotImplemented("this server has no volumes directory".into()))
    }

    /// A new volume of the team, its directory made: (volume, content token). In a cluster whose volumes
    /// directory is not shared (`volumes_shared = false`) the directory is made on a node the scheduler chooses,
    /// which the catalogue then names as the volume's home.
    pub async fn create_volume(&self, team_id: &str, name: &str) -> Result<(VolumeRecord, SecretValue)> {
        if self.nodes.is_cluster() && !self.config.volumes_shared {
            return self.create_volume_on_a_node(team_id, name).await;
        }
        let files = self.volume_files()?.clone();
        let (volume, token) = self.store.create_volume(team_id, name, None).await?;
        let id = volume.id.clone();
        if let Err(e) = blocking(move || files.create(&id)).await {
            // No catalogue entry without its directory.
            let _ = self.store.delete_volume(team_id, &volume.id).await;
            return Err(e);
        }
        tracing::info!(volume = %volume.id, team = %team_id, "volume created");
        Ok((volume, token))
    }

    async fn create_volume_on_a_node(&self, team_id: &str, name: &str) -> Result<(VolumeRecord, SecretValue)> {
        crate::store::check_volume_name(name)?;
        // A volume takes no vCPU or memory: the scheduler's choice among healthy, undrained nodes.
        let placement = self.nodes.place(Requirements { cpu_count: 0, memory_mb: 0 }).await;
        let placement =
            placement.map_err(|e| LifecycleError::Unavailable(format!("no node can hold a volume: {e}")))?;
        self.nodes.release(&placement).await;
        let (volume, token) = self.store.create_volume(team_id, name, Some(&placement.node_id)).await?;
        if let Err(e) = placement.node.create_volume(&volume.id, self.config.volume_size_bytes).await {
            // No catalogue entry without its directory.
            let _ = self.store.delete_volume(team_id, &volume.id).await;
            return Err(e.into());
        }
        tracing::info!(volume = %volume.id, team = %team_id, node = %placement.node_id, "volume created on a node");
        Ok((volume, token))
    }

    pub async fn team_volume(&self, team_id: &str, id: &str) -> Result<(VolumeRecord, SecretValue)> {
        let volume = self.store.get_volume(team_id, id).await?;
        let token = self.store.volume_token(&volume).await?;
        Ok((volume, token))
    }

    pub async fn list_volumes(&self, team_id: &str) -> Result<Vec<VolumeRecord>> {
        Ok(self.store.list_volumes(team_id).await?)
    }

    /// Deletes the team's volume and its files: 409 while a sandbox mounts it (its files would vanish under it).
    /// A volume on a node: its files go first, so a node that cannot be reached now (503) leaves the volume whole,
    /// to be deleted again later; a node that was removed took them with it.
    pub async fn delete_volume(&self, team_id: &str, id: &str) -> Result<()> {
        let volume = self.store.get_volume(team_id, id).await?;
        let Some(node_id) = &volume.node_id else { return self.delete_shared_volume(team_id, id).await };
        if let Some(sandbox) = self.store.sandboxes_mounting(id).await?.first() {
            return Err(LifecycleError::Conflict(format!(
                "volume '{id}' is mounted by sandbox {sandbox}: kill it first"
            )));
        }
        match self.nodes.get(node_id).await {
            Ok(node) => node.delete_volume(id).await?,
            Err(_) if self.nodes.list().await.is_ok_and(|nodes| nodes.iter().all(|n| n.info.node_id != *node_id)) => {
                tracing::warn!(volume = %id, node = %node_id, "deleting a volume whose node was removed");
            }
            Err(e) => {
                return Err(LifecycleError::Unavailable(format!(
                    "volume '{id}' lives on node {node_id}, which cannot be reached now: {e}"
                )));
            }
        }
        self.store.delete_volume(team_id, id).await?;
        tracing::info!(volume = %id, team = %team_id, node = %node_id, "volume deleted");
        Ok(())
    }

    async fn delete_shared_volume(&self, team_id: &str, id: &str) -> Result<()> {
        let files = self.volume_files()?.clone();
        self.store.delete_volume(team_id, id).await?;
        let owned = id.to_owned();
        if let Err(e) = blocking(move || files.delete(&owned)).await {
            // The catalogue no longer names it: nothing can reach the leftover files, which an operator may remove.
            tracing::error!(volume = %id, error = %e, "volume deleted, but its files could not be removed");
        }
        tracing::info!(volume = %id, team = %team_id, "volume deleted");
        Ok(())
    }

    /// The volume a content request is for, if `token` is its content token (compared in constant time).
    pub async fn volume_for_token(&self, id: &str, token: &str) -> Result<Option<VolumeRecord>> {
        let Some(volume) = self.store.find_volume(id).await? else { return Ok(None) };
        let wanted = self.store.volume_token(&volume).await?;
        Ok(bool::from(wanted.expose().as_bytes().ct_eq(token.as_bytes())).then_some(volume))
    }

    /// Where a content request for `volume` is served: here, on the files this process reaches (the control
    /// plane's volumes directory, or the in-process node's), or on the node agent that holds them.
    pub async fn volume_site(&self, volume: &VolumeRecord) -> Result<VolumeSite> {
        let limit = self.config.volume_size_bytes;
        let Some(node_id) = &volume.node_id else {
            return Ok(VolumeSite::Here { files: self.volume_files()?.clone(), size_limit: limit });
        };
        let unavailable = |why: String| {
            LifecycleError::Unavailable(format!("volume '{}' lives on node {node_id}: {why}", volume.name))
        };
        let node = self.nodes.get(node_id).await.map_err(|e| unavailable(e.to_string()))?;
        if let Some(files) = node.volume_files() {
            return Ok(VolumeSite::Here { files, size_limit: limit });
        }
        match self.nodes.route(node_id).await {
            Some(Route::ViaNode { authority, secret }) => Ok(VolumeSite::Node { authority, secret, size_limit: limit }),
            Some(Route::Direct) | None => Err(unavailable("it cannot be reached now".into())),
        }
    }
}

/// Where a volume's content operations run (`Lifecycle::volume_site`).
pub enum VolumeSite {
    Here {
        files: Arc<VolumeStore>,
        size_limit: Option<u64>,
    },
    /// The node agent at `authority` (`host:port`), called with its `secret`.
    Node {
        authority: String,
        secret: String,
        size_limit: Option<u64>,
    },
}

/// The one node the volumes of a create live on (`None`: they all live in the shared directory), or 400 when they
/// live on different nodes: a sandbox runs on one node.
pub(super) fn volume_home(mounts: &[VolumeMountRecord]) -> Result<Option<String>> {
    let mut homed = mounts.iter().filter_map(|m| m.home_node.as_ref().map(|node| (m, node)));
    let Some((first, home)) = homed.next() else { return Ok(None) };
    if let Some((other, elsewhere)) = homed.find(|(_, node)| *node != home) {
        return Err(LifecycleError::BadRequest(format!(
            "volumes '{}' and '{}' live on different nodes ({home} and {elsewhere}): a sandbox can only mount \
             volumes of one node",
            first.name, other.name
        )));
    }
    Ok(Some(home.clone()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, VolumeError> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(volume_error),
        Err(e) => Err(LifecycleError::Internal(format!("a volume operation failed: {e}"))),
    }
}

/// E2B's statuses for the volume store's errors.
pub fn volume_error(e: VolumeError) -> LifecycleError {
    match e {
        VolumeError::VolumeNotFound(_) | VolumeError::NotFound(_) => LifecycleError::NotFound(e.to_string()),
        VolumeError::VolumeExists(_) | VolumeError::AlreadyExists(_) => LifecycleError::Conflict(e.to_string()),
        VolumeError::QuotaExceeded { .. } | VolumeError::VolumeFull { .. } => LifecycleError::TooLarge(e.to_string()),
        VolumeError::Io { .. } => LifecycleError::Internal(e.to_string()),
        _ => LifecycleError::BadRequest(e.to_string()),
    }
}
