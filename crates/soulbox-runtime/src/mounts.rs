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

/// Whether something is mounted at `p`. Asked of the kernel for that one path (`statx`'s mount-root attribute,
/// Linux 5.8+): reading the whole mount table instead cost a create or kill more the more sandboxes were
/// mounted (a quarter of all CPU at 300 sandboxes, docs/BENCHMARKS.md). The table is read when `statx` cannot
/// say: an older kernel, or a mount whose filesystem no longer answers (a dead FUSE mount is still a mount).
pub fn is_mounted(p: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    match statx(CWD, p, AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW, StatxFlags::empty()) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => false,
        _ => is_mounted_per_table(p),
    }
}

/// [`is_mounted`] from `/proc/self/mountinfo`.
fn is_mounted_per_table(p: &Path) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_and_the_mount_table_agree_on_what_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        for p in [Path::new("/"), Path::new("/proc"), Path::new("/sys"), Path::new("/dev")] {
            assert!(is_mounted(p), "{}", p.display());
            assert_eq!(is_mounted(p), is_mounted_per_table(p), "{}", p.display());
        }
        for p in [dir.path(), file.as_path(), Path::new("/proc/self"), &dir.path().join("absent"), &file.join("x")] {
            assert!(!is_mounted(p), "{}", p.display());
            assert_eq!(is_mounted(p), is_mounted_per_table(p), "{}", p.display());
        }
    }
}
