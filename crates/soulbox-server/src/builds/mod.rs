//! Template builds as the API runs them: a build is created in the store, started on a node with its inputs
//! checked first, and its log lines are stored (bounded, batched) and broadcast live to followers until the
//! build's final status is recorded. Works on the store and a node; HTTP is `api/templates`'s.
//!
//! - [`log`]: a build's stored log, bounded.
//! - [`uploads`]: COPY context uploads, stored per team and template and verified against their hash.

pub mod log;
pub mod uploads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use self::log::{BoundedLog, Line};
use self::uploads::Uploads;
use crate::names::build_template_name;
use crate::node::Node;
use crate::store::{BuildLogRecord, BuildRecord, Store, StoreError, now_ms};
use soulbox_templates::{BaseAccess, BuildFailure, BuildJob, LogLevel, LogSink, Recipe};

/// Longest failure reason stored with a build (it quotes the failed step's last output lines).
const MAX_REASON_BYTES: usize = 16 * 1024;
/// Live log lines a slow follower may fall behind before it re-reads the store.
const LIVE_CAPACITY: usize = 4096;
/// Stored entries read per page when a follower replays a build's log.
const REPLAY_PAGE: i64 = 500;

fn build_timeout() -> Duration {
    let s = std::env::var("SOULBOX_TEMPLATE_BUILD_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(3600);
    Duration::from_secs(s)
}

#[derive(Clone, Debug)]
enum LiveItem {
    Log(BuildLogRecord),
    End,
}

/// Live builds: one broadcast per build, from its creation until it finished.
static LIVE: LazyLock<Mutex<HashMap<String, broadcast::Sender<LiveItem>>>> = LazyLock::new(Default::default);

fn live() -> std::sync::MutexGuard<'static, HashMap<String, broadcast::Sender<LiveItem>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds this process is running, by id: cancelling one drops its node call, and the build engine then removes
/// its build sandbox and temporary templates (a remote node's agent does the same when the call is dropped).
static RUNNING: LazyLock<Mutex<HashMap<String, CancellationToken>>> = LazyLock::new(Default::default);

fn running() -> std::sync::MutexGuard<'static, HashMap<String, CancellationToken>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cancels those of `build_ids` that run in this process; returns how many. (A build another replica runs is
/// not reachable from here.)
pub fn cancel_running(build_ids: &[String]) -> usize {
    let running = running();
    build_ids.iter().filter_map(|id| running.get(id)).inspect(|token| token.cancel()).count()
}

/// Records a new build of `template` for `team_id` (waiting for its start) and opens its live log; returns the
/// build's id.
pub async fn create(
    store: &Store,
    team_id: &str,
    template: &str,
    cpu: i32,
    memory_mb: i32,
    tags: &[String],
    runtime: Option<&str>,
) -> Result<String, StoreError> {
    let build_id = crate::ids::uuid_like();
    store.create_template_build_on(team_id, template, &build_id, (cpu, memory_mb), tags, runtime).await?;
    live().insert(build_id.clone(), broadcast::channel(LIVE_CAPACITY).0);
    Ok(build_id)
}

/// Why a build's inputs were refused before anything started.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("this node cannot build templates")]
    CannotBuild,
    /// A base the caller may not use, or uploaded files that are not what their hash says.
    #[error("{0}")]
    Refused(String),
}

/// Checks a recipe's base and uploaded files on `node` for `team_id`'s `template`; the files directory the build
/// reads its COPY contexts from. A refusal leaves nothing started or registered (a bad upload is deleted).
pub async fn check_inputs(
    node: &dyn Node,
    team_id: &str,
    template: &str,
    recipe: &Recipe,
) -> Result<PathBuf, InputError> {
    let files_dir = node.template_files_dir().ok_or(InputError::CannotBuild)?;
    node.check_recipe(recipe).map_err(InputError::Refused)?;
    let uploads = Uploads::for_team(&files_dir, team_id);
    uploads.verify_recipe(template, recipe).await.map_err(InputError::Refused)?;
    Ok(uploads.dir(template))
}

/// The job a started build runs on its node: registered as the build's runtime template on success.
pub fn job(record: &BuildRecord, recipe: Recipe, files_dir: PathBuf, base_access: BaseAccess) -> BuildJob {
    BuildJob {
        template_name: build_template_name(&record.id),
        build_id: record.id.clone(),
        recipe,
        cpu_count: record.cpu_count as u32,
        memory_mb: record.memory_mb as u32,
        files_dir,
        timeout: build_timeout(),
        base_access,
        runtime: record.runtime.clone(),
    }
}

/// Runs a build in the background: the node builds, its lines are stored (batched) and broadcast, then the
/// tags point at it and the status is final.
pub fn spawn(store: Store, node: Arc<dyn Node>, job: BuildJob, template: String, tags: Vec<String>) {
    tokio::spawn(run(store, node, job, template, tags));
}

