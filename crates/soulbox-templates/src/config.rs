//! The `[templates]` section of the server's config file and the engine configuration it turns into.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[templates]` section:
///
/// ```toml
/// [templates]
/// insecure_registries = ["mirror.lan:5000"]     # plain HTTP (loopback hosts always are)
/// registry_private_hosts = ["blobs.lan:9000"]   # more hosts pulls may reach at private addresses
/// host_source_dirs = ["/srv/images"]            # where a caller's rootfs:/oci-archive: paths may be
/// [templates.image_rewrites]                    # merged over the defaults (`e2bdev/base` = "template:base")
/// "python:3.12" = "oci-archive:/srv/images/python-3.12.tar"
/// "docker.io" = "mirror.lan:5000"                # a registry host → a mirror host
/// [templates.registry_auth."ghcr.io"]
/// username = "me"
/// password = "…"                                # or: token = "…" (bearer)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    #[serde(default)]
    pub image_rewrites: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub registry_auth: std::collections::BTreeMap<String, crate::registry::RegistryCredential>,
    /// Hosts (`host` or `host:port`) registry pulls may reach at loopback, link-local or private addresses, besides
    /// those named in `insecure_registries`, `registry_auth` and `image_rewrites` targets (e.g. the blob store a
    /// private registry redirects to). Any other non-public address is refused, redirects included.
    #[serde(default)]
    pub registry_private_hosts: Vec<String>,
    /// Directories a caller's `rootfs:<path>` / `oci-archive:<path>` base must be inside (none by default: no
    /// caller can name a host path). Paths in `image_rewrites` targets are the administrator's and not limited.
    #[serde(default)]
    pub host_source_dirs: Vec<PathBuf>,
}

impl TemplatesConfig {
    /// The build engine's configuration: SoulBox's default rewrites overridden by the configured ones.
    pub fn engine_config(&self, debian_mirror: &str) -> crate::engine::EngineConfig {
        let mut rewrites = crate::source::Rewrites::with_defaults();
        rewrites.map.extend(self.image_rewrites.iter().map(|(k, v)| (k.clone(), v.clone())));
        let registries = crate::registry::RegistrySettings {
            insecure: self.insecure_registries.clone(),
            auth: self.registry_auth.clone(),
            private_hosts: self.registry_private_hosts.iter().cloned().chain(self.rewrite_target_hosts()).collect(),
        };
        let mut engine = crate::engine::EngineConfig::new(
            rewrites,
            registries,
            crate::bootstrap::BootstrapConfig::new(debian_mirror.to_string()),
        );
        engine.host_source_dirs = crate::host_path::HostSourceDirs::new(self.host_source_dirs.iter().cloned());
        engine
    }
}

impl TemplatesConfig {
    /// Registry hosts the rewrites point at (a mirror host, or the registry of a target reference): the
    /// administrator named them, so pulls may reach them at private addresses.
    fn rewrite_target_hosts(&self) -> Vec<String> {
        let is_scheme =
            |v: &str| ["template:", "oci-archive:", "rootfs:", "bootstrap:"].iter().any(|s| v.starts_with(s));
        self.image_rewrites
            .values()
            .filter(|v| !is_scheme(v))
            .filter_map(|v| match v.contains('/') {
                true => crate::source::ImageRef::parse(v).ok().map(|r| r.registry),
                false => Some(v.clone()),
            })
            .collect()
    }
}
