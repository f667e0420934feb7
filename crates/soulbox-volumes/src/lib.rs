//! Host storage of E2B-style persistent volumes: directories that sandboxes bind-mount, and the file
//! operations of E2B's volume content API (`/volumecontent/{volumeID}/...`) done on the host. No HTTP or JSON
//! here: the server's API layer maps [`EntryStat`] and [`VolumeError`] to E2B's shapes.
//!
//! # Layout
//!
//! - [`VolumeStore::open`]`(root)`: `root` is made mode 0700 (owned by the server, normally root) if missing,
//!   so host users cannot reach volume content through it.
//! - Each volume is `root/<volume id>/`. Ids come from the caller and must be one safe path component:
//!   1 to 64 characters of `[A-Za-z0-9_-]`. A volume's root is mode 0755, owned by the store's default owner
//!   ([`DEFAULT_UID`]:[`DEFAULT_GID`], 1000:1000, `user` of the base template).
//! - Content is stored UNSHIFTED: owners are the ids a process inside a sandbox sees. The runtime bind-mounts
//!   a volume into a sandbox through an idmapped mount into the sandbox's user namespace.
//! - Entries the content API makes without an explicit owner get the default owner (E2B uses its sandbox
//!   user); without an explicit mode, E2B's defaults [`DEFAULT_DIR_MODE`] (0777) and [`DEFAULT_FILE_MODE`]
//!   (0666), set by an explicit chmod (no umask). Parents made by `force` get the same owner and mode 0777.
//!   [`EntryStat::mode`] reports the permission bits (`& 0o777`), as E2B does.
//!
//! # Content operations
//!
//! [`VolumeStore::stat`], [`VolumeStore::list`] (depth 1..=[`MAX_LIST_DEPTH`]), [`VolumeStore::set_metadata`],
//! [`VolumeStore::remove`], [`VolumeStore::make_dir`], [`VolumeStore::read_file`] and
//! [`VolumeStore::write_file`] (an [`Upload`]). Paths are as the API gives them: `/a/b` within the volume,
//! `/` the volume root; they must start with `/`, must not contain NUL, and a `..` component is refused
//! ([`VolumeError::InvalidPath`]), never resolved. Every call blocks on the filesystem: async callers run
//! them on a blocking thread.
//!
//! # Security: confinement against hostile volume content
//!
//! Sandbox code writes to its volumes directly, so it can plant symlinks (`ln -s / escape`,
//! `ln -s /etc/shadow f`) and swap directories for symlinks while an operation runs. This crate never uses a
//! joined host path below a volume root; every step is fd-relative:
//!
//! - intermediate components resolve with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the
//!   volume's directory fd: a symlink (absolute or with `..`) resolves as if the volume were `/`;
//! - the last component is opened `O_PATH | O_NOFOLLOW`, and the operation then acts on that fd: stat is
//!   `lstat` (a symlink reports itself and its target text); chown is `lchown` of that entry; chmod of a
//!   symlink is refused ([`VolumeError::IsSymlink`]), otherwise it goes to the fd's inode through
//!   `/proc/self/fd`; a download of a symlink is refused and anything but a regular file is never opened (the
//!   `O_PATH` fd is reopened, so a fifo or device cannot block or act);
//! - delete removes a symlink itself and walks directories through `O_NOFOLLOW` fds with `unlinkat`;
//! - uploads and mkdir create entries with `O_EXCL` / `mkdirat` in a confined parent fd; an upload goes to a
//!   temp file in the destination's directory and is renamed over it (`RENAME_NOREPLACE` without `force`),
//!   so a symlink at the destination is replaced, never written through.
//!
//! # Size limit
//!
//! With a [`VolumeBacking`] ([`VolumeStore::with_backing`]; the runtime's gives each volume an ext4 image of
//! its size), a volume's storage bounds every writer, sandboxes included: a content-API write into a full
//! volume fails with [`VolumeError::VolumeFull`] and leaves nothing behind, and the store does no accounting
//! of its own. The backing is mounted on the volume's directory when it is made and again on first use
//! ([`VolumeStore::attach`], done by every content operation).
//!
//! A volume without storage of its own (no backing, no size, or made before) is a plain directory: then
//! [`VolumeStore::with_size_limit`] (or a per-volume limit passed to [`VolumeStore::write_file`]) bounds its
//! [`VolumeStore::usage`] — the sum of its regular files' sizes, walked without following symlinks — at
//! content-API uploads only (when the upload starts, on every chunk, and again before the rename). An upload
//! that would pass it fails with [`VolumeError::QuotaExceeded`] and leaves nothing behind; writes from inside
//! sandboxes are not bounded. Each check walks the whole volume.

mod backing;
mod confined;
mod create;
mod entry;
mod error;
mod ops;
mod path;
mod store;
mod tree;
mod upload;

pub use backing::VolumeBacking;
pub use create::{DEFAULT_DIR_MODE, DEFAULT_FILE_MODE};
pub use entry::{EntryStat, EntryType};
pub use error::VolumeError;
pub use ops::{CreateOptions, MAX_LIST_DEPTH, MetadataChange};
pub use store::{DEFAULT_GID, DEFAULT_UID, VOLUME_ROOT_MODE, VolumeStore};
pub use upload::Upload;

#[cfg(test)]
mod tests;
