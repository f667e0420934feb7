//! The store: one schema for SQLite (default, a file in the data dir) and PostgreSQL (cluster mode), used
//! through sqlx's `Any` driver so every query is written once. Migrations are embedded.

mod access_tokens;
mod api_key_use;
mod api_keys;
mod egress_ca;
mod hashed_secret;
mod nodes;
mod sandbox_page;
mod sandboxes;
mod secrets;
#[cfg(test)]
mod secrets_tests;
mod snapshots;
mod teams;
#[cfg(test)]
mod teams_tests;
mod templates;
#[cfg(test)]
pub(crate) mod test_db;
mod usage;
mod volumes;

pub use access_tokens::AccessTokenRecord;
pub use api_keys::{ApiKeyRecord, Caller};
pub use nodes::{NodeRecord, NodeReservation};
pub use sandbox_page::{SandboxPage, SandboxPageQuery};
pub use sandboxes::{ClaimCondition, Holds, Ingress, SandboxRecord};
pub use secrets::{SECRET_ID_PREFIX, SecretRecord, SecretValue};
pub use snapshots::SnapshotRecord;
pub use teams::{
    DEFAULT_TEAM_ID, DEFAULT_TEAM_NAME, LimitChange, LimitChanges, LimitExceeded, LimitKind, LimitOverrides, Role,
    TeamLimits, TeamRecord, TeamUsage, valid_team_name,
};
pub use templates::{BuildLogRecord, BuildRecord, TagRecord, TemplateRecord};
pub use usage::{RUN_RETENTION_MS, SandboxRun, TemplateStats};
pub use volumes::{VolumeMountRecord, VolumeRecord, check_volume_name};

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

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
    /// A secret could not be encrypted or decrypted (no key, the wrong key, a damaged row).
    #[error(transparent)]
    Secrets(#[from] crate::secret_box::SealError),
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Encrypts secrets' values (`secrets.rs`); `None` until the server gives it one ([`Store::with_secret_box`]):
    /// tools that open the store for keys and teams never need it.
    secrets: Option<std::sync::Arc<crate::secret_box::SecretBox>>,
    /// The API key stamps this process wrote lately (`api_key_use.rs`), shared by the store's clones.
    last_used_writes: std::sync::Arc<api_key_use::LastUsedWrites>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://path?mode=rwc` or `postgres://…`) and
    /// applies the embedded migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let (url, synchronous) = sqlite_synchronous(url)?;
        let url = url.as_str();
        let sqlite_file = sqlite_path(url);
        if let Some(path) = &sqlite_file {
            owner_only(path, true)?;
        }
        // SQLite serialises writers anyway; one connection avoids "database is locked" under contention.
        let max = if is_sqlite { 1 } else { 16 };
        let mut options = AnyPoolOptions::new().max_connections(max);
        if is_sqlite {
            // Per-connection settings, so a connection the pool opens again has them too.
            let pragmas = format!("PRAGMA foreign_keys=ON; PRAGMA synchronous={synchronous}");
            options = options.after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, pragmas.as_str()).await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        if is_sqlite {
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        if let Some(path) = &sqlite_file {
            // SQLite gives -wal and -shm the database file's mode; files from an older version get it here.
            for suffix in ["-wal", "-shm"] {
                let mut side = path.clone().into_os_string();
                side.push(suffix);
                owner_only(std::path::Path::new(&side), false)?;
            }
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool, secrets: None, last_used_writes: Default::default() })
    }

    /// The store with the key its secrets are encrypted with.
    pub fn with_secret_box(mut self, secret_box: crate::secret_box::SecretBox) -> Store {
        self.secrets = Some(std::sync::Arc::new(secret_box));
        self
    }

    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }
}

