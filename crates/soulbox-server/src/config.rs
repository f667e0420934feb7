//! `soulbox server` configuration: defaults, then an optional TOML file, then `SOULBOX_*` environment
//! variables and command-line flags (clap merges those two).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Values from the TOML config file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub domain: Option<String>,
    pub runtime: Option<String>,
    /// More OCI runtimes templates may ask for by name (`runtime` of a template build) [default: runsc on a
    /// runc node when installed]; `[]` for none.
    pub extra_runtimes: Option<Vec<String>>,
    pub envd_path: Option<PathBuf>,
    pub debian_mirror: Option<String>,
    pub default_timeout_s: Option<i32>,
    pub max_timeout_s: Option<i32>,
    pub max_lifetime_s: Option<i64>,
    /// Days a paused sandbox is kept before it is deleted [default: 30] (E2B keeps paused sandboxes long).
    pub paused_retention_days: Option<u32>,
    pub warm_pool: Option<usize>,
    /// `[pool]`: sandboxes booted ahead per template (`booted = { base = 2 }`) and their memory budget.
    pub pool: Option<PoolConfig>,
    pub network_pool: Option<String>,
    /// Name prefix of the node's host objects (netns `<prefix>-<id>`, veths, nft table, cgroup parent).
    pub prefix: Option<String>,
    /// Every sandbox in its own user namespace [default: true]; `false` makes root in a sandbox host root.
    pub user_namespaces: Option<bool>,
    /// First host uid of the sandboxes' id ranges (65536 each) [default: 0x10000000].
    pub userns_base: Option<u32>,
    /// `auto` [default]: one id range per sandbox where the kernel mounts overlayfs on idmapped layers, else one
    /// range shared by every sandbox (a warning says so); `per-sandbox` or `shared` force one.
    pub userns_mode: Option<soulbox_runtime::userns::UsernsMode>,
    pub metrics_interval_s: Option<u64>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <metrics_token>` (401 otherwise); also
    /// `SOULBOX_METRICS_TOKEN`, which wins.
    pub metrics_token: Option<String>,
    /// Template store (layers, templates, build cache) [default: `<data_dir>/node`]; servers and node agents on
    /// one host may share one.
    pub template_dir: Option<PathBuf>,
    /// Cluster mode: node agents join with this token (`soulbox node --token`); the server then runs no runtime
    /// of its own and places sandboxes on the nodes.
    pub node_token: Option<String>,
    /// Cluster mode: a node without a heartbeat for this long is Unhealthy [default: 10].
    pub node_heartbeat_timeout_s: Option<u64>,
    /// Cluster mode: sandboxes on a node Unhealthy for this long are lost [default: 60].
    pub node_lost_after_s: Option<u64>,
    /// `[templates]`: image rewrites, insecure registries, registry credentials.
    pub templates: Option<TemplatesConfig>,
    /// Whether `allowOut` may open private, link-local and metadata ranges (10/8, 169.254/16, ...). Off by
    /// default: such a create is refused with 400 and the sandbox firewall drops those ranges first.
    pub allow_private_egress: Option<bool>,
    /// A PEM file of extra CA certificates the egress gateway trusts, besides the host's trust store, when it
    /// re-makes intercepted TLS (header rules) to a destination: internal services with a CA of their own.
    pub egress_trusted_ca: Option<PathBuf>,
    /// `[teams]`: every team's limits unless `soulbox teams limits` overrides them for a team.
    pub teams: Option<crate::store::TeamLimits>,
    /// `[http]`: connection cap, header-read and idle timeouts, body limits of the proxy and uploads.
    pub http: Option<crate::serve::HttpConfig>,
    /// Disk limit (MiB) of sandboxes whose template sets none [default: 10240, E2B's]; 0 = none.
    pub default_disk_mb: Option<u64>,
    /// gVisor sandboxes' pause with memory writes the memory to disk and frees it [the default]; false keeps it
    /// in RAM (a faster resume, lost with the host). `soulbox_runtime::RuntimeConfig::pause_to_disk`.
    pub runsc_pause_to_disk: Option<bool>,
    /// Persistent volumes [default: `<data_dir>/volumes`]. In a cluster with `volumes_shared = true`: a
    /// filesystem mounted at the same path on the server and on every node (NFS, CephFS), given to each node
    /// agent with `--volumes-dir`.
    pub volumes_dir: Option<PathBuf>,
    /// Size limit (MiB) of each volume, checked when files are written through the volume content API
    /// [default: 10240]; 0 = none.
    pub volume_size_mb: Option<u64>,
    /// Cluster mode only [default: false]. `true`: `volumes_dir` is one filesystem mounted on the server and on
    /// every node at the same path (NFS, CephFS), so a sandbox mounting a volume may run on any node. `false`:
    /// each new volume lives on one node (the scheduler's choice), sandboxes mounting it are placed there, and
    /// its content API is forwarded there.
    pub volumes_shared: Option<bool>,
}

/// `[pool]` of the config file: pre-booted sandboxes (`soulbox_runtime::RuntimeConfig::booted_pool`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct PoolConfig {
    /// Template name -> most sandboxes of it kept booted (the pool grows with the creates of the last minute up
    /// to this) [default: none]. A create of the template's default sandbox takes one (~10 ms instead of a boot).
    #[serde(default)]
    pub booted: std::collections::BTreeMap<String, usize>,
    /// The most memory (MiB, sum of the pooled sandboxes' memory limits) the pool may hold [default: 4096];
    /// 0: no bound.
    pub memory_mb: Option<u64>,
}

/// `--booted-pool base=2,other=1`: template name and size.
pub fn parse_booted_pool(raw: &str) -> anyhow::Result<(String, usize)> {
    let (name, n) = raw.split_once('=').ok_or_else(|| anyhow::anyhow!("{raw:?} is not TEMPLATE=SIZE"))?;
    let n = n.trim().parse().map_err(|e| anyhow::anyhow!("{raw:?}: the size is not a number: {e}"))?;
    Ok((name.trim().to_string(), n))
}

/// `userns_mode`'s values (the runtime's type), for the CLI.
pub use soulbox_runtime::userns::UsernsMode;
/// The `[templates]` section lives with the engine it configures.
pub use soulbox_templates::config::TemplatesConfig;

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: String,
    pub domain: Option<String>,
    pub runtime: String,
    /// See [`FileConfig::extra_runtimes`]; `None`: the default.
    pub extra_runtimes: Option<Vec<String>>,
    pub envd_path: PathBuf,
    pub debian_mirror: String,
    pub default_timeout_s: i32,
    pub max_timeout_s: i32,
    pub max_lifetime_s: i64,
    /// Days a paused sandbox is kept (see [`FileConfig::paused_retention_days`]).
    pub paused_retention_days: u32,
    pub warm_pool: usize,
    /// See [`PoolConfig`].
    pub pool: PoolConfig,
    /// `a.b.c.d/len`
    pub network_pool: String,
    /// Runtime name prefix (2-5 chars [a-z0-9], starting with a letter); default `sbx`. Two servers on one
    /// machine need different prefixes and network pools.
    pub prefix: String,
    /// Sandboxes in user namespaces (see [`FileConfig::user_namespaces`]).
    pub user_namespaces: bool,
    pub userns_base: Option<u32>,
    /// See [`FileConfig::userns_mode`].
    pub userns_mode: soulbox_runtime::userns::UsernsMode,
    pub metrics_interval_s: u64,
    /// See [`FileConfig::metrics_token`]; `None`: `/metrics` is open.
    pub metrics_token: Option<String>,
    /// See [`FileConfig::template_dir`].
    pub template_dir: Option<PathBuf>,
    /// `Some` = cluster mode (see [`FileConfig::node_token`]).
    pub node_token: Option<String>,
    pub node_heartbeat_timeout_s: u64,
    pub node_lost_after_s: u64,
    pub templates: TemplatesConfig,
    pub allow_private_egress: bool,
    /// See [`FileConfig::egress_trusted_ca`].
    pub egress_trusted_ca: Option<PathBuf>,
    pub team_limits: crate::store::TeamLimits,
    pub http: crate::serve::HttpConfig,
    /// `None`: the runtime's default (10 GiB).
    pub default_disk_mb: Option<u64>,
    /// See [`FileConfig::runsc_pause_to_disk`].
    pub runsc_pause_to_disk: bool,
    /// See [`FileConfig::volumes_dir`]; `None`: `<data_dir>/volumes`.
    pub volumes_dir: Option<PathBuf>,
    /// See [`FileConfig::volume_size_mb`] (MiB, 0 = none).
    pub volume_size_mb: u64,
    /// See [`FileConfig::volumes_shared`].
    pub volumes_shared: bool,
}

/// Each volume's size limit unless configured: 10 GiB, like a sandbox's disk.
pub const DEFAULT_VOLUME_SIZE_MB: u64 = 10 * 1024;

impl ServerConfig {
    pub fn volumes_dir(&self) -> PathBuf {
        self.volumes_dir.clone().unwrap_or_else(|| self.data_dir.join("volumes"))
    }
}

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3000);
/// The Debian mirror `bootstrap:` bases and the `base` template are made from.
pub use soulbox_templates::bootstrap::DEFAULT_MIRROR;

/// Where the static envd is looked for when not configured: next to the `soulbox` binary, then the
/// workspace's static build output.
pub fn default_envd_path() -> PathBuf {
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("soulbox-envd-static")));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"),
    }
}

pub fn parse_cidr(raw: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (addr, len) = raw.split_once('/').ok_or_else(|| anyhow::anyhow!("network pool {raw:?} is not a.b.c.d/len"))?;
    Ok((addr.parse()?, len.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_parses_and_rejects_unknown_keys() {
        let c: FileConfig = toml::from_str("listen = \"0.0.0.0:8080\"\nmax_lifetime_s = 7200\n").unwrap();
        assert_eq!(c.listen.unwrap().port(), 8080);
        assert_eq!(c.max_lifetime_s, Some(7200));
        assert!(toml::from_str::<FileConfig>("lisen = 1").is_err());
        let c: FileConfig = toml::from_str("user_namespaces = false\nuserns_base = 0x20000000\n").unwrap();
        assert_eq!((c.user_namespaces, c.userns_base), (Some(false), Some(0x2000_0000)));
        let c: FileConfig = toml::from_str("userns_mode = \"shared\"\n").unwrap();
        assert_eq!(c.userns_mode, Some(soulbox_runtime::userns::UsernsMode::Shared));
        assert!(toml::from_str::<FileConfig>("userns_mode = \"shard\"\n").is_err());
        assert_eq!(parse_cidr("10.77.0.0/16").unwrap().1, 16);
        assert!(parse_cidr("10.77.0.0").is_err());
    }

    #[test]
    fn pool_section_and_flag() {
        let c: FileConfig = toml::from_str("[pool]\nbooted = { base = 2, \"code-interpreter-v1\" = 1 }\n").unwrap();
        let pool = c.pool.unwrap();
        assert_eq!((pool.booted["base"], pool.booted["code-interpreter-v1"], pool.memory_mb), (2, 1, None));
        let c: FileConfig = toml::from_str("[pool]\nmemory_mb = 512\n").unwrap();
        assert!(c.pool.as_ref().unwrap().booted.is_empty() && c.pool.unwrap().memory_mb == Some(512));
        assert!(toml::from_str::<FileConfig>("[pool]\nbooted_size = 1\n").is_err());
        assert_eq!(parse_booted_pool("base=3").unwrap(), ("base".to_string(), 3));
        assert!(parse_booted_pool("base").is_err() && parse_booted_pool("base=x").is_err());
    }

    #[test]
    fn teams_section_and_private_egress() {
        let c: FileConfig =
            toml::from_str("allow_private_egress = true\n[teams]\nmax_sandboxes = 5\nmax_builds = 1\n").unwrap();
        assert_eq!(c.allow_private_egress, Some(true));
        let teams = c.teams.unwrap();
        let defaults = crate::store::TeamLimits::default();
        assert_eq!(
            (teams.max_sandboxes, teams.max_builds, teams.max_vcpus),
            (5, 1, defaults.max_vcpus),
            "unset keys keep the defaults"
        );
        assert!(toml::from_str::<FileConfig>("[teams]\nmax_sandbox = 5\n").is_err());
    }
}
