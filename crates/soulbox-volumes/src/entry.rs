//! What the content API reports about one entry (E2B's `VolumeEntryStat`).

use std::os::fd::AsFd;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Stat};

use crate::error::VolumeError;
use crate::path::VolumePath;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Directory,
    Symlink,
    /// Anything else (a fifo, a socket, a device node).
    Unknown,
}

/// One entry of a volume, as `lstat` sees it: a symlink is reported as itself, never as its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStat {
    /// The last component (`/` for the volume root). Names that are not UTF-8 are converted lossily.
    pub name: String,
    pub entry_type: EntryType,
    /// Absolute within the volume, starting with `/`.
    pub path: String,
    pub size: u64,
    /// The permission bits only (`st_mode & 0o777`, Go's `FileMode.Perm()`, what E2B reports).
    pub mode: u32,
    /// Owner as stored, which is what a process inside a sandbox sees (volumes are stored unshifted).
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// The link's target as written in the link (not resolved), for a symlink.
    pub target: Option<String>,
}

/// The stat of the entry `fd` refers to (an `O_PATH | O_NOFOLLOW` fd may be a symlink itself).
pub(crate) fn entry_stat(fd: impl AsFd, path: &VolumePath) -> Result<EntryStat, VolumeError> {
    let fd = fd.as_fd();
    let stat = rustix::fs::fstat(fd).map_err(|e| VolumeError::io("stat", path.to_string(), e))?;
    let entry_type = entry_type(&stat);
    let target = if entry_type == EntryType::Symlink {
        let target =
            rustix::fs::readlinkat(fd, "", Vec::new()).map_err(|e| VolumeError::io("readlink", path.to_string(), e))?;
        Some(target.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(EntryStat {
        name: path.name().to_owned(),
        entry_type,
        path: path.to_string(),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mode: stat.st_mode & 0o777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        atime: system_time(stat.st_atime, stat.st_atime_nsec),
        mtime: system_time(stat.st_mtime, stat.st_mtime_nsec),
        ctime: system_time(stat.st_ctime, stat.st_ctime_nsec),
        target,
    })
}

pub(crate) fn entry_type(stat: &Stat) -> EntryType {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => EntryType::File,
        FileType::Directory => EntryType::Directory,
        FileType::Symlink => EntryType::Symlink,
        _ => EntryType::Unknown,
    }
}

/// `lstat` of `name` in `dir`.
pub(crate) fn lstat_at(dir: impl AsFd, name: &str) -> rustix::io::Result<Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

fn system_time(secs: i64, nanos: impl TryInto<u32>) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nanos.try_into().unwrap_or(0)));
    match u64::try_from(secs) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos,
    }
}
