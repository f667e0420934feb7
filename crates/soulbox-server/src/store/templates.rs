//! Templates built through the API, their builds and the builds' log entries.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub id: String,
    pub public: bool,
    pub cpu_count: i32,
    pub memory_mb: i32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub latest_build_id: Option<String>,
    /// The team whose key built it; only that team sees it unless it is public.
    pub team_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    pub id: String,
    pub template_id: String,
    /// `waiting` | `building` | `ready` | `error`
    pub status: String,
    pub recipe: Option<String>,
    pub reason: Option<String>,
    pub reason_step: Option<String>,
    pub cpu_count: i32,
    pub memory_mb: i32,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The tags the build asked for; assigned when it succeeds.
    pub tags: Vec<String>,
    /// The OCI runtime the build asked for (`soulbox_templates::BuildJob::runtime`).
    pub runtime: Option<String>,
}

/// A tag: `template:tag` → build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub tag: String,
    pub build_id: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLogRecord {
    pub seq: i64,
    pub unix_ms: i64,
    pub level: String,
    pub message: String,
    pub step: Option<String>,
}

const TEMPLATE_COLUMNS: &str = "id, public, cpu_count, memory_mb, created_at, updated_at, latest_build_id, team_id";

fn template_from_row(r: &sqlx::any::AnyRow) -> Result<TemplateRecord, StoreError> {
    Ok(TemplateRecord {
        id: r.try_get("id")?,
        public: r.try_get::<i32, _>("public")? != 0,
        cpu_count: r.try_get("cpu_count")?,
        memory_mb: r.try_get("memory_mb")?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
        latest_build_id: r.try_get("latest_build_id")?,
        team_id: r.try_get("team_id")?,
    })
}

impl Store {
    /// Creates the template row for `team_id` if needed and a new `waiting` build for it; `tags` are assigned on
    /// success. Template names are unique across teams (like E2B's aliases): `Conflict` when another team owns it.
    pub async fn create_template_build(
        &self,
        team_id: &str,
        template_id: &str,
        build_id: &str,
        cpu_count: i32,
        memory_mb: i32,
        tags: &[String],
    ) -> Result<(), StoreError> {
        self.create_template_build_on(team_id, template_id, build_id, (cpu_count, memory_mb), tags, None).await
    }

