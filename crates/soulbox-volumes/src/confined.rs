//! The only ways this crate reaches an entry inside a volume. Every lookup starts from the volume's directory
//! fd and goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink (absolute or full of
//! `..`) made by sandbox code resolves as if the volume were `/` and can never lead out of it. The last
//! component is then opened with `O_NOFOLLOW` (`O_PATH`), and everything after that acts on that fd, not on a
//! name, so swapping the entry for a symlink between two steps changes nothing.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::VolumeError;
use crate::path::VolumePath;

/// `openat2` may fail with EAGAIN when a rename raced the walk; it is safe to try again.
const RACE_RETRIES: usize = 16;

/// Opens `path` (following symlinks, confined to `volume`) with `flags`.
pub(crate) fn open_in_root(volume: BorrowedFd<'_>, path: &VolumePath, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let relative = path.relative();
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut attempt = 0;
    loop {
        match rustix::fs::openat2(volume, relative.as_str(), flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if attempt < RACE_RETRIES => attempt += 1,
            result => return result,
        }
    }
}

/// The directory `path` (confined, symlinks followed), readable so it can be listed and fsync'ed.
pub(crate) fn open_dir(volume: BorrowedFd<'_>, path: &VolumePath) -> Result<OwnedFd, VolumeError> {
    open_in_root(volume, path, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| match e {
        Errno::NOENT => VolumeError::NotFound(path.to_string()),
        Errno::NOTDIR => VolumeError::NotADirectory(path.to_string()),
        e => VolumeError::io("open directory", path.to_string(), e),
    })
}

/// An `O_PATH` fd of the entry `path` itself: its parent is resolved confined, the entry is not followed.
pub(crate) fn open_entry(volume: BorrowedFd<'_>, path: &VolumePath) -> Result<OwnedFd, VolumeError> {
    let Some((parent, name)) = path.split_last() else {
        return open_in_root(volume, path, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| VolumeError::io("open", path.to_string(), e));
    };
    let parent = open_dir(volume, &parent)?;
    open_child(parent.as_fd(), name, OFlags::PATH | OFlags::NOFOLLOW).map_err(|e| match e {
        Errno::NOENT => VolumeError::NotFound(path.to_string()),
        e => VolumeError::io("open", path.to_string(), e),
    })
}

/// Opens `name` in `dir` with `flags` (callers pass `O_NOFOLLOW`).
pub(crate) fn open_child<P: rustix::path::Arg>(
    dir: BorrowedFd<'_>,
    name: P,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, flags | OFlags::CLOEXEC, Mode::empty())
}

/// The entry behind an `O_PATH` fd reached through its `/proc/self/fd` magic link: the kernel goes straight to
/// the fd's inode, whatever now sits at its old name. Callers have checked it is not a symlink.
fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `chmod` of exactly the inode an `O_PATH` fd refers to (Linux has no `fchmod` on `O_PATH` fds, and
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` needs `fchmodat2`).
pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> rustix::io::Result<()> {
    rustix::fs::chmodat(rustix::fs::CWD, proc_fd_path(fd), Mode::from_raw_mode(mode), AtFlags::empty())
}

/// `lchown` of exactly the entry an `O_PATH` fd refers to (a symlink's owner, never its target's).
/// `None` leaves that id as it is; -1 is refused by the public operations before it gets here.
pub(crate) fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> rustix::io::Result<()> {
    let uid = uid.map(rustix::fs::Uid::from_raw);
    let gid = gid.map(rustix::fs::Gid::from_raw);
    rustix::fs::chownat(fd, "", uid, gid, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
}

/// Reopens the regular file behind an `O_PATH` fd for reading, without ever opening anything else (a fifo
/// would block, a device node could act).
pub(crate) fn reopen_for_reading(fd: BorrowedFd<'_>) -> rustix::io::Result<File> {
    let file = rustix::fs::open(proc_fd_path(fd), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(file))
}
