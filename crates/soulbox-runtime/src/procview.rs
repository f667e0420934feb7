//! A sandbox sees its own machine: `/proc/meminfo`, `/proc/cpuinfo`, `/proc/stat`, `/proc/uptime`, `/proc/swaps`,
//! `/sys/devices/system/cpu/online` and `/proc/sys/kernel/random/boot_id` inside a runc/crun sandbox show its
//! limits, its own uptime and its own boot id instead of the host's — lxcfs's approach, in process: a FUSE
//! filesystem served by the runtime itself (no other daemon) at `<data_dir>/procview`, where `/<sandbox id>/<file>`
//! is rendered, when opened, from that sandbox's cgroup (v1 or v2) and its boot record. Each sandbox gets only its
//! own files, mounted over those paths in its mount namespace by [`attach`] while envd starts (not bound from the
//! bundle: runc refuses a bind under `/proc/sys`, and binds it does make cost its start a few FUSE lookups).
//! `nproc` follows the cpuset each sandbox is given ([`cpuset`]).
//!
//! Restarts: a running sandbox keeps mounts of the filesystem of the runtime that booted it; once that runtime is
//! gone they answer ENOTCONN. So a runtime that opens mounts a new filesystem at the same place and re-attaches
//! every running or paused sandbox to it (`lifecycle/proc_view.rs`). gVisor is its own kernel and shows its limits
//! itself: runsc sandboxes get only the boot id (bound from the bundle) and `--cpu-num-from-quota`
//! (`runtime_kind.rs`).
use crate::error::{Error, IoCtx, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod attach;
pub mod cpuset;
mod fs;
pub mod numbers;
pub mod render;

pub use attach::attach;

/// One file of the view: its name under `<mountpoint>/<id>/` and the path it covers inside the sandbox.
pub struct ViewFile {
    pub name: &'static str,
    pub covers: &'static str,
}

pub const FILES: &[ViewFile] = &[
    ViewFile { name: "meminfo", covers: "/proc/meminfo" },
    ViewFile { name: "cpuinfo", covers: "/proc/cpuinfo" },
    ViewFile { name: "stat", covers: "/proc/stat" },
    ViewFile { name: "uptime", covers: "/proc/uptime" },
    ViewFile { name: "swaps", covers: "/proc/swaps" },
    // glibc's get_nprocs (`sysconf(_SC_NPROCESSORS_ONLN)`, Python's `os.cpu_count()`) counts this list.
    ViewFile { name: "cpu_online", covers: "/sys/devices/system/cpu/online" },
    ViewFile { name: "boot_id", covers: BOOT_ID_PATH },
];

/// Where the kernel shows its boot id.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// The boot id alone, world-readable, in the sandbox's directory: what gVisor sandboxes get bound at
/// [`BOOT_ID_PATH`] (runsc serves it through its gofer).
pub const BOOT_ID_FILE: &str = "boot_id";

/// The name of a sandbox's boot record in its directory: `<CLOCK_BOOTTIME ns at cold boot> <boot id>`.
pub const BOOT_RECORD: &str = "boot";

/// Where the numbers come from.
pub(crate) struct Source {
    sandboxes_dir: PathBuf,
    cgroup_parent: String,
}

impl Source {
    fn knows(&self, id: &str) -> bool {
        crate::config::check_id(id).is_ok() && self.sandboxes_dir.join(id).is_dir()
    }

    fn place(&self, id: &str) -> numbers::Place {
        numbers::Place {
            root: PathBuf::from("/sys/fs/cgroup"),
            rel: Path::new(&self.cgroup_parent).join(id),
            v2: crate::cgroup::is_v2(),
        }
    }

    fn render(&self, id: &str, file: &ViewFile) -> Option<String> {
        if !self.knows(id) {
            return None;
        }
        let dir = self.sandboxes_dir.join(id);
        let boot = BootRecord::load(&dir);
        if file.name == "boot_id" {
            return boot.map(|b| format!("{}\n", b.boot_id));
        }
        let place = self.place(id);
        let host_meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let machine = render::Machine {
            memory: place.memory(),
            cpu: place.cpu(),
            host_cpus: host_cpus(),
            uptime_s: boot.map_or(0.0, |b| boot_time_ns().saturating_sub(b.boot_ns) as f64 / 1e9),
        };
        Some(match file.name {
            "meminfo" => render::meminfo(&host_meminfo, render::mem_total(&host_meminfo).unwrap_or(0), &machine.memory),
            "cpuinfo" => {
                render::cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(), &machine.cpus())
            }
            "stat" => {
                render::stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default(), &machine, numbers::user_hz())
            }
            "uptime" => render::uptime(&machine),
            "swaps" => render::swaps(),
            "cpu_online" => render::cpu_online(machine.cpus().len()),
            _ => return None,
        })
    }
}

