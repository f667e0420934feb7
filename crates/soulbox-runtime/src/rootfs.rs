//! Sandbox root filesystem: overlayfs(template layers as lowerdir, per-sandbox upper/work).
//!
//! Layout in the sandbox dir: `upper/`, `work/` (or `disk/upper/`, `disk/work/` inside the sandbox's
//! disk image), `rootfs/` (mount point). The mount is made in the
//! host mount namespace (like containerd's snapshotters); runc then pivots into it.
use crate::error::{Error, IoCtx, Result};
use std::path::{Path, PathBuf};

pub struct RootfsPaths {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mountpoint: PathBuf,
}

/// The writable layer is `<sandbox>/upper` + `work`, or `<sandbox>/disk/upper` + `work` when the
/// sandbox has its own disk image (`disk_image.rs`; the image file's existence decides).
pub fn paths(sandbox_dir: &Path) -> RootfsPaths {
    let layer = if crate::disk_image::has_image(sandbox_dir) {
        crate::disk_image::mount_dir(sandbox_dir)
    } else {
        sandbox_dir.to_path_buf()
    };
    RootfsPaths { upper: layer.join("upper"), work: layer.join("work"), mountpoint: sandbox_dir.join("rootfs") }
}

/// Flags of the host-side mounts below the data dir that hold sandbox-written files (disk images, the
/// project-quota filesystem): no setuid/setgid or file capabilities and no device nodes take effect
/// through them, so nothing a sandbox writes can be used on the host side.
pub const HOST_MOUNT_FLAGS: rustix::mount::MountFlags = rustix::mount::MountFlags::NOATIME
    .union(rustix::mount::MountFlags::NOSUID)
    .union(rustix::mount::MountFlags::NODEV);

/// Adds [`HOST_MOUNT_FLAGS`] to an existing mount (a bind remount changes only the mount's own flags, not the
/// filesystem's options). Best effort: a failure is logged.
pub fn harden_mount(mp: &Path) {
    let flags = rustix::mount::MountFlags::BIND | HOST_MOUNT_FLAGS;
    if let Err(e) = rustix::mount::mount_remount(mp, flags, "") {
        tracing::warn!(mount = %mp.display(), error = %e, "could not make a host-side mount nosuid,nodev");
    }
}

/// Mount the overlay (idempotent: an existing mount at the mount point is kept).
pub fn mount(sandbox_dir: &Path, layers_bottom_first: &[PathBuf]) -> Result<()> {
    let p = paths(sandbox_dir);
    for d in [&p.upper, &p.work, &p.mountpoint] {
        std::fs::create_dir_all(d).ctx(d)?;
    }
    if is_mounted(&p.mountpoint) {
        return Ok(());
    }
    if layers_bottom_first.is_empty() {
        return Err(Error::Invalid("template has no layers".into()));
    }
    let lower: Vec<String> = layers_bottom_first.iter().rev().map(|l| l.to_string_lossy().into_owned()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off,xino=off",
        lower.join(":"),
        p.upper.display(),
        p.work.display()
    );
    if opts.len() >= 4000 {
        return Err(Error::Invalid("overlay options too long (too many layers or long paths)".into()));
    }
    let data = std::ffi::CString::new(opts).map_err(|_| Error::Invalid("NUL in overlay options".into()))?;
    // nodev, but not nosuid: runc bind-mounts this mount as the sandbox's root, which inherits its flags, and
    // `sudo`/`su` inside need setuid. The mount point sits under the data dir (0700): no other host user
    // reaches a setuid file through it.
    rustix::mount::mount("overlay", &p.mountpoint, "overlay", rustix::mount::MountFlags::NODEV, Some(data.as_c_str()))
        .map_err(|e| Error::Io { path: p.mountpoint.clone(), source: e.into() })
}

/// Unmount (idempotent). Uses a lazy detach as fallback so a busy mount never blocks release.
pub fn unmount(sandbox_dir: &Path) -> Result<()> {
    umount_path(&paths(sandbox_dir).mountpoint)
}

pub fn umount_path(mp: &Path) -> Result<()> {
    use rustix::mount::{UnmountFlags, unmount};
    while is_mounted(mp) {
        if let Err(e) = unmount(mp, UnmountFlags::empty()) {
            if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT {
                return Ok(());
            }
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
        if b[i] == b'\\' && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
