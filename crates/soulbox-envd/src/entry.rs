//! `EntryInfo` exactly as E2B envd reports it (`packages/shared/pkg/filesystem/entry.go`).

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use soulbox_protocol::connect::RpcError;
use soulbox_protocol::filesystem::{EntryInfo, FileType};

use crate::users::Accounts;

/// Extended attributes in this namespace are the file's SDK metadata (`X-Metadata-<key>` on upload).
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

// `st_mode` type and special bits (POSIX values; identical on every Linux architecture).
const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;

/// The text Go's `os.FileMode.String()` gives for a file with this `st_mode`, e.g. `-rw-r--r--`,
/// `drwxr-xr-x`, `Lrwxrwxrwx`, `dtrwxrwxrwt`-style specials as Go spells them (`dtrwxrwxrwx` for /tmp,
/// `urwxr-xr-x` for a setuid binary, `Dcrw-rw-rw-` for /dev/null).
pub fn go_mode_string(st_mode: u32) -> String {
    // Go's FileMode type letters, most significant bit first: "dalTLDpSugct?". Only the ones a Unix
    // `st_mode` can produce are reachable; their order is Go's, which decides the output order.
    let kind = st_mode & S_IFMT;
    let flags = [
        ('d', kind == S_IFDIR),
        ('L', kind == S_IFLNK),
        ('D', kind == S_IFBLK || kind == S_IFCHR),
        ('p', kind == S_IFIFO),
        ('S', kind == S_IFSOCK),
        ('u', st_mode & S_ISUID != 0),
        ('g', st_mode & S_ISGID != 0),
        ('c', kind == S_IFCHR),
        ('t', st_mode & S_ISVTX != 0),
    ];
    let mut out = String::with_capacity(12);
    out.extend(flags.iter().filter(|(_, set)| *set).map(|(letter, _)| *letter));
    if out.is_empty() {
        out.push('-');
    }
    for (i, letter) in "rwxrwxrwx".chars().enumerate() {
        out.push(if st_mode & (1 << (8 - i)) != 0 { letter } else { '-' });
    }
    out
}

fn file_type_of(st_mode: u32) -> FileType {
    match st_mode & S_IFMT {
        S_IFREG => FileType::File,
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        _ => FileType::Unspecified,
    }
}

/// Builds entries with one snapshot of the account databases (owner/group names), so listing a large
/// directory reads `/etc/passwd` and `/etc/group` once, not per entry.
pub struct EntryBuilder {
    accounts: Accounts,
}

impl EntryBuilder {
    pub fn new() -> EntryBuilder {
        EntryBuilder { accounts: Accounts::load() }
    }

    #[cfg(test)]
    pub fn with_accounts(accounts: Accounts) -> EntryBuilder {
        EntryBuilder { accounts }
    }

    /// `lstat`s `path` and describes it. `path` is reported as given (callers pass the resolved absolute
    /// path, or `<requested dir>/<rel>` for listings).
    pub fn entry(&self, path: &Path) -> io::Result<EntryInfo> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(self.entry_from_metadata(path, &meta))
    }

    /// Describes `path` from its `lstat` result.
    pub fn entry_from_metadata(&self, path: &Path, meta: &Metadata) -> EntryInfo {
        let st_mode = meta.mode();
        let is_symlink = st_mode & S_IFMT == S_IFLNK;
        let (file_type, mode, symlink_target) = if is_symlink {
            let (file_type, mode, target) = symlink_target_of(path);
            (file_type, mode, Some(target))
        } else {
            (file_type_of(st_mode), st_mode & 0o777, None)
        };
        EntryInfo {
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".to_owned()),
            r#type: file_type as i32,
            path: path.to_string_lossy().into_owned(),
            size: meta.size() as i64,
            mode,
            permissions: go_mode_string(st_mode),
            owner: self.accounts.user_name(meta.uid()),
            group: self.accounts.group_name(meta.gid()),
            modified_time: Some(soulbox_protocol::timestamp::Timestamp::new(meta.mtime(), meta.mtime_nsec() as i32)),
            symlink_target,
            metadata: read_metadata(path),
            is_symlink,
        }
    }
}

/// Type, permission bits and fully resolved path of a symlink's final target. Like envd, a dangling (or
/// cyclic) link reports itself as its target and has no type or mode.
fn symlink_target_of(link: &Path) -> (FileType, u32, String) {
    match std::fs::canonicalize(link) {
        Ok(target) => match std::fs::metadata(&target) {
            Ok(meta) => (file_type_of(meta.mode()), meta.mode() & 0o777, target.to_string_lossy().into_owned()),
            Err(_) => (FileType::Unspecified, 0, target.to_string_lossy().into_owned()),
        },
        Err(_) => (FileType::Unspecified, 0, link.to_string_lossy().into_owned()),
    }
}

/// Maps an I/O error from describing `path` to the RPC error envd gives.
pub fn entry_error(path: &Path, error: &io::Error) -> RpcError {
    if error.kind() == io::ErrorKind::NotFound {
        RpcError::not_found(format!("file not found: {}", path.display()))
    } else {
        RpcError::internal(format!("error getting file info for {}: {error}", path.display()))
    }
}

/// The `user.e2b.*` extended attributes of `path` (not following symlinks), prefix stripped. A filesystem
/// without xattr support, or any read failure, yields no metadata: metadata is best effort, never an error.
pub fn read_metadata(path: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(names) = list_xattr_names(path) else {
        return out;
    };
    for name in names.split(|b| *b == 0).filter(|n| n.starts_with(METADATA_XATTR_PREFIX.as_bytes())) {
        let key = &name[METADATA_XATTR_PREFIX.len()..];
        if key.is_empty() {
            continue;
        }
        let Ok(name_str) = std::str::from_utf8(name) else { continue };
        if let Some(value) = get_xattr(path, name_str) {
            out.insert(String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(&value).into_owned());
        }
    }
    out
}

