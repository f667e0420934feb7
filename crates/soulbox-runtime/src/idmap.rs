//! The mount mechanics of user-namespaced sandboxes (`userns.rs` owns the id ranges).
//!
//! **Root filesystem.** Layers and the writable layer stay stored *unshifted* (a file root made
//! inside is owned by 0 on disk, as without user namespaces), so layers are shared by every
//! sandbox, snapshots and template builds commit the upper dir as it is, and stop/start need no
//! chown. The overlay sees them shifted through idmapped mounts:
//!
//! 1. `open_tree(OPEN_TREE_CLONE)` of the store's `layers/` and of the directory holding `upper/`
//!    and `work/` (the sandbox dir, or its disk image's mount), `mount_setattr(MOUNT_ATTR_IDMAP)`
//!    with a user namespace of the sandbox's range, `move_mount` to `<sandbox>/idmap/{lower,upper}`.
//! 2. overlayfs is mounted on them from a thread whose fsuid/fsgid are the range's root: overlayfs
//!    keeps the mounter's credentials for its own work (creating `work/work`, copy-up), and host
//!    root (fsuid 0) has no id on the idmapped upper (EOVERFLOW). Changing fsuid drops the
//!    filesystem capabilities from the effective set, so they are raised again from the permitted
//!    set first. The thread ends right after: nothing else ever runs with those credentials.
//! 3. The helper mounts are detached: overlayfs holds private clones of its layers.
//!
//! Host root writing into the merged rootfs then gets EOVERFLOW; nothing on the host does that
//! (files reach a sandbox through envd, or are written into `upper/` before the mount).
//!
use crate::error::{Error, IoCtx, Result};
use crate::userns::IdRange;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Helper mount points of the idmapped layers, below the sandbox dir (empty between mounts).
pub fn helper_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("idmap")
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn io_err(what: impl Into<PathBuf>, e: impl Into<std::io::Error>) -> Error {
    Error::Io { path: what.into(), source: e.into() }
}

/// Mount a clone of `src` (not its submounts) on `dst`, seen through `userns`'s id mapping.
pub fn idmapped_clone(src: &Path, dst: &Path, userns: BorrowedFd) -> Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    std::fs::create_dir_all(dst).ctx(dst)?;
    let tree = open_tree(rustix::fs::CWD, src, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
        .map_err(|e| io_err(format!("open_tree {}", src.display()), e))?;
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: mount_setattr(2) reads `attr` (of the size we pass) and an empty path string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io_err(
            format!("mount_setattr(MOUNT_ATTR_IDMAP) {}", src.display()),
            std::io::Error::last_os_error(),
        ));
    }
    move_mount(tree.as_fd(), "", rustix::fs::CWD, dst, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| io_err(format!("move_mount to {}", dst.display()), e))
}

/// Run `f` on a fresh thread with fsuid/fsgid = the range's root and the permitted capabilities
/// effective. The credentials die with the thread.
fn as_range_root<T: Send>(range: IdRange, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // setfsuid/setfsgid are per thread (glibc does not broadcast them).
            // SAFETY: plain syscalls on this thread's credentials.
            unsafe {
                libc::setfsgid(range.host_base);
                libc::setfsuid(range.host_base);
            }
            let mut caps = rustix::thread::capabilities(None).map_err(|e| io_err("capget", e))?;
            caps.effective = caps.permitted;
            rustix::thread::set_capabilities(None, caps).map_err(|e| io_err("capset", e))?;
            f()
        })
        .join()
        .map_err(|_| Error::Invalid("the idmapped mount thread panicked".into()))?
    })
}

/// Mount the sandbox's overlay through idmapped layers (module docs). `layer_root` is the store's
/// `layers/`, `layers` the digests bottom first, `rw_root` the directory holding `upper/` and
/// `work/`. Idempotent like `rootfs::mount`; the helper mounts are gone afterwards either way.
pub fn mount_rootfs(
    sandbox_dir: &Path,
    layer_root: &Path,
    layers: &[String],
    rw_root: &Path,
    range: IdRange,
    userns: BorrowedFd,
) -> Result<()> {
    let mountpoint = crate::rootfs::paths(sandbox_dir).mountpoint;
    for d in [rw_root.join("upper"), rw_root.join("work"), mountpoint.clone()] {
        std::fs::create_dir_all(&d).ctx(&d)?;
    }
    if crate::rootfs::is_mounted(&mountpoint) {
        return Ok(());
    }
    if layers.is_empty() {
        return Err(Error::Invalid("template has no layers".into()));
    }
    let helpers = helper_dir(sandbox_dir);
    let (lower, upper) = (helpers.join("lower"), helpers.join("upper"));
    let res = (|| {
        unmount_helpers(sandbox_dir)?;
        idmapped_clone(layer_root, &lower, userns)?;
        idmapped_clone(rw_root, &upper, userns)?;
        let lowerdirs: Vec<String> =
            layers.iter().rev().map(|l| lower.join(l).to_string_lossy().into_owned()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=off,xino=off",
            lowerdirs.join(":"),
            upper.join("upper").display(),
            upper.join("work").display()
        );
        if opts.len() >= 4000 {
            return Err(Error::Invalid("overlay options too long (too many layers or long paths)".into()));
        }
        let data = std::ffi::CString::new(opts).map_err(|_| Error::Invalid("NUL in overlay options".into()))?;
        as_range_root(range, || {
            rustix::mount::mount(
                "overlay",
                &mountpoint,
                "overlay",
                rustix::mount::MountFlags::NODEV, // (not nosuid: runc's root bind inherits it, see rootfs::mount)
                Some(data.as_c_str()),
            )
            .map_err(|e| io_err(&mountpoint, e))
        })
    })();
    let cleanup = unmount_helpers(sandbox_dir);
    res.and(cleanup)
}

