//! Host files a build reads as its base (`rootfs:<path>`, `oci-archive:<path>`), opened safely.
//!
//! A path a *caller* writes (a recipe's `fromImage`, a Dockerfile's `FROM`) may only name something inside one of
//! the directories the server's config lists (`[templates] host_source_dirs`, none by default), and it is opened
//! with `openat2(listed dir, relative path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses `..`,
//! absolute symlinks and relative symlinks that leave the directory *during the open itself*, so there is no
//! window between a check and the open. Every later read goes through the file that open returned
//! ([`OpenedPath::proc_path`] is its `/proc/self/fd/N` magic link, which names that inode, not the path), and
//! the entries of an OCI layout directory are opened beneath it the same way ([`open_beneath`]).
//!
//! A path the administrator wrote in the config (an `image_rewrites` target) is trusted and opened as written.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The config setting that lists where host-path bases may come from (named in every refusal).
pub const SETTING: &str = "[templates] host_source_dirs";

#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("{path} is not inside a directory listed in the server's {SETTING} (host paths a caller names must be)")]
    NotAllowed { path: String },
    #[error("{path} leaves {dir} (through '..' or a symbolic link); {SETTING} only allows what is inside it")]
    Escapes { path: String, dir: String },
    #[error("{path}: neither a regular file nor a directory")]
    NotAFileOrDir { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The directories caller-named host paths must be inside (the config's `host_source_dirs`, as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSourceDirs {
    dirs: Vec<PathBuf>,
}

impl HostSourceDirs {
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> HostSourceDirs {
        HostSourceDirs { dirs: dirs.into_iter().collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Opens `path` (absolute, as the caller wrote it) beneath the listed directory it names.
    pub fn open(&self, path: &Path) -> Result<OpenedPath, HostPathError> {
        let shown = path.display().to_string();
        // `..` is refused by its spelling too, so the error says what is wrong before anything is opened.
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(HostPathError::NotAllowed { path: shown });
        }
        for dir in &self.dirs {
            // The configured spelling or the directory's real path (the config may name a symlink to it).
            let real = std::fs::canonicalize(dir).ok();
            let Some(rel) =
                [Some(dir.as_path()), real.as_deref()].into_iter().flatten().find_map(|d| path.strip_prefix(d).ok())
            else {
                continue;
            };
            let dir_file = open_plain(dir, OFlags::DIRECTORY)?;
            let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
            return match open_beneath(&dir_file, rel) {
                Ok(file) => OpenedPath::new(file, path),
                Err(e) if is_escape(&e) => Err(HostPathError::Escapes { path: shown, dir: dir.display().to_string() }),
                Err(source) => Err(HostPathError::Io { path: shown, source }),
            };
        }
        Err(HostPathError::NotAllowed { path: shown })
    }
}

/// `EXDEV` is how `RESOLVE_BENEATH` reports a path that would leave the directory; `ELOOP` a magic link.
fn is_escape(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP))
}

/// Read-only, close-on-exec, and non-blocking so a FIFO cannot stall the open (its type is refused after).
fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

fn open_plain(path: &Path, extra: OFlags) -> Result<File, HostPathError> {
    rustix::fs::open(path, read_flags() | extra, Mode::empty())
        .map(File::from)
        .map_err(|e| HostPathError::Io { path: path.display().to_string(), source: e.into() })
}

/// Opens `rel` inside the directory `dir` without ever resolving outside it (`..`, absolute symlinks, symlinks
/// that climb out and `/proc` magic links all fail).
pub fn open_beneath(dir: &impl AsFd, rel: &Path) -> std::io::Result<File> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    Ok(File::from(rustix::fs::openat2(dir, rel, read_flags(), Mode::empty(), resolve)?))
}

/// A host file or directory, open: checks and reads use this one open file, never its path again.
#[derive(Debug)]
pub struct OpenedPath {
    file: File,
    shown: PathBuf,
    is_dir: bool,
}

