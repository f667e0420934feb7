//! Disk size limit, second backend: one ext4 image per sandbox.
//!
//! `<sandbox>/disk.img` is a sparse file of exactly the limit's size, formatted ext4 without a
//! journal, attached to a loop device with autoclear (`loopdev`) and mounted on `<sandbox>/disk/`,
//! which holds the overlay's `upper/` and `work/` (`rootfs::paths` switches to them when the image
//! exists). Writes past the limit fail with ENOSPC because the filesystem is full; `df /` inside
//! the sandbox shows the image (overlayfs reports its upper filesystem). Works on any kernel with
//! loop devices and ext4 — no quota support needed.
//!
//! No journal: a sandbox's writable layer is scratch space that only has to survive the runtime
//! (the kernel keeps the mount) and clean stops (unmount writes everything back). A journal would
//! cost a jbd2 kernel thread per mounted sandbox and up to its size (64 MiB for 10 GiB) of real
//! host disk per sandbox as it cycles through the sparse file, and double-write metadata. After a
//! host crash the superblock is left "not clean", and [`mount`] runs `e2fsck -p` first.
use crate::error::{Error, IoCtx, Result};
use crate::{loopdev, mounts, util};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const IMAGE_FILE: &str = "disk.img";
/// Mount point of the image inside the sandbox dir; holds `upper/` and `work/`.
pub const MOUNT_DIR: &str = "disk";
/// Smallest image we format: ext4 with 4 KiB blocks needs room for its metadata.
pub const MIN_MB: u64 = 16;

pub fn image_path(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join(IMAGE_FILE)
}
pub fn mount_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join(MOUNT_DIR)
}
/// Whether the sandbox's writable layer lives in its own image.
pub fn has_image(sandbox_dir: &Path) -> bool {
    image_path(sandbox_dir).exists()
}

/// Host tools the backend needs, found once at open.
#[derive(Debug, Clone)]
pub struct Tools {
    mkfs: PathBuf,
    fsck: PathBuf,
}

impl Tools {
    /// Loop devices, ext4 and e2fsprogs present?
    pub fn find() -> Result<Tools> {
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control").ctx("/dev/loop-control")?;
        let fs = std::fs::read_to_string("/proc/filesystems").ctx("/proc/filesystems")?;
        if !fs.lines().any(|l| l.split_whitespace().last() == Some("ext4")) {
            return Err(Error::Invalid("the kernel has no ext4".into()));
        }
        let find = |name: &str| -> Result<PathBuf> {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::Invalid(format!("{name} not found (package e2fsprogs)")))
        };
        Ok(Tools { mkfs: find("mkfs.ext4")?, fsck: find("e2fsck")? })
    }

    pub(crate) fn mkfs(&self) -> &Path {
        &self.mkfs
    }

    pub(crate) fn fsck(&self) -> &Path {
        &self.fsck
    }
}

/// Whether an image gets ext4's journal: sandbox disks do without (module docs), volumes keep it (they outlive
/// the sandboxes that write them, so a crash mid-write must not cost a `fsck` that loses files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Journal {
    With,
    Without,
}

/// `mkfs.ext4` arguments (before the image path) for one of our images: 4 KiB blocks (mke2fs would pick
/// 1 KiB for small images), no root reserve, one inode per 16 KiB. The file is sparse, so the inode tables are zero already:
/// `assume_storage_prezeroed` skips writing them now and the lazy-init thread later; `lazy_journal_init` keeps
/// a journal's blocks unwritten (sparse) until it is used.
pub(crate) fn mkfs_args(journal: Journal, label: &str) -> Vec<&str> {
    let mut args = vec!["-q", "-F", "-b", "4096", "-m", "0", "-i", "16384"];
    match journal {
        Journal::Without => {
            args.extend(["-O", "^has_journal", "-E", "lazy_itable_init=1,assume_storage_prezeroed=1,nodiscard"])
        }
        Journal::With => {
            args.extend(["-E", "lazy_itable_init=1,lazy_journal_init=1,assume_storage_prezeroed=1,nodiscard"])
        }
    }
    args.extend(["-L", label]);
    args
}

