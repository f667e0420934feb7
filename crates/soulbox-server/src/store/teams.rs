//! Teams (issue 11): who owns keys, sandboxes and templates, and how much of the server a team may use at once.
//!
//! Admission is race-free across API replicas: every admission of a team first updates the team's row (PostgreSQL's
//! row lock, SQLite's write lock), then counts what the team holds and inserts a hold, all in one transaction —
//! the same pattern as the node placement holds (`nodes.rs`).

use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError, now_ms};

/// The team existing keys, sandboxes and templates migrate into, and where `soulbox keys create` puts a key
/// without `--team`.
pub const DEFAULT_TEAM_ID: &str = "team_default";
pub const DEFAULT_TEAM_NAME: &str = "default";

/// What a key may do besides using its team's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Manages nodes, keys and server-wide settings.
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Role {
        // Anything but the exact admin marker is the least privilege.
        if raw == "admin" { Role::Admin } else { Role::Member }
    }
}

/// Per-team overrides of the server's limits; `None` = the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub max_sandboxes: Option<u64>,
    pub max_vcpus: Option<u64>,
    pub max_memory_mb: Option<u64>,
    pub max_builds: Option<u64>,
}

/// A change to one override: keep it, set it, or go back to the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitChange {
    #[default]
    Keep,
    Set(u64),
    Default,
}

impl LimitChange {
    fn apply(self, current: Option<u64>) -> Option<u64> {
        match self {
            LimitChange::Keep => current,
            LimitChange::Set(n) => Some(n),
            LimitChange::Default => None,
        }
    }
}

/// Changes to a team's overrides (`soulbox teams limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitChanges {
    pub max_sandboxes: LimitChange,
    pub max_vcpus: LimitChange,
    pub max_memory_mb: LimitChange,
    pub max_builds: LimitChange,
}

/// Effective limits: the server's defaults (the config's `[teams]` section) with a team's overrides applied. Counted
/// are sandboxes that hold resources on a node: running ones and ones paused with their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeamLimits {
    /// Sandboxes at once.
    pub max_sandboxes: u64,
    /// Sum of their vCPUs.
    pub max_vcpus: u64,
    /// Sum of their memory, MiB.
    pub max_memory_mb: u64,
    /// Template builds running at once.
    pub max_builds: u64,
}

impl Default for TeamLimits {
    /// E2B's Pro tier for sandboxes; vCPUs and memory for that many 2-vCPU / 1 GiB sandboxes.
    fn default() -> Self {
        TeamLimits { max_sandboxes: 100, max_vcpus: 200, max_memory_mb: 100 * 1024, max_builds: 4 }
    }
}

impl TeamLimits {
    pub fn with(self, o: LimitOverrides) -> TeamLimits {
        TeamLimits {
            max_sandboxes: o.max_sandboxes.unwrap_or(self.max_sandboxes),
            max_vcpus: o.max_vcpus.unwrap_or(self.max_vcpus),
            max_memory_mb: o.max_memory_mb.unwrap_or(self.max_memory_mb),
            max_builds: o.max_builds.unwrap_or(self.max_builds),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub overrides: LimitOverrides,
}

/// Which limit a request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Sandboxes,
    Vcpus,
    MemoryMb,
    Builds,
}

impl LimitKind {
    /// The setting's name, as the config file's `[teams]` section and `soulbox teams limits` spell it.
    pub fn setting(self) -> &'static str {
        match self {
            LimitKind::Sandboxes => "teams.max_sandboxes",
            LimitKind::Vcpus => "teams.max_vcpus",
            LimitKind::MemoryMb => "teams.max_memory_mb",
            LimitKind::Builds => "teams.max_builds",
        }
    }
}

/// A refused admission; the message names the limit (it is what the client sees in the 429).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct LimitExceeded {
    pub team: String,
    pub kind: LimitKind,
    pub limit: u64,
    /// What the team holds already.
    pub in_use: u64,
}

impl LimitExceeded {
    fn message(&self) -> String {
        let (team, limit, used, setting) = (&self.team, self.limit, self.in_use, self.kind.setting());
        match self.kind {
            LimitKind::Sandboxes => {
                format!(
                    "team '{team}' has reached its limit of {limit} concurrent sandboxes ({setting}); {used} are running"
                )
            }
            LimitKind::Vcpus => {
                format!("team '{team}' would exceed its limit of {limit} vCPUs ({setting}); {used} are in use")
            }
            LimitKind::MemoryMb => {
                format!(
                    "team '{team}' would exceed its limit of {limit} MiB of memory ({setting}); {used} MiB are in use"
                )
            }
            LimitKind::Builds => {
                format!(
                    "team '{team}' has reached its limit of {limit} concurrent template builds ({setting}); {used} are running"
                )
            }
        }
    }
}

