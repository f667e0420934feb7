//! The content API's operations other than upload: stat, list, metadata change, delete, mkdir, download.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{Dir, OFlags};
use rustix::io::Errno;

use crate::confined::{chmod_fd, chown_fd, open_child, open_dir, open_entry, reopen_for_reading};
use crate::create::{Attrs, DEFAULT_DIR_MODE, check_mode, check_owner, make_dirs, new_dir};
use crate::entry::{EntryStat, EntryType, entry_stat, entry_type};
use crate::error::VolumeError;
use crate::path::VolumePath;
use crate::store::VolumeStore;
use crate::tree;

/// The deepest listing [`VolumeStore::list`] makes (E2B's limit).
pub const MAX_LIST_DEPTH: u32 = 10;

/// Owner and mode of an entry to make (`mkdir`, upload). Unset ids are the store's default owner, an unset
/// mode is E2B's default (0777 for directories, 0666 for files). `force`: for `mkdir`, make missing parents
/// and accept an existing directory; for uploads, make missing parents and replace an existing entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub force: bool,
}

/// A change of owner and/or mode (E2B's PATCH of a path); unset fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataChange {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl VolumeStore {
    /// The stat of `path` itself (a symlink is reported as a symlink, with its target).
    pub fn stat(&self, id: &str, path: &str) -> Result<EntryStat, VolumeError> {
        let path = VolumePath::parse(path)?;
        let volume = self.volume(id)?;
        let entry = open_entry(volume.as_fd(), &path)?;
        entry_stat(&entry, &path)
    }

    /// The entries under the directory `path`, down to `depth` levels (1: its children only), in pre-order,
    /// names sorted. `path` may be a symlink to a directory inside the volume; symlinks below it are listed,
    /// never entered.
    pub fn list(&self, id: &str, path: &str, depth: u32) -> Result<Vec<EntryStat>, VolumeError> {
        if !(1..=MAX_LIST_DEPTH).contains(&depth) {
            return Err(VolumeError::InvalidDepth(depth));
        }
        let path = VolumePath::parse(path)?;
        let volume = self.volume(id)?;
        let dir = open_dir(volume.as_fd(), &path)?;
        let mut entries = Vec::new();
        list_into(dir.as_fd(), &path, depth, &mut entries)?;
        Ok(entries)
    }

    /// Changes the owner and/or mode of `path` itself: the owner of a symlink is its own (`lchown`); a mode
    /// change of a symlink is refused with [`VolumeError::IsSymlink`] (Linux symlinks have no mode of their
    /// own) and nothing is changed.
    pub fn set_metadata(&self, id: &str, path: &str, change: MetadataChange) -> Result<EntryStat, VolumeError> {
        let path = VolumePath::parse(path)?;
        let mode = change.mode.map(check_mode).transpose()?;
        let uid = change.uid.map(check_owner).transpose()?;
        let gid = change.gid.map(check_owner).transpose()?;
        let volume = self.volume(id)?;
        let entry = open_entry(volume.as_fd(), &path)?;
        let stat = rustix::fs::fstat(&entry).map_err(|e| VolumeError::io("stat", path.to_string(), e))?;
        if mode.is_some() && entry_type(&stat) == EntryType::Symlink {
            return Err(VolumeError::IsSymlink(path.to_string()));
        }
        // chown first: it clears setuid/setgid bits that the mode may set.
        if uid.is_some() || gid.is_some() {
            chown_fd(entry.as_fd(), uid, gid).map_err(|e| VolumeError::io("chown", path.to_string(), e))?;
        }
        if let Some(mode) = mode {
            chmod_fd(entry.as_fd(), mode).map_err(|e| VolumeError::io("chmod", path.to_string(), e))?;
        }
        entry_stat(&entry, &path)
    }

    /// Deletes `path`: a directory with everything in it, a symlink as itself (never its target). The volume
    /// root is refused with [`VolumeError::CannotDeleteRoot`].
    pub fn remove(&self, id: &str, path: &str) -> Result<(), VolumeError> {
        let path = VolumePath::parse(path)?;
        let Some((parent, name)) = path.split_last() else {
            return Err(VolumeError::CannotDeleteRoot);
        };
        let volume = self.volume(id)?;
        let parent = open_dir(volume.as_fd(), &parent)?;
        tree::remove_entry(parent.as_fd(), name).map_err(|e| match e {
            Errno::NOENT => VolumeError::NotFound(path.to_string()),
            e => VolumeError::io("delete", path.to_string(), e),
        })
    }

    /// Makes the directory `path`. Without `force` its parent must exist and `path` must not; with `force`
    /// missing parents are made (same owner, mode 0777) and an existing directory is returned unchanged.
    pub fn make_dir(&self, id: &str, path: &str, options: CreateOptions) -> Result<EntryStat, VolumeError> {
        let path = VolumePath::parse(path)?;
        let attrs = self.attrs(options, DEFAULT_DIR_MODE)?;
        let volume = self.volume(id)?;
        let Some((parent_path, name)) = path.split_last() else {
            return if options.force { self.stat(id, "/") } else { Err(VolumeError::AlreadyExists(path.to_string())) };
        };
        let parent = if options.force {
            make_dirs(volume.as_fd(), &parent_path, attrs)?
        } else {
            open_dir(volume.as_fd(), &parent_path)?
        };
        match new_dir(parent.as_fd(), name, attrs) {
            Ok(made) => entry_stat(&made, &path),
            Err(Errno::EXIST) => {
                let existing = open_child(parent.as_fd(), name, OFlags::PATH | OFlags::NOFOLLOW)
                    .map_err(|e| VolumeError::io("open", path.to_string(), e))?;
                let stat = entry_stat(&existing, &path)?;
                if options.force && stat.entry_type == EntryType::Directory {
                    Ok(stat)
                } else {
                    Err(VolumeError::AlreadyExists(path.to_string()))
                }
            }
            Err(e) => Err(VolumeError::io("mkdir", path.to_string(), e)),
        }
    }

    /// Opens the regular file `path` for reading and returns it with its size. A symlink is refused
    /// ([`VolumeError::IsSymlink`]), as is anything but a regular file ([`VolumeError::NotAFile`]).
    pub fn read_file(&self, id: &str, path: &str) -> Result<(File, u64), VolumeError> {
        let path = VolumePath::parse(path)?;
        let volume = self.volume(id)?;
        let entry = open_entry(volume.as_fd(), &path)?;
        let stat = entry_stat(&entry, &path)?;
        match stat.entry_type {
            EntryType::File => {}
            EntryType::Symlink => return Err(VolumeError::IsSymlink(path.to_string())),
            _ => return Err(VolumeError::NotAFile(path.to_string())),
        }
        let file = reopen_for_reading(entry.as_fd()).map_err(|e| VolumeError::io("open", path.to_string(), e))?;
        Ok((file, stat.size))
    }

    pub(crate) fn attrs(&self, options: CreateOptions, default_mode: u32) -> Result<Attrs, VolumeError> {
        let (uid, gid) = self.default_owner();
        Ok(Attrs {
            uid: check_owner(options.uid.unwrap_or(uid))?,
            gid: check_owner(options.gid.unwrap_or(gid))?,
            mode: check_mode(options.mode.unwrap_or(default_mode))?,
        })
    }
}

fn list_into(dir: BorrowedFd<'_>, path: &VolumePath, depth: u32, out: &mut Vec<EntryStat>) -> Result<(), VolumeError> {
    let io = |e| VolumeError::io("list", path.to_string(), e);
    let mut names = Vec::new();
    for entry in Dir::read_from(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    for name in names {
        let child = path.join(&name.to_string_lossy());
        let entry = match open_child(dir, &name, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(entry) => entry,
            Err(Errno::NOENT) => continue, // removed meanwhile
            Err(e) => return Err(io(e)),
        };
        let stat = entry_stat(&entry, &child)?;
        let is_dir = stat.entry_type == EntryType::Directory;
        out.push(stat);
        if is_dir && depth > 1 {
            match open_child(dir, &name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW) {
                Ok(sub) => list_into(sub.as_fd(), &child, depth - 1, out)?,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    Ok(())
}
