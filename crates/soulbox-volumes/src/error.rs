use std::io;

/// Everything a volume operation can fail with. The API layer maps the variants to E2B's statuses:
/// 400 for `InvalidVolumeId`, `InvalidPath`, `InvalidDepth`, `InvalidMode`, `InvalidOwner`, `NotADirectory`, `NotAFile`,
/// `IsSymlink` and `CannotDeleteRoot`; 404 for `VolumeNotFound` and `NotFound`; 409 for `VolumeExists` and
/// `AlreadyExists`; `QuotaExceeded` and `VolumeFull` are the caller's choice (E2B has no status for it); `Io` is a 500.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume id {0:?}: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidVolumeId(String),
    #[error("volume {0} not found")]
    VolumeNotFound(String),
    #[error("volume {0} already exists")]
    VolumeExists(String),
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("depth {0} is out of range: it must be 1 to 10")]
    InvalidDepth(u32),
    #[error("mode {0:#o} is not a permission mode (at most 0o7777)")]
    InvalidMode(u32),
    #[error("owner id {0} is not a valid uid/gid")]
    InvalidOwner(u32),
    #[error("path {0} not found")]
    NotFound(String),
    #[error("path {0} already exists")]
    AlreadyExists(String),
    #[error("path {0} is not a directory")]
    NotADirectory(String),
    #[error("path {0} is not a regular file")]
    NotAFile(String),
    #[error("path {0} is a symbolic link")]
    IsSymlink(String),
    #[error("the volume root cannot be deleted")]
    CannotDeleteRoot,
    #[error("volume {volume} would hold {needed} bytes, over its limit of {limit} bytes")]
    QuotaExceeded { volume: String, limit: u64, needed: u64 },
    /// The volume's own storage is full (a backing that bounds every write; see `VolumeBacking`).
    #[error("{op} {path}: the volume is full (its size limit is reached)")]
    VolumeFull { op: &'static str, path: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    pub(crate) fn io(op: &'static str, path: impl Into<String>, errno: rustix::io::Errno) -> Self {
        Self::from_io(op, path, errno.into())
    }

    /// An I/O error, or [`VolumeError::VolumeFull`] when the filesystem said there is no room left.
    pub(crate) fn from_io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        let full = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT].map(|e| Some(e.raw_os_error()));
        if full.contains(&source.raw_os_error()) {
            return VolumeError::VolumeFull { op, path: path.into() };
        }
        VolumeError::Io { op, path: path.into(), source }
    }
}