fn host_cpus() -> u32 {
    // SAFETY: sysconf only reads.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// CLOCK_BOOTTIME (what `/proc/uptime` counts), nanoseconds.
pub fn boot_time_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// When a sandbox last booted cold, and the boot id it got then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecord {
    pub boot_ns: u64,
    pub boot_id: String,
}

impl BootRecord {
    /// A new boot: now, and a new random id in the kernel's format (a version 4 UUID).
    pub fn new() -> BootRecord {
        let b: [u8; 16] = rand::random();
        let mut b = b;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let boot_id = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
        BootRecord { boot_ns: boot_time_ns(), boot_id }
    }

    /// Written at every cold boot (a filesystem-only resume too), never on a resume from pause.
    pub fn write(&self, sandbox_dir: &Path) -> Result<()> {
        let id_file = sandbox_dir.join(BOOT_ID_FILE);
        crate::util::write_atomic_private(&id_file, format!("{}\n", self.boot_id).as_bytes())?;
        crate::perms::set_mode(&id_file, 0o444)?;
        crate::util::write_atomic_private(
            &sandbox_dir.join(BOOT_RECORD),
            format!("{} {}\n", self.boot_ns, self.boot_id).as_bytes(),
        )
    }

    /// Restarts the sandbox's clock (its uptime counts from now) and keeps its boot id: the booted pool's
    /// hand-out, which is the user's boot but not a new one for the code inside. Only the record is rewritten —
    /// the id file stays as it is (under gVisor it is bound into the sandbox). A sandbox without a readable record
    /// gets a whole new one.
    pub fn restart_clock(sandbox_dir: &Path) -> Result<BootRecord> {
        let Some(old) = BootRecord::load(sandbox_dir) else {
            let boot = BootRecord::new();
            boot.write(sandbox_dir)?;
            return Ok(boot);
        };
        let boot = BootRecord { boot_ns: boot_time_ns(), ..old };
        crate::util::write_atomic_private(
            &sandbox_dir.join(BOOT_RECORD),
            format!("{} {}\n", boot.boot_ns, boot.boot_id).as_bytes(),
        )?;
        Ok(boot)
    }

    pub fn load(sandbox_dir: &Path) -> Option<BootRecord> {
        let s = std::fs::read_to_string(sandbox_dir.join(BOOT_RECORD)).ok()?;
        let mut f = s.split_whitespace();
        Some(BootRecord { boot_ns: f.next()?.parse().ok()?, boot_id: f.next()?.to_string() })
    }
}

impl Default for BootRecord {
    fn default() -> Self {
        BootRecord::new()
    }
}

/// The mounted view filesystem; unmounted when dropped or [`ProcView::close`]d.
pub struct ProcView {
    mountpoint: PathBuf,
    session: std::sync::Mutex<Option<fuser::BackgroundSession>>,
    fs: Arc<fs::ViewFs>,
}

impl ProcView {
    /// Mounts the view at `mountpoint` (made if missing; a dead mount left there by a runtime that did not close
    /// is detached first).
    pub fn mount(mountpoint: &Path, sandboxes_dir: &Path, cgroup_parent: &str) -> Result<ProcView> {
        let _ = rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH);
        std::fs::create_dir_all(mountpoint).ctx(mountpoint)?;
        crate::perms::set_mode(mountpoint, 0o711)?;
        let fs = Arc::new(fs::ViewFs::new(Source {
            sandboxes_dir: sandboxes_dir.to_path_buf(),
            cgroup_parent: cgroup_parent.to_string(),
        }));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("soulbox-procview".into()),
            fuser::MountOption::RO,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoExec,
            fuser::MountOption::NoAtime,
        ];
        // Sandbox users are other users (mapped ids): allow_other. Access is decided here, not by modes: every
        // file is read-only for everyone, and a sandbox only has its own files.
        config.acl = fuser::SessionACL::All;
        // Two workers: a read is a few file reads from cgroupfs, but one slow request must not hold up all.
        config.n_threads = Some(2);
        config.clone_fd = true;
        let session = fuser::spawn_mount(Shared(fs.clone()), mountpoint, &config)
            .map_err(|e| Error::Io { path: mountpoint.to_path_buf(), source: e })?;
        Ok(ProcView { mountpoint: mountpoint.to_path_buf(), session: std::sync::Mutex::new(Some(session)), fs })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// `<mountpoint>/<id>/<file>`: what is mounted over `file.covers` in sandbox `id`.
    pub fn source(&self, id: &str, file: &ViewFile) -> PathBuf {
        self.mountpoint.join(id).join(file.name)
    }

    /// (file of the view, the path it covers): what [`attach`] mounts into sandbox `id`.
    pub fn files(&self, id: &str) -> Vec<(PathBuf, &'static str)> {
        FILES.iter().map(|f| (self.source(id, f), f.covers)).collect()
    }

    /// Drops what the filesystem keeps for a deleted sandbox.
    pub fn forget(&self, id: &str) {
        self.fs.forget_sandbox(id);
    }

    /// Ends the filesystem: a forced unmount aborts the FUSE connection (so the server threads end even while
    /// sandboxes still hold binds of its files — those answer ENOTCONN until a new runtime re-attaches them), then
    /// the mount is detached and the threads joined.
    pub fn close(&self) {
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::FORCE);
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
        if let Some(session) = self.session.lock().unwrap_or_else(|e| e.into_inner()).take()
            && let Err(e) = session.join()
        {
            tracing::warn!(error = %e, "the proc view's server ended with an error");
        }
    }
}

