//! Uploads: the content goes to a new temp file next to the destination and is renamed over it only when
//! complete, so a failed or abandoned upload leaves nothing behind.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::confined::open_dir;
use crate::create::{Attrs, DEFAULT_FILE_MODE, make_dirs};
use crate::entry::{EntryStat, entry_stat, lstat_at};
use crate::error::VolumeError;
use crate::ops::CreateOptions;
use crate::path::VolumePath;
use crate::store::VolumeStore;
use crate::tree;

/// Temp files are `.soulbox-upload-<pid>-<n>`: unique within this process, and `O_EXCL` settles the rest.
const TEMP_PREFIX: &str = ".soulbox-upload-";
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// An upload in progress. Write the content with [`Upload::write_chunk`] (or [`Upload::copy_from`]), then
/// [`Upload::finish`]. Dropping it unfinished (or after an error) removes the temp file. All calls block on
/// the filesystem: async callers run them on a blocking thread (`Upload` is `Send`).
#[derive(Debug)]
pub struct Upload {
    volume_id: String,
    volume: OwnedFd,
    parent: OwnedFd,
    temp_name: String,
    name: String,
    path: VolumePath,
    file: File,
    attrs: Attrs,
    force: bool,
    limit: Option<u64>,
    /// Bytes this upload may write: the limit minus what the volume held at the start (less the file it
    /// replaces).
    budget: Option<u64>,
    written: u64,
    failed: bool,
    finished: bool,
}

impl VolumeStore {
    /// Starts an upload to `path`. Without `options.force` the parent must exist ([`VolumeError::NotFound`])
    /// and `path` must not ([`VolumeError::AlreadyExists`]); with it missing parents are made and an existing
    /// file or symlink is replaced (a directory never is). `size_limit` is this volume's byte limit, `None`
    /// for the store's default ([`VolumeStore::with_size_limit`]).
    pub fn write_file(
        &self,
        id: &str,
        path: &str,
        options: CreateOptions,
        size_limit: Option<u64>,
    ) -> Result<Upload, VolumeError> {
        let path = VolumePath::parse(path)?;
        let attrs = self.attrs(options, DEFAULT_FILE_MODE)?;
        let Some((parent_path, name)) = path.split_last() else {
            return Err(VolumeError::InvalidPath { path: path.to_string(), reason: "the volume root is a directory" });
        };
        let volume = self.volume(id)?;
        let parent = if options.force {
            make_dirs(volume.as_fd(), &parent_path, attrs)?
        } else {
            open_dir(volume.as_fd(), &parent_path)?
        };
        let replaced = match lstat_at(&parent, name) {
            Ok(_) if !options.force => return Err(VolumeError::AlreadyExists(path.to_string())),
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => return Err(VolumeError::AlreadyExists(path.to_string())),
                FileType::RegularFile => u64::try_from(stat.st_size).unwrap_or(0),
                _ => 0,
            },
            Err(Errno::NOENT) => 0,
            Err(e) => return Err(VolumeError::io("stat", path.to_string(), e)),
        };
        // A volume with storage of its own is bounded by it (a full one fails writes with `VolumeFull`): no walk.
        let limit = if self.bounded_size(id).is_some() { None } else { size_limit.or(self.size_limit()) };
        let budget = match limit {
            None => None,
            Some(limit) => {
                let held = tree::usage(&volume).map_err(|e| VolumeError::io("measure volume", id, e))?;
                let others = held.saturating_sub(replaced);
                if others > limit {
                    return Err(VolumeError::QuotaExceeded { volume: id.to_owned(), limit, needed: others });
                }
                Some(limit - others)
            }
        };
        let (temp_name, file) =
            create_temp(parent.as_fd()).map_err(|e| VolumeError::io("create", path.to_string(), e))?;
        Ok(Upload {
            volume_id: id.to_owned(),
            volume,
            parent,
            temp_name,
            name: name.to_owned(),
            path,
            file,
            attrs,
            force: options.force,
            limit,
            budget,
            written: 0,
            failed: false,
            finished: false,
        })
    }
}

