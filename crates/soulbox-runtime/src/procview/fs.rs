//! The FUSE filesystem: `/<sandbox id>/<file>`, each file rendered from that sandbox's numbers when it is opened
//! (one consistent text per open, as procfs gives), read-only for everyone. A sandbox only ever has its own files
//! mounted into it (`attach.rs`), never the directory above them.
use super::{FILES, Source};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Inodes: 1 is the root, a sandbox's directory is `SLOT * n + 2`, its files follow it.
const SLOT: u64 = 16;
/// Directories never change.
const TTL: Duration = Duration::from_secs(60);
/// Files' attributes are asked again every time: a splice/sendfile reader (busybox `cat`) goes through the page
/// cache, where a short read shrinks the kernel's idea of the size to the text it got; the next reader must see the
/// big one again. Their names stay (lookups are cached like the directories').
const FILE_ATTR_TTL: Duration = Duration::ZERO;
/// The size files claim: more than any text here (sendfile reads at most the size; a short read ends it).
const FILE_SIZE: u64 = 1 << 20;

pub(super) struct ViewFs {
    pub source: Source,
    slots: Mutex<Slots>,
    /// Open files' texts, by handle, and how many each sandbox holds.
    open: Mutex<OpenFiles>,
    next_fh: AtomicU64,
}

/// Texts of open files: a sandbox holding files open holds host memory, so each may hold at most
/// [`OPEN_PER_SANDBOX`] (a few KiB each) — more than any program reading `/proc` needs; past it an open fails
/// with ENFILE.
#[derive(Default)]
struct OpenFiles {
    texts: HashMap<u64, (String, Vec<u8>)>,
    per_sandbox: HashMap<String, usize>,
}

pub(super) const OPEN_PER_SANDBOX: usize = 1024;

#[derive(Default)]
struct Slots {
    by_id: HashMap<String, u64>,
    ids: HashMap<u64, String>,
    next: u64,
}

impl ViewFs {
    pub fn new(source: Source) -> ViewFs {
        ViewFs { source, slots: Default::default(), open: Default::default(), next_fh: AtomicU64::new(1) }
    }

    /// The slot of sandbox `id`, made on first use; None if there is no such sandbox.
    fn slot_of(&self, id: &str) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.by_id.get(id) {
            return Some(*s);
        }
        if !self.source.knows(id) {
            return None;
        }
        let s = slots.next;
        slots.next += 1;
        slots.by_id.insert(id.to_string(), s);
        slots.ids.insert(s, id.to_string());
        Some(s)
    }

    /// Drops what is kept for a deleted sandbox.
    pub fn forget_sandbox(&self, id: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.by_id.remove(id) {
            slots.ids.remove(&s);
        }
    }

    /// (sandbox id, file index) of a file inode; (id, None) for a sandbox's directory.
    fn resolve(&self, ino: u64) -> Option<(String, Option<usize>)> {
        let rel = ino.checked_sub(2)?;
        let (slot, k) = (rel / SLOT, rel % SLOT);
        let id = self.slots.lock().unwrap_or_else(|e| e.into_inner()).ids.get(&slot)?.clone();
        match k {
            0 => Some((id, None)),
            k if (k as usize) <= FILES.len() => Some((id, Some(k as usize - 1))),
            _ => None,
        }
    }
}

fn attr(ino: u64, dir: bool) -> FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(ino),
        size: if dir { 0 } else { FILE_SIZE },
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: if dir { FileType::Directory } else { FileType::RegularFile },
        perm: if dir { 0o555 } else { 0o444 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for ViewFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else { return reply.error(Errno::ENOENT) };
        if parent.0 == INodeNo::ROOT.0 {
            return match self.slot_of(name) {
                Some(s) => reply.entry(&TTL, &attr(2 + s * SLOT, true), Generation(0)),
                None => reply.error(Errno::ENOENT),
            };
        }
        match (self.resolve(parent.0), FILES.iter().position(|f| f.name == name)) {
            (Some((_, None)), Some(k)) => {
                reply.entry_with_ttls(&FILE_ATTR_TTL, &TTL, &attr(parent.0 + 1 + k as u64, false), Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == INodeNo::ROOT.0 {
            return reply.attr(&TTL, &attr(ino.0, true));
        }
        match self.resolve(ino.0) {
            Some((_, None)) => reply.attr(&TTL, &attr(ino.0, true)),
            Some((_, Some(_))) => reply.attr(&FILE_ATTR_TTL, &attr(ino.0, false)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EACCES);
        }
        let Some((id, Some(k))) = self.resolve(ino.0) else { return reply.error(Errno::ENOENT) };
        let Some(text) = self.source.render(&id, &FILES[k]) else { return reply.error(Errno::ENOENT) };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let held = open.per_sandbox.entry(id.clone()).or_default();
            if *held >= OPEN_PER_SANDBOX {
                return reply.error(Errno::ENFILE);
            }
            *held += 1;
            open.texts.insert(fh, (id, text.into_bytes()));
        }
        // Direct: read(2) gets the server's text of this open, never a cached page.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, text)) = open.texts.get(&fh.0) else { return reply.error(Errno::EBADF) };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(text.len());
        let end = start.saturating_add(size as usize).min(text.len());
        reply.data(&text[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, _)) = open.texts.remove(&fh.0)
            && let Some(held) = open.per_sandbox.get_mut(&id)
        {
            *held -= 1;
            if *held == 0 {
                open.per_sandbox.remove(&id);
            }
        }
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        // Sandboxes are not listed (each is looked up by its id); a sandbox's directory lists its files.
        let mut entries: Vec<(u64, FileType, &str)> =
            vec![(ino.0, FileType::Directory, "."), (INodeNo::ROOT.0, FileType::Directory, "..")];
        if ino.0 != INodeNo::ROOT.0 {
            match self.resolve(ino.0) {
                Some((_, None)) => entries.extend(
                    FILES.iter().enumerate().map(|(k, f)| (ino.0 + 1 + k as u64, FileType::RegularFile, f.name)),
                ),
                _ => return reply.error(Errno::ENOTDIR),
            }
        }
        for (i, (child, kind, name)) in
            entries.into_iter().enumerate().skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
