//! Snapshots: sandboxes captured into templates their team owns (migration `0008_snapshots.sql`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The template (a runtime template on `node_id`); also its `templates` row's id.
    pub template_id: String,
    pub team_id: String,
    pub sandbox_id: String,
    pub node_id: String,
    /// The caller chose the name (E2B lists it in `names`).
    pub named: bool,
    /// Holds the sandbox's memory too; else its files only.
    pub memory: bool,
    pub cpu_count: i32,
    pub memory_mb: i32,
    pub disk_size_mb: i32,
    pub created_at_ms: i64,
}

const COLUMNS: &str =
    "template_id, team_id, sandbox_id, node_id, named, memory, cpu_count, memory_mb, disk_size_mb, created_at";

fn from_row(r: &AnyRow) -> Result<SnapshotRecord, StoreError> {
    Ok(SnapshotRecord {
        template_id: r.try_get("template_id")?,
        team_id: r.try_get("team_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        node_id: r.try_get("node_id")?,
        named: r.try_get::<i32, _>("named")? != 0,
        memory: r.try_get::<i32, _>("memory")? != 0,
        cpu_count: r.try_get("cpu_count")?,
        memory_mb: r.try_get("memory_mb")?,
        disk_size_mb: r.try_get("disk_size_mb")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

impl Store {
    /// Claims the template name `name` for a snapshot of `team_id` before the node writes it: `Conflict` when
    /// another team owns the name or the team's own template of that name is not a snapshot (a snapshot may
    /// replace only a snapshot). Returns whether the name is new (the caller gives it back with
    /// [`Store::delete_template_record`] if the snapshot then fails).
    pub async fn claim_snapshot_name(&self, team_id: &str, name: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO templates (id, public, cpu_count, memory_mb, created_at, updated_at, latest_build_id, team_id) \
             VALUES ($1, 0, 0, 0, $2, $3, NULL, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .bind(now)
        .bind(team_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let owner: String = sqlx::query("SELECT team_id FROM templates WHERE id = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?
                .try_get("team_id")?;
            let is_snapshot = sqlx::query("SELECT template_id FROM snapshots WHERE template_id = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if owner != team_id || !is_snapshot {
                return Err(StoreError::Conflict(format!("the template name '{name}' is taken: choose another name")));
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Records a snapshot the node took (replacing an earlier one of the same name) and gives its template row
    /// the snapshot's size.
    pub async fn put_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM snapshots WHERE template_id = $1").bind(&s.template_id).execute(&mut *tx).await?;
        sqlx::query(&format!("INSERT INTO snapshots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .bind(&s.template_id)
            .bind(&s.team_id)
            .bind(&s.sandbox_id)
            .bind(&s.node_id)
            .bind(s.named as i32)
            .bind(s.memory as i32)
            .bind(s.cpu_count)
            .bind(s.memory_mb)
            .bind(s.disk_size_mb)
            .bind(s.created_at_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE templates SET cpu_count = $1, memory_mb = $2, updated_at = $3 WHERE id = $4")
            .bind(s.cpu_count)
            .bind(s.memory_mb)
            .bind(s.created_at_ms)
            .bind(&s.template_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that the snapshot's layers are now on `node_id` (copied off a draining node); false when there is
    /// no such snapshot (a fork's template, which has no record).
    pub async fn set_snapshot_node(&self, template_id: &str, node_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE snapshots SET node_id = $1 WHERE template_id = $2")
            .bind(node_id)
            .bind(template_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_snapshot(&self, template_id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE template_id = $1");
        let row = sqlx::query(&sql).bind(template_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The snapshots whose layers `node_id` holds.
    pub async fn snapshots_on_node(&self, node_id: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE node_id = $1 ORDER BY template_id");
        let rows = sqlx::query(&sql).bind(node_id).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// The team's snapshots, oldest first (ties by id).
    pub async fn list_team_snapshots(&self, team_id: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE team_id = $1 ORDER BY created_at, template_id");
        let rows = sqlx::query(&sql).bind(team_id).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::store_test;

    fn snapshot(name: &str, team: &str) -> SnapshotRecord {
        SnapshotRecord {
            template_id: name.into(),
            team_id: team.into(),
            sandbox_id: "isrc".into(),
            node_id: "local".into(),
            named: true,
            memory: false,
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            created_at_ms: 1_765_000_000_000,
        }
    }

    store_test!(snapshot_names_are_claimed_per_team, |db| {
        let store = db.open().await;
        assert!(store.claim_snapshot_name("team_a", "snap").await.unwrap(), "a new name");
        store.put_snapshot(&snapshot("snap", "team_a")).await.unwrap();
        // The same team replaces its snapshot; another team cannot take the name.
        assert!(!store.claim_snapshot_name("team_a", "snap").await.unwrap());
        assert!(matches!(store.claim_snapshot_name("team_b", "snap").await, Err(StoreError::Conflict(_))));
        let template = store.get_template_record("snap").await.unwrap().unwrap();
        assert_eq!((template.team_id.as_str(), template.cpu_count, template.memory_mb), ("team_a", 2, 512));
        assert_eq!(store.get_snapshot("snap").await.unwrap(), Some(snapshot("snap", "team_a")));
        assert_eq!(store.list_team_snapshots("team_a").await.unwrap().len(), 1);
        assert!(store.list_team_snapshots("team_b").await.unwrap().is_empty());
        // Deleting the template deletes the snapshot.
        assert!(store.delete_template_record("snap").await.unwrap());
        assert_eq!(store.get_snapshot("snap").await.unwrap(), None);
    });

    store_test!(a_snapshot_moves_to_another_node, |db| {
        let store = db.open().await;
        store.claim_snapshot_name("team_a", "snap").await.unwrap();
        store.put_snapshot(&snapshot("snap", "team_a")).await.unwrap();
        assert_eq!(store.snapshots_on_node("local").await.unwrap().len(), 1);
        assert!(store.set_snapshot_node("snap", "node-b").await.unwrap());
        assert!(store.snapshots_on_node("local").await.unwrap().is_empty());
        assert_eq!(store.get_snapshot("snap").await.unwrap().unwrap().node_id, "node-b");
        assert!(!store.set_snapshot_node("sbfork-x", "node-b").await.unwrap(), "a fork's template has no record");
    });

    store_test!(a_built_template_is_not_replaced_by_a_snapshot, |db| {
        let store = db.open().await;
        store.create_template_build("team_a", "app", "b1", 1, 256, &[]).await.unwrap();
        assert!(matches!(store.claim_snapshot_name("team_a", "app").await, Err(StoreError::Conflict(_))));
    });
}
