//! Disk size limit of a sandbox's writable layer: project quotas.
//!
//! Node level (once, in `Runtime::open`): `<data_dir>/sandboxes` must sit on a filesystem with
//! project quotas enforced. If it already does (XFS mounted `prjquota`, ext4 with the `project`
//! feature mounted `prjquota`, or something an operator mounted there), it is used directly
//! ([`Backend::Direct`]). Otherwise the runtime creates a sparse `<data_dir>/disk.img` once,
//! `mkfs.xfs`es it (ext4 with `quota,project` when XFS quotas are not available) and mounts it with `prjquota` on `<data_dir>/sandboxes` through a loop device
//! it attaches itself (`LOOP_CONFIGURE` with autoclear, so the device goes away with the mount and
//! a crash between attach and mount leaks nothing) ([`Backend::Image`]). A later instance finds
//! the mount and reuses it; after a reboot it mounts the image again. Only `destroy_all` unmounts.
//!
//! Per sandbox (hot path, syscalls only, no process spawned): a project id (hash of the sandbox
//! id, probed until neither this instance nor the filesystem uses it) is recorded in
//! `<sandbox>/disk.json` first, then set with inheritance on `upper/` and `work/`
//! (`FS_IOC_FSSETXATTR`, `FS_XFLAG_PROJINHERIT`; both, because XFS refuses renames across project
//! ids and overlayfs renames from work/ into upper/), then the block hard limit is set with
//! `quotactl_fd(Q_SETQUOTA)`. Release clears the limit and forgets the id; reconcile rebuilds the
//! set of ids in use from the `disk.json` files and (image backend only: the filesystem is ours)
//! clears every other limit it finds.
use crate::error::{Error, IoCtx, Result};
use crate::{loopdev, util};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

// `RuntimeConfig::disk_quota`'s type is the config's; here under its old path.
pub use crate::config::DiskQuotaMode;

pub const IMAGE_FILE: &str = "disk.img";
const RECORD_FILE: &str = "disk.json";
/// Project ids we hand out: [BASE, BASE + SPAN). High, so they do not meet an operator's own ids.
const PROJID_BASE: u32 = 0x1000_0000;
const PROJID_SPAN: u32 = 0x6000_0000;

/// `<sandbox>/disk.json`: the project id and limit of a sandbox (written before they are applied).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DiskRecord {
    pub project_id: u32,
    /// 0 = no limit.
    pub limit_mb: u64,
}

impl DiskRecord {
    pub fn load(sandbox_dir: &Path) -> Option<DiskRecord> {
        util::read_json(&sandbox_dir.join(RECORD_FILE)).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The data dir's own filesystem (or whatever is mounted on `sandboxes/`) has project quotas.
    Direct,
    /// Our loop-mounted XFS image.
    Image { image: PathBuf },
}

/// Usage and limit of one project, in bytes / inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectUsage {
    pub limit_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inode_limit: u64,
}

/// Bytes per inode the limit allows: the density of the per-sandbox ext4 images (`mkfs.ext4 -i 16384`), so
/// both backends give a sandbox of the same size the same number of files. Without an inode limit a sandbox
/// could exhaust the inodes of the filesystem every sandbox shares while staying under its byte limit.
pub const BYTES_PER_INODE: u64 = 16 * 1024;
/// The fewest inodes a limited sandbox gets (a tiny limit must still hold a working system's copy-ups).
pub const MIN_INODES: u64 = 4096;

/// The inode limit that goes with a limit of `limit_mb` (0 = none).
pub fn inode_limit(limit_mb: u64) -> u64 {
    if limit_mb == 0 { 0 } else { (limit_mb.saturating_mul(1 << 20) / BYTES_PER_INODE).max(MIN_INODES) }
}

pub struct DiskQuota {
    /// None: no limits (off, or unavailable). No fd is held: it would pin the mount.
    state: Option<Backend>,
    root: PathBuf,
    used: Mutex<HashSet<u32>>,
}

impl DiskQuota {
    pub fn disabled(root: PathBuf) -> DiskQuota {
        DiskQuota { state: None, root, used: Default::default() }
    }

    pub fn backend(&self) -> Option<&Backend> {
        self.state.as_ref()
    }
    pub fn enabled(&self) -> bool {
        self.state.is_some()
    }

