//! `soulbox`: the SoulBox command — `soulbox server` runs everything on one machine; `soulbox keys` and
//! `soulbox teams` manage API keys, teams and team limits (on the configuration `soulbox server` resolves, through
//! the one `ServerArgs::resolve`); `completions` and `man` are generated from this clap definition.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use soulbox_server::config::{self, FileConfig, ServerConfig};
use soulbox_server::store::Store;

mod cli;
mod docs_cli;
mod keys_cli;
mod logging;

#[derive(Parser)]
#[command(name = "soulbox", version, about = "SoulBox: self-hosted E2B-compatible sandboxes")]
struct Cli {
    /// Where SoulBox keeps its database, templates and sandboxes.
    #[arg(long, global = true, env = "SOULBOX_DATA_DIR", default_value = "/var/lib/soulbox")]
    data_dir: PathBuf,
    /// Log lines as `text` or `json` (one object per line); the filter is `SOULBOX_LOG` (default `info`). The
    /// envd of every sandbox this process starts logs the same way.
    #[arg(long, global = true, env = "SOULBOX_LOG_FORMAT", value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane with the node runtime in-process (one machine, SQLite inside).
    Server(ServerArgs),
    /// Run a node agent: this host's runtime, driven by a cluster's control plane (`soulbox server` with a
    /// node token).
    Node(NodeArgs),
    /// Manage API keys (each belongs to a team; `--admin` keys also manage nodes and keys).
    Keys {
        #[command(flatten)]
        store: keys_cli::StoreArgs,
        #[command(subcommand)]
        command: keys_cli::KeysCommand,
    },
    /// Teams and their limits.
    Teams {
        #[command(flatten)]
        store: keys_cli::StoreArgs,
        #[command(subcommand)]
        command: keys_cli::TeamsCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Examples:\n  soulbox completions bash > /etc/bash_completion.d/soulbox\n  soulbox completions zsh > \"${fpath[1]}/_soulbox\"\n  soulbox completions fish > ~/.config/fish/completions/soulbox.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (soulbox.1), or write one page per command to a directory with --out.
    #[command(after_help = "Example:\n  soulbox man --out /usr/local/share/man/man1 && man soulbox-sandbox-list")]
    Man {
        /// Directory for soulbox.1, soulbox-sandbox.1, soulbox-sandbox-list.1, …
        #[arg(long)]
        out: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// Flags override `SOULBOX_*` environment variables, which override the config file. The admin commands
/// (`keys`, `teams`) resolve through the same `resolve` with their `--config`/`--database-url`, so they open the
/// database the server does.
#[derive(Args, Default)]
pub(crate) struct ServerArgs {
    /// TOML config file (default: <data-dir>/config.toml when it exists).
    #[arg(long, env = "SOULBOX_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address for the API and sandbox traffic [default: 127.0.0.1:3000].
    #[arg(long, env = "SOULBOX_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Database URL [default: SQLite in the data dir]; `postgres://…` for a shared database.
    #[arg(long, env = "SOULBOX_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Domain for host-based routing `<port>-<sandboxID>.<domain>` (returned to clients as `domain`).
    #[arg(long, env = "SOULBOX_DOMAIN")]
    domain: Option<String>,
    /// OCI runtime binary [default: runc].
    #[arg(long, env = "SOULBOX_RUNTIME")]
    runtime: Option<String>,
    /// More OCI runtimes templates may ask for, comma-separated [default: runsc on a runc node when
    /// installed]; empty for none.
    #[arg(long, env = "SOULBOX_EXTRA_RUNTIMES", value_delimiter = ',', num_args = 0..)]
    extra_runtimes: Option<Vec<String>>,
    /// Static soulbox-envd binary to run in sandboxes.
    #[arg(long, env = "SOULBOX_ENVD_PATH")]
    envd_path: Option<PathBuf>,
    /// Debian mirror for building the base template.
    #[arg(long, env = "SOULBOX_DEBIAN_MIRROR")]
    debian_mirror: Option<String>,
    /// Pre-warmed network slots.
    #[arg(long, env = "SOULBOX_WARM_POOL")]
    warm_pool: Option<usize>,
    /// Sandboxes booted ahead, per template: TEMPLATE=SIZE, comma-separated (replaces `[pool] booted`); a create
    /// of the template's default sandbox takes one [default: none].
    #[arg(long, env = "SOULBOX_BOOTED_POOL", value_delimiter = ',', value_parser = config::parse_booted_pool)]
    booted_pool: Option<Vec<(String, usize)>>,
    /// Longest total lifetime a refresh may extend a sandbox to, in seconds [default: 86400].
    #[arg(long, env = "SOULBOX_MAX_LIFETIME_S")]
    max_lifetime_s: Option<i64>,
    /// Name prefix of host objects (netns, veths, nft table, cgroup parent) [default: sbx]; servers sharing a
    /// machine need distinct prefixes (and network pools).
    #[arg(long, env = "SOULBOX_PREFIX")]
    prefix: Option<String>,
    /// Run every sandbox in its own user namespace (root inside is an unprivileged host uid) [default: true].
    /// `false` only for kernels without idmapped overlay layers or for comparisons.
    #[arg(long, env = "SOULBOX_USER_NAMESPACES")]
    user_namespaces: Option<bool>,
    /// auto | per-sandbox | shared: one id range per sandbox (idmapped layers), or one range shared by all
    /// (where overlayfs on idmapped layers is missing; weaker) [default: auto].
    #[arg(long, env = "SOULBOX_USERNS_MODE")]
    userns_mode: Option<config::UsernsMode>,
    /// First host uid of the sandboxes' id ranges (65536 each; in shared mode the one range) [default: 0x10000000].
    #[arg(long, env = "SOULBOX_USERNS_BASE")]
    userns_base: Option<u32>,
    /// Sandbox address pool, a.b.c.d/len [default: 10.77.0.0/16].
    #[arg(long, env = "SOULBOX_NETWORK_POOL")]
    network_pool: Option<String>,
    /// Template store (layers, templates, build cache) [default: <data-dir>/node]; servers and node agents on one
    /// host may share one.
    #[arg(long, env = "SOULBOX_TEMPLATE_DIR")]
    template_dir: Option<PathBuf>,
    /// Cluster mode: node agents join with this token; the server then runs no sandboxes itself.
    #[arg(long, env = "SOULBOX_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<String>,
    /// Cluster mode: seconds without a heartbeat before a node is Unhealthy [default: 10].
    #[arg(long, env = "SOULBOX_NODE_HEARTBEAT_TIMEOUT_S")]
    node_heartbeat_timeout_s: Option<u64>,
    /// Cluster mode: seconds a node stays Unhealthy before its sandboxes are lost [default: 60].
    #[arg(long, env = "SOULBOX_NODE_LOST_AFTER_S")]
    node_lost_after_s: Option<u64>,
    /// Let `allowOut` open private, link-local and metadata ranges (10/8, 172.16/12, 192.168/16, 169.254/16, ...).
    #[arg(long, env = "SOULBOX_ALLOW_PRIVATE_EGRESS")]
    allow_private_egress: bool,
}

/// `soulbox node`: flags or `SOULBOX_*` environment variables.
#[derive(Args)]
struct NodeArgs {
    /// Control plane URL (any API replica).
    #[arg(long, env = "SOULBOX_SERVER")]
    server: String,
    /// The cluster's node token (the server's `node_token`).
    #[arg(long, env = "SOULBOX_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// This node's id [default: saved in <data-dir>/node-id, generated on first start].
    #[arg(long, env = "SOULBOX_NODE_ID")]
    node_id: Option<String>,
    /// Address of the node API and sandbox proxy.
    #[arg(long, env = "SOULBOX_LISTEN", default_value = "127.0.0.1:3001")]
    listen: std::net::SocketAddr,
    /// URL the control plane reaches this node at [default: http://<listen>].
    #[arg(long, env = "SOULBOX_ADVERTISE_URL")]
    advertise_url: Option<String>,
    #[arg(long, env = "SOULBOX_REGION", default_value = "default")]
    region: String,
    /// Seconds between heartbeats.
    #[arg(long, env = "SOULBOX_HEARTBEAT_INTERVAL_S", default_value_t = 2)]
    heartbeat_interval_s: u64,
    /// Template store [default: the data dir]; agents on one host may share one.
    #[arg(long, env = "SOULBOX_TEMPLATE_DIR")]
    template_dir: Option<PathBuf>,
    #[arg(long, env = "SOULBOX_RUNTIME", default_value = "runc")]
    runtime: String,
    /// More OCI runtimes templates may ask for, comma-separated [default: runsc on a runc node when
    /// installed]; empty for none.
    #[arg(long, env = "SOULBOX_EXTRA_RUNTIMES", value_delimiter = ',', num_args = 0..)]
    extra_runtimes: Option<Vec<String>>,
    #[arg(long, env = "SOULBOX_ENVD_PATH")]
    envd_path: Option<PathBuf>,
    #[arg(long, env = "SOULBOX_WARM_POOL", default_value_t = 4)]
    warm_pool: usize,
    /// Sandboxes booted ahead, per template: TEMPLATE=SIZE, comma-separated [default: none].
    #[arg(long, env = "SOULBOX_BOOTED_POOL", value_delimiter = ',', value_parser = config::parse_booted_pool)]
    booted_pool: Option<Vec<(String, usize)>>,
    /// The most memory (MiB) booted sandboxes may hold [default: 4096]; 0: no bound.
    #[arg(long, env = "SOULBOX_BOOTED_POOL_MEMORY_MB")]
    booted_pool_memory_mb: Option<u64>,
    /// Name prefix of host objects; agents sharing a host need distinct prefixes and pools.
    #[arg(long, env = "SOULBOX_PREFIX", default_value = "sbx")]
    prefix: String,
    /// On `--runtime runsc`, pause writes a sandbox's memory to disk and frees it (it survives a restart of the
    /// agent and of the host); `false` keeps it in RAM. Like the server's `runsc_pause_to_disk`.
    #[arg(long, env = "SOULBOX_RUNSC_PAUSE_TO_DISK", default_value_t = true, action = clap::ArgAction::Set)]
    runsc_pause_to_disk: bool,
    /// Run every sandbox in its own user namespace (root inside is an unprivileged host uid).
    #[arg(long, env = "SOULBOX_USER_NAMESPACES", default_value_t = true, action = clap::ArgAction::Set)]
    user_namespaces: bool,
    /// First host uid of the sandboxes' id ranges (65536 each) [default: 0x10000000].
    #[arg(long, env = "SOULBOX_USERNS_BASE")]
    userns_base: Option<u32>,
    /// auto | per-sandbox | shared (see `soulbox server --help`).
    #[arg(long, env = "SOULBOX_USERNS_MODE", default_value = "auto")]
    userns_mode: config::UsernsMode,
    #[arg(long, env = "SOULBOX_NETWORK_POOL", default_value = "10.77.0.0/16")]
    network_pool: String,
    #[arg(long, env = "SOULBOX_DEBIAN_MIRROR", default_value = config::DEFAULT_MIRROR)]
    debian_mirror: String,
    /// Let `allowOut` open private, link-local and metadata ranges (set it like the control plane's).
    #[arg(long, env = "SOULBOX_ALLOW_PRIVATE_EGRESS")]
    allow_private_egress: bool,
    /// A PEM file of extra CAs the egress gateway trusts when it re-makes intercepted TLS (header rules) upstream.
    #[arg(long, env = "SOULBOX_EGRESS_TRUSTED_CA")]
    egress_trusted_ca: Option<PathBuf>,
    /// Persistent volumes [default: <data-dir>/volumes]: with the server's `volumes_shared = true`, the control
    /// plane's volumes directory, shared (NFS, CephFS) and mounted here; otherwise this node's own volumes.
    #[arg(long, env = "SOULBOX_VOLUMES_DIR")]
    volumes_dir: Option<PathBuf>,
}

impl NodeArgs {
    fn resolve(self, data_dir: PathBuf) -> anyhow::Result<soulbox_server::node_agent::NodeSettings> {
        use soulbox_server::node_agent::{AgentConfig, NodeSettings};
        use soulbox_server::node_identity::node_id;
        Ok(NodeSettings {
            agent: AgentConfig {
                node_id: node_id(&data_dir, self.node_id)?,
                server_url: self.server,
                token: self.token,
                listen: self.listen,
                advertise_url: self.advertise_url.unwrap_or_else(|| format!("http://{}", self.listen)),
                region: self.region,
                heartbeat_interval: std::time::Duration::from_secs(self.heartbeat_interval_s.max(1)),
            },
            data_dir,
            template_dir: self.template_dir,
            runtime: self.runtime,
            extra_runtimes: self.extra_runtimes.map(non_empty),
            envd_path: self.envd_path.unwrap_or_else(config::default_envd_path),
            warm_pool: self.warm_pool,
            pool: config::PoolConfig {
                booted: self.booted_pool.unwrap_or_default().into_iter().collect(),
                memory_mb: self.booted_pool_memory_mb,
            },
            pause_to_disk: self.runsc_pause_to_disk,
            prefix: self.prefix,
            user_namespaces: self.user_namespaces,
            userns_base: self.userns_base,
            userns_mode: self.userns_mode,
            network_pool: self.network_pool,
            debian_mirror: self.debian_mirror,
            allow_private_egress: self.allow_private_egress,
            egress_trusted_ca: self.egress_trusted_ca,
            volumes_dir: self.volumes_dir,
        })
    }
}

/// `--extra-runtimes ""` (or `SOULBOX_EXTRA_RUNTIMES=`) means none.
fn non_empty(names: Vec<String>) -> Vec<String> {
    names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect()
}

impl ServerArgs {
    /// The one resolution of the server's configuration (flags > env > config file > defaults).
    pub(crate) fn resolve(self, data_dir: PathBuf) -> anyhow::Result<ServerConfig> {
        let file_path = self.config.clone().or_else(|| Some(data_dir.join("config.toml")).filter(|p| p.exists()));
        let file = match file_path {
            Some(p) => FileConfig::load(&p)?,
            None => FileConfig::default(),
        };
        Ok(ServerConfig {
            listen: self.listen.or(file.listen).unwrap_or(config::DEFAULT_LISTEN),
            database_url: self
                .database_url
                .or(file.database_url)
                .unwrap_or_else(|| Store::sqlite_url(&data_dir.join("soulbox.db"))),
            domain: self.domain.or(file.domain),
            runtime: self.runtime.or(file.runtime).unwrap_or_else(|| "runc".into()),
            extra_runtimes: self.extra_runtimes.map(non_empty).or(file.extra_runtimes),
            envd_path: self.envd_path.or(file.envd_path).unwrap_or_else(config::default_envd_path),
            debian_mirror: self.debian_mirror.or(file.debian_mirror).unwrap_or_else(|| config::DEFAULT_MIRROR.into()),
            default_timeout_s: file.default_timeout_s.unwrap_or(300),
            max_timeout_s: file.max_timeout_s.unwrap_or(24 * 3600),
            max_lifetime_s: self.max_lifetime_s.or(file.max_lifetime_s).unwrap_or(24 * 3600),
            paused_retention_days: file.paused_retention_days.unwrap_or(30),
            warm_pool: self.warm_pool.or(file.warm_pool).unwrap_or(4),
            pool: {
                let mut pool = file.pool.unwrap_or_default();
                if let Some(booted) = self.booted_pool {
                    pool.booted = booted.into_iter().collect();
                }
                pool
            },
            network_pool: self.network_pool.or(file.network_pool).unwrap_or_else(|| "10.77.0.0/16".into()),
            prefix: self.prefix.or(file.prefix).unwrap_or_else(|| "sbx".into()),
            user_namespaces: self.user_namespaces.or(file.user_namespaces).unwrap_or(true),
            userns_base: self.userns_base.or(file.userns_base),
            userns_mode: self.userns_mode.or(file.userns_mode).unwrap_or_default(),
            metrics_interval_s: file.metrics_interval_s.unwrap_or(5),
            // Environment only (a flag would show the token in `ps`).
            metrics_token: std::env::var("SOULBOX_METRICS_TOKEN")
                .ok()
                .or(file.metrics_token)
                .filter(|t| !t.trim().is_empty()),
            template_dir: self.template_dir.or(file.template_dir),
            node_token: self.node_token.or(file.node_token).filter(|t| !t.is_empty()),
            node_heartbeat_timeout_s: self.node_heartbeat_timeout_s.or(file.node_heartbeat_timeout_s).unwrap_or(10),
            node_lost_after_s: self.node_lost_after_s.or(file.node_lost_after_s).unwrap_or(60),
            templates: file.templates.unwrap_or_default(),
            allow_private_egress: self.allow_private_egress || file.allow_private_egress.unwrap_or(false),
            egress_trusted_ca: file.egress_trusted_ca,
            team_limits: file.teams.unwrap_or_default(),
            http: file.http.unwrap_or_default(),
            default_disk_mb: file.default_disk_mb,
            runsc_pause_to_disk: file.runsc_pause_to_disk.unwrap_or(true),
            volumes_dir: file.volumes_dir,
            volume_size_mb: file.volume_size_mb.unwrap_or(soulbox_server::config::DEFAULT_VOLUME_SIZE_MB),
            volumes_shared: file.volumes_shared.unwrap_or(false),
            data_dir,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Server(args) => soulbox_server::server::run(args.resolve(cli.data_dir)?).await,
        Command::Node(args) => soulbox_server::node_agent::run(args.resolve(cli.data_dir)?).await,
        Command::Keys { store, command } => keys_cli::keys(store, cli.data_dir, command).await,
        Command::Teams { store, command } => keys_cli::teams(store, cli.data_dir, command).await,
        Command::Completions { shell } => docs_cli::completions(shell, Cli::command()),
        Command::Man { out } => docs_cli::man(Cli::command(), out.as_deref()),
        Command::Client(c) => std::process::exit(cli::run(c).await),
    }
}
