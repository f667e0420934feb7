//! How a node's runtime and build engine are configured from the settings of `soulbox server` (one machine,
//! the runtime in-process) and of `soulbox node` (a node agent): one assembly for both.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{TemplatesConfig, parse_cidr};
use crate::templates::bootstrap::BootstrapConfig;
use crate::templates::engine::EngineConfig;
use crate::templates::host_path::HostSourceDirs;
use crate::templates::registry::RegistrySettings;
use crate::templates::source::{ImageRef, Rewrites};

/// What the runtime of a node is opened with.
#[derive(Debug, Clone)]
pub struct RuntimeSettings<'a> {
    pub data_dir: &'a Path,
    /// Template store shared by several runtimes on one host (layers are read-only); default: the data dir.
    pub template_dir: Option<PathBuf>,
    pub runtime: String,
    pub envd_path: &'a Path,
    pub warm_pool: usize,
    pub default_disk_mb: Option<u64>,
    pub prefix: String,
    pub user_namespaces: bool,
    pub userns_base: Option<u32>,
    pub network_pool: &'a str,
    pub allow_private_egress: bool,
}

/// The runtime's configuration (its state under `<data_dir>/node`).
pub fn runtime_config(
    settings: RuntimeSettings<'_>,
) -> anyhow::Result<soulbox_runtime::RuntimeConfig> {
    let mut config = soulbox_runtime::RuntimeConfig::new(settings.data_dir.join("node"));
    config.store_dir = settings.template_dir;
    config.runtime_bin = settings.runtime;
    config.envd_path = std::fs::canonicalize(settings.envd_path).with_context(|| {
        format!(
            "the static envd binary {} is missing: build it with scripts/build-envd.sh",
            settings.envd_path.display()
        )
    })?;
    config.pool_size = settings.warm_pool;
    if let Some(mb) = settings.default_disk_mb {
        config.default_disk_mb = mb;
    }
    config.prefix = settings.prefix;
    config.user_namespaces = settings.user_namespaces;
    if let Some(base) = settings.userns_base {
        config.userns_base = base;
    }
    let (pool_net, pool_len) = parse_cidr(settings.network_pool)?;
    config.pool_net = pool_net;
    config.pool_prefix_len = pool_len;
    config.allow_private_egress = settings.allow_private_egress;
    Ok(config)
}

/// The build engine's configuration: SoulBox's default rewrites overridden by the configured ones.
pub fn engine_config(templates: &TemplatesConfig, debian_mirror: &str) -> EngineConfig {
    let mut rewrites = Rewrites::with_defaults();
    rewrites.map.extend(
        templates
            .image_rewrites
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let registries = RegistrySettings {
        insecure: templates.insecure_registries.clone(),
        auth: templates.registry_auth.clone(),
        private_hosts: templates
            .registry_private_hosts
            .iter()
            .cloned()
            .chain(rewrite_target_hosts(templates))
            .collect(),
    };
    let mut engine = EngineConfig::new(
        rewrites,
        registries,
        BootstrapConfig::new(debian_mirror.to_string()),
    );
    engine.host_source_dirs = HostSourceDirs::new(templates.host_source_dirs.iter().cloned());
    engine
}

/// Registry hosts the rewrites point at (a mirror host, or the registry of a target reference): the
/// administrator named them, so pulls may reach them at private addresses.
fn rewrite_target_hosts(templates: &TemplatesConfig) -> Vec<String> {
    let is_scheme = |v: &str| {
        ["template:", "oci-archive:", "rootfs:", "bootstrap:"]
            .iter()
            .any(|s| v.starts_with(s))
    };
    templates
        .image_rewrites
        .values()
        .filter(|v| !is_scheme(v))
        .filter_map(|v| match v.contains('/') {
            true => ImageRef::parse(v).ok().map(|r| r.registry),
            false => Some(v.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_MIRROR, FileConfig};

    #[test]
    fn templates_section_merges_rewrites_over_the_defaults() {
        let c: FileConfig = toml::from_str(
            "[templates]\ninsecure_registries = [\"mirror.lan:5000\"]\nregistry_private_hosts = [\"blobs.lan\"]\n[templates.image_rewrites]\n\"docker.io\" = \"mirror.lan:5000\"\n\"alpine\" = \"rewrite.lan:5001/alpine:3\"\n\"py\" = \"oci-archive:/srv/py.tar\"\n[templates.registry_auth.\"ghcr.io\"]\ntoken = \"t\"\n",
        )
        .unwrap();
        let engine = engine_config(&c.templates.unwrap(), DEFAULT_MIRROR);
        assert_eq!(
            engine
                .image_rewrites
                .map
                .get("e2bdev/base")
                .map(String::as_str),
            Some("template:base")
        );
        assert_eq!(
            engine
                .image_rewrites
                .map
                .get("docker.io")
                .map(String::as_str),
            Some("mirror.lan:5000")
        );
        assert_eq!(
            engine.registries.insecure,
            vec!["mirror.lan:5000".to_string()]
        );
        assert!(engine.registries.auth.contains_key("ghcr.io"));
        // Every host the config names may be reached at a private address; nothing else.
        let policy = engine.registries.egress_policy();
        for named in [
            ("mirror.lan", 5000),
            ("ghcr.io", 443),
            ("rewrite.lan", 5001),
            ("blobs.lan", 9000),
        ] {
            assert!(policy.names(named.0, named.1), "{named:?}");
        }
        assert!(!policy.names("other.lan", 5000));
        assert!(toml::from_str::<FileConfig>("[templates]\nmirrors = 1\n").is_err());
    }

    #[test]
    fn runtime_config_from_settings() {
        let dir = tempfile::tempdir().unwrap();
        let envd = dir.path().join("envd");
        std::fs::write(&envd, b"").unwrap();
        let settings = |envd_path| RuntimeSettings {
            data_dir: dir.path(),
            template_dir: None,
            runtime: "runc".into(),
            envd_path,
            warm_pool: 2,
            default_disk_mb: Some(512),
            prefix: "sx".into(),
            user_namespaces: true,
            userns_base: None,
            network_pool: "10.77.0.0/16",
            allow_private_egress: false,
        };
        let config = runtime_config(settings(&envd)).unwrap();
        assert_eq!(
            (
                config.pool_size,
                config.default_disk_mb,
                config.pool_prefix_len
            ),
            (2, 512, 16)
        );
        let missing = runtime_config(settings(&dir.path().join("nope"))).unwrap_err();
        assert!(
            format!("{missing:#}").contains("scripts/build-envd.sh"),
            "{missing:#}"
        );
    }
}