/// [`mount_rootfs`] for a sandbox: its template's layers from the store, its writable layer (in
/// its dir or its disk image), the mapping of its pinned user namespace.
pub fn mount_sandbox_rootfs(
    sandbox_dir: &Path,
    store: &crate::template::Store,
    layers: &[String],
    range: IdRange,
) -> Result<()> {
    let userns_at = crate::userns::userns_path(sandbox_dir);
    let userns = std::fs::File::open(&userns_at).ctx(&userns_at)?;
    let upper = crate::rootfs::paths(sandbox_dir).upper;
    let rw_root = upper.parent().unwrap_or(sandbox_dir);
    mount_rootfs(sandbox_dir, &store.root().join("layers"), layers, rw_root, range, userns.as_fd())
}

/// Detach the idmapped helper mounts (idempotent).
pub fn unmount_helpers(sandbox_dir: &Path) -> Result<()> {
    let helpers = helper_dir(sandbox_dir);
    for d in [helpers.join("lower"), helpers.join("upper")] {
        while crate::rootfs::is_mounted(&d) {
            rustix::mount::unmount(&d, rustix::mount::UnmountFlags::DETACH).map_err(|e| io_err(&d, e))?;
        }
    }
    Ok(())
}

/// Everything below a sandbox dir that user namespaces add: the helper mounts and the pinned
/// user namespace (release and collect).
pub fn unmount_all(sandbox_dir: &Path) -> Result<()> {
    unmount_helpers(sandbox_dir)?;
    crate::userns::unpin(&crate::userns::userns_path(sandbox_dir))
}

/// Can this kernel and these filesystems run user-namespaced sandboxes the way `mount_rootfs`
/// does? Mounts an overlay of an idmapped lower dir (in the store) and an idmapped upper (on the
/// sandboxes' filesystem), creates a file as the range's root through it and checks it is stored
/// as 0 and that a lower file owned by 0 shows as the range's root. Leaves nothing behind.
pub fn probe(store_tmp: &Path, sandboxes_dir: &Path, range: IdRange, userns: BorrowedFd) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let work = sandboxes_dir.join(".userns-probe");
    let _ = crate::rootfs::umount_path(&work.join("rootfs"));
    let _ = unmount_helpers(&work);
    crate::util::remove_dir_all_idem(&work)?;
    let layer = store_tmp.join("layer");
    let res = (|| {
        std::fs::create_dir_all(layer.join("etc")).ctx(&layer)?;
        std::fs::write(layer.join("etc/probe"), "lower").ctx(&layer)?;
        let name = layer.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        mount_rootfs(&work, store_tmp, &[name], &work, range, userns)?;
        let merged = crate::rootfs::paths(&work).mountpoint;
        let lower_uid = std::fs::metadata(merged.join("etc/probe")).ctx(&merged)?.uid();
        if lower_uid != range.host_base {
            return Err(Error::Invalid(format!(
                "a lower file owned by 0 shows as {lower_uid}, not {}",
                range.host_base
            )));
        }
        let created = merged.join("created");
        as_range_root(range, || std::fs::write(&created, "upper").ctx(&created))?;
        let stored = std::fs::metadata(work.join("upper/created")).ctx(&work)?.uid();
        if stored != 0 {
            return Err(Error::Invalid(format!("a file made by the range's root is stored as {stored}, not 0")));
        }
        Ok(())
    })();
    let _ = crate::rootfs::umount_path(&crate::rootfs::paths(&work).mountpoint);
    let _ = unmount_helpers(&work);
    let _ = crate::util::remove_dir_all_idem(&work);
    res
}
