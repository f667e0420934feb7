//! What happened over time, for E2B's counters: sandboxes started per template (`spawnCount`,
//! `lastSpawnedAt`) and each sandbox's running stretches per team (team metrics). Written by the sandbox record's
//! own writes (`sandboxes.rs`), in their transactions, so every path that creates, pauses, resumes or deletes a
//! sandbox counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// How long closed running stretches are kept for team metrics.
pub const RUN_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

type Tx = sqlx::Transaction<'static, sqlx::Any>;

const PRUNE_EVERY_MS: i64 = 3600 * 1000;
static LAST_PRUNE_MS: AtomicI64 = AtomicI64::new(0);

/// A template's history: how often sandboxes started from it, how often it was built, by which key first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateStats {
    pub spawn_count: i64,
    pub last_spawned_ms: Option<i64>,
    pub build_count: i64,
    pub created_by: Option<String>,
}

/// One running stretch of a team's sandbox, as team metrics need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxRun {
    pub started_at_ms: i64,
    /// `None` while it still runs.
    pub ended_at_ms: Option<i64>,
    /// A resume, not a new sandbox (not a "start" of E2B's start rate).
    pub resumed: bool,
}

/// A new sandbox from `template_id` for `team_id`: the template's count, and a running stretch when it runs.
pub(super) async fn record_created(
    tx: &mut Tx,
    sandbox_id: &str,
    team_id: &str,
    template_id: &str,
    running: bool,
) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO template_spawns (template_id, spawn_count, last_spawned_at) VALUES ($1, 1, $2) \
         ON CONFLICT (template_id) DO UPDATE SET spawn_count = template_spawns.spawn_count + 1, last_spawned_at = $3",
    )
    .bind(template_id)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if running {
        open_run(tx, sandbox_id, team_id, now, false).await?;
    }
    // Pruning scans the table: at most once an hour per process.
    let last = LAST_PRUNE_MS.load(Ordering::Relaxed);
    if now - last >= PRUNE_EVERY_MS
        && LAST_PRUNE_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        sqlx::query("DELETE FROM sandbox_runs WHERE ended_at IS NOT NULL AND ended_at < $1")
            .bind(now - RUN_RETENTION_MS)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A sandbox started running again (resumed, or corrected to running after a crash).
pub(super) async fn record_running(tx: &mut Tx, sandbox_id: &str) -> Result<(), StoreError> {
    let team: Option<String> = sqlx::query("SELECT team_id FROM sandboxes WHERE id = $1")
        .bind(sandbox_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get("team_id"))
        .transpose()?;
    if let Some(team) = team {
        close_runs(tx, sandbox_id).await?;
        open_run(tx, sandbox_id, &team, now_ms(), true).await?;
    }
    Ok(())
}

/// A sandbox stopped running (paused or gone).
pub(super) async fn record_stopped(tx: &mut Tx, sandbox_id: &str) -> Result<(), StoreError> {
    close_runs(tx, sandbox_id).await
}

