//! `soulbox keys` and `soulbox teams`: API keys, teams and team limits, managed directly in the server's
//! database (whoever can read the data dir or the database URL is trusted like the server itself).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use soulbox_server::config::ServerConfig;
use soulbox_server::store::{DEFAULT_TEAM_NAME, LimitChange, LimitChanges, Role, Store, TeamLimits};

/// Which database: the server's own resolution (`crate::ServerArgs::resolve`) of `--database-url` /
/// `SOULBOX_DATABASE_URL`, the config file's `database_url`, else the SQLite file in `--data-dir`.
#[derive(Args)]
pub struct StoreArgs {
    /// Database URL [default: the config file's database_url, else SQLite in the data dir]; `postgres://…` for a
    /// cluster's shared database.
    #[arg(long, global = true, env = "SOULBOX_DATABASE_URL")]
    database_url: Option<String>,
    /// TOML config file of the server (for its database_url and [teams] defaults) [default: <data-dir>/config.toml].
    #[arg(long, global = true, env = "SOULBOX_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl StoreArgs {
    /// The server's configuration as `soulbox server` would resolve it with these flags and environment.
    fn resolve(&self, data_dir: PathBuf) -> anyhow::Result<ServerConfig> {
        crate::ServerArgs { config: self.config.clone(), database_url: self.database_url.clone(), ..Default::default() }
            .resolve(data_dir)
    }
}

async fn open(cfg: &ServerConfig) -> anyhow::Result<Store> {
    if cfg.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    }
    Store::open(&cfg.database_url).await.context("opening the store")
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
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

pub async fn keys(args: StoreArgs, data_dir: PathBuf, command: KeysCommand) -> anyhow::Result<()> {
    let cfg = args.resolve(data_dir)?;
    let store = open(&cfg).await?;
    match command {
        KeysCommand::Create { name, team, admin } => {
            let role = if admin { Role::Admin } else { Role::Member };
            let (record, key) = store.create_api_key_in(&name, &team, role).await?;
            if args.json {
                return print_json(&json!({
                    "id": record.id, "name": record.name, "team": record.team_name, "role": record.role.as_str(),
                    "key": key.secret,
                }));
            }
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
        KeysCommand::List if args.json => {
            let keys: Vec<_> = store
                .list_api_keys()
                .await?
                .into_iter()
                .map(|k| {
                    json!({
                        "id": k.id, "name": k.name, "team": k.team_name, "role": k.role.as_str(),
                        "prefix": k.key_prefix, "revoked": k.revoked_at_ms.is_some(), "revokedAtMs": k.revoked_at_ms,
                    })
                })
                .collect();
            print_json(&json!(keys))?;
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
            if args.json {
                print_json(&json!({ "id": id, "revoked": true }))?;
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

pub async fn teams(args: StoreArgs, data_dir: PathBuf, command: TeamsCommand) -> anyhow::Result<()> {
    let cfg = args.resolve(data_dir)?;
    let defaults = cfg.team_limits;
    let store = open(&cfg).await?;
    match command {
        TeamsCommand::List if args.json => {
            let mut teams = Vec::new();
            for team in store.list_teams().await? {
                let usage = store.team_usage(&team.id).await?;
                let l = defaults.with(team.overrides);
                teams.push(json!({
                    "name": team.name, "id": team.id,
                    "limits": {
                        "maxSandboxes": l.max_sandboxes, "maxVcpus": l.max_vcpus, "maxMemoryMB": l.max_memory_mb,
                        "maxBuilds": l.max_builds,
                    },
                    "overrides": {
                        "maxSandboxes": team.overrides.max_sandboxes, "maxVcpus": team.overrides.max_vcpus,
                        "maxMemoryMB": team.overrides.max_memory_mb, "maxBuilds": team.overrides.max_builds,
                    },
                    "usage": { "sandboxes": usage.sandboxes, "vcpus": usage.vcpus, "memoryMB": usage.memory_mb },
                }));
            }
            print_json(&json!(teams))?;
        }
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
            if args.json {
                return print_json(&json!({
                    "name": team.name, "maxSandboxes": l.max_sandboxes, "maxVcpus": l.max_vcpus,
                    "maxMemoryMB": l.max_memory_mb, "maxBuilds": l.max_builds,
                }));
            }
            println!(
                "team {}: max_sandboxes {}, max_vcpus {}, max_memory_mb {}, max_builds {}",
                team.name, l.max_sandboxes, l.max_vcpus, l.max_memory_mb, l.max_builds
            );
        }
    }
    Ok(())
}
