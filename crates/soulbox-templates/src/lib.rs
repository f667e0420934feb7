//! The template build engine (issue 5, its own crate since issue 12): recipes in (E2B's `Template()` steps or a
//! Dockerfile), layered cached root filesystems out. The HTTP side (E2B's template endpoints, stored build logs,
//! COPY context uploads) is the server's; this crate runs builds on a node and knows no HTTP API. See
//! TEMPLATES.md.
//!
//! - [`dockerfile`]: the Dockerfile front end (→ [`Recipe`]), from `soulbox-protocol`.
//! - [`engine`]: the build engine on a node (build sandboxes, one layer per step, the step cache).
//! - [`source`]: where a base comes from (template, registry, local archive, bootstrap) and config rewrites.
//! - [`egress`]: the proxy every registry pull connects through (no private addresses unless configured).
//! - [`host_path`]: host-path bases opened beneath the directories the config allows.
//! - [`image`], [`registry`], [`unpack`]: image bases (registry pulls with oci-client, local OCI layouts, rootfs
//!   tarballs) imported as one runtime layer per image layer, unpacked under strict safety rules.
//! - [`bootstrap`]: `bootstrap:<debian|ubuntu>:<suite>` bases, made with mmdebstrap and cached as layers.
//! - [`base`]: the `base` template's recipe, built by the engine at the server's first start.
//! - [`provision`]: E2B's `user` account, created when a build switches to it on an image without one.
//! - [`start`]: a template's start and ready commands, run by the node at every sandbox create.
//! - [`envd`]: the small envd client the engine runs commands and uploads files with.
//! - [`config`]: the `[templates]` section of the server's config and the [`engine::EngineConfig`] it makes.

pub mod base;
pub mod bootstrap;
pub mod builtin;
pub mod code_interpreter;
pub mod config;
pub mod desktop;
pub mod egress;
pub mod engine;
pub mod envd;
pub mod host_path;
pub mod image;
pub mod provision;
pub mod registry;
pub mod source;
pub mod start;
/// Layer unpacking lives in its own crate (fuzzed on its own); here under its old name.
pub use soulbox_layer as unpack;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The recipe types and the Dockerfile front end live in `soulbox-protocol`: the SDK builds the same recipes.
pub use soulbox_protocol::template::{Recipe, TemplateStep, dockerfile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
    pub fn parse(s: &str) -> LogLevel {
        match s {
            "debug" => LogLevel::Debug,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

/// One build log line. `step` is E2B's: `"base"` (the FROM phase), the 1-based step number, or `"finalize"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLog {
    pub unix_ms: i64,
    pub level: LogLevel,
    pub message: String,
    pub step: Option<String>,
}

/// Where the engine's log lines go (the API stores and broadcasts them).
pub type LogSink = Arc<dyn Fn(LogLevel, String, Option<String>) + Send + Sync>;

/// A build as the node runs it.
#[derive(Debug, Clone)]
pub struct BuildJob {
    /// The template registered on success (the runtime's template name).
    pub template_name: String,
    pub build_id: String,
    pub recipe: Recipe,
    pub cpu_count: u32,
    pub memory_mb: u32,
    /// Where uploaded COPY contexts are (`<files_dir>/<filesHash>`).
    pub files_dir: PathBuf,
    pub timeout: Duration,
    /// Which local templates the build may start from (a team's build: not another team's).
    pub base_access: BaseAccess,
    /// The OCI runtime the template runs on (`runc`, `runsc`; `TemplateMeta::runtime`), its build steps too;
    /// `None`: its base template's, else the node's default.
    pub runtime: Option<String>,
}

/// Which local templates a build may use as its base. The server's own builds (`base`) may use any; a team's
/// build may not use another team's private templates, nor any build-internal template (`sbb-`, `sbbuild-`)
/// except the one its `fromTemplate: name:tag` was resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BaseAccess {
    #[default]
    Any,
    Team {
        /// Other teams' private templates.
        hidden: std::collections::BTreeSet<String>,
        /// The build template a checked tag resolved to.
        tag_build: Option<String>,
    },
}

impl BaseAccess {
    pub fn permits(&self, template: &str) -> bool {
        match self {
            BaseAccess::Any => true,
            BaseAccess::Team { hidden, tag_build } => {
                if is_internal_template(template) {
                    tag_build.as_deref() == Some(template)
                } else {
                    !hidden.contains(template)
                }
            }
        }
    }
}

/// Why a build failed; `step` as in [`BuildLog`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildFailure {
    pub message: String,
    pub step: Option<String>,
}

impl BuildFailure {
    pub fn new(message: impl Into<String>, step: Option<&str>) -> BuildFailure {
        BuildFailure { message: message.into(), step: step.map(str::to_string) }
    }
}

/// A COPY context's files hash as it may name a file (the engine reads `files_dir/<hash>`, the server stores
/// uploads under it): hex, at most 128 characters.
pub fn is_valid_files_hash(hash: &str) -> bool {
    !hash.is_empty() && hash.len() <= 128 && hash.chars().all(|c| c.is_ascii_hexdigit())
}

