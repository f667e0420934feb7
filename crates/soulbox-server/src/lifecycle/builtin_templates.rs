//! Templates SoulBox ships and builds when first needed (`soulbox_templates::builtin`, e.g.
//! `code-interpreter-v1`): the first create naming one in this server process builds it on the template node
//! (minutes when cold; when every step is cached, as after a restart, it only re-registers it, so a changed
//! recipe in a new SoulBox version takes effect), or `soulbox template prepare NAME` ahead of that
//! (`POST /templates/{name}/prepare`, which follows the build's live log). The log goes to the server's stderr
//! (`[template <name>/<step>] …`) and to every follower of [`Lifecycle::follow_shipped_builds`].
//! The build is detached from the request that started it, so a client that gives up (E2B's SDKs wait 60 s by
//! default) does not stop it, and such builds take turns, so concurrent creates share one build. A template
//! of the same name that a team built through the API is that team's and is left alone.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use soulbox_templates::{BuildJob, LogLevel, LogSink};
use tokio::sync::broadcast;

use super::{Lifecycle, LifecycleError, Result};

/// One build of a shipped template at a time (whoever waited finds it built).
static BUILDING: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);
/// Shipped templates built (or found current) by this process.
static CURRENT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
/// Log lines a slow follower may fall behind (it is told how many it missed).
const LIVE_CAPACITY: usize = 4096;
/// Every shipped template build's log lines as they come, for the followers of `prepare`.
static LIVE: LazyLock<broadcast::Sender<ShippedLogLine>> = LazyLock::new(|| broadcast::channel(LIVE_CAPACITY).0);

fn is_current(name: &str) -> bool {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
}

/// One log line of a shipped template's build.
#[derive(Debug, Clone)]
pub struct ShippedLogLine {
    pub template: String,
    pub unix_ms: i64,
    pub level: LogLevel,
    pub message: String,
    pub step: Option<String>,
}

/// Where a shipped template stands before anything is built.
enum Standing {
    /// Not a name SoulBox ships, a team's own template of that name, or built by this process already.
    NothingToDo(Skip),
    Build(Box<BuildJob>),
}

/// Why no build is needed or possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotShipped,
    TeamOwned,
    Current,
    NodeCannotBuild,
}

fn log_sink(name: &str) -> LogSink {
    let stderr = soulbox_templates::builtin::stderr_log(name);
    let name = name.to_string();
    Arc::new(move |level, message, step| {
        // No follower is the normal case: nothing to do with the send's error.
        let _ = LIVE.send(ShippedLogLine {
            template: name.clone(),
            unix_ms: crate::store::now_ms(),
            level,
            message: message.clone(),
            step: step.clone(),
        });
        stderr(level, message, step);
    })
}

impl Lifecycle {
    async fn shipped_standing(&self, name: &str) -> Result<Standing> {
        // Every create passes here: the cheap checks first, the store only for a shipped template's name.
        if !soulbox_templates::builtin::ON_DEMAND.contains(&name) {
            return Ok(Standing::NothingToDo(Skip::NotShipped));
        }
        if is_current(name) {
            return Ok(Standing::NothingToDo(Skip::Current));
        }
        if self.store.get_template_record(name).await?.is_some() {
            return Ok(Standing::NothingToDo(Skip::TeamOwned));
        }
        let Some(files_dir) = self.template_node.template_files_dir() else {
            return Ok(Standing::NothingToDo(Skip::NodeCannotBuild));
        };
        match soulbox_templates::builtin::job(name, files_dir) {
            Some(job) => Ok(Standing::Build(Box::new(job))),
            None => Ok(Standing::NothingToDo(Skip::NotShipped)),
        }
    }

    /// Makes the shipped template `name` current on the template node, once per process; `Ok(true)` when
    /// this call built it, `Ok(false)` when there was nothing to do (not a shipped template, a team's own
    /// template of that name, built already, or a node that cannot build).
    pub(super) async fn ensure_shipped_template(&self, name: &str) -> Result<bool> {
        match self.shipped_standing(name).await? {
            Standing::NothingToDo(_) => Ok(false),
            Standing::Build(job) => self.build_shipped(name, *job).await,
        }
    }

    /// `soulbox template prepare NAME`: builds the shipped template `name` now (a no-op when this process has
    /// built it already). Refused as not found for a name SoulBox does not ship, as a conflict when a team's
    /// own template has that name, as unavailable when this node cannot build templates. Follow
    /// [`Lifecycle::follow_shipped_builds`] first to see the build's log.
    pub async fn prepare_shipped_template(&self, name: &str) -> Result<Skip> {
        match self.shipped_standing(name).await? {
            Standing::NothingToDo(Skip::NotShipped) => Err(LifecycleError::NotFound(format!(
                "'{name}' is not a template SoulBox ships (shipped: {})",
                soulbox_templates::builtin::ON_DEMAND.join(", ")
            ))),
            Standing::NothingToDo(Skip::TeamOwned) => Err(LifecycleError::Conflict(format!(
                "a team's own template is named '{name}'; SoulBox leaves it alone and does not build its own"
            ))),
            Standing::NothingToDo(Skip::NodeCannotBuild) => {
                Err(LifecycleError::Unavailable("this server's template node cannot build templates".into()))
            }
            Standing::NothingToDo(skip) => Ok(skip),
            Standing::Build(job) => {
                self.build_shipped(name, *job).await?;
                Ok(Skip::Current)
            }
        }
    }

    /// The log lines of every shipped template build from now on.
    pub fn follow_shipped_builds(&self) -> broadcast::Receiver<ShippedLogLine> {
        LIVE.subscribe()
    }

    async fn build_shipped(&self, name: &str, job: BuildJob) -> Result<bool> {
        let node = self.template_node.clone();
        let name = name.to_string();
        let build: tokio::task::JoinHandle<Result<bool>> = tokio::spawn(async move {
            let _turn = BUILDING.lock().await;
            if is_current(&name) {
                return Ok(false);
            }
            tracing::info!(template = %name, "building a shipped template (cached steps are reused); its log follows on stderr");
            let started = std::time::Instant::now();
            node.build_template(job, log_sink(&name)).await.map_err(|f| {
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