    /// [`Store::create_template_build`] for a build that asked for an OCI runtime (`runtime`).
    pub async fn create_template_build_on(
        &self,
        team_id: &str,
        template_id: &str,
        build_id: &str,
        (cpu_count, memory_mb): (i32, i32),
        tags: &[String],
        runtime: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Insert-if-absent, then read the owner: two teams racing for a new name both pass the INSERT, and the
        // database's unique key makes exactly one row, whose owner the loser then sees.
        sqlx::query(
            "INSERT INTO templates (id, public, cpu_count, memory_mb, created_at, updated_at, latest_build_id, team_id) \
             VALUES ($1, 0, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(template_id)
        .bind(cpu_count)
        .bind(memory_mb)
        .bind(now)
        .bind(now)
        .bind(build_id)
        .bind(team_id)
        .execute(&mut *tx)
        .await?;
        let owner: String = sqlx::query("SELECT team_id FROM templates WHERE id = $1")
            .bind(template_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("team_id")?;
        if owner != team_id {
            return Err(StoreError::Conflict(format!(
                "the template name '{template_id}' is taken: choose another name"
            )));
        }
        sqlx::query(
            "UPDATE templates SET cpu_count = $1, memory_mb = $2, updated_at = $3, latest_build_id = $4 WHERE id = $5",
        )
        .bind(cpu_count)
        .bind(memory_mb)
        .bind(now)
        .bind(build_id)
        .bind(template_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO template_builds (id, template_id, status, cpu_count, memory_mb, created_at, tags, runtime) \
             VALUES ($1, $2, 'waiting', $3, $4, $5, $6, $7)",
        )
        .bind(build_id)
        .bind(template_id)
        .bind(cpu_count)
        .bind(memory_mb)
        .bind(now)
        .bind(serde_json::to_string(tags).unwrap_or_else(|_| "[]".into()))
        .bind(runtime)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_template_record(&self, id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(template_from_row).transpose()
    }

    /// Sets a template's `public` flag (E2B's template update); `NotFound` when there is no such template.
    pub async fn set_template_public(&self, id: &str, public: bool) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE templates SET public = $1, updated_at = $2 WHERE id = $3")
            .bind(public as i32)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("template {id}")));
        }
        Ok(())
    }

    /// Every template built through the API, of every team.
    pub async fn list_template_records(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(template_from_row).collect()
    }

    /// The ids of a template's builds, newest first.
    pub async fn build_ids(&self, template_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM template_builds WHERE template_id = $1 ORDER BY created_at DESC, id")
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn get_build(&self, build_id: &str) -> Result<Option<BuildRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, template_id, status, recipe, reason, reason_step, cpu_count, memory_mb, created_at, finished_at, \
             tags, runtime FROM template_builds WHERE id = $1",
        )
        .bind(build_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(BuildRecord {
                id: r.try_get("id")?,
                template_id: r.try_get("template_id")?,
                status: r.try_get("status")?,
                recipe: r.try_get("recipe")?,
                reason: r.try_get("reason")?,
                reason_step: r.try_get("reason_step")?,
                cpu_count: r.try_get("cpu_count")?,
                memory_mb: r.try_get("memory_mb")?,
                created_at_ms: r.try_get("created_at")?,
                finished_at_ms: r.try_get("finished_at")?,
                tags: r
                    .try_get::<Option<String>, _>("tags")?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_else(|| vec!["default".to_string()]),
                runtime: r.try_get("runtime")?,
            })
        })
        .transpose()
    }

    pub async fn finish_build(
        &self,
        build_id: &str,
        status: &str,
        reason: Option<&str>,
        reason_step: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE template_builds SET status = $1, reason = $2, reason_step = $3, finished_at = $4 WHERE id = $5",
        )
        .bind(status)
        .bind(reason)
        .bind(reason_step)
        .bind(now_ms())
        .bind(build_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Fails team `team_id`'s builds that have not started (`waiting`) with `reason`; returns how many, and how
    /// many of its builds are running (those cannot be stopped part-way).
    pub async fn cancel_waiting_builds(&self, team_id: &str, reason: &str) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE template_builds SET status = 'error', reason = $1, finished_at = $2 \
             WHERE status = 'waiting' AND template_id IN (SELECT id FROM templates WHERE team_id = $3)",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(team_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let running: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM template_builds \
             WHERE status = 'building' AND template_id IN (SELECT id FROM templates WHERE team_id = $1)",
        )
        .bind(team_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        tx.commit().await?;
        Ok((cancelled, running.max(0) as u64))
    }

    /// The team's builds that are running now (`building`).
    pub async fn running_builds(&self, team_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM template_builds \
             WHERE status = 'building' AND template_id IN (SELECT id FROM templates WHERE team_id = $1)",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Builds a previous server left `waiting`/`building` can never finish: mark them failed.
    pub async fn fail_unfinished_builds(&self, reason: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE template_builds SET status = 'error', reason = $1, finished_at = $2 WHERE status = 'waiting' OR status = 'building'",
        )
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn append_build_logs(&self, build_id: &str, entries: &[BuildLogRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query("INSERT INTO template_build_logs (build_id, seq, ts, level, message, step) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(build_id)
                .bind(e.seq)
                .bind(e.unix_ms)
                .bind(&e.level)
                .bind(&e.message)
                .bind(&e.step)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Entries with `seq >= offset`, oldest first, at most `limit`.
    pub async fn build_logs(&self, build_id: &str, offset: i64, limit: i64) -> Result<Vec<BuildLogRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ts, level, message, step FROM template_build_logs WHERE build_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(build_id)
        .bind(offset)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BuildLogRecord {
                    seq: r.try_get("seq")?,
                    unix_ms: r.try_get("ts")?,
                    level: r.try_get("level")?,
                    message: r.try_get("message")?,
                    step: r.try_get("step")?,
                })
            })
            .collect()
    }

    /// Points `tags` of the template at `build_id` (moving them from other builds).
    pub async fn set_tags(&self, template_id: &str, build_id: &str, tags: &[String]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for tag in tags {
            sqlx::query("DELETE FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(template_id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO template_tags (template_id, tag, build_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(template_id)
                .bind(tag)
                .bind(build_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes tags; returns how many existed.
    pub async fn remove_tags(&self, template_id: &str, tags: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut tx = self.pool.begin().await?;
        for tag in tags {
            let r = sqlx::query("DELETE FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(template_id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
            n += r.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The template's tags, by name.
    pub async fn tags(&self, template_id: &str) -> Result<Vec<TagRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT tag, build_id, created_at FROM template_tags WHERE template_id = $1 ORDER BY tag")
                .bind(template_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TagRecord {
                    tag: r.try_get("tag")?,
                    build_id: r.try_get("build_id")?,
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// The build a tag points at.
    pub async fn tag_build(&self, template_id: &str, tag: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT build_id FROM template_tags WHERE template_id = $1 AND tag = $2")
            .bind(template_id)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("build_id")).transpose()?)
    }

    /// Ids of the template's builds that succeeded (each is a runtime template `sbb-<id>`).
    pub async fn ready_build_ids(&self, template_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM template_builds WHERE template_id = $1 AND status = 'ready'")
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Deletes the template's row, builds, logs, tags and snapshot record; false when there was no row.
    pub async fn delete_template_record(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM template_tags WHERE template_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query(
            "DELETE FROM template_build_logs WHERE build_id IN (SELECT id FROM template_builds WHERE template_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM template_builds WHERE template_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM snapshots WHERE template_id = $1").bind(id).execute(&mut *tx).await?;
        let r = sqlx::query("DELETE FROM templates WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_db::store_test;

    store_test!(builds_and_logs_round_trip, |db| {
        let store = db.open().await;
        let team = crate::store::DEFAULT_TEAM_ID;
        let limits = crate::store::TeamLimits::default();
        store.create_template_build(team, "tpl", "b1", 2, 1024, &["default".to_string()]).await.unwrap();
        assert_eq!(store.get_build("b1").await.unwrap().unwrap().status, "waiting");
        assert!(store.start_build("b1", "{}", &limits).await.unwrap());
        assert!(!store.start_build("b1", "{}", &limits).await.unwrap(), "a build starts once");
        let logs: Vec<BuildLogRecord> = (0..5)
            .map(|i| BuildLogRecord {
                seq: i,
                unix_ms: i,
                level: "info".into(),
                message: format!("m{i}"),
                step: Some("1".into()),
            })
            .collect();
        store.append_build_logs("b1", &logs).await.unwrap();
        let page = store.build_logs("b1", 2, 2).await.unwrap();
        assert_eq!(page.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["m2", "m3"]);
        store.finish_build("b1", "error", Some("boom"), Some("1")).await.unwrap();
        let b = store.get_build("b1").await.unwrap().unwrap();
        assert_eq!(
            (b.status.as_str(), b.reason.as_deref(), b.reason_step.as_deref()),
            ("error", Some("boom"), Some("1"))
        );
        store.create_template_build(team, "tpl", "b2", 1, 512, &["v2".to_string()]).await.unwrap();
        assert_eq!(store.get_template_record("tpl").await.unwrap().unwrap().latest_build_id.as_deref(), Some("b2"));
        assert_eq!(store.get_build("b2").await.unwrap().unwrap().tags, ["v2"]);
        store.set_tags("tpl", "b1", &["default".into(), "v1".into()]).await.unwrap();
        store.set_tags("tpl", "b2", &["v1".into()]).await.unwrap();
        assert_eq!(store.tag_build("tpl", "v1").await.unwrap().as_deref(), Some("b2"), "a tag moves");
        let tags: Vec<(String, String)> =
            store.tags("tpl").await.unwrap().into_iter().map(|t| (t.tag, t.build_id)).collect();
        assert_eq!(tags, [("default".to_string(), "b1".to_string()), ("v1".to_string(), "b2".to_string())]);
        assert_eq!(store.remove_tags("tpl", &["v1".into(), "nope".into()]).await.unwrap(), 1);
        assert!(store.tag_build("tpl", "v1").await.unwrap().is_none());
        assert_eq!(store.fail_unfinished_builds("restart").await.unwrap(), 1);
        assert!(store.delete_template_record("tpl").await.unwrap());
        assert!(store.get_build("b1").await.unwrap().is_none());
        assert!(store.tags("tpl").await.unwrap().is_empty());
        assert!(store.build_logs("b1", 0, 100).await.unwrap().is_empty());
        assert!(!store.delete_template_record("tpl").await.unwrap());
    });
}