/// The runtime template a successful build is registered as (tags point at it).
pub fn build_template_name(build_id: &str) -> String {
    format!("sbb-{build_id}")
}

/// Whether `name` is a template SoulBox ships (`base`, or one built on first use, [`builtin::ON_DEMAND`]): no team
/// may take it, even before its first use — a team's template of that name would be what every team's
/// `Sandbox.create()` of the Code Interpreter SDK starts, once made public.
pub fn is_shipped_template(name: &str) -> bool {
    name == base::BASE_TEMPLATE || builtin::ON_DEMAND.contains(&name)
}

/// Runtime templates that are not user templates: builds (`sbb-`), build steps (`sbbuild-`, made by
/// [`engine`]) and the snapshots forks start from (`sbfork-`, [`fork_template_name`]).
pub fn is_internal_template(name: &str) -> bool {
    name.starts_with("sbb-")
        || name.starts_with("sbbuild-")
        || name.starts_with(FORK_TEMPLATE_PREFIX)
        || name.starts_with(MOVE_TEMPLATE_PREFIX)
}

const MOVE_TEMPLATE_PREFIX: &str = "sbmove-";

/// The runtime template a sandbox paused to disk travels as when it moves to another node (cluster mode): its
/// files captured on the node it leaves, registered on the node it goes to, deleted from both once it runs there.
pub fn move_template_name(id: &str) -> String {
    format!("{MOVE_TEMPLATE_PREFIX}{id}")
}

const FORK_TEMPLATE_PREFIX: &str = "sbfork-";

/// The runtime template a fork's snapshot is registered as while its sandboxes start (the control plane
/// deletes it again; the forks keep its layers).
pub fn fork_template_name(id: &str) -> String {
    format!("{FORK_TEMPLATE_PREFIX}{id}")
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a layer-producing step sees besides its own content: the user, workdir and environment it runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepContext {
    pub user: String,
    pub workdir: String,
    pub env: std::collections::BTreeMap<String, String>,
}

/// The cache key of a step: the parent's key (which chains back to the base layers) + the step's content
/// (type, args, files hash) + the context it runs in. Equal keys ⇒ the same layer can be reused.
pub fn step_cache_key(parent_key: &str, step: &TemplateStep, ctx: &StepContext) -> String {
    let content = serde_json::json!({
        "v": 1,
        "parent": parent_key,
        "type": step.kind,
        "args": step.args,
        "filesHash": step.files_hash,
        "ctx": ctx,
    });
    sha256_hex(content.to_string().as_bytes())
}

/// The key the chain starts from: the base's layers, in order.
pub fn base_cache_key(layers: &[String]) -> String {
    sha256_hex(format!("base-v1\n{}", layers.join("\n")).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_depend_on_parent_content_and_context() {
        let base = base_cache_key(&["a".into(), "b".into()]);
        assert_ne!(base, base_cache_key(&["b".into(), "a".into()]));
        let ctx = StepContext { user: "user".into(), workdir: "/home/user".into(), env: Default::default() };
        let run = TemplateStep::new("RUN", vec!["echo hi".into()]);
        let k = step_cache_key(&base, &run, &ctx);
        assert_eq!(k, step_cache_key(&base, &run, &ctx), "deterministic");
        assert_eq!(k.len(), 64);
        assert_ne!(k, step_cache_key(&base_cache_key(&["a".into()]), &run, &ctx), "parent matters");
        assert_ne!(
            k,
            step_cache_key(&base, &TemplateStep::new("RUN", vec!["echo ho".into()]), &ctx),
            "content matters"
        );
        let mut root = ctx.clone();
        root.user = "root".into();
        assert_ne!(k, step_cache_key(&base, &run, &root), "user matters");
        let mut env = ctx.clone();
        env.env.insert("A".into(), "1".into());
        assert_ne!(k, step_cache_key(&base, &run, &env), "env matters");
        let mut copy = TemplateStep::new("COPY", vec!["a".into(), "/b".into()]);
        let k1 = step_cache_key(&base, &copy, &ctx);
        copy.files_hash = Some("f".into());
        assert_ne!(k1, step_cache_key(&base, &copy, &ctx), "files hash matters");
        // `force` is not part of the key: a forced step re-runs and then refreshes the same key.
        let mut forced = run.clone();
        forced.force = Some(true);
        assert_eq!(k, step_cache_key(&base, &forced, &ctx));
    }

    #[test]
    fn steps_use_e2b_json_names() {
        let s: TemplateStep = serde_json::from_str(
            r#"{"type":"COPY","args":["a","b","",""],"force":false,"filesHash":"h","forceUpload":true}"#,
        )
        .unwrap();
        assert_eq!(s.files_hash.as_deref(), Some("h"));
        let r: Recipe =
            serde_json::from_str(r#"{"fromTemplate":"base","force":false,"steps":[],"startCmd":"x","readyCmd":"y"}"#)
                .unwrap();
        assert_eq!(r.from_template.as_deref(), Some("base"));
        assert_eq!(r.ready_cmd.as_deref(), Some("y"));
    }
}
