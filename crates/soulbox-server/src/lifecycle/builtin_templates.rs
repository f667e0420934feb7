//! Templates SoulBox ships and builds on first use (`soulbox_templates::builtin`, e.g. `code-interpreter-v1`):
//! a create naming one that the template node does not have yet builds it there first, its log on the
//! server's stderr (`[template <name>/<step>] …`). The build is detached from the create that started it, so a
//! client that gives up (E2B's SDKs wait 60 s by default; a cold build takes minutes) does not stop it, and
//! builds of shipped templates take turns, so concurrent creates share one build.

use std::sync::LazyLock;

use super::{Lifecycle, LifecycleError, Result};

/// One build of a shipped template at a time (whoever waited finds it built).
static BUILDING: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

impl Lifecycle {
    /// Builds the shipped template `name` on the template node unless it is there already; `Ok(false)` when
    /// SoulBox ships no template of that name (or the node cannot build).
    pub(super) async fn build_on_first_use(&self, name: &str) -> Result<bool> {
        let Some(files_dir) = self.template_node.template_files_dir() else {
            return Ok(false);
        };
        let Some(job) = soulbox_templates::builtin::job(name, files_dir) else {
            return Ok(false);
        };
        let node = self.template_node.clone();
        let name = name.to_string();
        let build: tokio::task::JoinHandle<Result<()>> = tokio::spawn(async move {
            let _turn = BUILDING.lock().await;
            let present = node.templates().await.map_err(|e| LifecycleError::Internal(e.to_string()))?;
            if present.iter().any(|t| t.template_id == name) {
                return Ok(());
            }
            tracing::info!(template = %name, "building a shipped template on first use; its log follows on stderr");
            let started = std::time::Instant::now();
            node.build_template(job, soulbox_templates::builtin::stderr_log(&name)).await.map_err(|f| {
                LifecycleError::Unavailable(format!(
                    "building the template '{name}' failed at step {}: {}",
                    f.step.as_deref().unwrap_or("?"),
                    f.message
                ))
            })?;
            tracing::info!(template = %name, took_s = started.elapsed().as_secs(), "shipped template built");
            Ok(())
        });
        build.await.map_err(|e| LifecycleError::Internal(format!("the template build task failed: {e}")))??;
        Ok(true)
    }
}