impl Drop for ProcView {
    fn drop(&mut self) {
        self.close();
    }
}

/// The filesystem behind an `Arc`, so the runtime keeps a handle to it while fuser owns the server.
struct Shared(Arc<fs::ViewFs>);

impl fuser::Filesystem for Shared {
    fn lookup(&self, req: &fuser::Request, parent: fuser::INodeNo, name: &std::ffi::OsStr, reply: fuser::ReplyEntry) {
        self.0.lookup(req, parent, name, reply)
    }
    fn getattr(
        &self,
        req: &fuser::Request,
        ino: fuser::INodeNo,
        fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        self.0.getattr(req, ino, fh, reply)
    }
    fn open(&self, req: &fuser::Request, ino: fuser::INodeNo, flags: fuser::OpenFlags, reply: fuser::ReplyOpen) {
        self.0.open(req, ino, flags, reply)
    }
    fn read(
        &self,
        req: &fuser::Request,
        ino: fuser::INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        flags: fuser::OpenFlags,
        lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        self.0.read(req, ino, fh, offset, size, flags, lock_owner, reply)
    }
    fn release(
        &self,
        req: &fuser::Request,
        ino: fuser::INodeNo,
        fh: fuser::FileHandle,
        flags: fuser::OpenFlags,
        lock_owner: Option<fuser::LockOwner>,
        flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.0.release(req, ino, fh, flags, lock_owner, flush, reply)
    }
    fn readdir(
        &self,
        req: &fuser::Request,
        ino: fuser::INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        reply: fuser::ReplyDirectory,
    ) {
        self.0.readdir(req, ino, fh, offset, reply)
    }
}

#[cfg(test)]
#[path = "procview/mount_tests.rs"]
mod mount_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn restart_clock_keeps_the_boot_id_and_moves_the_clock() {
        let t = tempfile::tempdir().unwrap();
        let first = BootRecord { boot_ns: 1, ..BootRecord::new() };
        first.write(t.path()).unwrap();
        let id_file = std::fs::metadata(t.path().join(BOOT_ID_FILE)).unwrap();

        let now = BootRecord::restart_clock(t.path()).unwrap();
        let loaded = BootRecord::load(t.path()).unwrap();
        assert_eq!(loaded, now);
        assert_eq!(loaded.boot_id, first.boot_id);
        assert!(loaded.boot_ns > first.boot_ns && loaded.boot_ns <= boot_time_ns(), "{loaded:?}");
        // The id file is the very same file (not rewritten), still saying the same id.
        let after = std::fs::metadata(t.path().join(BOOT_ID_FILE)).unwrap();
        assert_eq!((after.ino(), after.mode() & 0o777), (id_file.ino(), 0o444));
        assert_eq!(std::fs::read_to_string(t.path().join(BOOT_ID_FILE)).unwrap(), format!("{}\n", first.boot_id));
    }

    #[test]
    fn restart_clock_without_a_record_makes_a_whole_new_one() {
        let t = tempfile::tempdir().unwrap();
        let boot = BootRecord::restart_clock(t.path()).unwrap();
        assert_eq!(BootRecord::load(t.path()), Some(boot.clone()));
        assert_eq!(std::fs::read_to_string(t.path().join(BOOT_ID_FILE)).unwrap(), format!("{}\n", boot.boot_id));
    }
}