    /// Make sure `sandboxes_dir` is on a filesystem with project quotas (see the module docs).
    pub async fn open(
        data_dir: &Path,
        sandboxes_dir: &Path,
        mode: DiskQuotaMode,
        image_size_gb: Option<u64>,
    ) -> Result<DiskQuota> {
        if mode == DiskQuotaMode::Off {
            return Ok(DiskQuota::disabled(sandboxes_dir.into()));
        }
        match setup(data_dir, sandboxes_dir, image_size_gb).await {
            Ok(backend) => {
                tracing::info!(?backend, dir = %sandboxes_dir.display(), "disk limits: project quotas");
                Ok(DiskQuota { state: Some(backend), root: sandboxes_dir.into(), used: Default::default() })
            }
            Err(e) if mode == DiskQuotaMode::Auto => {
                tracing::warn!(error = %e, "disk limits unavailable; sandboxes run WITHOUT a disk size limit");
                Ok(DiskQuota::disabled(sandboxes_dir.into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Give the sandbox's writable layer (`upper/`, `work/`, both must exist) its project and
    /// limit. Idempotent: a sandbox keeps its project id across stop/start.
    pub fn apply(&self, id: &str, sandbox_dir: &Path, limit_mb: u64) -> Result<()> {
        if self.state.is_none() {
            return Ok(());
        }
        let fsfd = &open_dir(&self.root)?;
        let rec = match DiskRecord::load(sandbox_dir) {
            Some(r) => {
                self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(r.project_id);
                DiskRecord { limit_mb, ..r }
            }
            None => DiskRecord { project_id: self.allocate(id, fsfd)?, limit_mb },
        };
        util::write_json(&sandbox_dir.join(RECORD_FILE), &rec)?;
        for d in ["upper", "work"] {
            set_project(&sandbox_dir.join(d), rec.project_id)?;
        }
        set_limit(fsfd, rec.project_id, rec.limit_mb.saturating_mul(1024), inode_limit(rec.limit_mb))
            .map_err(|e| Error::Io { path: format!("quotactl project {}", rec.project_id).into(), source: e })
    }

    /// Clear the sandbox's limit and forget its project id (idempotent).
    pub fn release(&self, sandbox_dir: &Path) -> Result<()> {
        let Some(rec) = DiskRecord::load(sandbox_dir) else { return Ok(()) };
        if self.state.is_some() {
            set_limit(&open_dir(&self.root)?, rec.project_id, 0, 0)
                .map_err(|e| Error::Io { path: format!("quotactl project {}", rec.project_id).into(), source: e })?;
        }
        self.used.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.project_id);
        util::remove_file_idem(&sandbox_dir.join(RECORD_FILE))
    }

    /// Usage and limit of a project (None when quotas are off or the project is unknown).
    pub fn usage(&self, project_id: u32) -> Option<ProjectUsage> {
        self.state.as_ref()?;
        get_quota(&open_dir(&self.root).ok()?, project_id).ok()
    }

    /// Projects with a limit or usage on the filesystem (image backend: all of them are ours).
    pub fn projects(&self) -> Vec<(u32, ProjectUsage)> {
        if self.state.is_none() {
            return vec![];
        }
        let Ok(fsfd) = open_dir(&self.root) else { return vec![] };
        let fsfd = &fsfd;
        let mut out = Vec::new();
        let mut next = 1u32;
        while let Ok(Some((id, u))) = get_next_quota(fsfd, next) {
            out.push((id, u));
            match id.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        out
    }

    /// Boot-time: ids in use = the `disk.json` of every sandbox dir left after the collection;
    /// on our own image, every other limit is a leak and is cleared.
    pub fn reconcile(&self) {
        let mut live = HashSet::new();
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if let Some(r) = DiskRecord::load(&e.path()) {
                    live.insert(r.project_id);
                }
            }
        }
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = live.clone();
        if let (Some(Backend::Image { .. }), Ok(fsfd)) = (&self.state, open_dir(&self.root)) {
            for (pid, u) in self.projects() {
                if !live.contains(&pid) && (u.limit_bytes != 0 || u.inode_limit != 0) {
                    tracing::info!(project = pid, "clearing leaked disk quota");
                    let _ = set_limit(&fsfd, pid, 0, 0);
                }
            }
        }
    }

    /// Unmount our image (node teardown). Direct backends are left alone.
    pub fn teardown(&self) -> Result<()> {
        if let Some(Backend::Image { .. }) = &self.state {
            crate::mounts::umount_path(&self.root)?;
        }
        Ok(())
    }

    fn allocate(&self, id: &str, fsfd: &OwnedFd) -> Result<u32> {
        use sha2::Digest;
        let h = sha2::Sha256::digest(id.as_bytes());
        let mut n = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) % PROJID_SPAN;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..1000 {
            let pid = PROJID_BASE + n;
            let busy_fs = get_quota(fsfd, pid).map(|u| u != ProjectUsage::default()).unwrap_or(false);
            if !used.contains(&pid) && !busy_fs {
                used.insert(pid);
                return Ok(pid);
            }
            n = (n + 1) % PROJID_SPAN;
        }
        Err(Error::Invalid("no free project id".into()))
    }
}

// ---------------------------------------------------------------------------------------------
// node-level setup

async fn setup(data_dir: &Path, sandboxes: &Path, image_size_gb: Option<u64>) -> Result<Backend> {
    let image = data_dir.join(IMAGE_FILE);
    // 1. Our image is already mounted there (a previous instance, or a crash).
    if let Some(src) = mount_source(sandboxes)
        && let Some(dev) = src.strip_prefix("/dev/")
        && loopdev::backing_file(dev).is_some_and(|b| same_file(&b, &image))
    {
        probe(sandboxes)?;
        // (mounted by an older runtime, perhaps without them)
        crate::mounts::harden_mount(sandboxes);
        return Ok(Backend::Image { image });
    }
    // 2. The filesystem already enforces project quotas.
    if probe(sandboxes).is_ok() {
        return Ok(Backend::Direct);
    }
    // 3. Our image, mounted now. Never over existing sandboxes: they would vanish under the mount.
    if std::fs::read_dir(sandboxes).ctx(sandboxes)?.next().is_some() {
        return Err(Error::Invalid(format!(
            "{} is not empty and its filesystem has no project quotas; delete its sandboxes (or move them) to enable disk limits",
            sandboxes.display()
        )));
    }
    // Loop devices still bound to the image but not mounted (e.g. a manual losetup): detach.
    for dev in loop_devices_for(&image) {
        if !mounted_devices().contains(&format!("/dev/{dev}")) {
            tracing::info!(device = %dev, "detaching leaked loop device of the disk image");
            loopdev::detach(&dev);
        }
    }
    if image.exists() {
        attach_and_mount(&image, sandboxes)?;
        probe(sandboxes)?;
        return Ok(Backend::Image { image });
    }
    // A new image: XFS, or ext4 (`quota,project`) when the kernel or host cannot do XFS quotas.
    let mut errors = Vec::new();
    for fs in [ImageFs::Xfs, ImageFs::Ext4] {
        let res = async {
            create_image(data_dir, &image, image_size_gb, fs).await?;
            attach_and_mount(&image, sandboxes)?;
            probe(sandboxes)
        }
        .await;
        match res {
            Ok(()) => return Ok(Backend::Image { image }),
            Err(e) => {
                errors.push(format!("{fs:?}: {e}"));
                let _ = crate::mounts::umount_path(sandboxes);
                let _ = std::fs::remove_file(&image);
            }
        }
    }
    Err(Error::Invalid(format!(
        "no filesystem image with project quotas could be mounted (kernel needs CONFIG_XFS_QUOTA, or CONFIG_QUOTA + CONFIG_QFMT_V2 for ext4; see dmesg): {}",
        errors.join("; ")
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageFs {
    Xfs,
    Ext4,
}

/// Filesystem of an image, from its superblock magic.
fn image_fs(image: &Path) -> Option<ImageFs> {
    use std::io::Read;
    let mut b = vec![0u8; 1082];
    std::fs::File::open(image).ok()?.read_exact(&mut b).ok()?;
    if &b[..4] == b"XFSB" {
        Some(ImageFs::Xfs)
    } else if b[1080..1082] == [0x53, 0xEF] {
        Some(ImageFs::Ext4)
    } else {
        None
    }
}

async fn create_image(data_dir: &Path, image: &Path, size_gb: Option<u64>, fs: ImageFs) -> Result<()> {
    let size = match size_gb {
        Some(g) => g << 30,
        None => {
            // Sparse: half the free space of the data dir's filesystem, at most 64 GiB, at least 1 GiB.
            let st =
                rustix::fs::statvfs(data_dir).map_err(|e| Error::Io { path: data_dir.into(), source: e.into() })?;
            let free = st.f_bavail * st.f_frsize;
            (free / 2).clamp(1 << 30, 64 << 30) & !((1 << 20) - 1)
        }
    };
    let tmp = image.with_extension("img.tmp");
    let _ = std::fs::remove_file(&tmp);
    let f = crate::util::create_private(&tmp)?; // a sandbox's files: root only
    f.set_len(size).ctx(&tmp)?;
    drop(f);
    let t = std::time::Instant::now();
    let path = tmp.to_string_lossy();
    let res = match fs {
        // -K: no discard pass at mkfs time (the file is sparse already).
        ImageFs::Xfs => util::run("mkfs.xfs", &["-q", "-K", "-L", "soulbox", &path]).await,
        // no root reserve, one inode per 8 KiB, project quota only, lazy init (sparse file).
        ImageFs::Ext4 => {
            let opts = ["-q", "-F", "-m", "0", "-i", "8192", "-O", "quota,project", "-E"];
            let ext = "quotatype=prjquota,lazy_itable_init=1,lazy_journal_init=1,nodiscard";
            util::run("mkfs.ext4", &[&opts[..], &[ext, "-L", "soulbox", &path]].concat()).await
        }
    };
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, image).ctx(image)?;
    tracing::info!(image = %image.display(), ?fs, size_gib = size >> 30, ms = t.elapsed().as_millis() as u64, "created the sandboxes disk image (sparse)");
    Ok(())
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::Io { path: p.into(), source: e.into() })
}

/// Does the filesystem of `dir` enforce project quotas?
fn probe(dir: &Path) -> Result<()> {
    let fd = open_dir(dir)?;
    match get_quota(&fd, 0) {
        // ENOENT: quotas are on, project 0 just has no record.
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(Error::Io { path: format!("project quota on {}", dir.display()).into(), source: e }),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Source device of the topmost mount at exactly `mp`.
fn mount_source(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let s = mp.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| crate::mounts::unescape(m) == s))
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(String::from))
        .next_back()
}

fn mounted_devices() -> HashSet<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().filter_map(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(String::from)).collect()
}

/// Loop devices (`loopN`) whose backing file is `image` (what `losetup -j` shows).
pub fn loop_devices_for(image: &Path) -> Vec<String> {
    loopdev::devices_for(image)
}

/// Attach `image` to a free loop device (autoclear) and mount it `prjquota` on `mp`.
fn attach_and_mount(image: &Path, mp: &Path) -> Result<()> {
    let fstype = match image_fs(image) {
        Some(ImageFs::Xfs) => "xfs",
        Some(ImageFs::Ext4) => "ext4",
        None => return Err(Error::Invalid(format!("{}: neither XFS nor ext4", image.display()))),
    };
    let dev = loopdev::attach(image)?;
    let data = c"prjquota,discard";
    let res = rustix::mount::mount(dev.path.as_str(), mp, fstype, crate::mounts::HOST_MOUNT_FLAGS, Some(data));
    // With autoclear the device is released when the mount goes (or now, if the mount failed).
    let devpath = dev.path.clone();
    drop(dev);
    res.map_err(|e| Error::Io { path: PathBuf::from(format!("mount {devpath} on {}", mp.display())), source: e.into() })
}

// ---------------------------------------------------------------------------------------------
// syscalls: FS_IOC_FS[GS]ETXATTR and quotactl_fd

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    fsx_xflags: u32,
    fsx_extsize: u32,
    fsx_nextents: u32,
    fsx_projid: u32,
    fsx_cowextsize: u32,
    fsx_pad: [u8; 8],
}
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// Set project id + inheritance on a directory.
pub fn set_project(dir: &Path, project_id: u32) -> Result<()> {
    let fd = open_dir(dir)?;
    let err = |e: std::io::Error| Error::Io { path: dir.into(), source: e };
    let mut x = FsXattr::default();
    // SAFETY: FsXattr matches struct fsxattr; the pointer is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    if x.fsx_projid == project_id && x.fsx_xflags & FS_XFLAG_PROJINHERIT != 0 {
        return Ok(());
    }
    x.fsx_projid = project_id;
    x.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &x as *const FsXattr) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Project id of a file or directory.
