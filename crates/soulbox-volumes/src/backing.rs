//! Where a volume's bytes live. By default a volume is a plain directory of the store's filesystem: nothing
//! bounds what sandboxes write into it, and the store can only check content-API uploads against the limit.
//! A [`VolumeBacking`] gives each new volume storage of its own, mounted on the volume's directory — the
//! runtime's is one ext4 image per volume, whose size is the limit for every writer, sandboxes included.
//!
//! The store calls the backing around its own steps; the backing never touches the volume's content.

use std::io;
use std::path::Path;

/// Storage mounted on a volume's directory (`root/<id>`). Implementations serialise their own mounts: two
/// stores of one process may share a backing.
pub trait VolumeBacking: Send + Sync + std::fmt::Debug {
    /// Gives the new, empty directory `root/<id>` storage of `size_bytes` and mounts it there; on error nothing
    /// of it is left. `None`: no size was asked for — the backing may leave the volume a plain directory.
    fn create(&self, root: &Path, id: &str, size_bytes: Option<u64>) -> io::Result<()>;

    /// Makes sure the volume's storage is mounted on `root/<id>` (after a reboot, or a restart that unmounted
    /// it). A plain-directory volume (made before, or without a size) needs nothing.
    fn attach(&self, root: &Path, id: &str) -> io::Result<()>;

    /// Unmounts the volume's storage and removes it, leaving `root/<id>` as an empty directory (or as it was,
    /// for a plain-directory volume). Missing storage is not an error.
    fn delete(&self, root: &Path, id: &str) -> io::Result<()>;

    /// The byte size of the volume's storage when it bounds every write (then the store's own usage check of
    /// uploads is not needed); `None` for a plain-directory volume.
    fn size(&self, root: &Path, id: &str) -> Option<u64>;
}
