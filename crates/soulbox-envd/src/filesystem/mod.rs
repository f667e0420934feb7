//! `filesystem.Filesystem`: stat, list, create, move, remove and watch.
//!
//! Semantics follow E2B envd (`infra:packages/envd/internal/services/filesystem`, spec §2.5). Paths go through
//! the E2B path rules for the calling user; the blocking filesystem work runs on Tokio's blocking pool.

pub mod ops;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use axum::Router;
use futures::StreamExt;
use soulbox_protocol::connect::{Code, RpcError};
use soulbox_protocol::filesystem as pb;

use crate::entry::{EntryBuilder, entry_error};
use crate::http::files::as_user::run_as;
use crate::http::files::parents::make_for_user;
use crate::rpc::{self, RpcContext, RpcStream};
use crate::state::AppState;
use crate::users::User;
use crate::watch::{Delivery, WatchOptions};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/filesystem.Filesystem/Stat", rpc::unary(stat))
        .route("/filesystem.Filesystem/MakeDir", rpc::unary(make_dir))
        .route("/filesystem.Filesystem/Move", rpc::unary(move_entry))
        .route("/filesystem.Filesystem/ListDir", rpc::unary(list_dir))
        .route("/filesystem.Filesystem/Remove", rpc::unary(remove))
        .route("/filesystem.Filesystem/WatchDir", rpc::server_stream(watch_dir))
        .route("/filesystem.Filesystem/CreateWatcher", rpc::unary(create_watcher))
        .route("/filesystem.Filesystem/GetWatcherEvents", rpc::unary(get_watcher_events))
        .route("/filesystem.Filesystem/RemoveWatcher", rpc::unary(remove_watcher))
}

/// The calling user and `path` resolved for them.
fn resolve(state: &AppState, ctx: &RpcContext, path: &str) -> Result<(User, PathBuf), RpcError> {
    let user = crate::auth::rpc_user(state, &ctx.headers)?;
    let resolved = crate::paths::expand_and_resolve(path, &user, state.config().default_workdir.as_deref())?;
    Ok((user, resolved))
}

/// Runs blocking filesystem work off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(RpcError::internal(format!("filesystem task failed: {e}"))))
}

/// Makes `dir` and its missing parents for `user`, owned by the user (E2B's `EnsureDirs`), without letting a link
/// steer root: first with the user's own identity (the kernel's checks; links are followed only where the user
/// may follow them), and only where the user may not make a directory (E2B SDK code makes `/0/a` as `user`) by
/// envd for the user with the uploads' walk, which no link in the path passes (`http::files::parents`). Returns
/// whether `dir` itself was made.
async fn ensure_dirs_for(user: &User, dir: PathBuf) -> Result<bool, RpcError> {
    let (uid, gid, name) = (user.uid, user.gid, user.name.clone());
    let wanted = dir.clone();
    let as_user = run_as(user, move || Ok(ops::ensure_dirs(&wanted, uid, gid)))
        .await
        .map_err(|e| RpcError::internal(format!("could not create directory {}: {e}", dir.display())))?;
    match as_user {
        Err(ops::EnsureDirsError::Io(_, e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            let target = dir.clone();
            let made = blocking(move || {
                make_for_user(&target, uid, gid).map_err(|e| match e.kind() {
                    io::ErrorKind::PermissionDenied => RpcError::new(
                        Code::PermissionDenied,
                        format!("permission denied: user '{name}' cannot create {}", target.display()),
                    ),
                    _ => RpcError::internal(format!("could not create directory {}: {e}", target.display())),
                })
            })
            .await?;
            Ok(made.last() == Some(&dir))
        }
        other => Ok(other?),
    }
}

async fn stat(state: AppState, ctx: RpcContext, req: pb::StatRequest) -> Result<pb::StatResponse, RpcError> {
    let (_, path) = resolve(&state, &ctx, &req.path)?;
    blocking(move || {
        let entry = EntryBuilder::new().entry(&path).map_err(|e| entry_error(&path, &e))?;
        Ok(pb::StatResponse { entry: Some(entry) })
    })
    .await
}

async fn make_dir(state: AppState, ctx: RpcContext, req: pb::MakeDirRequest) -> Result<pb::MakeDirResponse, RpcError> {
    let (user, path) = resolve(&state, &ctx, &req.path)?;
    let checked = path.clone();
    blocking(move || {
        let path = checked;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(RpcError::new(
                    Code::AlreadyExists,
                    format!("directory already exists: {}", path.display()),
                ));
            }
            Ok(_) => {
                return Err(RpcError::invalid_argument(format!(
                    "path already exists but it is not a directory: {}",
                    path.display()
                )));
            }
            // A file where an ancestor should be is reported by `ensure_dirs` below.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
            Err(e) => return Err(RpcError::internal(format!("error getting file info: {e}"))),
        }
        Ok(())
    })
    .await?;
    if !ensure_dirs_for(&user, path.clone()).await? {
        // Created concurrently by someone else between our check and the mkdir.
        return Err(RpcError::new(Code::AlreadyExists, format!("directory already exists: {}", path.display())));
    }
    let response = blocking(move || {
        let entry = EntryBuilder::new().entry(&path).map_err(|e| entry_error(&path, &e))?;
        Ok(pb::MakeDirResponse { entry: Some(entry) })
    })
    .await?;
    // A recursive watcher of the parent must know the new directory before the client writes into it.
    state.watchers.sync();
    Ok(response)
}

