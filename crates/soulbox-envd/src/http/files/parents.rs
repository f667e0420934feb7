//! Missing parent directories of an upload that its user may not create, made for that user as E2B's agent makes
//! them: by envd (root), owned by the user, mode 0755. E2B SDK code writes to paths like `/0/a.txt` as `user` and
//! expects the folders to appear; everything else about the upload (opening the file, writing it) still happens
//! with the user's identity.
//!
//! Root must not be steered by the user: the walk starts at `/` and opens each existing component with
//! `O_NOFOLLOW`, so a symlink anywhere in the path (which the user might have planted to point into `/etc`) stops
//! it with `PermissionDenied` instead of being followed; new directories are made with `mkdirat` relative to
//! the descriptor of their parent and get their owner and mode through their own descriptor, so swapping a
//! directory for a link mid-walk gains nothing.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// Makes the missing directories of the absolute path `dir` for `uid`:`gid` and returns them, outermost first.
pub fn make_for_user(dir: &Path, uid: u32, gid: u32) -> io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    let result = walk(dir, uid, gid, &mut created);
    if result.is_err() {
        // Leave nothing half made: the caller only learns of the error.
        for d in created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        created.clear();
    }
    result.map(|()| created)
}

/// Opens the directory `name` in `at` without following a link. Not `O_DIRECTORY | O_NOFOLLOW`: gVisor (runsc
/// 20221219) follows a link with that pair. A path descriptor of the entry itself, its type checked, is the
/// directory opened again through `.` (the same inode, whatever happens to `name` meanwhile).
fn open_dir_nofollow(at: &OwnedFd, name: &std::ffi::OsStr) -> Result<OwnedFd, Errno> {
    let entry = rustix::fs::openat(at, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    match rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&entry)?.st_mode) {
        rustix::fs::FileType::Directory => {}
        rustix::fs::FileType::Symlink => return Err(Errno::LOOP),
        _ => return Err(Errno::NOTDIR),
    }
    rustix::fs::openat(&entry, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

fn walk(dir: &Path, uid: u32, gid: u32, created: &mut Vec<PathBuf>) -> io::Result<()> {
    let open = open_dir_nofollow;
    let mut at: OwnedFd = rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut here = PathBuf::from("/");
    for component in dir.components() {
        let name = match component {
            Component::RootDir => continue,
            Component::Normal(name) => name,
            // Paths reach here resolved; anything else is not walked as root.
            _ => return Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        };
        here.push(name);
        at = match open(&at, name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&at, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => created.push(here.clone()),
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                // Owner and mode through the directory's own descriptor, never through its name again.
                let fd = open(&at, name).map_err(refused)?;
                rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
                fd
            }
            Err(e) => return Err(refused(e)),
        };
    }
    Ok(())
}

/// A symlink (`ELOOP` with `O_NOFOLLOW`) or a non-directory in the path: not for root to go through.
fn refused(e: Errno) -> io::Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => io::Error::from(io::ErrorKind::PermissionDenied),
        other => other.into(),
    }
}
