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
    pub envd_path: Option<PathBuf>,
    pub debian_mirror: Option<String>,
    pub default_timeout_s: Option<i32>,
    pub max_timeout_s: Option<i32>,
    pub max_lifetime_s: Option<i64>,
    pub warm_pool: Option<usize>,
    pub network_pool: Option<String>,
    /// Name prefix of the node's host objects (netns `<prefix>-<id>`, veths, nft table, cgroup parent).
    pub prefix: Option<String>,
    pub metrics_interval_s: Option<u64>,
    /// Cluster mode: node agents join with this token (`soulbox node --token`); the server then runs no runtime
    /// of its own and places sandboxes on the nodes.
    pub node_token: Option<String>,
    /// Cluster mode: a node without a heartbeat for this long is Unhealthy [default: 10].
    pub node_heartbeat_timeout_s: Option<u64>,
    /// Cluster mode: sandboxes on a node Unhealthy for this long are lost [default: 60].
    pub node_lost_after_s: Option<u64>,
}

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
    pub envd_path: PathBuf,
    pub debian_mirror: String,
    pub default_timeout_s: i32,
    pub max_timeout_s: i32,
    pub max_lifetime_s: i64,
    pub warm_pool: usize,
    /// `a.b.c.d/len`
    pub network_pool: String,
    /// Runtime name prefix (2-5 chars [a-z0-9], starting with a letter); default `sbx`. Two servers on one
    /// machine need different prefixes and network pools.
    pub prefix: String,
    pub metrics_interval_s: u64,
    /// `Some` = cluster mode (see [`FileConfig::node_token`]).
    pub node_token: Option<String>,
    pub node_heartbeat_timeout_s: u64,
    pub node_lost_after_s: u64,
}

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3000);
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

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
        assert_eq!(parse_cidr("10.77.0.0/16").unwrap().1, 16);
        assert!(parse_cidr("10.77.0.0").is_err());
    }
}