pub fn project_of(path: &Path) -> Result<u32> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| Error::Io { path: path.into(), source: e.into() })?;
    let mut x = FsXattr::default();
    // SAFETY: FsXattr matches struct fsxattr.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) } < 0 {
        return Err(Error::Io { path: path.into(), source: std::io::Error::last_os_error() });
    }
    Ok(x.fsx_projid)
}

/// struct if_dqblk / if_nextdqblk (generic quotactl; XFS and ext4 both implement it).
#[repr(C)]
#[derive(Default)]
struct IfNextDqblk {
    dqb_bhardlimit: u64, // 1 KiB blocks
    dqb_bsoftlimit: u64,
    dqb_curspace: u64, // bytes
    dqb_ihardlimit: u64,
    dqb_isoftlimit: u64,
    dqb_curinodes: u64,
    dqb_btime: u64,
    dqb_itime: u64,
    dqb_valid: u32,
    dqb_id: u32, // if_nextdqblk only; if_dqblk ends before it (padding)
}
const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x800007;
const Q_SETQUOTA: u32 = 0x800008;
const Q_GETNEXTQUOTA: u32 = 0x800009;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
const fn qcmd(cmd: u32) -> u32 {
    (cmd << 8) | PRJQUOTA
}

fn quotactl(fsfd: &impl AsRawFd, cmd: u32, id: u32, q: &mut IfNextDqblk) -> std::io::Result<()> {
    // SAFETY: quotactl_fd(fd, cmd, id, addr) with addr pointing to a struct at least as large as
    // the kernel's if_dqblk / if_nextdqblk.
    let r = unsafe { libc::syscall(libc::SYS_quotactl_fd, fsfd.as_raw_fd(), qcmd(cmd), id, q as *mut IfNextDqblk) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn get_quota(fsfd: &impl AsRawFd, project_id: u32) -> std::io::Result<ProjectUsage> {
    let mut q = IfNextDqblk::default();
    quotactl(fsfd, Q_GETQUOTA, project_id, &mut q)?;
    Ok(ProjectUsage {
        limit_bytes: q.dqb_bhardlimit * 1024,
        used_bytes: q.dqb_curspace,
        inodes: q.dqb_curinodes,
        inode_limit: q.dqb_ihardlimit,
    })
}

fn get_next_quota(fsfd: &impl AsRawFd, from: u32) -> std::io::Result<Option<(u32, ProjectUsage)>> {
    let mut q = IfNextDqblk::default();
    match quotactl(fsfd, Q_GETNEXTQUOTA, from, &mut q) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
        Ok(()) => Ok(Some((
            q.dqb_id,
            ProjectUsage {
                limit_bytes: q.dqb_bhardlimit * 1024,
                used_bytes: q.dqb_curspace,
                inodes: q.dqb_curinodes,
                inode_limit: q.dqb_ihardlimit,
            },
        ))),
    }
}

/// Block hard limit (KiB) and inode hard limit (0 = none). Soft limits are cleared.
fn set_limit(fsfd: &impl AsRawFd, project_id: u32, limit_kib: u64, limit_inodes: u64) -> std::io::Result<()> {
    let mut q = IfNextDqblk {
        dqb_bhardlimit: limit_kib,
        dqb_ihardlimit: limit_inodes,
        dqb_valid: QIF_BLIMITS | QIF_ILIMITS,
        ..Default::default()
    };
    quotactl(fsfd, Q_SETQUOTA, project_id, &mut q)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_inode_limit_follows_the_size_like_the_image_backend() {
        assert_eq!(super::inode_limit(0), 0, "no limit, no inode limit");
        assert_eq!(super::inode_limit(10 * 1024), 655_360, "10 GiB: one inode per 16 KiB, as mkfs.ext4 -i 16384");
        assert_eq!(super::inode_limit(16), super::MIN_INODES);
    }
}