/// The file of a `sqlite:` URL (None for other backends and in-memory databases).
/// SQLite's `synchronous` for the store, from the URL's own `synchronous=normal|full` (taken out: sqlx does not
/// know it) [default: normal]. In WAL mode `normal` writes a commit without waiting for the disk (~3 ms per commit
/// on this project's VM, several per create) and never corrupts the file; what a power loss or host crash can cost
/// is the last commits, whose sandboxes that crash ended anyway. `full` waits for the disk on every commit.
fn sqlite_synchronous(url: &str) -> Result<(String, &'static str), StoreError> {
    let Some((base, query)) = url.split_once('?').filter(|_| url.starts_with("sqlite:")) else {
        return Ok((url.to_owned(), "NORMAL"));
    };
    let mut synchronous = "NORMAL";
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "normal" => "NORMAL",
                    "full" => "FULL",
                    other => {
                        return Err(StoreError::Invalid(format!(
                            "the database URL's synchronous={other}: use normal or full"
                        )));
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, synchronous))
}

fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| std::path::PathBuf::from(path))
}

/// Makes a database file readable and writable by its owner only (0600): it holds API key hashes, sandboxes'
/// access tokens and the whole control-plane state. `create`: an absent file is created empty (a valid empty
/// SQLite database) with that mode before SQLite opens it, so it never exists with a wider one.
fn owner_only(path: &std::path::Path, create: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| {
        StoreError::Database(sqlx::Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))
    };
    if create {
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    match std::fs::metadata(path) {
        Ok(md) if md.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

#[cfg(test)]
mod open_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_sqlite_database_and_its_side_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("soulbox.db");
        let store = Store::open(&Store::sqlite_url(&db)).await.unwrap();
        store.create_api_key("k").await.unwrap();
        for name in ["soulbox.db", "soulbox.db-wal", "soulbox.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
        drop(store);
        // files an older version left world-readable are tightened at the next open
        for name in ["soulbox.db", "soulbox.db-wal", "soulbox.db-shm"] {
            let p = dir.path().join(name);
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let _store = Store::open(&Store::sqlite_url(&db)).await.unwrap();
        for name in ["soulbox.db", "soulbox.db-wal", "soulbox.db-shm"] {
            let p = dir.path().join(name);
            if p.exists() {
                assert_eq!(mode(&p), 0o600, "{name} after reopening");
            }
        }
        assert_eq!(sqlite_path("postgres://x/y"), None);
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite:///a/b.db?mode=rwc"), Some("/a/b.db".into()));
    }

    async fn pragma(store: &Store, name: &str) -> i64 {
        use sqlx::Row;
        let row = sqlx::query(&format!("PRAGMA {name}")).fetch_one(&store.pool).await.unwrap();
        row.try_get::<i64, _>(0).unwrap()
    }

    #[tokio::test]
    async fn sqlite_commits_are_normal_unless_the_url_asks_for_full_and_every_connection_has_its_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let url = Store::sqlite_url(&dir.path().join("soulbox.db"));
        let store = Store::open(&url).await.unwrap();
        assert_eq!(pragma(&store, "synchronous").await, 1, "NORMAL by default");
        assert_eq!(pragma(&store, "foreign_keys").await, 1);
        // The connection leaves the pool; the one the pool opens next has the same settings.
        drop(store.pool.acquire().await.unwrap().detach());
        assert_eq!(pragma(&store, "synchronous").await, 1, "NORMAL on a new connection");
        assert_eq!(pragma(&store, "foreign_keys").await, 1, "foreign keys on a new connection");
        store.pool.close().await;
        let store = Store::open(&format!("{url}&synchronous=full")).await.unwrap();
        assert_eq!(pragma(&store, "synchronous").await, 2, "FULL when asked");
        assert_eq!(pragma(&store, "foreign_keys").await, 1);
        let err = Store::open(&format!("{url}&synchronous=off")).await.err().expect("off is refused");
        assert!(err.to_string().contains("synchronous=off"), "{err}");
        assert_eq!(sqlite_synchronous("postgres://h/db?synchronous=full").unwrap().1, "NORMAL");
        assert_eq!(sqlite_synchronous("sqlite:///a.db?synchronous=FULL").unwrap(), ("sqlite:///a.db".into(), "FULL"));
    }
}
