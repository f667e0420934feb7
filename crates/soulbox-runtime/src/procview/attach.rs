//! Mounting host files over paths inside a running container: `open_tree` clones each file's mount here, then a
//! thread of our own enters the container's mount namespace and moves the clones onto their places (over whatever
//! is mounted there: a dead mount of an earlier runtime's view is detached first). How a sandbox gets its view at
//! boot, and again after a runtime restart.
use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn os_err(what: &str, path: &Path) -> Error {
    Error::Io { path: PathBuf::from(format!("{what} {}", path.display())), source: std::io::Error::last_os_error() }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error::Invalid(format!("{} has a NUL", p.display())))
}

/// Mounts each `(host file, path inside)` into the mount namespace of process `pid`, a container's init that must
/// be in cgroup `cgroup` (`/<parent>/<id>`): a pid file outliving its process must never lead here to another
/// process's namespace — above all the host's own, whose `/proc/meminfo` would then be a sandbox's.
pub fn attach(pid: i32, cgroup: &str, files: &[(PathBuf, &str)]) -> Result<()> {
    let mut clones = Vec::with_capacity(files.len());
    for (source, inside) in files {
        let c = cstr(source)?;
        // SAFETY: open_tree with a valid C string; the returned descriptor is owned below.
        let fd = unsafe {
            libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
        };
        if fd < 0 {
            return Err(os_err("open_tree", source));
        }
        // SAFETY: a new descriptor that nothing else owns.
        clones.push((unsafe { OwnedFd::from_raw_fd(fd as i32) }, cstr(Path::new(inside))?, inside.to_string()));
    }
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = std::fs::File::open(&ns_path).map_err(|source| Error::Io { path: ns_path.clone(), source })?;
    // Checked after the namespace is held: if the pid was someone else's by then, its cgroup says so now.
    if !in_cgroup(pid, cgroup) {
        return Err(Error::Invalid(format!("process {pid} is not in cgroup {cgroup}: not attaching the proc view")));
    }
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/mnt")
        .map_err(|source| Error::Io { path: "/proc/self/ns/mnt".into(), source })?;
    let theirs = ns.metadata().map_err(|source| Error::Io { path: ns_path.clone(), source })?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(Error::Invalid(format!("process {pid} shares the runtime's mount namespace: not attaching")));
    }
    // Entering another mount namespace is allowed only to a thread that shares its filesystem context with no
    // other: a thread of its own, unshared, that ends right after.
    std::thread::spawn(move || -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: unshare/setns/umount2/move_mount on descriptors and strings owned by this closure.
        unsafe {
            if libc::unshare(libc::CLONE_FS) != 0 {
                return Err(os_err("unshare(CLONE_FS) for", &ns_path));
            }
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                return Err(os_err("setns", &ns_path));
            }
            for (fd, inside, name) in &clones {
                // Only our own earlier view can be mounted there (procfs itself is not a mount of the file).
                if is_our_view(name) {
                    libc::umount2(inside.as_ptr(), libc::MNT_DETACH);
                }
                let empty = c"";
                if libc::syscall(
                    libc::SYS_move_mount,
                    fd.as_raw_fd(),
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    inside.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) != 0
                {
                    return Err(os_err("move_mount onto", Path::new(name)));
                }
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::Invalid("the proc view's attach thread panicked".into()))?
}

/// Whether `/proc/<pid>/cgroup` (v1: any hierarchy; v2: the one line) names `cgroup` exactly.
fn in_cgroup(pid: i32, cgroup: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.splitn(3, ':').nth(2) == Some(cgroup))
}

/// Whether the file at `inside` (in the current mount namespace) is a mount of the proc view: its filesystem is
/// FUSE (a dead one answers ENOTCONN, also ours), not procfs.
fn is_our_view(inside: &str) -> bool {
    match rustix::fs::statfs(inside) {
        Ok(s) => s.f_type as u64 == 0x6573_5546, // FUSE_SUPER_MAGIC
        Err(e) => e == rustix::io::Errno::NOTCONN,
    }
}
