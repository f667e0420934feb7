//! How a node's runtime is configured from the settings of `soulbox server` (one machine,
//! the runtime in-process) and of `soulbox node` (a node agent): one assembly for both.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::parse_cidr;

/// What the runtime of a node is opened with.
#[derive(Debug, Clone)]
pub struct RuntimeSettings<'a> {
    pub data_dir: &'a Path,
    /// Template store shared by several runtimes on one host (layers are read-only); default: the data dir.
    pub template_dir: Option<PathBuf>,
    pub runtime: String,
    /// Runtimes templates may ask for besides `runtime` (`soulbox_runtime::RuntimeConfig::extra_runtimes`);
    /// `None`: runsc on a runc node when it is installed.
    pub extra_runtimes: Option<Vec<String>>,
    pub envd_path: &'a Path,
    pub warm_pool: usize,
    /// Sandboxes booted ahead (`[pool]`).
    pub pool: crate::config::PoolConfig,
    pub default_disk_mb: Option<u64>,
    /// `soulbox_runtime::RuntimeConfig::pause_to_disk` (runsc).
    pub pause_to_disk: bool,
    pub prefix: String,
    pub user_namespaces: bool,
    pub userns_base: Option<u32>,
    /// auto, per-sandbox or shared (`soulbox_runtime::userns`).
    pub userns_mode: soulbox_runtime::userns::UsernsMode,
    pub network_pool: &'a str,
    pub allow_private_egress: bool,
    /// The installation's egress CA (`soulbox_runtime::egress_ca`): the control plane's, on every node.
    pub egress_ca: Option<soulbox_runtime::egress_ca::CaPem>,
    /// Extra CAs the egress gateway trusts upstream (`egress_trusted_ca`).
    pub egress_trusted_ca: Option<PathBuf>,
    /// Where persistent volumes live (`soulbox_runtime::volumes`).
    pub volumes_dir: Option<PathBuf>,
}

/// The runtime's configuration (its state under `<data_dir>/node`).
pub fn runtime_config(settings: RuntimeSettings<'_>) -> anyhow::Result<soulbox_runtime::RuntimeConfig> {
    let mut config = soulbox_runtime::RuntimeConfig::new(settings.data_dir.join("node"));
    config.store_dir = settings.template_dir;
    config.extra_runtimes = settings.extra_runtimes.unwrap_or_else(|| other_installed_runtime(&settings.runtime));
    config.runtime_bin = settings.runtime;
    config.envd_path = std::fs::canonicalize(settings.envd_path).with_context(|| {
        format!(
            "the static envd binary {} is missing: build it with scripts/build-envd.sh",
            settings.envd_path.display()
        )
    })?;
    config.pool_size = settings.warm_pool;
    config.booted_pool = settings.pool.booted;
    if let Some(mb) = settings.pool.memory_mb {
        config.booted_pool_memory_mb = mb;
    }
    config.pause_to_disk = settings.pause_to_disk;
    if let Some(mb) = settings.default_disk_mb {
        config.default_disk_mb = mb;
    }
    config.prefix = settings.prefix;
    config.user_namespaces = settings.user_namespaces;
    config.userns_mode = settings.userns_mode;
    if let Some(base) = settings.userns_base {
        config.userns_base = base;
    }
    let (pool_net, pool_len) = parse_cidr(settings.network_pool)?;
    config.pool_net = pool_net;
    config.pool_prefix_len = pool_len;
    config.allow_private_egress = settings.allow_private_egress;
    config.egress_ca = settings.egress_ca;
    config.egress_trusted_ca = settings.egress_trusted_ca;
    config.volumes_dir = settings.volumes_dir;
    Ok(config)
}

/// By default a runc node also offers runsc when that binary is on the `PATH`, so a template that asks for gVisor
/// runs on a default install. (Not the reverse: a runsc node's runc sandboxes would lack user namespaces.)
fn other_installed_runtime(runtime: &str) -> Vec<String> {
    let other = match Path::new(runtime).file_name().and_then(|n| n.to_str()) {
        Some("runc") => "runsc",
        _ => return vec![],
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join(other).is_file()))
        .unwrap_or(false);
    if on_path { vec![other.to_string()] } else { vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_config_from_settings() {
        let dir = tempfile::tempdir().unwrap();
        let envd = dir.path().join("envd");
        std::fs::write(&envd, b"").unwrap();
        let settings = |envd_path| RuntimeSettings {
            data_dir: dir.path(),
            template_dir: None,
            runtime: "runc".into(),
            extra_runtimes: Some(vec![]),
            envd_path,
            warm_pool: 2,
            pool: crate::config::PoolConfig { booted: [("base".into(), 3)].into(), memory_mb: Some(1024) },
            default_disk_mb: Some(512),
            pause_to_disk: true,
            prefix: "sx".into(),
            user_namespaces: true,
            userns_base: None,
            userns_mode: Default::default(),
            network_pool: "10.77.0.0/16",
            allow_private_egress: false,
            volumes_dir: None,
            egress_ca: None,
            egress_trusted_ca: None,
        };
        let config = runtime_config(settings(&envd)).unwrap();
        assert_eq!((config.pool_size, config.default_disk_mb, config.pool_prefix_len), (2, 512, 16));
        assert_eq!((config.booted_pool["base"], config.booted_pool_memory_mb), (3, 1024));
        let missing = runtime_config(settings(&dir.path().join("nope"))).unwrap_err();
        assert!(format!("{missing:#}").contains("scripts/build-envd.sh"), "{missing:#}");
    }
}
