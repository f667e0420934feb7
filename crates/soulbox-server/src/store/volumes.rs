//! Persistent volumes: a team's named volumes and which sandboxes mount them (migration `0012_volumes.sql`). The
//! files are the volume store's (`soulbox-volumes`); this is only the catalogue. Every query names the team, so a
//! volume id of another team is as unknown as a made-up one.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SecretValue, Store, StoreError, now_ms};

/// E2B's rule for volume names (its API refuses anything else with 400).
const MAX_NAME_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub created_at_ms: i64,
    /// The node holding the volume's files (node-local volumes, migration 0014); `None`: the control plane's
    /// volumes directory (one machine, or a filesystem shared by every node).
    pub node_id: Option<String>,
}

/// A volume in a sandbox, as the create named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMountRecord {
    pub volume_id: String,
    pub name: String,
    pub path: String,
    /// The volume's node (`VolumeRecord::node_id`): a sandbox mounting it runs there. Not stored with the mount.
    pub home_node: Option<String>,
}

fn from_row(r: &AnyRow) -> Result<VolumeRecord, StoreError> {
    Ok(VolumeRecord {
        id: r.try_get("id")?,
        team_id: r.try_get("team_id")?,
        name: r.try_get("name")?,
        created_at_ms: r.try_get("created_at")?,
        node_id: r.try_get("node_id")?,
    })
}

/// `^[a-zA-Z0-9_-]+$`, as E2B checks it, and not longer than anyone needs.
pub fn check_volume_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(StoreError::Invalid(format!(
            "invalid volume name '{name}': use 1 to {MAX_NAME_BYTES} of a-z, A-Z, 0-9, _ and -"
        )));
    }
    Ok(())
}

impl Store {
    /// A new volume of `team_id` and its content token: `Invalid` for a bad name or one the team already uses
    /// (E2B answers that with 400 too). `node_id`: the node holding its files (node-local volumes).
    pub async fn create_volume(
        &self,
        team_id: &str,
        name: &str,
        node_id: Option<&str>,
    ) -> Result<(VolumeRecord, SecretValue), StoreError> {
        check_volume_name(name)?;
        let id = crate::ids::uuid_like();
        let token = SecretValue::new(format!("sbvol_{}", crate::ids::access_token()));
        let sealed = self.secret_box()?.seal(team_id, &id, 0, &token)?;
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO volumes (id, team_id, name, token, created_at, node_id) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (team_id, name) DO NOTHING",
        )
        .bind(&id)
        .bind(team_id)
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!("Volume with name '{name}' already exists")));
        }
        let record = VolumeRecord {
            id,
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            created_at_ms: now,
            node_id: node_id.map(str::to_owned),
        };
        Ok((record, token))
    }

    pub async fn get_volume(&self, team_id: &str, id: &str) -> Result<VolumeRecord, StoreError> {
        let row =
            sqlx::query("SELECT id, team_id, name, created_at, node_id FROM volumes WHERE id = $1 AND team_id = $2")
                .bind(id)
                .bind(team_id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("volume '{id}'")))
    }

    /// The volume's content token (for `GET /volumes/{id}`, and to check a bearer token against).
    pub async fn volume_token(&self, volume: &VolumeRecord) -> Result<SecretValue, StoreError> {
        let sealed: String = sqlx::query("SELECT token FROM volumes WHERE id = $1 AND team_id = $2")
            .bind(&volume.id)
            .bind(&volume.team_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("token")?;
        Ok(self.secret_box()?.open(&volume.team_id, &volume.id, 0, &sealed)?)
    }

    /// A volume by id whatever its team: only for the content API, which then checks the caller's token or team.
    pub async fn find_volume(&self, id: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let row = sqlx::query("SELECT id, team_id, name, created_at, node_id FROM volumes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The team's volumes, oldest first.
    pub async fn list_volumes(&self, team_id: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, team_id, name, created_at, node_id FROM volumes WHERE team_id = $1 ORDER BY created_at, id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The team's volume of that name.
    pub async fn volume_named(&self, team_id: &str, name: &str) -> Result<VolumeRecord, StoreError> {
        let row =
            sqlx::query("SELECT id, team_id, name, created_at, node_id FROM volumes WHERE team_id = $1 AND name = $2")
                .bind(team_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("volume '{name}'")))
    }

    /// Sandboxes that exist and mount the volume (rows of sandboxes that are gone are removed on the way).
    pub async fn sandboxes_mounting(&self, volume_id: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "DELETE FROM sandbox_volume_mounts WHERE volume_id = $1 \
             AND sandbox_id NOT IN (SELECT id FROM sandboxes)",
        )
        .bind(volume_id)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query("SELECT DISTINCT sandbox_id FROM sandbox_volume_mounts WHERE volume_id = $1")
            .bind(volume_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("sandbox_id")?)).collect()
    }

    /// Removes the team's volume from the catalogue: `Conflict` while a sandbox mounts it.
    pub async fn delete_volume(&self, team_id: &str, id: &str) -> Result<(), StoreError> {
        self.get_volume(team_id, id).await?;
        let users = self.sandboxes_mounting(id).await?;
        if let Some(first) = users.first() {
            return Err(StoreError::Conflict(format!(
                "volume '{id}' is mounted by sandbox {first}{}: kill it first",
                if users.len() > 1 { format!(" and {} more", users.len() - 1) } else { String::new() }
            )));
        }
        sqlx::query("DELETE FROM volumes WHERE id = $1 AND team_id = $2")
            .bind(id)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_volume_mounts(&self, sandbox_id: &str, mounts: &[VolumeMountRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for m in mounts {
            sqlx::query(
                "INSERT INTO sandbox_volume_mounts (sandbox_id, volume_id, name, path) VALUES ($1, $2, $3, $4)",
            )
            .bind(sandbox_id)
            .bind(&m.volume_id)
            .bind(&m.name)
            .bind(&m.path)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The sandbox's mounts, each with its volume's node (a volume deleted since reads as having none).
    pub async fn volume_mounts(&self, sandbox_id: &str) -> Result<Vec<VolumeMountRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.volume_id, m.name, m.path, v.node_id FROM sandbox_volume_mounts m \
             LEFT JOIN volumes v ON v.id = m.volume_id WHERE m.sandbox_id = $1 ORDER BY m.path",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VolumeMountRecord {
                    volume_id: r.try_get("volume_id")?,
                    name: r.try_get("name")?,
                    path: r.try_get("path")?,
                    home_node: r.try_get("node_id")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// How many volumes hold their files on `node_id` (a node removed with them makes them unreachable).
    pub async fn volumes_on_node(&self, node_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM volumes WHERE node_id = $1")
            .bind(node_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}
