//! A volume's size limit for every writer, sandboxes included: one ext4 image per volume.
//!
//! `<volumes_dir>/<id>.img` is a sparse file of the volume's size, formatted ext4 (with a journal: a volume's
//! files must survive a host crash, unlike a sandbox's scratch layer), attached to a loop device with autoclear
//! and mounted `nosuid,nodev` on `<volumes_dir>/<id>/`, the directory the content API works in and sandboxes bind.
//! A write past the size fails with ENOSPC wherever it comes from. (Ids are `[A-Za-z0-9_-]`, so `<id>.img` never
//! names a volume.)
//!
//! The host mount is made when the volume is created and again on first use after a reboot or a runtime close
//! ([`VolumeImages::attach`]). Sandboxes hold their own binds of it, so [`VolumeImages::unmount_all`] at close
//! detaches only the host's view; a loop device still bound to an image (a sandbox still runs) is mounted again
//! as it is — the same filesystem — never a second device on one image, which would put two filesystems on it.
//!
//! A volume made without a size (the server's `volume_size_mb = 0`), made before images existed, or in a shared
//! volumes directory (NFS, CephFS: no images there — two nodes would mount one) stays a plain directory, bounded
//! only by the filesystem holding it.
use crate::disk_image::{self, Tools};
use crate::error::{Error, IoCtx, Result};
use crate::{loopdev, mounts};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The runtime's [`soulbox_volumes::VolumeBacking`]: ext4 images (module docs).
#[derive(Debug)]
pub struct VolumeImages {
    tools: Tools,
    /// Mounts and unmounts of every volume of this process, one at a time: two attaches of one volume must not
    /// both find it unmounted and mount it twice.
    lock: Mutex<()>,
}

pub fn image_path(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{id}.img"))
}

impl VolumeImages {
    /// `None` when the host cannot hold images (no loop devices, ext4 or e2fsprogs): volumes stay plain
    /// directories, as the log says once.
    pub fn open() -> Option<VolumeImages> {
        match Tools::find() {
            Ok(tools) => Some(VolumeImages { tools, lock: Mutex::new(()) }),
            Err(e) => {
                tracing::warn!(error = %e, "volumes cannot have images: their size limit bounds content-API uploads only");
                None
            }
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create_image(&self, root: &Path, id: &str, size_bytes: u64) -> Result<()> {
        let image = image_path(root, id);
        let tmp = root.join(format!(".{id}.img.tmp"));
        let f = crate::util::create_private(&tmp)?;
        f.set_len(size_bytes.max(disk_image::MIN_MB << 20)).ctx(&tmp)?;
        drop(f);
        let args = disk_image::mkfs_args(disk_image::Journal::With, "soulbox-volume");
        let formatted = run_blocking(self.tools.mkfs(), &args, &tmp);
        if let Err(e) = formatted.and_then(|()| std::fs::rename(&tmp, &image).ctx(&image)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Mounts `image` on `mp`: the loop device already bound to it (a sandbox still holds its filesystem), else
    /// a new one, after `e2fsck -p` when the image was not unmounted cleanly (a host crash).
    fn mount(&self, image: &Path, mp: &Path) -> Result<()> {
        let mount = |dev: &str| {
            rustix::mount::mount(dev, mp, "ext4", mounts::HOST_MOUNT_FLAGS, Some(c"discard"))
                .map_err(|e| Error::Io { path: format!("mount {dev} on {}", mp.display()).into(), source: e.into() })
        };
        if let Some(dev) = loopdev::devices_for(image).first() {
            return mount(&format!("/dev/{dev}"));
        }
        if !disk_image::superblock(image)?.clean {
            tracing::warn!(image = %image.display(), "volume image was not unmounted cleanly; running e2fsck -p");
            match run_blocking(self.tools.fsck(), &["-p"], image) {
                Ok(()) => {}
                // exit 1: errors corrected — the image is usable
                Err(Error::Command { status, .. }) if status.contains("exit status: 1") => {}
                Err(e) => return Err(e),
            }
        }
        let dev = loopdev::attach(image)?;
        // Autoclear: the device lives as long as the mount (or goes with `dev` when the mount failed).
        mount(&dev.path)
    }

    /// Detaches the host mounts of every volume image under `root` (at runtime close). Sandboxes keep theirs.
    pub fn unmount_all(&self, root: &Path) {
        let _turn = self.locked();
        let Ok(entries) = std::fs::read_dir(root) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".img")) else { continue };
            let mp = root.join(id);
            if disk_image::is_mountpoint(root, &mp)
                && let Err(e) = mounts::umount_path(&mp)
            {
                tracing::warn!(volume = %id, error = %e, "could not unmount a volume image");
            }
        }
    }
}

impl soulbox_volumes::VolumeBacking for VolumeImages {
    fn create(&self, root: &Path, id: &str, size_bytes: Option<u64>) -> io::Result<()> {
        let Some(size) = size_bytes else { return Ok(()) };
        let _turn = self.locked();
        let (image, mp) = (image_path(root, id), root.join(id));
        self.create_image(root, id, size).map_err(io::Error::other)?;
        if let Err(e) = self.mount(&image, &mp) {
            let _ = std::fs::remove_file(&image);
            return Err(io::Error::other(e));
        }
        // mke2fs's lost+found would show in every listing of the volume; e2fsck makes it again if it needs it
        let _ = std::fs::remove_dir(mp.join("lost+found"));
        tracing::info!(volume = %id, size_bytes = size, "volume image created");
        Ok(())
    }

    fn attach(&self, root: &Path, id: &str) -> io::Result<()> {
        let (image, mp) = (image_path(root, id), root.join(id));
        if !image.exists() {
            return Ok(());
        }
        let _turn = self.locked();
        if disk_image::is_mountpoint(root, &mp) {
            return Ok(());
        }
        self.mount(&image, &mp).map_err(io::Error::other)?;
        tracing::info!(volume = %id, "volume image mounted");
        Ok(())
    }

    fn delete(&self, root: &Path, id: &str) -> io::Result<()> {
        let _turn = self.locked();
        let mp = root.join(id);
        // Lazily if a content request still has it open: the filesystem goes with its last user.
        while disk_image::is_mountpoint(root, &mp) {
            rustix::mount::unmount(&mp, rustix::mount::UnmountFlags::DETACH)?;
        }
        match std::fs::remove_file(image_path(root, id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn size(&self, root: &Path, id: &str) -> Option<u64> {
        std::fs::metadata(image_path(root, id)).ok().map(|m| m.len())
    }
}

/// Runs `program args... path` to completion on this (blocking) thread; non-zero exit is `Error::Command`.
fn run_blocking(program: &Path, args: &[&str], path: &Path) -> Result<()> {
    let cmdline = || format!("{} {} {}", program.display(), args.join(" "), path.display());
    let out = std::process::Command::new(program)
        .args(args)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { cmd: cmdline(), source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        cmd: cmdline(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}