async fn open_run(tx: &mut Tx, sandbox_id: &str, team_id: &str, at: i64, resumed: bool) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sandbox_runs (sandbox_id, team_id, started_at, ended_at, resumed) VALUES ($1, $2, $3, NULL, $4) \
         ON CONFLICT (sandbox_id, started_at) DO NOTHING",
    )
    .bind(sandbox_id)
    .bind(team_id)
    .bind(at)
    .bind(resumed as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn close_runs(tx: &mut Tx, sandbox_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE sandbox_runs SET ended_at = $1 WHERE sandbox_id = $2 AND ended_at IS NULL")
        .bind(now_ms())
        .bind(sandbox_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Every template's history, by template id (templates never started nor built through the API are absent).
    pub async fn template_stats(&self) -> Result<HashMap<String, TemplateStats>, StoreError> {
        let mut stats: HashMap<String, TemplateStats> = HashMap::new();
        for r in sqlx::query("SELECT template_id, spawn_count, last_spawned_at FROM template_spawns")
            .fetch_all(&self.pool)
            .await?
        {
            let entry = stats.entry(r.try_get("template_id")?).or_default();
            entry.spawn_count = r.try_get("spawn_count")?;
            entry.last_spawned_ms = Some(r.try_get("last_spawned_at")?);
        }
        for r in sqlx::query("SELECT template_id, COUNT(*) AS n FROM template_builds GROUP BY template_id")
            .fetch_all(&self.pool)
            .await?
        {
            stats.entry(r.try_get("template_id")?).or_default().build_count = r.try_get("n")?;
        }
        for r in sqlx::query("SELECT id, created_by FROM templates WHERE created_by IS NOT NULL")
            .fetch_all(&self.pool)
            .await?
        {
            stats.entry(r.try_get("id")?).or_default().created_by = r.try_get("created_by")?;
        }
        Ok(stats)
    }

    /// Records the key that built a template first (E2B's `createdBy`); later builds keep the first.
    pub async fn set_template_creator(&self, template_id: &str, key_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE templates SET created_by = $1 WHERE id = $2 AND created_by IS NULL")
            .bind(key_id)
            .bind(template_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The team's running stretches that overlap `[from_ms, to_ms]`, oldest first. A running sandbox without an
    /// open stretch (one that was running when this table was added) counts from its start.
    pub async fn team_runs(&self, team_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<SandboxRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT started_at, ended_at, resumed FROM sandbox_runs \
             WHERE team_id = $1 AND started_at <= $2 AND (ended_at IS NULL OR ended_at >= $3) \
             UNION ALL \
             SELECT s.started_at AS started_at, NULL AS ended_at, 0 AS resumed FROM sandboxes s \
             WHERE s.team_id = $4 AND s.state = 'running' AND s.started_at <= $5 AND NOT EXISTS \
             (SELECT 1 FROM sandbox_runs r WHERE r.sandbox_id = s.id AND r.ended_at IS NULL) \
             ORDER BY started_at",
        )
        .bind(team_id)
        .bind(to_ms)
        .bind(from_ms)
        .bind(team_id)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SandboxRun {
                    started_at_ms: r.try_get("started_at")?,
                    ended_at_ms: r.try_get("ended_at")?,
                    resumed: r.try_get::<i32, _>("resumed")? != 0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use soulbox_protocol::api::SandboxState;

    use crate::store::test_db::store_test;
    use crate::store::{DEFAULT_TEAM_ID, SandboxRecord};

    fn record(id: &str) -> SandboxRecord {
        SandboxRecord {
            started_at_ms: 1_000,
            end_at_ms: 9_999_999_999_999,
            memory_mb: 256,
            ..SandboxRecord::running(id)
        }
    }

    store_test!(runs_follow_create_pause_resume_and_delete, |db| {
        let store = db.open().await;
        store.insert_sandbox(&record("s1")).await.unwrap();
        let spawns = store.template_stats().await.unwrap();
        assert_eq!(spawns["base"].spawn_count, 1);
        assert!(spawns["base"].last_spawned_ms.is_some());
        let all =
            |store: crate::store::Store| async move { store.team_runs(DEFAULT_TEAM_ID, 0, i64::MAX).await.unwrap() };
        let runs = all(store.clone()).await;
        assert_eq!((runs.len(), runs[0].ended_at_ms, runs[0].resumed), (1, None, false));
        assert!(store.transition_sandbox("s1", SandboxState::Running, SandboxState::Paused, None, 0).await.unwrap());
        let runs = all(store.clone()).await;
        assert!(runs.len() == 1 && runs[0].ended_at_ms.is_some(), "{runs:?}");
        assert!(store.transition_sandbox("s1", SandboxState::Paused, SandboxState::Running, None, 0).await.unwrap());
        let runs = all(store.clone()).await;
        assert_eq!(runs.iter().filter(|r| r.ended_at_ms.is_none() && r.resumed).count(), 1, "{runs:?}");
        assert!(store.delete_sandbox("s1").await.unwrap());
        assert!(all(store.clone()).await.iter().all(|r| r.ended_at_ms.is_some()));
        // Another team's runs are not this team's.
        assert!(store.team_runs("team_other", 0, i64::MAX).await.unwrap().is_empty());
    });
}
