//! Volume mounts of a create: the team's volumes by name, checked paths, and the rows that remember them.

use std::sync::Arc;

use soulbox_protocol::api::SandboxVolumeMount;
use soulbox_volumes::{VolumeError, VolumeStore};
use subtle::ConstantTimeEq;

use super::{Lifecycle, LifecycleError, Result};
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
            out.push(VolumeMountRecord { volume_id: volume.id, name: volume.name, path: m.path.clone() });
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

    /// A new volume of the team, its directory made: (volume, content token).
    pub async fn create_volume(&self, team_id: &str, name: &str) -> Result<(VolumeRecord, SecretValue)> {
        let files = self.volume_files()?.clone();
        let (volume, token) = self.store.create_volume(team_id, name).await?;
        let id = volume.id.clone();
        if let Err(e) = blocking(move || files.create(&id)).await {
            // No catalogue entry without its directory.
            let _ = self.store.delete_volume(team_id, &volume.id).await;
            return Err(e);
        }
        tracing::info!(volume = %volume.id, team = %team_id, "volume created");
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
    pub async fn delete_volume(&self, team_id: &str, id: &str) -> Result<()> {
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

    /// Runs a content operation on the volume's files (on a blocking thread: they are filesystem calls).
    pub async fn volume_content<T: Send + 'static>(
        &self,
        volume: &VolumeRecord,
        op: impl FnOnce(&VolumeStore, &str) -> std::result::Result<T, VolumeError> + Send + 'static,
    ) -> Result<T> {
        let files = self.volume_files()?.clone();
        let id = volume.id.clone();
        blocking(move || op(&files, &id)).await
    }
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
        VolumeError::QuotaExceeded { .. } => LifecycleError::TooLarge(e.to_string()),
        VolumeError::Io { .. } => LifecycleError::Internal(e.to_string()),
        _ => LifecycleError::BadRequest(e.to_string()),
    }
}