/// Upper bound for one xattr list or value (the kernel's own limit is 64 KiB).
const XATTR_MAX: usize = 64 * 1024;

fn list_xattr_names(path: &Path) -> Option<Vec<u8>> {
    let c_path = path.as_os_str().as_bytes();
    read_sized(|| rustix::fs::llistxattr_query(c_path), |buf| rustix::fs::llistxattr(c_path, buf))
        .filter(|names| !names.is_empty())
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = path.as_os_str().as_bytes();
    read_sized(|| rustix::fs::lgetxattr_query(c_path, name), |buf| rustix::fs::lgetxattr(c_path, name, buf))
}

/// Ask for a size, then read that much. The list or value can change between the two (ERANGE); retry a
/// couple of times.
fn read_sized(
    size: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> Option<Vec<u8>> {
    for _ in 0..3 {
        let mut buf = vec![0u8; size().ok()?.min(XATTR_MAX)];
        match read(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn go_mode_strings() {
        assert_eq!(go_mode_string(S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(go_mode_string(S_IFREG), "----------");
        assert_eq!(go_mode_string(S_IFREG | 0o200), "--w-------");
        assert_eq!(go_mode_string(S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(go_mode_string(S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(S_IFDIR | S_ISVTX | 0o777), "dtrwxrwxrwx");
        assert_eq!(go_mode_string(S_IFREG | S_ISUID | 0o755), "urwxr-xr-x");
        assert_eq!(go_mode_string(S_IFREG | S_ISUID | S_ISGID | 0o755), "ugrwxr-xr-x");
        assert_eq!(go_mode_string(S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(go_mode_string(S_IFBLK | 0o660), "Drw-rw----");
        assert_eq!(go_mode_string(S_IFIFO | 0o644), "prw-r--r--");
        assert_eq!(go_mode_string(S_IFSOCK | 0o755), "Srwxr-xr-x");
    }

    fn builder() -> EntryBuilder {
        EntryBuilder::with_accounts(Accounts::parse("root:x:0:0:root:/root:/bin/bash\n", "root:x:0:\n"))
    }

    #[test]
    fn regular_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"abcd").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = builder().entry(&file).unwrap();
        assert_eq!(e.name, "a.txt");
        assert_eq!(e.path, file.to_str().unwrap());
        assert_eq!(e.r#type, FileType::File as i32);
        assert_eq!(e.size, 4);
        assert_eq!(e.mode, 0o644);
        assert_eq!(e.permissions, "-rw-r--r--");
        assert!(!e.is_symlink);
        assert_eq!(e.symlink_target, None);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(e.owner, Accounts::parse("root:x:0:0:root:/root:/bin/bash\n", "").user_name(meta.uid()));
        let ts = e.modified_time.unwrap();
        assert_eq!((ts.seconds, ts.nanos as i64), (meta.mtime(), meta.mtime_nsec()));

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = builder().entry(&sub).unwrap();
        assert_eq!(e.r#type, FileType::Directory as i32);
        assert_eq!((e.mode, e.permissions.as_str()), (0o755, "drwxr-xr-x"));
        assert!(e.size > 0);
    }

    #[test]
    fn symlinks_report_target_type_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let file = root.join("target.txt");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = root.join("link");
        symlink("target.txt", &link).unwrap();
        let chain = root.join("chain");
        symlink(&link, &chain).unwrap();
        for l in [&link, &chain] {
            let e = builder().entry(l).unwrap();
            assert!(e.is_symlink);
            assert_eq!(e.r#type, FileType::File as i32);
            assert_eq!(e.mode, 0o600);
            assert_eq!(e.permissions, "Lrwxrwxrwx");
            assert_eq!(e.symlink_target.as_deref(), file.to_str());
            assert_eq!(e.path, l.to_str().unwrap());
        }

        let dlink = root.join("dlink");
        symlink(&root, &dlink).unwrap();
        assert_eq!(builder().entry(&dlink).unwrap().r#type, FileType::Directory as i32);

        let dangling = root.join("dangling");
        symlink("/nonexistent/nowhere", &dangling).unwrap();
        let e = builder().entry(&dangling).unwrap();
        assert!(e.is_symlink);
        assert_eq!(e.r#type, FileType::Unspecified as i32);
        assert_eq!(e.mode, 0);
        assert_eq!(e.symlink_target.as_deref(), dangling.to_str());
    }

    #[test]
    fn missing_is_not_found() {
        let err = builder().entry(Path::new("/definitely/not/here")).unwrap_err();
        assert_eq!(entry_error(Path::new("/x"), &err).code, soulbox_protocol::connect::Code::NotFound);
    }

    #[test]
    fn metadata_from_user_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.txt");
        std::fs::write(&file, b"").unwrap();
        let p = file.as_os_str().as_bytes();
        if rustix::fs::lsetxattr(p, "user.e2b.owner", b"alice", rustix::fs::XattrFlags::empty()).is_err() {
            eprintln!("skipping: the temp filesystem does not support user xattrs");
            return;
        }
        rustix::fs::lsetxattr(p, "user.other", b"ignored", rustix::fs::XattrFlags::empty()).unwrap();
        let e = builder().entry(&file).unwrap();
        assert_eq!(e.metadata.len(), 1);
        assert_eq!(e.metadata["owner"], "alice");
    }
}