fn create_temp(dir: rustix::fd::BorrowedFd<'_>) -> rustix::io::Result<(String, File)> {
    loop {
        let name = format!("{TEMP_PREFIX}{}-{}", std::process::id(), NEXT_TEMP.fetch_add(1, Ordering::Relaxed));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Upload {
    /// Appends `bytes`. Past the volume's limit it fails with [`VolumeError::QuotaExceeded`], writes nothing,
    /// and the upload can only be dropped.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), VolumeError> {
        if self.failed {
            return Err(self.io_error("write", std::io::Error::other("an earlier write of this upload failed")));
        }
        let after = self.written.saturating_add(bytes.len() as u64);
        if let (Some(budget), Some(limit)) = (self.budget, self.limit)
            && after > budget
        {
            self.failed = true;
            let needed = limit - budget + after;
            return Err(VolumeError::QuotaExceeded { volume: self.volume_id.clone(), limit, needed });
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.failed = true;
            return Err(self.io_error("write", e));
        }
        self.written = after;
        Ok(())
    }

    /// Copies everything `reader` gives (a reader error fails the upload).
    pub fn copy_from(&mut self, mut reader: impl Read) -> Result<u64, VolumeError> {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed = true;
                    return Err(self.io_error("read upload", e));
                }
            };
            self.write_chunk(&buffer[..n])?;
            total += n as u64;
        }
    }

    /// The bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs the content, gives it its owner and mode, checks the limit once more against the volume as it is
    /// now (other writers may have added to it) and renames it into place. Returns the new file's stat.
    pub fn finish(mut self) -> Result<EntryStat, VolumeError> {
        if self.failed {
            return Err(self.io_error("finish", std::io::Error::other("an earlier write of this upload failed")));
        }
        let (uid, gid) = (rustix::fs::Uid::from_raw(self.attrs.uid), rustix::fs::Gid::from_raw(self.attrs.gid));
        let prepared = rustix::fs::fsync(&self.file)
            .and_then(|()| rustix::fs::fchown(&self.file, Some(uid), Some(gid)))
            .and_then(|()| rustix::fs::fchmod(&self.file, Mode::from_raw_mode(self.attrs.mode)));
        prepared.map_err(|e| self.io_error("write", e.into()))?;
        if let Some(limit) = self.limit {
            // the walk counts this upload's temp file too
            let held = tree::usage(&self.volume).map_err(|e| self.io_error("measure volume", e.into()))?;
            let replaced = match lstat_at(&self.parent, self.name.as_str()) {
                Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
                    u64::try_from(stat.st_size).unwrap_or(0)
                }
                _ => 0,
            };
            let needed = held.saturating_sub(replaced);
            if needed > limit {
                return Err(VolumeError::QuotaExceeded { volume: self.volume_id.clone(), limit, needed });
            }
        }
        let flags = if self.force { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
        let renamed =
            rustix::fs::renameat_with(&self.parent, self.temp_name.as_str(), &self.parent, self.name.as_str(), flags);
        match renamed {
            Ok(()) => self.finished = true,
            Err(Errno::EXIST | Errno::ISDIR | Errno::NOTEMPTY) => {
                return Err(VolumeError::AlreadyExists(self.path.to_string()));
            }
            Err(e) => return Err(self.io_error("rename", e.into())),
        }
        // the rename is durable once the directory is synced; a failure here is reported but the file stays
        let _ = rustix::fs::fsync(&self.parent);
        entry_stat(&self.file, &self.path)
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> VolumeError {
        VolumeError::from_io(op, self.path.to_string(), source)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished {
            let _ = rustix::fs::unlinkat(&self.parent, self.temp_name.as_str(), AtFlags::empty());
        }
    }
}