async fn move_entry(state: AppState, ctx: RpcContext, req: pb::MoveRequest) -> Result<pb::MoveResponse, RpcError> {
    let (user, source) = resolve(&state, &ctx, &req.source)?;
    let (_, destination) = resolve(&state, &ctx, &req.destination)?;
    if let Some(parent) = destination.parent() {
        ensure_dirs_for(&user, parent.to_path_buf()).await?;
    }
    let response = blocking(move || {
        std::fs::rename(&source, &destination).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RpcError::not_found(format!("source file not found: {}", source.display())),
            _ => RpcError::internal(format!("error renaming {} to {}: {e}", source.display(), destination.display())),
        })?;
        let entry = EntryBuilder::new().entry(&destination).map_err(|e| entry_error(&destination, &e))?;
        Ok(pb::MoveResponse { entry: Some(entry) })
    })
    .await?;
    state.watchers.sync();
    Ok(response)
}

async fn list_dir(state: AppState, ctx: RpcContext, req: pb::ListDirRequest) -> Result<pb::ListDirResponse, RpcError> {
    let (_, requested) = resolve(&state, &ctx, &req.path)?;
    let depth = req.depth.max(1);
    blocking(move || {
        // A symlinked directory is listed, but entries keep the caller's path.
        let resolved = std::fs::canonicalize(&requested).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RpcError::not_found(format!("path not found: {}", requested.display())),
            _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => RpcError::new(
                Code::FailedPrecondition,
                format!("cyclic symlink or chain >255 links at {}", requested.display()),
            ),
            _ => RpcError::internal(format!("error resolving symlink: {e}")),
        })?;
        check_is_directory(&resolved)?;
        let entries = ops::walk_dir(&EntryBuilder::new(), &requested, &resolved, depth)?;
        Ok(pb::ListDirResponse { entries })
    })
    .await
}

fn check_is_directory(path: &Path) -> Result<(), RpcError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(RpcError::invalid_argument(format!("path is not a directory: {}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(RpcError::not_found(format!("directory not found: {}", path.display())))
        }
        Err(e) => Err(RpcError::internal(format!("error getting file info for {}: {e}", path.display()))),
    }
}

async fn remove(state: AppState, ctx: RpcContext, req: pb::RemoveRequest) -> Result<pb::RemoveResponse, RpcError> {
    let (_, path) = resolve(&state, &ctx, &req.path)?;
    blocking(move || {
        ops::remove_all(&path).map_err(|e| RpcError::internal(format!("error removing {}: {e}", path.display())))?;
        Ok(pb::RemoveResponse {})
    })
    .await?;
    state.watchers.sync();
    Ok(pb::RemoveResponse {})
}

