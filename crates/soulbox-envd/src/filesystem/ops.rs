//! The blocking filesystem work behind the RPCs: directory creation with ownership, recursive listing and
//! removal. Everything here runs on the blocking pool (see `mod.rs`), never on a runtime worker.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use soulbox_protocol::connect::RpcError;
use soulbox_protocol::filesystem::EntryInfo;

use crate::entry::EntryBuilder;

/// Why [`ensure_dirs`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EnsureDirsError {
    #[error("path is not a directory: {0}")]
    NotADirectory(PathBuf),
    #[error("could not create directory {0}: {1}")]
    Io(PathBuf, io::Error),
}

impl From<EnsureDirsError> for RpcError {
    fn from(e: EnsureDirsError) -> RpcError {
        match e {
            EnsureDirsError::NotADirectory(_) => RpcError::invalid_argument(e.to_string()),
            EnsureDirsError::Io(..) => RpcError::internal(e.to_string()),
        }
    }
}

/// Creates `dir` and its missing ancestors (mode 0755 under the umask), giving each directory it creates to
/// `uid:gid` so files the SDK creates end up owned by the calling user, like envd's `EnsureDirs`. Existing
/// directories (or symlinks to directories) are left alone. Returns whether `dir` itself was created.
pub fn ensure_dirs(dir: &Path, uid: u32, gid: u32) -> Result<bool, EnsureDirsError> {
    let mut created_last = false;
    let mut current = PathBuf::from("/");
    for component in dir.components().skip_while(|c| matches!(c, std::path::Component::RootDir)) {
        current.push(component);
        created_last = false;
        match std::fs::metadata(&current) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return Err(EnsureDirsError::NotADirectory(current)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(EnsureDirsError::Io(current, e)),
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&current) {
            Ok(()) => {
                created_last = true;
                std::os::unix::fs::chown(&current, Some(uid), Some(gid))
                    .map_err(|e| EnsureDirsError::Io(current.clone(), e))?;
            }
            // Someone else created it in between: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => {}
            Err(e) => return Err(EnsureDirsError::Io(current, e)),
        }
    }
    Ok(created_last)
}

/// Lists `resolved` (a directory) down to `depth` levels, reporting each entry as `<requested>/<relative
/// path>` so symlinked directories keep the caller's path. Like Go's `filepath.WalkDir`: entries sorted by
/// name, each subdirectory's contents right after it, symlinks inside the tree not followed. Entries that
/// vanish while walking are skipped.
pub fn walk_dir(
    builder: &EntryBuilder,
    requested: &Path,
    resolved: &Path,
    depth: u32,
) -> Result<Vec<EntryInfo>, RpcError> {
    let mut entries = Vec::new();
    walk_level(builder, requested, resolved, depth, &mut entries)?;
    Ok(entries)
}

fn walk_level(
    builder: &EntryBuilder,
    shown: &Path,
    real: &Path,
    depth: u32,
    out: &mut Vec<EntryInfo>,
) -> Result<(), RpcError> {
    if depth == 0 {
        return Ok(());
    }
    let read = match std::fs::read_dir(real) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RpcError::internal(format!("error reading directory {}: {e}", real.display()))),
    };
    let mut names = Vec::new();
    for item in read {
        match item {
            Ok(item) => names.push(item.file_name()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RpcError::internal(format!("error reading directory {}: {e}", real.display()))),
        }
    }
    names.sort_unstable_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let real_child = real.join(&name);
        let shown_child = shown.join(&name);
        let meta = match std::fs::symlink_metadata(&real_child) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(RpcError::internal(format!("error getting file info for {}: {e}", real_child.display())));
            }
        };
        // Described through the real path (so xattrs and symlink targets are read where the file is) but
        // reported under the caller's path.
        let mut entry = builder.entry_from_metadata(&real_child, &meta);
        entry.path = shown_child.to_string_lossy().into_owned();
        out.push(entry);
        if meta.file_type().is_dir() {
            walk_level(builder, &shown_child, &real_child, depth - 1, out)?;
        }
    }
    Ok(())
}

/// Removes `path` like Go's `os.RemoveAll`: a directory with everything in it, or a file or symlink (never
/// its target); a missing path is not an error.
pub fn remove_all(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = if meta.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `path` is on a network or userspace filesystem, where inotify sees only local changes.
pub fn is_network_mount(path: &Path) -> io::Result<bool> {
    // Magic numbers from include/uapi/linux/magic.h (the same set envd rejects).
    const NFS_SUPER_MAGIC: u64 = 0x6969;
    const CIFS_MAGIC_NUMBER: u64 = 0xFF53_4D42;
    const SMB_SUPER_MAGIC: u64 = 0x517B;
    const SMB2_MAGIC_NUMBER: u64 = 0xFE53_4D42;
    const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;
    let st = rustix::fs::statfs(path)?;
    // f_type is signed on some architectures; the magic numbers are 32-bit values.
    let kind = (st.f_type as u64) & 0xFFFF_FFFF;
    Ok(matches!(kind, NFS_SUPER_MAGIC | CIFS_MAGIC_NUMBER | SMB_SUPER_MAGIC | SMB2_MAGIC_NUMBER | FUSE_SUPER_MAGIC))
}

/// `uid` and `gid` of `path` (following symlinks), for tests and diagnostics.
#[cfg(test)]
pub fn owner_ids(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat");
    (meta.uid(), meta.gid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Accounts;

    #[test]
    fn ensure_dirs_creates_parents_with_owner() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert!(ensure_dirs(&deep, 4242, 4343).unwrap());
        assert!(deep.is_dir());
        if rustix::process::geteuid().is_root() {
            assert_eq!(owner_ids(&dir.path().join("a")), (4242, 4343));
            assert_eq!(owner_ids(&deep), (4242, 4343));
        }
        assert!(!ensure_dirs(&deep, 0, 0).unwrap());
        std::fs::write(dir.path().join("f"), b"").unwrap();
        assert!(matches!(ensure_dirs(&dir.path().join("f/x"), 0, 0), Err(EnsureDirsError::NotADirectory(_))));
    }

    #[test]
    fn walk_orders_like_go_and_respects_depth() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner/deeper")).unwrap();
        std::fs::write(root.join("a.txt"), b"").unwrap();
        std::fs::write(root.join("b/inner/x"), b"").unwrap();
        std::fs::write(root.join("c.txt"), b"").unwrap();
        let builder = EntryBuilder::with_accounts(Accounts::default());
        let shown = Path::new("/shown");
        let names = |depth| -> Vec<String> {
            walk_dir(&builder, shown, root, depth).unwrap().into_iter().map(|e| e.path).collect()
        };
        assert_eq!(names(1), ["/shown/a.txt", "/shown/b", "/shown/c.txt"]);
        assert_eq!(names(2), ["/shown/a.txt", "/shown/b", "/shown/b/inner", "/shown/c.txt"]);
        assert_eq!(
            names(3),
            ["/shown/a.txt", "/shown/b", "/shown/b/inner", "/shown/b/inner/deeper", "/shown/b/inner/x", "/shown/c.txt"]
        );
    }

    #[test]
    fn remove_all_handles_missing_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("keep");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("f"), b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        remove_all(&link).unwrap();
        assert!(target.join("f").exists(), "removing a link must not touch its target");
        remove_all(&target).unwrap();
        assert!(!target.exists());
        remove_all(&target).unwrap();
    }
}
