//! Whole-tree walks: removing a directory and measuring a volume. Both go down through directory fds opened
//! with `O_NOFOLLOW` and act on names inside them (`unlinkat`, `statat(AT_SYMLINK_NOFOLLOW)`), so a symlink is
//! removed or counted as itself and never entered. They keep their own stack instead of recursing: sandbox
//! code can make a tree deeper than any thread stack (a tree deeper than the open-file limit fails with EMFILE).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, OFlags};
use rustix::io::Errno;

/// How many times a directory that sandbox code keeps refilling is emptied again before giving up.
const REFILL_RETRIES: usize = 8;

fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Removes the entry `name` of `parent`, recursively if it is a directory. A symlink is unlinked itself.
pub(crate) fn remove_entry(parent: BorrowedFd<'_>, name: &str) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        other => return other,
    }
    let name = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    let top = open_subdir(parent, &name)?;
    // (directory being emptied, its name in the level above, times it was found refilled)
    let mut stack: Vec<(Dir, std::ffi::CString, usize)> = vec![(Dir::new(top)?, name, 0)];
    while let Some((dir, _, _)) = stack.last_mut() {
        match dir.read() {
            Some(entry) => {
                let entry = entry?;
                let child = entry.file_name();
                if is_dot(child) {
                    continue;
                }
                let fd = dir.fd()?;
                match rustix::fs::unlinkat(fd, child, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::ISDIR) => {
                        let sub = match open_subdir(fd, child) {
                            Ok(sub) => sub,
                            // swapped for something else meanwhile: the next pass over this dir sees it again
                            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                            Err(e) => return Err(e),
                        };
                        let child = child.to_owned();
                        stack.push((Dir::new(sub)?, child, 0));
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                let Some((done, done_name, refills)) = stack.pop() else { break };
                let above = match stack.last() {
                    Some((dir, _, _)) => dir.fd()?,
                    None => parent,
                };
                match rustix::fs::unlinkat(above, &done_name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::NOTEMPTY) if refills < REFILL_RETRIES => {
                        let mut done = done;
                        done.rewind();
                        stack.push((done, done_name, refills + 1));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// The sum of the sizes of the regular files under `dir`, symlinks not followed.
pub(crate) fn usage(dir: impl AsFd) -> rustix::io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![Dir::read_from(dir)?];
    while let Some(dir) = stack.last_mut() {
        let Some(entry) = dir.read() else {
            stack.pop();
            continue;
        };
        let entry = entry?;
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        let fd = dir.fd()?;
        let stat = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => total = total.saturating_add(u64::try_from(stat.st_size).unwrap_or(0)),
            FileType::Directory => match open_subdir(fd, name) {
                Ok(sub) => stack.push(Dir::new(sub)?),
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
                Err(e) => return Err(e),
            },
            _ => {}
        }
    }
    Ok(total)
}
