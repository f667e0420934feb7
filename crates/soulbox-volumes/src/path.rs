//! The two names a caller gives: a volume id (one directory under the store root) and a path inside a volume.

use crate::error::VolumeError;

const MAX_VOLUME_ID_LEN: usize = 64;

/// Checks that a volume id is one safe path component: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub(crate) fn check_volume_id(id: &str) -> Result<(), VolumeError> {
    let valid = (1..=MAX_VOLUME_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid { Ok(()) } else { Err(VolumeError::InvalidVolumeId(id.to_owned())) }
}

/// A path inside a volume as the content API names it: `/a/b`, relative to the volume root. Parsing keeps
/// only real names: empty and `.` components are dropped, `..` is refused (never resolved), so a path is
/// always a plain walk down from the root. Symlinks met on the way are resolved by the kernel, confined to
/// the volume (`openat2` with `RESOLVE_IN_ROOT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumePath {
    components: Vec<String>,
}

impl VolumePath {
    pub(crate) fn parse(raw: &str) -> Result<Self, VolumeError> {
        let invalid = |reason| VolumeError::InvalidPath { path: raw.to_owned(), reason };
        if raw.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(invalid("it must be absolute within the volume (start with '/')"));
        };
        let mut components = Vec::new();
        for component in rest.split('/') {
            match component {
                "" | "." => {}
                ".." => return Err(invalid("'..' components are not allowed")),
                name => components.push(name.to_owned()),
            }
        }
        Ok(VolumePath { components })
    }

    pub(crate) fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The parent and the last name; `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(VolumePath, &str)> {
        let (name, parent) = self.components.split_last()?;
        Some((VolumePath { components: parent.to_vec() }, name))
    }

    /// The path relative to the volume root, for `openat2` (`.` for the root itself).
    pub(crate) fn relative(&self) -> String {
        if self.is_root() { ".".to_owned() } else { self.components.join("/") }
    }

    pub(crate) fn join(&self, name: &str) -> VolumePath {
        let mut components = self.components.clone();
        components.push(name.to_owned());
        VolumePath { components }
    }

    /// The paths of the root's descendants down to this one: `/a`, `/a/b`, ... (empty for the root).
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = VolumePath> + '_ {
        (1..=self.components.len()).map(|n| VolumePath { components: self.components[..n].to_vec() })
    }

    /// The last name, `/` for the root (what Go's `filepath.Base` gives, as E2B's `name` field does).
    pub(crate) fn name(&self) -> &str {
        self.components.last().map_or("/", String::as_str)
    }
}

impl std::fmt::Display for VolumePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_root() {
            return f.write_str("/");
        }
        for component in &self.components {
            write!(f, "/{component}")?;
        }
        Ok(())
    }
}
