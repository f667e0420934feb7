//! runsc: a sandbox whose Sentry dies outside SoulBox (killed by the host's OOM killer at its memory limit, or
//! from the host) neither answers nor resets its connections, so a proxy would wait on them until its own
//! timeout (a runc sandbox's kernel resets them). Its Sentry is watched through a pidfd: when it exits, that boot
//! of the sandbox stops being routed at once (the proxy answers "not found", E2B's 502). Its record is set right
//! at the next open (reconcile: stopped, files kept).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::Endpoint;

/// Watches the process in `<sandbox dir>/init.pid` (runsc's `--pid-file`: the sandbox process) and drops boot
/// `boot` of `id` from `serving` when it exits. Without a tokio runtime or a readable pid file nothing is
/// watched (the sandbox then behaves as before: a reopen finds it dead).
pub(super) fn watch(serving: Arc<Mutex<HashMap<String, Endpoint>>>, id: &str, boot: u64, sandbox_dir: &Path) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    let Some(pidfd) = sandbox_pidfd(sandbox_dir) else {
        tracing::debug!(sandbox = id, "no sandbox process to watch");
        return;
    };
    let id = id.to_string();
    handle.spawn(async move {
        if !exited(pidfd).await {
            return;
        }
        let mut serving = serving.lock().unwrap_or_else(|e| e.into_inner());
        if serving.get(&id).is_some_and(|e| e.boot == boot) {
            serving.remove(&id);
            tracing::warn!(sandbox = %id, "the sandbox's process died outside SoulBox: no more traffic goes to it");
        }
    });
}

/// Waits (at most `limit`) until the process in `<sandbox dir>/init.pid` has exited; true when it has, or when
/// there is none to wait for. After a checkpoint the container is stopped while its Sentry is still exiting: its
/// mounts are busy until then, and unmounting them meanwhile leaves lazily detached copies behind.
pub(super) async fn wait_exited(sandbox_dir: &Path, limit: std::time::Duration) -> bool {
    let Some(pidfd) = sandbox_pidfd(sandbox_dir) else { return true };
    tokio::time::timeout(limit, exited(pidfd)).await.unwrap_or(false)
}

/// A pidfd for the process in `<sandbox dir>/init.pid`; `None` without a pid file or a process of that pid.
pub(super) fn sandbox_pidfd(sandbox_dir: &Path) -> Option<OwnedFd> {
    let pid = std::fs::read_to_string(sandbox_dir.join("init.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok());
    pid.and_then(rustix::process::Pid::from_raw)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
}

/// Waits until the process of `pidfd` exits: true then, false when it cannot be watched.
pub(super) async fn exited(pidfd: OwnedFd) -> bool {
    // SAFETY: the AsyncFd owns the pidfd (an OwnedFd) for as long as it is registered; nothing else closes it.
    let Ok(fd) = (unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) })
    else {
        return false;
    };
    // A pidfd turns readable when its process exits.
    fd.readable().await.is_ok()
}
