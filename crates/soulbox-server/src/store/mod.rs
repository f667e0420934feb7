//! The store: one schema for SQLite (default, a file in the data dir) and PostgreSQL (cluster mode), used
//! through sqlx's `Any` driver so every query is written once. Migrations are embedded.

mod api_keys;
mod nodes;
mod sandboxes;
mod teams;
#[cfg(test)]
mod teams_tests;
mod templates;
#[cfg(test)]
pub(crate) mod test_db;

pub use api_keys::{ApiKeyRecord, Caller};
pub use nodes::{NodeRecord, NodeReservation};
pub use sandboxes::{ClaimCondition, Holds, SandboxRecord};
pub use teams::{
    DEFAULT_TEAM_ID, DEFAULT_TEAM_NAME, LimitChange, LimitChanges, LimitExceeded, LimitKind, LimitOverrides, Role, TeamLimits,
    TeamRecord, TeamUsage, valid_team_name,
};
pub use templates::{BuildLogRecord, BuildRecord, TagRecord, TemplateRecord};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A name another team holds (template names are unique across teams, like E2B's aliases).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    LimitExceeded(#[from] LimitExceeded),
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://path?mode=rwc` or `postgres://…`) and
    /// applies the embedded migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        // SQLite serialises writers anyway; one connection avoids "database is locked" under contention.
        let max = if is_sqlite { 1 } else { 16 };
        let pool = AnyPoolOptions::new().max_connections(max).connect(url).await?;
        if is_sqlite {
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
            sqlx::query("PRAGMA foreign_keys=ON").execute(&pool).await?;
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