impl OpenedPath {
    fn new(file: File, shown: &Path) -> Result<OpenedPath, HostPathError> {
        let md = file.metadata().map_err(|source| HostPathError::Io { path: shown.display().to_string(), source })?;
        if !md.is_file() && !md.is_dir() {
            return Err(HostPathError::NotAFileOrDir { path: shown.display().to_string() });
        }
        Ok(OpenedPath { file, shown: shown.to_path_buf(), is_dir: md.is_dir() })
    }

    /// A path from the administrator's own config: opened as written (symbolic links followed).
    pub fn open_trusted(path: &Path) -> Result<OpenedPath, HostPathError> {
        OpenedPath::new(open_plain(path, OFlags::empty())?, path)
    }

    pub fn is_dir(&self) -> bool {
        self.is_dir
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path the caller or the config named (for messages only).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `/proc/self/fd/<n>`: opening it reopens this very file, whatever happens to the path meanwhile. Valid while
    /// `self` lives.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _root: tempfile::TempDir,
        listed: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let listed = root.path().join("images");
        let outside = root.path().join("secret");
        std::fs::create_dir_all(listed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(listed.join("ok.tar"), b"tar").unwrap();
        std::fs::write(outside.join("key"), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.join("key"), listed.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../secret/key", listed.join("rel-link")).unwrap();
        std::os::unix::fs::symlink("ok.tar", listed.join("inside-link")).unwrap();
        std::os::unix::fs::symlink("../../secret", listed.join("sub/up")).unwrap();
        Fixture { _root: root, listed, outside }
    }

    #[test]
    fn only_what_is_inside_a_listed_dir_opens() {
        let f = fixture();
        let dirs = HostSourceDirs::new([f.listed.clone()]);
        let ok = dirs.open(&f.listed.join("ok.tar")).unwrap();
        assert!(!ok.is_dir());
        assert_eq!(std::fs::read(ok.proc_path()).unwrap(), b"tar");
        assert_eq!(std::fs::read(dirs.open(&f.listed.join("inside-link")).unwrap().proc_path()).unwrap(), b"tar");
        assert!(dirs.open(&f.listed.join("sub")).unwrap().is_dir());
        assert!(dirs.open(&f.listed).unwrap().is_dir(), "the listed directory itself (an OCI layout)");

        for escape in ["abs-link", "rel-link", "sub/up/key"] {
            let err = dirs.open(&f.listed.join(escape)).unwrap_err();
            assert!(matches!(err, HostPathError::Escapes { .. }), "{escape}: {err}");
        }
        for refused in [
            f.outside.join("key"),
            f.listed.join("../secret/key"),
            PathBuf::from("/etc/passwd"),
            PathBuf::from("relative.tar"),
        ] {
            let err = dirs.open(&refused).unwrap_err();
            assert!(matches!(err, HostPathError::NotAllowed { .. }), "{}: {err}", refused.display());
            assert!(err.to_string().contains(SETTING), "{err}");
        }
        assert!(matches!(
            HostSourceDirs::default().open(&f.listed.join("ok.tar")),
            Err(HostPathError::NotAllowed { .. })
        ));
    }

    #[test]
    fn a_listed_symlinked_dir_matches_by_either_spelling_and_fifos_are_refused() {
        let f = fixture();
        let alias = f.listed.parent().unwrap().join("alias");
        std::os::unix::fs::symlink(&f.listed, &alias).unwrap();
        let dirs = HostSourceDirs::new([alias.clone()]);
        assert!(dirs.open(&alias.join("ok.tar")).is_ok());
        assert!(dirs.open(&f.listed.join("ok.tar")).is_ok());
        let fifo = f.listed.join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        assert!(matches!(dirs.open(&fifo), Err(HostPathError::NotAFileOrDir { .. })));
    }

    #[test]
    fn entries_of_a_directory_open_beneath_it_only() {
        let f = fixture();
        let dir = OpenedPath::open_trusted(&f.listed).unwrap();
        assert_eq!(std::fs::read(dir.proc_path().join("ok.tar")).unwrap(), b"tar");
        assert!(open_beneath(dir.file(), Path::new("ok.tar")).is_ok());
        for escape in ["abs-link", "rel-link", "../secret/key", "/etc/passwd"] {
            assert!(open_beneath(dir.file(), Path::new(escape)).is_err(), "{escape}");
        }
    }
}
