//! The host's mount table: what is mounted where (`/proc/self/mountinfo`), unmounting, and the flags of
//! the host-side mounts that hold sandbox-written files. Used by the overlay (`rootfs`), the sandbox disk
//! images (`disk_image`) and the project-quota filesystem (`quota`).
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Flags of the host-side mounts below the data dir that hold sandbox-written files (disk images, the
/// project-quota filesystem): no setuid/setgid or file capabilities and no device nodes take effect
/// through them, so nothing a sandbox writes can be used on the host side.
pub const HOST_MOUNT_FLAGS: rustix::mount::MountFlags =
    rustix::mount::MountFlags::NOATIME.union(rustix::mount::MountFlags::NOSUID).union(rustix::mount::MountFlags::NODEV);

/// Adds [`HOST_MOUNT_FLAGS`] to an existing mount (a bind remount changes only the mount's own flags, not the
/// filesystem's options). Best effort: a failure is logged.
pub fn harden_mount(mp: &Path) {
    let flags = rustix::mount::MountFlags::BIND | HOST_MOUNT_FLAGS;
    if let Err(e) = rustix::mount::mount_remount(mp, flags, "") {
        tracing::warn!(mount = %mp.display(), error = %e, "could not make a host-side mount nosuid,nodev");
    }
}

/// Unmount whatever is mounted at `mp` (idempotent), lazily when it is busy.
pub fn umount_path(mp: &Path) -> Result<()> {
    use rustix::mount::{UnmountFlags, unmount};
    while is_mounted(mp) {
        if let Err(e) = unmount(mp, UnmountFlags::empty()) {
            if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT {
                return Ok(());
            }
            tracing::info!(mount = %mp.display(), error = %e, "mount busy; detaching it lazily");
            unmount(mp, UnmountFlags::DETACH).map_err(|e| Error::Io { path: mp.into(), source: e.into() })?;
        }
    }
    Ok(())
}

/// All mount points under `prefix` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let pre = prefix.to_string_lossy().into_owned();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m.starts_with(&format!("{pre}/")))
        .map(PathBuf::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

pub fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let s = p.to_string_lossy();
    info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| unescape(m) == s)
}

pub(crate) fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
