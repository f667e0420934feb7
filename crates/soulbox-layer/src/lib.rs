//! Applies one image layer (a tar stream) to a fresh directory that becomes a runtime layer (an overlayfs
//! lower dir), refusing anything that could write outside that directory or smuggle a device into a sandbox.
//!
//! Rules (TEMPLATES.md "Unpacking"):
//! - entry names are archive-relative: an absolute name or any `..` component is refused;
//! - no entry is written through a symlink: every parent component must be a real directory of this layer
//!   (missing parents are created 0755 root:root), so `etc -> /` followed by `etc/passwd` is refused;
//! - a hardlink's target must be a non-directory entry already in this layer (same name rules);
//! - char and block device nodes are refused; fifos are allowed (they give no access to a host device);
//! - OCI whiteouts become overlayfs ones: `.wh.<name>` → a 0:0 char device `<name>`, `.wh..wh..opq` → the
//!   parent directory gets `trusted.overlay.opaque=y`; other `.wh..wh.*` (aufs metadata) are skipped;
//! - owner, mode, mtime and the `user.*` xattrs are kept as the tar gives them, except privileges: the setuid
//!   and setgid bits of non-directories and `security.capability` (file capabilities) are dropped — an image
//!   from outside must not bring binaries that raise privileges inside the sandbox (a setgid directory, which
//!   only passes its group on, and the sticky bit stay). Layers the template's own build makes (RUN steps, the
//!   Debian bootstrap of `base`, whose sudo and ping need them) do not come through here and keep theirs; a
//!   template that needs a setuid binary from an image sets it again in a RUN step (`chmod u+s`, or installs
//!   the package there). Other xattr namespaces (`trusted.*` could forge overlay metadata) are dropped too.
//!
//! - with an id shift ([`UnpackOptions::id_shift`], a runtime in the shared user namespace mode: its layers are
//!   stored as the sandboxes' host ids see them, without idmapped mounts) every owner is written shifted into the
//!   range: tar id `k < 65536` becomes `host_base + k`, any larger id the range's overflow id (`host_base +
//!   65534`, what a user namespace shows as `nobody`), and missing parents belong to `host_base` (the range's
//!   root). Whiteouts stay 0:0 like the ones overlayfs makes itself (their owner means nothing).
//!
//! The uncompressed stream is hashed on the way (the OCI `diff_id`) so callers can check it against the
//! image config.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod pack;
pub use pack::{PackError, PackStats, pack};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refused layer entry {path:?}: {why}")]
    Refused { path: String, why: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("reading the layer tar: {0}")]
    Tar(io::Error),
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    #[error("zstd: {0}")]
    Zstd(String),
}

fn refused(path: &str, why: impl Into<String>) -> UnpackError {
    UnpackError::Refused { path: path.to_string(), why: why.into() }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.display().to_string(), source }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI / Docker layer media type.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Ok(Compression::None)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
            other => Err(UnpackError::MediaType(other.to_string())),
        }
    }

    /// From the first bytes of a file (a rootfs tarball has no media type).
    pub fn sniff(path: &Path) -> Result<Compression, UnpackError> {
        let mut head = [0u8; 4];
        let mut f = File::open(path).map_err(io_at(path))?;
        let n = f.read(&mut head).map_err(io_at(path))?;
        Ok(match &head[..n] {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
            _ => Compression::None,
        })
    }

    /// A reader of the uncompressed tar.
    pub fn decoder<'a>(self, reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, UnpackError> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => {
                Box::new(ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| UnpackError::Zstd(e.to_string()))?)
            }
        })
    }
}

/// What one unpack did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream (the OCI diff_id).
    pub diff_id: String,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
    pub entries: u64,
    pub file_bytes: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// xattrs outside `user.*`, not applied (including file capabilities).
    pub dropped_xattrs: u64,
    /// Files whose setuid/setgid bits or file capabilities were dropped.
    pub privileges_dropped: u64,
}

/// Ids of one user namespace range (uid/gid 0..65535 inside).
pub const ID_RANGE_SIZE: u32 = 65536;
/// The id a user namespace shows for an unmapped one (`nobody`); ids past the range are stored as it.
pub const OVERFLOW_ID: u32 = 65534;

/// How [`unpack_with`] writes what it unpacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackOptions {
    /// `Some(host_base)`: owners are written shifted into `[host_base, host_base + 65536)` (module docs).
    pub id_shift: Option<u32>,
    /// Keep setuid/setgid bits and file capabilities: for a layer SoulBox itself made and [`pack`]ed on another
    /// node (a snapshot of a sandbox's writable layer, which keeps them where it was made), never for an image.
    pub keep_privileges: bool,
}

