//! Persistent volumes in sandboxes: `<volumes_dir>/<volume id>/` bind-mounted at the path the create asked for.
//!
//! Volume files are stored *unshifted*, owned by the ids processes inside see (`user` is 1000 on disk), like the
//! template layers, so one volume can be mounted by many sandboxes at once whatever their id ranges, and the
//! server's content API reads and writes them without any sandbox running. A user-namespaced sandbox sees the
//! volume through an idmapped clone with its own mapping (`idmap::idmapped_clone`, made at
//! `<sandbox>/idmap/vol-<n>` just before the container starts and detached right after: the container's mount
//! namespace holds its own bind of it). Without a user namespace (gVisor, or user namespaces off) the directory is
//! bound as it is.
//!
//! A volume with an image of its own (`volume_images.rs`) is mounted on its directory before the bind, so the
//! sandbox gets the image's filesystem and its size limit.
//!
//! The mount is `nosuid,nodev`: a set-uid file a sandbox's root leaves in a volume is stored owned by host root,
//! and must not mean anything in the next sandbox that mounts it. (On the host the volumes directory is 0700 root,
//! so no host user reaches such a file either.)
use crate::error::{Error, Result};
use crate::spec::VolumeMount;
use std::path::{Path, PathBuf};

/// Paths no volume may cover or sit below: the kernel's and the runtime's own.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/.soulbox", "/run/soulbox"];
/// More mounts than any real use, few enough that a create cannot make a sandbox expensive to start.
pub const MAX_MOUNTS: usize = 16;

/// Checks the mounts of a create against this node before anything is made: the node has volumes, each volume
/// exists here, the paths are absolute, normalised, distinct, not nested in one another and not reserved.
pub fn check(volumes_dir: Option<&Path>, mounts: &[VolumeMount]) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let Some(root) = volumes_dir else {
        return Err(Error::Invalid("this node has no volumes directory: volume mounts are not available".into()));
    };
    if mounts.len() > MAX_MOUNTS {
        return Err(Error::Invalid(format!("at most {MAX_MOUNTS} volume mounts per sandbox")));
    }
    for (i, m) in mounts.iter().enumerate() {
        if !is_volume_id(&m.volume_id) {
            return Err(Error::Invalid(format!("bad volume id {:?}", m.volume_id)));
        }
        check_path(&m.path)?;
        let dir = root.join(&m.volume_id);
        match std::fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() => {}
            _ => return Err(Error::Invalid(format!("volume {} is not on this node", m.volume_id))),
        }
        for other in &mounts[..i] {
            if nested(&other.path, &m.path) || nested(&m.path, &other.path) {
                return Err(Error::Invalid(format!("volume mount paths {} and {} overlap", other.path, m.path)));
            }
        }
    }
    Ok(())
}

/// A volume id as the server's volume store makes them: one safe path component.
fn is_volume_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A mount path: absolute, no `.`/`..`/empty components, no trailing slash, not `/`, nothing reserved.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("volume mount path {path:?}: {why}")));
    if !path.starts_with('/') || path.len() > 1024 || path.contains('\0') {
        return bad("must be an absolute path");
    }
    if path == "/" || path.ends_with('/') || path.contains("//") {
        return bad("must name a directory below / (no trailing or double slashes)");
    }
    // Split by hand: `Path::components` drops inner `.` components instead of showing them.
    if path.split('/').skip(1).any(|c| c == "." || c == "..") {
        return bad("must not contain . or .. components");
    }
    if let Some(r) = RESERVED.iter().find(|r| nested(r, path) || nested(path, r)) {
        return bad(&format!("overlaps {r}, which the sandbox needs"));
    }
    Ok(())
}

/// `inner` is `outer` or below it.
fn nested(outer: &str, inner: &str) -> bool {
    inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

/// The volumes of this node: their directory and, when volumes have images of their own, the images.
#[derive(Clone, Copy)]
pub struct NodeVolumes<'a> {
    pub dir: Option<&'a Path>,
    pub images: Option<&'a crate::volume_images::VolumeImages>,
}

