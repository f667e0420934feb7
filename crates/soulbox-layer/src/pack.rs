//! The other direction: a layer directory in overlayfs form back into an OCI layer tar, so that a layer SoulBox
//! made on one node (a snapshot of a sandbox's writable layer) can move to another node and be applied there by
//! [`crate::unpack_with`] under the same rules as any layer.
//!
//! - overlayfs whiteouts (0:0 char devices) become `.wh.<name>`, opaque directories (`trusted.overlay.opaque=y`)
//!   get a `.wh..wh..opq` entry; any other device node is refused (no sandbox can make one);
//! - owner, mode and mtime as stored; `user.*` xattrs and file capabilities go as PAX `SCHILY.xattr.*` records;
//! - a hardlinked file is written once and linked after;
//! - overlayfs metadata that an OCI layer cannot express (`trusted.overlay.redirect`, `.metacopy`: renamed
//!   lower directories, metadata-only copy-ups; SoulBox mounts without them) is refused rather than lost.
//!
//! Entries are written in name order, so the same tree gives the same tar.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{CAPABILITY_XATTR, OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Refused { path: PathBuf, reason: &'static str },
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    pub file_bytes: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
}

/// Writes the layer directory `src` to `out` as an uncompressed OCI layer tar.
pub fn pack(src: &Path, out: impl Write) -> Result<PackStats, PackError> {
    let mut packer = Packer { tar: tar::Builder::new(out), stats: PackStats::default(), links: HashMap::new() };
    packer.dir(src, Path::new(""))?;
    packer.tar.finish().map_err(|source| PackError::Io { path: src.to_path_buf(), source })?;
    Ok(packer.stats)
}

struct Packer<W: Write> {
    tar: tar::Builder<W>,
    stats: PackStats,
    /// (device, inode) of hardlinked files already written → their name in the archive.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Packer<W> {
    fn dir(&mut self, dir: &Path, rel: &Path) -> Result<(), PackError> {
        let io = |source| PackError::Io { path: dir.to_path_buf(), source };
        let mut names: Vec<OsString> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        names.sort();
        for name in names {
            self.entry(&dir.join(&name), &rel.join(&name))?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &Path) -> Result<(), PackError> {
        let io = |source| PackError::Io { path: path.to_path_buf(), source };
        let md = std::fs::symlink_metadata(path).map_err(io)?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            let mut name = OsString::from(WHITEOUT_PREFIX);
            name.push(rel.file_name().unwrap_or_default());
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0);
            self.append(&mut header, &rel.with_file_name(name), io::empty(), path)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
            return Err(PackError::Refused { path: path.to_path_buf(), reason: "device node or socket in a layer" });
        }
        let xattrs = self.xattrs(path)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(md.mode() & 0o7777);
        header.set_uid(u64::from(md.uid()));
        header.set_gid(u64::from(md.gid()));
        header.set_mtime(md.mtime().max(0) as u64);
        header.set_size(0);
        self.pax(&xattrs.kept, path)?;
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            self.append(&mut header, rel, io::empty(), path)?;
            if xattrs.opaque {
                let mut marker = tar::Header::new_gnu();
                marker.set_entry_type(tar::EntryType::Regular);
                marker.set_size(0);
                self.append(&mut marker, &rel.join(OPAQUE_MARKER), io::empty(), path)?;
                self.stats.opaque_dirs += 1;
            }
            return self.dir(path, rel);
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(io)?;
            header.set_entry_type(tar::EntryType::Symlink);
            self.stats.entries += 1;
            return self.tar.append_link(&mut header, rel, target).map_err(io);
        }
        if ft.is_fifo() {
            header.set_entry_type(tar::EntryType::Fifo);
            return self.append(&mut header, rel, io::empty(), path);
        }
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                header.set_entry_type(tar::EntryType::Link);
                self.stats.entries += 1;
                return self.tar.append_link(&mut header, rel, first).map_err(io);
            }
            self.links.insert(key, rel.to_path_buf());
        }
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(md.len());
        let file = std::fs::File::open(path).map_err(io)?;
        self.stats.file_bytes += md.len();
        self.append(&mut header, rel, file, path)
    }

    fn append(
        &mut self,
        header: &mut tar::Header,
        rel: &Path,
        data: impl io::Read,
        path: &Path,
    ) -> Result<(), PackError> {
        self.stats.entries += 1;
        self.tar.append_data(header, rel, data).map_err(|source| PackError::Io { path: path.to_path_buf(), source })
    }

    /// The xattrs that travel (`user.*`, file capabilities), whether the directory is opaque; refuses overlayfs
    /// metadata an OCI layer cannot carry.
    fn xattrs(&self, path: &Path) -> Result<Xattrs, PackError> {
        let io = |e: rustix::io::Errno| PackError::Io { path: path.to_path_buf(), source: e.into() };
        let mut names = vec![0u8; 4096];
        let n = loop {
            match rustix::fs::llistxattr(path, &mut names) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
                Err(rustix::io::Errno::NOTSUP) => return Ok(Xattrs::default()),
                Err(e) => return Err(io(e)),
            }
        };
        let mut out = Xattrs::default();
        for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            if name == OVERLAY_OPAQUE_XATTR {
                out.opaque = lgetxattr(path, &name).map_err(io)? == b"y";
            } else if name.starts_with("trusted.overlay.redirect") || name.starts_with("trusted.overlay.metacopy") {
                return Err(PackError::Refused {
                    path: path.to_path_buf(),
                    reason: "overlayfs redirect or metacopy data, which an OCI layer cannot carry",
                });
            } else if name.starts_with("user.") || name == CAPABILITY_XATTR {
                out.kept.push((name.clone(), lgetxattr(path, &name).map_err(io)?));
            }
        }
        Ok(out)
    }

    /// A PAX extended header carrying `xattrs` for the entry that follows.
    fn pax(&mut self, xattrs: &[(String, Vec<u8>)], path: &Path) -> Result<(), PackError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (name, value) in xattrs {
            let body = [b" SCHILY.xattr.", name.as_bytes(), b"=", value, b"\n"].concat();
            // The length field counts itself.
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len = len.to_string().len() + body.len();
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.extend_from_slice(&body);
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        let name = PathBuf::from("PaxHeaders").join(
            path.file_name()
                .map(|n| n.as_bytes())
                .map_or("x".into(), |b| String::from_utf8_lossy(&b[..b.len().min(90)]).into_owned()),
        );
        self.tar
            .append_data(&mut header, name, data.as_slice())
            .map_err(|source| PackError::Io { path: path.into(), source })
    }
}

#[derive(Default)]
struct Xattrs {
    kept: Vec<(String, Vec<u8>)>,
    opaque: bool,
}

fn lgetxattr(path: &Path, name: &str) -> Result<Vec<u8>, rustix::io::Errno> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
