//! Templates SoulBox ships and builds when first needed (`soulbox_templates::builtin`, e.g.
//! `code-interpreter-v1`): the first create naming one in this server process builds it on the template node
//! (minutes when cold; when every step is cached, as after a restart, it only re-registers it, so a changed
//! recipe in a new SoulBox version takes effect), its log on the server's stderr (`[template <name>/<step>] …`).
//! The build is detached from the create that started it, so a client that gives up (E2B's SDKs wait 60 s by
//! default) does not stop it, and such builds take turns, so concurrent creates share one build. A template
//! of the same name that a team built through the API is that team's and is left alone.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use super::{Lifecycle, LifecycleError, Result};

/// One build of a shipped template at a time (whoever waited finds it built).
static BUILDING: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);
/// Shipped templates built (or found current) by this process.
static CURRENT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

fn is_current(name: &str) -> bool {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
}

impl Lifecycle {
    /// Makes the shipped template `name` current on the template node, once per process; `Ok(true)` when
    /// this call built it, `Ok(false)` when there was nothing to do (not a shipped template, a team's own
    /// template of that name, built already, or a node that cannot build).
    pub(super) async fn ensure_shipped_template(&self, name: &str) -> Result<bool> {
        // Every create passes here: the cheap checks first, the store only for a shipped template's name.
        if !soulbox_templates::builtin::ON_DEMAND.contains(&name) || is_current(name) {
            return Ok(false);
        }
        if self.store.get_template_record(name).await?.is_some() {
            return Ok(false);
        }
        let Some(files_dir) = self.template_node.template_files_dir() else {
            return Ok(false);
        };
        let Some(job) = soulbox_templates::builtin::job(name, files_dir) else {
            return Ok(false);
        };
        let node = self.template_node.clone();
        let name = name.to_string();
        let build: tokio::task::JoinHandle<Result<bool>> = tokio::spawn(async move {
            let _turn = BUILDING.lock().await;
            if is_current(&name) {
                return Ok(false);
            }
            tracing::info!(template = %name, "building a shipped template (cached steps are reused); its log follows on stderr");
            let started = std::time::Instant::now();
            node.build_template(job, soulbox_templates::builtin::stderr_log(&name)).await.map_err(|f| {
                LifecycleError::Unavailable(format!(
                    "building the template '{name}' failed at step {}: {}",
                    f.step.as_deref().unwrap_or("?"),
                    f.message
                ))
            })?;
            tracing::info!(template = %name, took_ms = started.elapsed().as_millis() as u64, "shipped template ready");
            CURRENT.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
            Ok(true)
        });
        build.await.map_err(|e| LifecycleError::Internal(format!("the template build task failed: {e}")))?
    }
}