/// Where the `n`th volume's idmapped clone is mounted while the container starts.
fn helper(sandbox_dir: &Path, n: usize) -> PathBuf {
    crate::idmap::helper_dir(sandbox_dir).join(format!("vol-{n}"))
}

/// The host directories the container binds, in the order of `mounts`: for a user-namespaced sandbox idmapped
/// clones made now (detach them with [`detach_helpers`] once the container runs), else the volumes themselves.
pub fn prepare(
    volumes: NodeVolumes<'_>,
    sandbox_dir: &Path,
    mounts: &[VolumeMount],
    userns: bool,
) -> Result<Vec<PathBuf>> {
    if mounts.is_empty() {
        return Ok(Vec::new());
    }
    check(volumes.dir, mounts)?;
    let root = volumes.dir.ok_or_else(|| Error::Invalid("no volumes directory".into()))?;
    if let Some(images) = volumes.images {
        // a volume with an image is bound mounted, never as the empty directory under it
        for m in mounts {
            soulbox_volumes::VolumeBacking::attach(images, root, &m.volume_id)
                .map_err(|e| Error::Io { path: root.join(&m.volume_id), source: e })?;
        }
    }
    detach_helpers(sandbox_dir)?;
    let mut sources = Vec::with_capacity(mounts.len());
    let ns = if userns {
        let at = crate::userns::userns_path(sandbox_dir);
        Some(std::fs::File::open(&at).map_err(|e| Error::Io { path: at, source: e })?)
    } else {
        None
    };
    for (n, m) in mounts.iter().enumerate() {
        let dir = root.join(&m.volume_id);
        match &ns {
            Some(ns) => {
                let at = helper(sandbox_dir, n);
                crate::idmap::idmapped_clone(&dir, &at, std::os::fd::AsFd::as_fd(ns))?;
                sources.push(at);
            }
            None => sources.push(dir),
        }
    }
    Ok(sources)
}

/// Detaches the idmapped clones [`prepare`] made (idempotent; the container keeps its own binds).
pub fn detach_helpers(sandbox_dir: &Path) -> Result<()> {
    let dir = crate::idmap::helper_dir(sandbox_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("vol-") {
            continue;
        }
        let at = e.path();
        while crate::rootfs::is_mounted(&at) {
            rustix::mount::unmount(&at, rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| Error::Io { path: at.clone(), source: e.into() })?;
        }
        let _ = std::fs::remove_dir(&at);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(id: &str, path: &str) -> VolumeMount {
        VolumeMount { volume_id: id.into(), path: path.into() }
    }

    #[test]
    fn mount_paths_are_absolute_normal_and_clear_of_the_system() {
        for good in ["/data", "/mnt/data", "/home/user/work", "/devices", "/process"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "data",
            "/",
            "/data/",
            "//data",
            "/a/../etc",
            "/a/./b",
            "/proc",
            "/proc/x",
            "/dev",
            "/sys/fs",
            "/.soulbox/envd",
            "/run/soulbox",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_are_checked_against_the_node() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("vol1")).unwrap();
        std::fs::create_dir(root.path().join("vol2")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("link")).unwrap();
        let r = Some(root.path());
        assert!(check(r, &[mount("vol1", "/a"), mount("vol2", "/b"), mount("vol1", "/c")]).is_ok());
        assert!(check(None, &[mount("vol1", "/a")]).is_err(), "a node without volumes");
        assert!(check(None, &[]).is_ok());
        assert!(check(r, &[mount("nope", "/a")]).is_err(), "a volume not here");
        assert!(check(r, &[mount("link", "/a")]).is_err(), "a symlink is not a volume");
        assert!(check(r, &[mount("../etc", "/a")]).is_err());
        assert!(check(r, &[mount("vol1", "/a"), mount("vol2", "/a/b")]).is_err(), "nested");
        assert!(check(r, &[mount("vol1", "/a"), mount("vol2", "/a")]).is_err(), "same path");
        assert!(check(r, &[mount("vol1", "/ab"), mount("vol2", "/a")]).is_ok());
        let many: Vec<_> = (0..=MAX_MOUNTS).map(|i| mount("vol1", &format!("/m{i}"))).collect();
        assert!(check(r, &many).is_err());
    }
}
