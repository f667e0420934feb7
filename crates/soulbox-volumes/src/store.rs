//! The store root and the volume directories in it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::backing::VolumeBacking;
use crate::confined::{chmod_fd, chown_fd};
use crate::error::VolumeError;
use crate::path::check_volume_id;
use crate::tree;

/// The mode of a volume's root directory.
pub const VOLUME_ROOT_MODE: u32 = 0o755;
/// The owner of a volume's root and of entries the content API makes without an explicit owner: `user` of
/// the base template, the id E2B's sandbox user has.
pub const DEFAULT_UID: u32 = 1000;
pub const DEFAULT_GID: u32 = 1000;

/// The volumes of one host: `root/<volume id>/`, each a directory that sandboxes bind-mount.
#[derive(Debug)]
pub struct VolumeStore {
    root: PathBuf,
    root_fd: OwnedFd,
    size_limit: Option<u64>,
    owner: (u32, u32),
    backing: Option<std::sync::Arc<dyn VolumeBacking>>,
}

impl VolumeStore {
    /// Opens the store at `root`, creating it (mode 0700, owned by this process) when missing. No size limit
    /// and the owner [`DEFAULT_UID`]:[`DEFAULT_GID`] until set with the `with_*` methods.
    pub fn open(root: PathBuf) -> Result<Self, VolumeError> {
        let shown = root.display().to_string();
        let io = |op, e: std::io::Error| VolumeError::Io { op, path: shown.clone(), source: e };
        if !root.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&root).map_err(|e| io("create", e))?;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod", e))?;
        }
        let root_fd = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io("open", e.into()))?;
        Ok(VolumeStore { root, root_fd, size_limit: None, owner: (DEFAULT_UID, DEFAULT_GID), backing: None })
    }

    /// The byte limit of each volume's content (see [`VolumeStore::usage`]); `None` for no limit.
    pub fn with_size_limit(mut self, limit: Option<u64>) -> Self {
        self.size_limit = limit;
        self
    }

    /// Storage of their own for new volumes (see [`VolumeBacking`]); without it volumes are plain directories.
    pub fn with_backing(mut self, backing: Option<std::sync::Arc<dyn VolumeBacking>>) -> Self {
        self.backing = backing;
        self
    }

    /// The owner of new volume roots and the default owner of entries the content API makes.
    pub fn with_default_owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner = (uid, gid);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn size_limit(&self) -> Option<u64> {
        self.size_limit
    }

    /// The size of volume `id`'s own storage when it bounds every write (see [`VolumeBacking::size`]).
    pub(crate) fn bounded_size(&self, id: &str) -> Option<u64> {
        self.backing.as_ref().and_then(|b| b.size(&self.root, id))
    }

    pub(crate) fn default_owner(&self) -> (u32, u32) {
        self.owner
    }

    /// Creates the empty volume `id` (root mode [`VOLUME_ROOT_MODE`], the default owner) with the store's size
    /// limit and returns its dir.
    pub fn create(&self, id: &str) -> Result<PathBuf, VolumeError> {
        self.create_sized(id, self.size_limit)
    }

    /// Like [`VolumeStore::create`], with storage of `size_bytes` when the store has a backing.
    pub fn create_sized(&self, id: &str, size_bytes: Option<u64>) -> Result<PathBuf, VolumeError> {
        check_volume_id(id)?;
        match rustix::fs::mkdirat(&self.root_fd, id, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(VolumeError::VolumeExists(id.to_owned())),
            Err(e) => return Err(VolumeError::io("create volume", id, e)),
        }
        let undo = |backed: bool| {
            if backed && let Some(backing) = &self.backing {
                let _ = backing.delete(&self.root, id);
            }
            let _ = rustix::fs::unlinkat(&self.root_fd, id, rustix::fs::AtFlags::REMOVEDIR);
        };
        if let Some(backing) = &self.backing
            && let Err(e) = backing.create(&self.root, id, size_bytes)
        {
            undo(false);
            return Err(VolumeError::Io { op: "create volume storage", path: id.to_owned(), source: e });
        }
        let finish = || -> rustix::io::Result<()> {
            let dir = crate::confined::open_child(
                self.root_fd.as_fd(),
                id,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            )?;
            chown_fd(dir.as_fd(), Some(self.owner.0), Some(self.owner.1))?;
            chmod_fd(dir.as_fd(), VOLUME_ROOT_MODE)
        };
        if let Err(e) = finish() {
            undo(true);
            return Err(VolumeError::io("create volume", id, e));
        }
        Ok(self.root.join(id))
    }

    /// Removes the volume `id` and everything in it (symlinks inside are removed, never followed).
    pub fn delete(&self, id: &str) -> Result<(), VolumeError> {
        check_volume_id(id)?;
        match rustix::fs::statat(&self.root_fd, id, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(VolumeError::VolumeNotFound(id.to_owned())),
            Err(e) => return Err(VolumeError::io("delete volume", id, e)),
        }
        if let Some(backing) = &self.backing {
            // its storage first: what is left is the (now empty) mount point
            backing.delete(&self.root, id).map_err(|e| VolumeError::Io {
                op: "delete volume storage",
                path: id.to_owned(),
                source: e,
            })?;
        }
        tree::remove_entry(self.root_fd.as_fd(), id).map_err(|e| VolumeError::io("delete volume", id, e))
    }

    /// Makes sure volume `id`'s storage is mounted (see [`VolumeBacking::attach`]); every content operation
    /// does this first.
    pub fn attach(&self, id: &str) -> Result<(), VolumeError> {
        check_volume_id(id)?;
        match &self.backing {
            Some(backing) => backing.attach(&self.root, id).map_err(|e| VolumeError::Io {
                op: "attach volume storage",
                path: id.to_owned(),
                source: e,
            }),
            None => Ok(()),
        }
    }

    /// The host directory of volume `id`, to bind-mount into sandboxes (whether it exists is not checked).
    pub fn dir(&self, id: &str) -> Result<PathBuf, VolumeError> {
        check_volume_id(id)?;
        Ok(self.root.join(id))
    }

    pub fn exists(&self, id: &str) -> Result<bool, VolumeError> {
        check_volume_id(id)?;
        match rustix::fs::statat(&self.root_fd, id, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(VolumeError::io("stat volume", id, e)),
        }
    }

    /// The bytes volume `id` holds: the sum of its regular files' sizes, walked without following symlinks
    /// (a file with several hard links counts once per link).
    pub fn usage(&self, id: &str) -> Result<u64, VolumeError> {
        let volume = self.volume(id)?;
        tree::usage(&volume).map_err(|e| VolumeError::io("measure volume", id, e))
    }

    /// The directory fd of volume `id`, the root every content operation resolves in.
    pub(crate) fn volume(&self, id: &str) -> Result<OwnedFd, VolumeError> {
        check_volume_id(id)?;
        if self.backing.is_some() && self.exists(id)? {
            self.attach(id)?;
        }
        crate::confined::open_child(self.root_fd.as_fd(), id, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            .map_err(|e| match e {
                Errno::NOENT | Errno::NOTDIR | Errno::LOOP => VolumeError::VolumeNotFound(id.to_owned()),
                e => VolumeError::io("open volume", id, e),
            })
    }
}