/// Team names: what a person types after `--team`.
pub fn valid_team_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn optional_limit(row: &AnyRow, column: &str) -> Result<Option<u64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(|v| v.max(0) as u64))
}

fn team_from_row(row: &AnyRow) -> Result<TeamRecord, StoreError> {
    Ok(TeamRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at_ms: row.try_get("created_at")?,
        overrides: LimitOverrides {
            max_sandboxes: optional_limit(row, "max_sandboxes")?,
            max_vcpus: optional_limit(row, "max_vcpus")?,
            max_memory_mb: optional_limit(row, "max_memory_mb")?,
            max_builds: optional_limit(row, "max_builds")?,
        },
    })
}

const TEAM_COLUMNS: &str = "id, name, created_at, max_sandboxes, max_vcpus, max_memory_mb, max_builds";

fn to_db(limit: Option<u64>) -> Option<i64> {
    limit.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Locks the team's row until the transaction ends and returns it: every admission of the team waits here.
async fn lock_team(tx: &mut Transaction<'static, Any>, team_id: &str) -> Result<TeamRecord, StoreError> {
    let locked = sqlx::query("UPDATE teams SET limit_seq = limit_seq + 1 WHERE id = $1")
        .bind(team_id)
        .execute(&mut **tx)
        .await?;
    if locked.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("team {team_id}")));
    }
    let row = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1"))
        .bind(team_id)
        .fetch_one(&mut **tx)
        .await?;
    team_from_row(&row)
}

/// What a team holds now: sandboxes using node resources plus unexpired holds of creates and resumes in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeamUsage {
    pub sandboxes: u64,
    pub vcpus: u64,
    pub memory_mb: u64,
}

async fn team_usage(tx: &mut Transaction<'static, Any>, team_id: &str, now: i64) -> Result<TeamUsage, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, SUM(cpu) AS cpu, SUM(mem) AS mem FROM ( \
           SELECT cpu_count AS cpu, memory_mb AS mem FROM sandboxes \
            WHERE team_id = $1 AND (state = 'running' OR (state = 'paused' AND address IS NOT NULL)) \
           UNION ALL SELECT cpu_count AS cpu, memory_mb AS mem FROM team_holds WHERE team_id = $2 AND expires_at > $3 \
         ) AS used",
    )
    .bind(team_id)
    .bind(team_id)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(TeamUsage {
        sandboxes: row.try_get::<i64, _>("n")?.max(0) as u64,
        vcpus: row.try_get::<Option<i64>, _>("cpu")?.unwrap_or(0).max(0) as u64,
        memory_mb: row.try_get::<Option<i64>, _>("mem")?.unwrap_or(0).max(0) as u64,
    })
}

