//! `soulbox keys` and `soulbox teams`: API keys, teams and team limits, managed directly in the server's
//! database (whoever can read the data dir or the database URL is trusted like the server itself).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use soulbox_server::config::FileConfig;
use soulbox_server::store::{DEFAULT_TEAM_NAME, LimitChange, LimitChanges, Role, Store, TeamLimits};

/// Which database: `--database-url` / `SOULBOX_DATABASE_URL`, else the server config's `database_url`, else the
/// SQLite file in the data dir — the same one `soulbox server` opens.
#[derive(Args)]
pub struct StoreArgs {
    /// Database URL [default: the config file's database_url, else SQLite in the data dir].
    #[arg(long, global = true, env = "SOULBOX_DATABASE_URL")]
    database_url: Option<String>,
    /// TOML config file of the server (for its database_url and [teams] defaults) [default: <data-dir>/config.toml].
    #[arg(long, global = true, env = "SOULBOX_CONFIG")]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn file_config(&self, data_dir: &Path) -> anyhow::Result<FileConfig> {
        match self.config.clone().or_else(|| Some(data_dir.join("config.toml")).filter(|p| p.exists())) {
            Some(path) => FileConfig::load(&path),
            None => Ok(FileConfig::default()),
        }
    }

    async fn open(&self, data_dir: &Path, file: &FileConfig) -> anyhow::Result<Store> {
        let url = match self.database_url.clone().or_else(|| file.database_url.clone()) {
            Some(url) => url,
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating data dir {}", data_dir.display()))?;
                Store::sqlite_url(&data_dir.join("soulbox.db"))
            }
        };
        Store::open(&url).await.context("opening the store")
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long, default_value = "default")]
        name: String,
        /// The key's team (created if it does not exist); each team sees only its own sandboxes and templates.
        #[arg(long, default_value = DEFAULT_TEAM_NAME)]
        team: String,
        /// An admin key: also manages nodes and keys through the API.
        #[arg(long)]
        admin: bool,
    },
    /// List keys with their team and role (never the secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

/// A limit on the command line: a number, or `default` for the server's `[teams]` value.
fn limit_arg(raw: &str) -> Result<LimitChange, String> {
    if raw == "default" {
        return Ok(LimitChange::Default);
    }
    raw.parse::<u64>().map(LimitChange::Set).map_err(|_| format!("{raw:?} is neither a number nor `default`"))
}

#[derive(Subcommand)]
pub enum TeamsCommand {
    /// List teams, their limits and what they run now.
    List,
    /// Override a team's limits; `default` goes back to the server's `[teams]` value.
    #[command(
        after_help = "Example:\n  soulbox teams limits team-b --max-sandboxes 20 --max-memory-mb 40960 --max-builds default"
    )]
    Limits {
        name: String,
        /// Sandboxes running (or paused with their memory) at once.
        #[arg(long, value_parser = limit_arg)]
        max_sandboxes: Option<LimitChange>,
        /// Their vCPUs together.
        #[arg(long, value_parser = limit_arg)]
        max_vcpus: Option<LimitChange>,
        /// Their memory together, MiB.
        #[arg(long, value_parser = limit_arg)]
        max_memory_mb: Option<LimitChange>,
        /// Template builds at once.
        #[arg(long, value_parser = limit_arg)]
        max_builds: Option<LimitChange>,
    },
}

pub async fn keys(data_dir: &Path, store_args: &StoreArgs, command: KeysCommand) -> anyhow::Result<()> {
    let file = store_args.file_config(data_dir)?;
    let store = store_args.open(data_dir, &file).await?;
    match command {
        KeysCommand::Create { name, team, admin } => {
            let role = if admin { Role::Admin } else { Role::Member };
            let (record, key) = store.create_api_key_in(&name, &team, role).await?;
            // Scripts parse these two lines (`created key <id> ...`, `export E2B_API_KEY=...`).
            println!(
                "created key {} ({}, team {}, {})",
                record.id,
                record.name,
                record.team_name,
                record.role.as_str()
            );
            println!("export E2B_API_KEY={}", key.secret);
        }
        KeysCommand::List => {
            println!("{:<20} {:<16} {:<16} {:<7} {:<12} STATUS", "ID", "NAME", "TEAM", "ROLE", "PREFIX");
            for k in store.list_api_keys().await? {
                let status = if k.revoked_at_ms.is_some() { "revoked" } else { "active" };
                println!(
                    "{:<20} {:<16} {:<16} {:<7} {:<12} {status}",
                    k.id,
                    k.name,
                    k.team_name,
                    k.role.as_str(),
                    k.key_prefix
                );
            }
        }
        KeysCommand::Revoke { id } => {
            store.revoke_api_key(&id).await.with_context(|| format!("revoking {id}"))?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub async fn teams(data_dir: &Path, store_args: &StoreArgs, command: TeamsCommand) -> anyhow::Result<()> {
    let file = store_args.file_config(data_dir)?;
    let defaults = file.teams.unwrap_or_default();
    let store = store_args.open(data_dir, &file).await?;
    match command {
        TeamsCommand::List => {
            println!(
                "{:<16} {:<22} {:<16} {:<16} {:<18} {:<14} IN USE",
                "TEAM", "ID", "SANDBOXES", "VCPUS", "MEMORY MB", "BUILDS"
            );
            for team in store.list_teams().await? {
                let usage = store.team_usage(&team.id).await?;
                let o = team.overrides;
                // A team's own value as it is; a server default marked as one.
                let show = |own: Option<u64>, default: u64| {
                    own.map_or_else(|| format!("{default} (default)"), |v| v.to_string())
                };
                println!(
                    "{:<16} {:<22} {:<16} {:<16} {:<18} {:<14} {} sandboxes, {} vCPUs, {} MiB",
                    team.name,
                    team.id,
                    show(o.max_sandboxes, defaults.max_sandboxes),
                    show(o.max_vcpus, defaults.max_vcpus),
                    show(o.max_memory_mb, defaults.max_memory_mb),
                    show(o.max_builds, defaults.max_builds),
                    usage.sandboxes,
                    usage.vcpus,
                    usage.memory_mb,
                );
            }
        }
        TeamsCommand::Limits { name, max_sandboxes, max_vcpus, max_memory_mb, max_builds } => {
            let changes = LimitChanges {
                max_sandboxes: max_sandboxes.unwrap_or_default(),
                max_vcpus: max_vcpus.unwrap_or_default(),
                max_memory_mb: max_memory_mb.unwrap_or_default(),
                max_builds: max_builds.unwrap_or_default(),
            };
            let team = store
                .set_team_limits(&name, changes)
                .await
                .with_context(|| format!("setting the limits of team {name}"))?;
            let l: TeamLimits = defaults.with(team.overrides);
            println!(
                "team {}: max_sandboxes {}, max_vcpus {}, max_memory_mb {}, max_builds {}",
                team.name, l.max_sandboxes, l.max_vcpus, l.max_memory_mb, l.max_builds
            );
        }
    }
    Ok(())
}