/// Image size for a limit (MiB → bytes), never below [`MIN_MB`].
pub fn size_for(limit_mb: u64) -> u64 {
    limit_mb.max(MIN_MB) << 20
}

/// Create and format `<sandbox>/disk.img` (sparse, `limit_mb`). Written under a temporary name and
/// renamed, so an image that exists is always formatted.
pub async fn create(tools: &Tools, sandbox_dir: &Path, limit_mb: u64) -> Result<()> {
    let image = image_path(sandbox_dir);
    let tmp = image.with_extension("img.tmp");
    let f = crate::util::create_private(&tmp)?; // a sandbox's files: root only
    f.set_len(size_for(limit_mb)).ctx(&tmp)?;
    drop(f);
    let path = tmp.to_string_lossy();
    let mut args = mkfs_args(Journal::Without, "soulbox");
    args.push(&path);
    if let Err(e) = util::run(&tools.mkfs.to_string_lossy(), &args).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &image).ctx(&image)
}

/// Mount the image on `<sandbox>/disk/` and make sure `upper/` and `work/` exist in it.
/// Idempotent: an image already mounted there is kept.
pub async fn mount(tools: &Tools, sandbox_dir: &Path) -> Result<()> {
    let image = image_path(sandbox_dir);
    let mp = mount_dir(sandbox_dir);
    std::fs::create_dir_all(&mp).ctx(&mp)?;
    if !is_mountpoint(sandbox_dir, &mp) {
        wait_until_released(&image).await?;
        if !superblock(&image)?.clean {
            // Not unmounted cleanly (host crash while it was mounted): repair before use.
            tracing::warn!(image = %image.display(), "sandbox disk image was not unmounted cleanly; running e2fsck -p");
            let img = image.to_string_lossy();
            match util::run(&tools.fsck.to_string_lossy(), &["-p", &img]).await {
                // exit 1: errors corrected — the image is usable
                Ok(_) => {}
                Err(Error::Command { status, .. }) if status.contains("exit status: 1") => {}
                Err(e) => return Err(e),
            }
        }
        let dev = loopdev::attach(&image)?;
        // nosuid, nodev: what a sandbox writes there (a setuid-root binary, a device node) means nothing on
        // the host side; the sandbox sees its files through the overlay, whose own flags apply inside.
        let res =
            rustix::mount::mount(dev.path.as_str(), &mp, "ext4", crate::mounts::HOST_MOUNT_FLAGS, Some(c"discard"));
        // Autoclear: the device now lives as long as the mount (or goes right here on failure).
        let devpath = dev.path.clone();
        drop(dev);
        res.map_err(|e| Error::Io { path: format!("mount {devpath} on {}", mp.display()).into(), source: e.into() })?;
    }
    for d in ["upper", "work"] {
        let p = mp.join(d);
        std::fs::create_dir_all(&p).ctx(&p)?;
    }
    Ok(())
}

