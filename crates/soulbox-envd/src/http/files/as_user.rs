//! Filesystem work done with a user's identity.
//!
//! envd runs as root, yet a `/files` request must only reach what its user may reach. Rather than re-implement
//! the kernel's permission rules (modes, ACLs, search permission on each parent, racy against concurrent
//! changes), the path-touching calls run on a fresh thread that switches its own credentials to the user's
//! uid, gid and supplementary groups. On Linux credentials are per thread (the raw syscalls, unlike glibc's
//! wrappers, do not broadcast to the process), and dropping the effective uid also drops the thread's
//! effective capabilities, so the kernel checks exactly what it would check for a command run as the user.
//! The thread is used once and ends, so a changed identity can never leak into other work. Descriptors it
//! opens stay valid for the rest of the process, which then reads or writes them as usual.

use std::io;

use rustix::process::{Gid, Uid};
use rustix::thread as creds;

use crate::users::User;

/// Runs `work` with `user`'s filesystem identity on a blocking thread and returns its result.
///
/// When envd already is that user (e.g. root), or cannot switch because it is not root itself (a developer
/// running envd unprivileged), the work runs on the blocking pool as envd.
pub async fn run_as<T, F>(user: &User, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let me = rustix::process::geteuid();
    if me.as_raw() == user.uid || !me.is_root() {
        return tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?;
    }
    let (uid, gid) = (user.uid, user.gid);
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("envd-files-as-user".into()).spawn(move || {
        let result = become_user(uid, gid, &groups).and_then(|()| work());
        // The receiver only disappears when the request was dropped; nothing to report then.
        let _ = tx.send(result);
    })?;
    rx.await.map_err(|_| io::Error::other("file worker thread ended without a result"))?
}

/// Switches the calling thread (only) to the user. Groups and gid first: after the uid changes the thread no
/// longer has the capability to change them. Real and saved ids stay root; the thread ends after its one job.
fn become_user(uid: u32, gid: u32, groups: &[Gid]) -> io::Result<()> {
    creds::set_thread_groups(groups)?;
    creds::set_thread_res_gid(None, Some(Gid::from_raw(gid)), None)?;
    creds::set_thread_res_uid(None, Some(Uid::from_raw(uid)), None)?;
    Ok(())
}