/// Checks a watch request's path (exists, is a directory, not on a network mount) and resolves it.
async fn watch_options(
    state: &AppState,
    ctx: &RpcContext,
    path: &str,
    recursive: bool,
    include_entry: bool,
    allow_network_mounts: bool,
) -> Result<WatchOptions, RpcError> {
    let (_, root) = resolve(state, ctx, path)?;
    blocking(move || {
        match std::fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(RpcError::invalid_argument(format!("path {} not a directory", root.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RpcError::not_found(format!("path {} not found", root.display())));
            }
            Err(e) => return Err(RpcError::internal(format!("error statting path {}: {e}", root.display()))),
        }
        if !allow_network_mounts {
            let network = ops::is_network_mount(&root)
                .map_err(|e| RpcError::internal(format!("error checking mount status: {e}")))?;
            if network {
                return Err(RpcError::invalid_argument(format!(
                    "cannot watch path on network filesystem: {}",
                    root.display()
                )));
            }
        }
        Ok(WatchOptions { root, recursive, include_entry })
    })
    .await
}

/// Removes a streamed watcher when its stream is dropped (the client went away or the stream ended).
struct StreamedWatcher {
    state: AppState,
    id: String,
}

impl Drop for StreamedWatcher {
    fn drop(&mut self) {
        self.state.watchers.remove(&self.id);
    }
}

async fn watch_dir(
    state: AppState,
    ctx: RpcContext,
    req: pb::WatchDirRequest,
) -> Result<RpcStream<pb::WatchDirResponse>, RpcError> {
    let options =
        watch_options(&state, &ctx, &req.path, req.recursive, req.include_entry, req.allow_network_mounts).await?;
    let (id, watcher) = state.watchers.create(options, Delivery::Streamed)?;
    let guard = StreamedWatcher { state: state.clone(), id };

    let start = pb::WatchDirResponse {
        event: Some(pb::watch_dir_response::Event::Start(pb::watch_dir_response::StartEvent {})),
    };
    let events = futures::stream::unfold((watcher, guard), |(watcher, guard)| async move {
        let batch = watcher.next_events().await;
        Some((batch, (watcher, guard)))
    })
    .flat_map(|batch| {
        let items: Vec<Result<pb::WatchDirResponse, RpcError>> = match batch {
            Ok(events) => events
                .into_iter()
                .map(|e| Ok(pb::WatchDirResponse { event: Some(pb::watch_dir_response::Event::Filesystem(e)) }))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    })
    // The first error ends the stream (it becomes the end-stream error).
    .scan(false, |failed, item| {
        let out = if *failed { None } else { Some(item) };
        if matches!(out, Some(Err(_))) {
            *failed = true;
        }
        futures::future::ready(out)
    });
    let stream = futures::stream::once(async move { Ok(start) }).chain(events).boxed();
    Ok(rpc::with_keepalive(stream, ctx.keepalive, || pb::WatchDirResponse {
        event: Some(pb::watch_dir_response::Event::Keepalive(pb::watch_dir_response::KeepAlive {})),
    }))
}

async fn create_watcher(
    state: AppState,
    ctx: RpcContext,
    req: pb::CreateWatcherRequest,
) -> Result<pb::CreateWatcherResponse, RpcError> {
    let options =
        watch_options(&state, &ctx, &req.path, req.recursive, req.include_entry, req.allow_network_mounts).await?;
    let (watcher_id, _) = state.watchers.create(options, Delivery::Polled)?;
    Ok(pb::CreateWatcherResponse { watcher_id })
}

fn unknown_watcher(id: &str) -> RpcError {
    RpcError::not_found(format!("watcher with id {id} not found"))
}

async fn get_watcher_events(
    state: AppState,
    _ctx: RpcContext,
    req: pb::GetWatcherEventsRequest,
) -> Result<pb::GetWatcherEventsResponse, RpcError> {
    let watcher = state.watchers.polled(&req.watcher_id).ok_or_else(|| unknown_watcher(&req.watcher_id))?;
    // Entry lookups stat files: off the runtime.
    let events = blocking(move || watcher.take_events()).await?;
    Ok(pb::GetWatcherEventsResponse { events })
}

async fn remove_watcher(
    state: AppState,
    _ctx: RpcContext,
    req: pb::RemoveWatcherRequest,
) -> Result<pb::RemoveWatcherResponse, RpcError> {
    if state.watchers.polled(&req.watcher_id).is_none() || !state.watchers.remove(&req.watcher_id) {
        return Err(unknown_watcher(&req.watcher_id));
    }
    Ok(pb::RemoveWatcherResponse {})
}
