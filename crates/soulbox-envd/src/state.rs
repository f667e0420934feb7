//! Shared agent state: the sandbox configuration set by `/init`, and the registries of the services.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub use soulbox_protocol::envd_init::InitRequest;

use crate::metrics::MetricsSampler;
use crate::process_table::ProcessRegistry;
use crate::watch::WatchRegistry;

/// Everything `/init` (or `SOULBOX_ENVD_INIT` at start) configures.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub sandbox_id: Option<String>,
    pub access_token: Option<String>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
    /// Sandbox-level environment variables, given to every process before its per-call ones.
    pub env_vars: BTreeMap<String, String>,
}

impl SandboxConfig {
    /// Applies an init request: present fields replace, absent ones stay. Never looks at `envd_secret` or
    /// `network` (start configuration only), so `POST /init` cannot set or change them.
    pub fn apply(&mut self, init: InitRequest) {
        if let Some(env) = init.env_vars {
            self.env_vars = env;
        }
        if let Some(token) = init.access_token {
            self.access_token = (!token.is_empty()).then_some(token);
        }
        if let Some(user) = init.default_user {
            self.default_user = (!user.is_empty()).then_some(user);
        }
        if let Some(dir) = init.default_workdir {
            self.default_workdir = (!dir.is_empty()).then_some(dir);
        }
        if let Some(id) = init.sandbox_id {
            self.sandbox_id = (!id.is_empty()).then_some(id);
        }
    }
}

pub struct Envd {
    pub started: Instant,
    /// The secret every request must carry (`soulbox_protocol::envd_secret::HEADER`); `None` for a standalone
    /// envd, which checks nothing. Set at start; changed only once, by the claim of a pooled sandbox
    /// (`http::claim`), which replaces the pool's secret with the sandbox's own.
    pub node_secret: RwLock<Option<String>>,
    /// Started in the node's booted pool and not claimed yet: `POST /soulbox/claim` is answered (once).
    pub pooled: std::sync::atomic::AtomicBool,
    /// Read on every request, written only by `/init`; never held across an await.
    pub config: RwLock<SandboxConfig>,
    pub processes: ProcessRegistry,
    pub watchers: WatchRegistry,
    pub metrics: MetricsSampler,
    /// Where the access token's digest is published (`token_file.rs`): `/` in a sandbox; `None` (tests) publishes
    /// nothing.
    pub token_file_root: std::sync::OnceLock<std::path::PathBuf>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Envd>);

impl std::ops::Deref for AppState {
    type Target = Envd;
    fn deref(&self) -> &Envd {
        &self.0
    }
}

impl AppState {
    #[cfg(test)]
    pub fn new(config: SandboxConfig) -> AppState {
        AppState::with_node_secret(config, None)
    }

    /// An agent that answers only requests carrying `node_secret` (when there is one).
    pub fn with_node_secret(config: SandboxConfig, node_secret: Option<String>) -> AppState {
        AppState(Arc::new(Envd {
            started: Instant::now(),
            node_secret: RwLock::new(node_secret.filter(|s| !s.is_empty())),
            pooled: std::sync::atomic::AtomicBool::new(false),
            config: RwLock::new(config),
            processes: ProcessRegistry::default(),
            watchers: WatchRegistry::default(),
            metrics: MetricsSampler::default(),
            token_file_root: std::sync::OnceLock::new(),
        }))
    }

    /// This agent publishes the access token's digest below `root` from now on (and once now).
    pub fn publishing_token_digest(self, root: std::path::PathBuf) -> AppState {
        crate::token_file::publish_logged(&root, self.config().access_token.as_deref());
        let _ = self.token_file_root.set(root);
        self
    }

    /// A copy of the current sandbox configuration.
    pub fn config(&self) -> SandboxConfig {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the whole configuration (a pooled sandbox's claim) and publishes the new token's digest.
    pub fn replace_config(&self, config: SandboxConfig) {
        let mut guard = match self.config.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = config;
        if let Some(root) = self.token_file_root.get() {
            crate::token_file::publish_logged(root, guard.access_token.as_deref());
        }
    }

    pub fn update_config(&self, init: InitRequest) {
        let mut guard = match self.config.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.apply(init);
        if let Some(root) = self.token_file_root.get() {
            crate::token_file::publish_logged(root, guard.access_token.as_deref());
        }
    }
}

impl Envd {
    /// The node secret requests must carry now (see [`Envd::node_secret`]).
    pub fn node_secret(&self) -> Option<String> {
        match self.node_secret.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Why the agent is unhealthy, if it is: currently a root filesystem with no free space left, which makes
    /// every upload and most commands fail.
    pub fn health_problem(&self) -> Option<String> {
        match rustix::fs::statvfs("/") {
            Ok(st) if st.f_bavail == 0 && st.f_blocks > 0 => Some("root filesystem is full".to_owned()),
            _ => None,
        }
    }
}