impl UnpackOptions {
    /// The host id a tar owner id is written as.
    pub fn host_id(&self, id: u64) -> u32 {
        match self.id_shift {
            None => id as u32,
            Some(base) => base.saturating_add(if id < u64::from(ID_RANGE_SIZE) { id as u32 } else { OVERFLOW_ID }),
        }
    }
}

/// setuid and setgid bits of a regular file, symlink or fifo (a directory's setgid bit only passes its group on).
const SET_ID_BITS: u32 = 0o6000;
/// The xattr holding file capabilities.
const CAPABILITY_XATTR: &str = "security.capability";

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Archive-relative components of an entry name (`./a//b/` → `[a, b]`); refuses absolute names and `..`.
fn components(raw: &[u8]) -> Result<Vec<&OsStr>, UnpackError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    if raw.starts_with(b"/") {
        return Err(refused(&shown, "absolute path (would escape the layer root)"));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refused(&shown, "`..` component (would escape the layer root)")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

fn join(root: &Path, comps: &[&OsStr]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(comps);
    p
}

/// Makes sure every parent of `comps` is a real directory of this layer (never a symlink), creating missing ones
/// (0755, owned by `owner` when given: the root of a shifted layer's range).
fn prepare_parents(root: &Path, comps: &[&OsStr], shown: &str, owner: Option<u32>) -> Result<(), UnpackError> {
    let mut p = root.to_path_buf();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(refused(
                    shown,
                    format!(
                        "written through a symlink ({} is a symlink)",
                        p.strip_prefix(root).unwrap_or(&p).display()
                    ),
                ));
            }
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(refused(
                    shown,
                    format!("parent {} is not a directory", p.strip_prefix(root).unwrap_or(&p).display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).map_err(io_at(&p))?;
                if let Some(id) = owner {
                    std::os::unix::fs::lchown(&p, Some(id), Some(id)).map_err(io_at(&p))?;
                }
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(io_at(&p))?;
            }
            Err(e) => return Err(io_at(&p)(e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `p` (a later tar entry replaces an earlier one); never follows a symlink.
fn remove_existing(p: &Path, keep_dir: bool) -> Result<bool, UnpackError> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => {
            if keep_dir {
                return Ok(true);
            }
            std::fs::remove_dir_all(p).map_err(io_at(p))?;
        }
        Ok(_) => std::fs::remove_file(p).map_err(io_at(p))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(p)(e)),
    }
    Ok(false)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn set_mtime(p: &Path, secs: u64) -> Result<(), UnpackError> {
    let t = rustix::fs::Timespec { tv_sec: i64::try_from(secs).unwrap_or(i64::MAX), tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(rustix::fs::CWD, p, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_at(p)(e.into()))
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> Result<(), UnpackError> {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).map_err(|e| io_at(p)(e.into()))
}

/// Unpacks the tar stream `reader` into `dest` (an existing, empty directory) under the module's rules.
/// On error `dest` holds a partial tree: the caller removes it.
pub fn unpack(reader: impl Read, dest: &Path) -> Result<UnpackStats, UnpackError> {
    unpack_with(reader, dest, &UnpackOptions::default())
}

/// [`unpack`] with options (owners shifted into a user namespace range).
pub fn unpack_with(reader: impl Read, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let hashing = HashingReader { inner: reader, hasher: Sha256::new(), bytes: 0 };
    let mut archive = tar::Archive::new(hashing);
    let mut stats = UnpackStats::default();
    let root_user = is_root();
    // Parents the tar does not list belong to the layer's root: host root, or the shifted range's root.
    let parent_owner = opts.id_shift.filter(|_| root_user).map(|_| opts.host_id(0));
    // Directory mtimes are set last: creating their children changes them.
    let mut dir_mtimes: Vec<(PathBuf, u64)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let comps = components(&raw)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(name) = comps.last().copied() else {
            // `./` itself: the layer root's metadata is the runtime's business.
            continue;
        };
        stats.entries += 1;
        prepare_parents(dest, &comps, &shown, parent_owner)?;
        let name_bytes = name.as_bytes();
        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let parent = join(dest, &comps[..comps.len() - 1]);
            if name_bytes == OPAQUE_MARKER.as_bytes() {
                lsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y")?;
                stats.opaque_dirs += 1;
            } else if name_bytes.starts_with(b".wh..wh.") {
                tracing::debug!(entry = %shown, "skipping aufs metadata entry");
            } else {
                let hidden = OsStr::from_bytes(&name_bytes[WHITEOUT_PREFIX.len()..]);
                if hidden.is_empty() || hidden == ".." || hidden == "." {
                    return Err(refused(&shown, "whiteout of an invalid name"));
                }
                let p = parent.join(hidden);
                remove_existing(&p, false)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .map_err(|e| io_at(&p)(e.into()))?;
                stats.whiteouts += 1;
            }
            continue;
        }
        let path = join(dest, &comps);
        let header = entry.header();
        let mut mode = header.mode().map_err(UnpackError::Tar)? & 0o7777;
        let mut privileged = false;
        if !opts.keep_privileges && kind != tar::EntryType::Directory && mode & SET_ID_BITS != 0 {
            mode &= !SET_ID_BITS;
            privileged = true;
        }
        let uid = opts.host_id(header.uid().map_err(UnpackError::Tar)?);
        let gid = opts.host_id(header.gid().map_err(UnpackError::Tar)?);
        let mtime = header.mtime().unwrap_or(0);
        let mut is_symlink = false;
        match kind {
            tar::EntryType::Directory => {
                if !remove_existing(&path, true)? {
                    std::fs::create_dir(&path).map_err(io_at(&path))?;
                }
                dir_mtimes.push((path.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&path, false)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_at(&path))?;
                stats.file_bytes += io::copy(&mut entry, &mut f).map_err(io_at(&path))?;
            }
            tar::EntryType::Symlink => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| refused(&shown, "symlink without a target"))?.into_owned();
                remove_existing(&path, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(io_at(&path))?;
                is_symlink = true;
            }
            tar::EntryType::Link => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| refused(&shown, "hardlink without a target"))?.into_owned();
                let target_comps =
                    components(&target).map_err(|_| refused(&shown, "hardlink pointing outside the layer"))?;
                if target_comps.is_empty() {
                    return Err(refused(&shown, "hardlink pointing outside the layer"));
                }
                check_no_symlink_parents(dest, &target_comps, &shown)?;
                let target_path = join(dest, &target_comps);
                match std::fs::symlink_metadata(&target_path) {
                    Ok(md) if md.is_dir() => return Err(refused(&shown, "hardlink to a directory")),
                    Ok(_) => {}
                    Err(_) => {
                        return Err(refused(
                            &shown,
                            "hardlink target is not in this layer (pointing outside the layer)",
                        ));
                    }
                }
                if target_path != path {
                    remove_existing(&path, false)?;
                    std::fs::hard_link(&target_path, &path).map_err(io_at(&path))?;
                }
                // A hardlink shares its target's inode: its metadata is the target's.
                continue;
            }
            tar::EntryType::Fifo => {
                remove_existing(&path, false)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| io_at(&path)(e.into()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(&shown, "device node (char/block devices are not allowed in layers)"));
            }
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping a tar entry of an unsupported type");
                stats.entries -= 1;
                continue;
            }
        }
        // Owner first: chown clears setuid/setgid, the mode comes after.
        if root_user {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io_at(&path))?;
        }
        if !is_symlink {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io_at(&path))?;
        }
        if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Tar)? {
            let mut xattrs = BTreeMap::new();
            for ext in exts {
                let ext = ext.map_err(UnpackError::Tar)?;
                let Ok(key) = ext.key() else { continue };
                if let Some(xname) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(xname.to_string(), ext.value_bytes().to_vec());
                }
            }
            for (xname, value) in xattrs {
                if xname.starts_with("user.") || (opts.keep_privileges && xname == CAPABILITY_XATTR) {
                    lsetxattr(&path, &xname, &value)?;
                } else {
                    stats.dropped_xattrs += 1;
                    privileged |= xname == CAPABILITY_XATTR;
                }
            }
        }
        if privileged {
            tracing::debug!(entry = %shown, "dropped setuid/setgid bits or file capabilities");
            stats.privileges_dropped += 1;
        }
        if kind != tar::EntryType::Directory {
            set_mtime(&path, mtime)?;
        }
    }
    for (p, mtime) in dir_mtimes.iter().rev() {
        set_mtime(p, *mtime)?;
    }
    // The tar end marker may come before the end of the stream: hash the rest too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Tar)?;
    stats.tar_bytes = rest.bytes;
    stats.diff_id = format!("sha256:{}", hex(&rest.hasher.finalize()));
    Ok(stats)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// For hardlink targets: every parent must be a real directory (nothing is created).
fn check_no_symlink_parents(root: &Path, comps: &[&OsStr], shown: &str) -> Result<(), UnpackError> {
    let mut p = root.to_path_buf();
    for c in &comps[..comps.len() - 1] {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            _ => {
                return Err(refused(
                    shown,
                    "hardlink target through a symlink or missing directory (pointing outside the layer)",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
