//! Sandbox root filesystem: overlayfs(template layers as lowerdir, per-sandbox upper/work).
//!
//! Layout in the sandbox dir: `upper/`, `work/` (or `disk/upper/`, `disk/work/` inside the sandbox's
//! disk image), `rootfs/` (mount point). The mount is made in the
//! host mount namespace (like containerd's snapshotters); runc then pivots into it.
use crate::error::{Error, IoCtx, Result};
use std::path::{Path, PathBuf};

// The host's mount table helpers live in `mounts` (the disk image and quota code use them too); here
// under their old paths.
pub use crate::mounts::{HOST_MOUNT_FLAGS, harden_mount, is_mounted, mounts_under, umount_path};

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

/// Refuses the path `inside` the sandbox (absolute) when one of its components is a symbolic link in the mounted
/// root filesystem. runc follows links in a mount's destination (within the rootfs), so a link the sandbox's own
/// root left there (`/data -> /.soulbox`, kept by a snapshot) would put a volume over a path its name was checked
/// not to cover. Components that do not exist yet are fine: runc makes them as directories.
pub fn refuse_links(sandbox_dir: &Path, inside: &str) -> Result<()> {
    let mut at = paths(sandbox_dir).mountpoint;
    let mut shown = String::new();
    for name in inside.split('/').filter(|c| !c.is_empty()) {
        at.push(name);
        shown = format!("{shown}/{name}");
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(Error::Invalid(format!(
                    "mount path {inside:?}: {shown} is a symbolic link in the sandbox's filesystem"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::Io { path: at, source: e }),
        }
    }
    Ok(())
}

/// Unmount (idempotent). Uses a lazy detach as fallback so a busy mount never blocks release.
pub fn unmount(sandbox_dir: &Path) -> Result<()> {
    umount_path(&paths(sandbox_dir).mountpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_through_links_in_the_rootfs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = paths(dir.path()).mountpoint;
        std::fs::create_dir_all(root.join("home/user")).unwrap();
        std::os::unix::fs::symlink("/.soulbox", root.join("data")).unwrap();
        std::os::unix::fs::symlink("../proc", root.join("home/up")).unwrap();
        for ok in ["/home/user", "/home/user/new/deeper", "/missing", "/home"] {
            assert!(refuse_links(dir.path(), ok).is_ok(), "{ok}");
        }
        for bad in ["/data", "/data/x", "/home/up", "/home/up/meminfo"] {
            let e = refuse_links(dir.path(), bad).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{bad}: {e}");
        }
    }
}