/// How long [`mount`] waits for an earlier, lazily detached mount of the same image to go away.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Wait until no loop device is bound to `image`. A stop unmounts the image lazily when something
/// still holds the overlay on it (the sandbox's last processes still exiting under load); the old
/// filesystem then lives on, detached, until they are gone. Mounting the image again meanwhile
/// would put two filesystems on one image: the new one would not see what the old one has yet to
/// write back (a started sandbox found its files gone), and that write-back would then corrupt it.
async fn wait_until_released(image: &Path) -> Result<()> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        let devices = loopdev::devices_for(image);
        if devices.is_empty() {
            return Ok(());
        }
        for dev in devices.iter().filter(|d| !loopdev::autoclear(d)) {
            // Left bound by a pre-5.8 attach: on a device still in use this only sets autoclear.
            loopdev::detach(dev);
        }
        if started.elapsed() > RELEASE_WAIT {
            let busy = std::io::Error::from(std::io::ErrorKind::ResourceBusy);
            let what = format!("{} (still mounted, detached, on {})", image.display(), devices.join(", "));
            return Err(Error::Io { path: what.into(), source: busy });
        }
        if !logged {
            tracing::info!(image = %image.display(), ?devices, "waiting for an earlier, detached mount of the image to go");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unmount the image (idempotent). Its loop device goes with the mount.
pub fn unmount(sandbox_dir: &Path) -> Result<()> {
    mounts::umount_path(&mount_dir(sandbox_dir))
}

/// Unmount and delete the image (a pooled image of the wrong size).
pub fn discard(sandbox_dir: &Path) -> Result<()> {
    unmount(sandbox_dir)?;
    util::remove_file_idem(&image_path(sandbox_dir))?;
    let mp = mount_dir(sandbox_dir);
    match std::fs::remove_dir(&mp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx(&mp),
        _ => Ok(()),
    }
}

/// Something is mounted on `mp` (a child of `parent`): it is on another device. Two stats instead
/// of reading mountinfo, which is long on a node with hundreds of sandboxes.
pub(crate) fn is_mountpoint(parent: &Path, mp: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(parent), std::fs::metadata(mp)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// (used, total) bytes of the sandbox's image: statfs while mounted (what `df` in the sandbox
/// shows), else the superblock's counters.
pub fn usage(sandbox_dir: &Path) -> Option<(u64, u64)> {
    let mp = mount_dir(sandbox_dir);
    if is_mountpoint(sandbox_dir, &mp) {
        let st = rustix::fs::statvfs(&mp).ok()?;
        return Some(((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize));
    }
    let sb = superblock(&image_path(sandbox_dir)).ok()?;
    Some(((sb.blocks - sb.free_blocks) * sb.block_size, sb.blocks * sb.block_size))
}

pub(crate) struct Superblock {
    pub(crate) clean: bool,
    blocks: u64,
    free_blocks: u64,
    block_size: u64,
}

/// The few ext4 superblock fields we need (at byte 1024 of the image).
pub(crate) fn superblock(image: &Path) -> Result<Superblock> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).ctx(image)?;
    let mut b = [0u8; 1024];
    f.read_exact_at(&mut b, 1024).ctx(image)?;
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if u16_at(0x38) != 0xEF53 {
        return Err(Error::Invalid(format!("{}: not an ext4 image", image.display())));
    }
    // s_state: bit 0 = cleanly unmounted, bit 1 = errors detected.
    let state = u16_at(0x3A);
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let hi = |o: usize| if incompat_64bit { (u32_at(o) as u64) << 32 } else { 0 };
    Ok(Superblock {
        clean: state & 1 != 0 && state & 2 == 0,
        blocks: u32_at(0x04) as u64 | hi(0x150),
        free_blocks: u32_at(0x0C) as u64 | hi(0x158),
        block_size: 1024u64 << u32_at(0x18),
    })
}

/// Loop devices bound to an image below `sandboxes_dir` whose device is not mounted: possible
/// only through the pre-5.8 attach fallback (no atomic autoclear). Ours by path, so detached.
pub fn detach_unmounted(sandboxes_dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted: std::collections::HashSet<&str> =
        info.lines().filter_map(|l| l.split(" - ").nth(1)?.split(' ').nth(1)).collect();
    for (dev, backing) in loopdev::devices_backed_under(sandboxes_dir) {
        if !mounted.contains(format!("/dev/{dev}").as_str()) && backing.ends_with(IMAGE_FILE) {
            tracing::info!(device = %dev, image = %backing.display(), "detaching a leaked loop device of a sandbox image");
            loopdev::detach(&dev);
        }
    }
}