impl Store {
    /// The team called `name`, created (without overrides) if it does not exist.
    pub async fn ensure_team(&self, name: &str) -> Result<TeamRecord, StoreError> {
        if !valid_team_name(name) {
            return Err(StoreError::Invalid(format!(
                "invalid team name {name:?}: 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
        let id = format!("team_{}", &crate::ids::access_token()[..16]);
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(&id)
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        self.team_by_name(name).await
    }

    pub async fn team_by_name(&self, name: &str) -> Result<TeamRecord, StoreError> {
        let row = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(team_from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("team {name}")))
    }

    pub async fn get_team(&self, id: &str) -> Result<TeamRecord, StoreError> {
        let row = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(team_from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("team {id}")))
    }

    pub async fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY name")).fetch_all(&self.pool).await?;
        rows.iter().map(team_from_row).collect()
    }

    /// Applies `changes` to the named team's overrides; returns the team as it is now.
    pub async fn set_team_limits(&self, name: &str, changes: LimitChanges) -> Result<TeamRecord, StoreError> {
        let team = self.team_by_name(name).await?;
        let mut tx = self.pool.begin().await?;
        let current = lock_team(&mut tx, &team.id).await?.overrides;
        let next = LimitOverrides {
            max_sandboxes: changes.max_sandboxes.apply(current.max_sandboxes),
            max_vcpus: changes.max_vcpus.apply(current.max_vcpus),
            max_memory_mb: changes.max_memory_mb.apply(current.max_memory_mb),
            max_builds: changes.max_builds.apply(current.max_builds),
        };
        sqlx::query(
            "UPDATE teams SET max_sandboxes = $1, max_vcpus = $2, max_memory_mb = $3, max_builds = $4 WHERE id = $5",
        )
        .bind(to_db(next.max_sandboxes))
        .bind(to_db(next.max_vcpus))
        .bind(to_db(next.max_memory_mb))
        .bind(to_db(next.max_builds))
        .bind(&team.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TeamRecord { overrides: next, ..team })
    }

    /// What the team holds now (outside any admission; for display).
    pub async fn team_usage(&self, team_id: &str) -> Result<TeamUsage, StoreError> {
        let mut tx = self.pool.begin().await?;
        let usage = team_usage(&mut tx, team_id, now_ms()).await?;
        tx.commit().await?;
        Ok(usage)
    }

    /// Admits one more sandbox of `cpu` vCPUs and `memory_mb` for the team under its limits (`defaults` with the
    /// team's overrides) and holds that capacity as `hold_id` for `ttl_ms`: `LimitExceeded` when it does not fit.
    /// The count and the hold happen under the team row's lock, so concurrent admissions through any number of
    /// replicas cannot pass a limit together. Drop the hold with the sandbox's insert or transition, or
    /// [`Store::release_team_hold`].
    pub async fn hold_team_capacity(
        &self,
        hold_id: &str,
        team_id: &str,
        cpu: u32,
        memory_mb: u32,
        ttl_ms: i64,
        defaults: &TeamLimits,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let team = lock_team(&mut tx, team_id).await?;
        let limits = defaults.with(team.overrides);
        let used = team_usage(&mut tx, team_id, now).await?;
        let refuse = |kind, limit, in_use| {
            StoreError::LimitExceeded(LimitExceeded { team: team.name.clone(), kind, limit, in_use })
        };
        if used.sandboxes + 1 > limits.max_sandboxes {
            return Err(refuse(LimitKind::Sandboxes, limits.max_sandboxes, used.sandboxes));
        }
        if used.vcpus + u64::from(cpu) > limits.max_vcpus {
            return Err(refuse(LimitKind::Vcpus, limits.max_vcpus, used.vcpus));
        }
        if used.memory_mb + u64::from(memory_mb) > limits.max_memory_mb {
            return Err(refuse(LimitKind::MemoryMb, limits.max_memory_mb, used.memory_mb));
        }
        sqlx::query("DELETE FROM team_holds WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO team_holds (id, team_id, cpu_count, memory_mb, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hold_id)
        .bind(team_id)
        .bind(i32::try_from(cpu).unwrap_or(i32::MAX))
        .bind(i32::try_from(memory_mb).unwrap_or(i32::MAX))
        .bind(now + ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn release_team_hold(&self, hold_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM team_holds WHERE id = $1").bind(hold_id).execute(&self.pool).await?;
        Ok(())
    }

    /// `waiting` → `building` when the build's team runs fewer builds than its limit (counted under the team row's
    /// lock, like sandboxes). `Ok(false)`: the build was not waiting (started twice); `LimitExceeded`: too many.
    pub async fn start_build(
        &self,
        build_id: &str,
        recipe_json: &str,
        defaults: &TeamLimits,
    ) -> Result<bool, StoreError> {
        let owner = sqlx::query("SELECT t.team_id AS team_id FROM template_builds b JOIN templates t ON t.id = b.template_id WHERE b.id = $1")
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(owner) = owner else { return Ok(false) };
        let team_id: String = owner.try_get("team_id")?;
        let mut tx = self.pool.begin().await?;
        let team = lock_team(&mut tx, &team_id).await?;
        let limit = defaults.with(team.overrides).max_builds;
        let running = sqlx::query(
            "SELECT COUNT(*) AS n FROM template_builds b JOIN templates t ON t.id = b.template_id \
             WHERE t.team_id = $1 AND b.status = 'building'",
        )
        .bind(&team_id)
        .fetch_one(&mut *tx)
        .await?;
        let running = running.try_get::<i64, _>("n")?.max(0) as u64;
        if running >= limit {
            return Err(StoreError::LimitExceeded(LimitExceeded {
                team: team.name,
                kind: LimitKind::Builds,
                limit,
                in_use: running,
            }));
        }
        let r = sqlx::query(
            "UPDATE template_builds SET status = 'building', recipe = $1 WHERE id = $2 AND status = 'waiting'",
        )
        .bind(recipe_json)
        .bind(build_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }
}
