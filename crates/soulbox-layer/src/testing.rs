//! Byte-exact tarballs for tests and fuzz seeds: the `tar` crate's own builder refuses hostile names, so names
//! are written into the raw header.

/// The mtime of every entry.
pub const MTIME: u64 = 1_600_000_000;

/// A tar being built: raw names, any entry type.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Default for Tar {
    fn default() -> Tar {
        Tar::new()
    }
}

impl Tar {
    pub fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// Any entry, with a raw name and link target (at most 100 bytes each: the GNU header fields).
    pub fn raw(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
        owner: (u64, u64),
    ) -> &mut Tar {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(MTIME);
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    pub fn dir(&mut self, name: &str) -> &mut Tar {
        self.raw(tar::EntryType::Directory, name, "", b"", 0o755, (0, 0))
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.raw(tar::EntryType::Regular, name, "", data, 0o644, (0, 0))
    }
    pub fn file_as(&mut self, name: &str, data: &[u8], mode: u32, owner: (u64, u64)) -> &mut Tar {
        self.raw(tar::EntryType::Regular, name, "", data, mode, owner)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(tar::EntryType::Symlink, name, target, b"", 0o777, (0, 0))
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(tar::EntryType::Link, name, target, b"", 0o644, (0, 0))
    }
    pub fn device(&mut self, name: &str, kind: tar::EntryType) -> &mut Tar {
        self.raw(kind, name, "", b"", 0o600, (0, 0))
    }
    pub fn fifo(&mut self, name: &str) -> &mut Tar {
        self.raw(tar::EntryType::Fifo, name, "", b"", 0o600, (0, 0))
    }
    pub fn pax(&mut self, headers: &[(&str, &[u8])]) -> &mut Tar {
        self.0.append_pax_extensions(headers.iter().copied()).unwrap();
        self
    }
    pub fn bytes(&mut self) -> Vec<u8> {
        let mut b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.finish().unwrap();
        b.into_inner().unwrap()
    }
}
