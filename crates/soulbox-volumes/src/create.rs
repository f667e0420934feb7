//! Making new entries: what `mkdir` and uploads share. The content API's defaults follow E2B: directories
//! 0777 and files 0666, set with an explicit chmod (no umask), owned by the store's default owner.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::confined::{open_child, open_dir, open_in_root};
use crate::error::VolumeError;
use crate::path::VolumePath;

pub const DEFAULT_DIR_MODE: u32 = 0o777;
pub const DEFAULT_FILE_MODE: u32 = 0o666;

/// Owner and mode of an entry about to be made, already checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attrs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

pub(crate) fn check_mode(mode: u32) -> Result<u32, VolumeError> {
    if mode > 0o7777 { Err(VolumeError::InvalidMode(mode)) } else { Ok(mode) }
}

pub(crate) fn check_owner(id: u32) -> Result<u32, VolumeError> {
    if id == u32::MAX { Err(VolumeError::InvalidOwner(id)) } else { Ok(id) }
}

/// Makes the directory `name` in `dir` with `attrs` and returns it opened. It is made 0700 and only then
/// given its owner and mode through its own fd; if that fails it is removed again.
pub(crate) fn new_dir(dir: BorrowedFd<'_>, name: &str, attrs: Attrs) -> rustix::io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    let finish = || -> rustix::io::Result<OwnedFd> {
        let made = open_child(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)?;
        let uid = rustix::fs::Uid::from_raw(attrs.uid);
        let gid = rustix::fs::Gid::from_raw(attrs.gid);
        rustix::fs::fchown(&made, Some(uid), Some(gid))?;
        rustix::fs::fchmod(&made, Mode::from_raw_mode(attrs.mode))?;
        Ok(made)
    };
    finish().inspect_err(|_| {
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR);
    })
}

/// The directory `path`, with any missing ones made like `mkdir -p` (owner from `attrs`, mode
/// [`DEFAULT_DIR_MODE`]). Existing components may be symlinks; they resolve inside the volume.
pub(crate) fn make_dirs(volume: BorrowedFd<'_>, path: &VolumePath, attrs: Attrs) -> Result<OwnedFd, VolumeError> {
    let parent_attrs = Attrs { mode: DEFAULT_DIR_MODE, ..attrs };
    let mut current = open_dir(volume, &VolumePath::parse("/")?)?;
    for prefix in path.prefixes() {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        current = match open_in_root(volume, &prefix, flags) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => match new_dir(current.as_fd(), prefix.name(), parent_attrs) {
                Ok(dir) => dir,
                // made by someone else meanwhile, or a dangling symlink (which is not followed to make its target)
                Err(Errno::EXIST) => {
                    open_in_root(volume, &prefix, flags).map_err(|_| VolumeError::NotADirectory(prefix.to_string()))?
                }
                Err(e) => return Err(VolumeError::io("mkdir", prefix.to_string(), e)),
            },
            Err(Errno::NOTDIR) => return Err(VolumeError::NotADirectory(prefix.to_string())),
            Err(e) => return Err(VolumeError::io("open directory", prefix.to_string(), e)),
        };
    }
    Ok(current)
}