async fn run(store: Store, node: Arc<dyn Node>, job: BuildJob, template: String, tags: Vec<String>) {
    let build_id = job.build_id.clone();
    let sender = live().entry(build_id.clone()).or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0).clone();
    let (tx, rx) = mpsc::unbounded_channel::<Line>();
    let writer = tokio::spawn(write_logs(store.clone(), build_id.clone(), rx, sender.clone()));
    // What is stored is bounded (log.rs), and so is what waits in the channel for the writer.
    let bounded = Arc::new(Mutex::new(BoundedLog::new(log::Limits::default())));
    let (sink_tx, sink_log) = (tx.clone(), bounded.clone());
    let log: LogSink = Arc::new(move |level, message, step| {
        let lines =
            sink_log.lock().unwrap_or_else(|e| e.into_inner()).push(Line { unix_ms: now_ms(), level, message, step });
        for line in lines {
            let _ = sink_tx.send(line);
        }
    });
    log(LogLevel::Info, format!("Building template '{template}' (build {build_id})"), Some("base".into()));
    let started = std::time::Instant::now();
    let cancel = CancellationToken::new();
    running().insert(build_id.clone(), cancel.clone());
    let mut result = tokio::select! {
        built = node.build_template(job, log.clone()) => built,
        () = cancel.cancelled() => Err(BuildFailure::new("the build was cancelled by an admin".to_string(), None)),
    };
    running().remove(&build_id);
    if result.is_ok() {
        result = point_tags(&store, node.as_ref(), &template, &build_id, &tags)
            .await
            .map_err(|m| BuildFailure::new(m, Some("finalize")));
        if result.is_ok() {
            log(
                LogLevel::Info,
                format!("Tags {} of '{template}' point at this build", tags.join(", ")),
                Some("finalize".into()),
            );
        }
    }
    match &result {
        Ok(()) => log(
            LogLevel::Info,
            format!("Build finished in {:.1} s", started.elapsed().as_secs_f64()),
            Some("finalize".into()),
        ),
        Err(f) => log(LogLevel::Error, format!("Build failed: {}", f.message), f.step.clone()),
    }
    drop(log);
    for line in bounded.lock().unwrap_or_else(|e| e.into_inner()).finish(now_ms()) {
        let _ = tx.send(line);
    }
    drop(tx);
    let _ = writer.await;
    let reason = result.as_ref().err().map(|f| log::cut_line(f.message.clone(), MAX_REASON_BYTES));
    let (status, step) = match &result {
        Ok(()) => ("ready", None),
        Err(f) => ("error", f.step.as_deref()),
    };
    if let Err(e) = store.finish_build(&build_id, status, reason.as_deref(), step).await {
        tracing::error!(build = %build_id, error = %e, "could not record the end of a build");
    }
    crate::prom::latencies().build.observe(started.elapsed());
    tracing::info!(template = %template, build = %build_id, status, "template build finished");
    let _ = sender.send(LiveItem::End);
    live().remove(&build_id);
}

/// Points `tags` of `template` at a successful build; the `default` tag also becomes the runtime template `<name>`.
pub async fn point_tags(
    store: &Store,
    node: &dyn Node,
    template: &str,
    build_id: &str,
    tags: &[String],
) -> Result<(), String> {
    if tags.iter().any(|t| t == crate::names::DEFAULT_TAG) {
        node.copy_template(&build_template_name(build_id), template)
            .await
            .map_err(|e| format!("registering '{template}': {e}"))?;
    }
    store.set_tags(template, build_id, tags).await.map_err(|e| format!("storing the tags: {e}"))
}

async fn write_logs(
    store: Store,
    build_id: String,
    mut rx: mpsc::UnboundedReceiver<Line>,
    sender: broadcast::Sender<LiveItem>,
) {
    let mut seq = 0i64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let records: Vec<BuildLogRecord> = batch
            .into_iter()
            .map(|p| {
                let r = BuildLogRecord {
                    seq,
                    unix_ms: p.unix_ms,
                    level: p.level.as_str().into(),
                    message: p.message,
                    step: p.step,
                };
                seq += 1;
                r
            })
            .collect();
        if let Err(e) = store.append_build_logs(&build_id, &records).await {
            tracing::error!(build = %build_id, error = %e, "could not store build log lines");
        }
        for r in records {
            let _ = sender.send(LiveItem::Log(r));
        }
    }
}

/// What a follower of a build's log receives.
#[derive(Debug, Clone)]
pub enum Followed {
    Entry(BuildLogRecord),
    /// The build as it ended (or as it is, when its log was read whole and nobody runs it).
    End(BuildRecord),
}

/// Follows `build`'s log: every stored entry, then the live ones as they are produced, then the build's final
/// record. No polling: a build in progress broadcasts its entries. The receiver closes after the end (or when
/// the store fails).
pub fn follow(store: Store, build: String) -> mpsc::Receiver<Followed> {
    // Subscribe before reading the store: an entry is stored before it is broadcast, so none is missed.
    let live = live().get(&build).map(|s| s.subscribe());
    let (tx, rx) = mpsc::channel::<Followed>(64);
    tokio::spawn(async move {
        let mut next = 0i64;
        async fn replay(store: &Store, build: &str, next: &mut i64, tx: &mpsc::Sender<Followed>) -> Result<(), ()> {
            loop {
                let page = store.build_logs(build, *next, REPLAY_PAGE).await.map_err(|_| ())?;
                if page.is_empty() {
                    return Ok(());
                }
                for r in page {
                    *next = r.seq + 1;
                    tx.send(Followed::Entry(r)).await.map_err(|_| ())?;
                }
            }
        }
        if replay(&store, &build, &mut next, &tx).await.is_err() {
            return;
        }
        if let Some(mut rx) = live {
            loop {
                match rx.recv().await {
                    Ok(LiveItem::Log(r)) => {
                        if r.seq >= next {
                            next = r.seq + 1;
                            if tx.send(Followed::Entry(r)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if replay(&store, &build, &mut next, &tx).await.is_err() {
                            return;
                        }
                    }
                    Ok(LiveItem::End) | Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            if replay(&store, &build, &mut next, &tx).await.is_err() {
                return;
            }
        }
        if let Ok(Some(b)) = store.get_build(&build).await {
            let _ = tx.send(Followed::End(b)).await;
        }
    });
    rx
}
