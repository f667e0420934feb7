//! User namespaces: every sandbox's uid/gid 0..65535 map to its own range of unprivileged host ids.
//!
//! - **Ranges.** 65536 ids each, `RuntimeConfig::userns_base + i * 65536` for `i < userns_ranges`
//!   (default from 0x10000000: inside systemd's container range, far from `/etc/subuid`'s usual
//!   100000+, below 2^31 so `ping_group_range` "0 2147483647" covers every mapped gid).
//! - **Per sandbox** `userns.json` in its directory names its range. It is written before anything
//!   uses the range (idmapped mounts, the container), kept by stop (a stopped sandbox holds its
//!   range), and goes with the directory on delete.
//! - **Host-wide claims.** Several runtime instances may share a host (tests, cluster agents, two
//!   servers), and two sandboxes sharing host ids would share a uid on the host. So a range is
//!   claimed in a host-wide directory (`RuntimeConfig::userns_claims_dir`, default
//!   `/run/soulbox/userns`): one file per range naming the sandbox dir that holds it, created under
//!   a host-wide flock. A claim is stale (and may be taken) only when the directory it names no
//!   longer has a `userns.json` naming that range — so a range is never handed out while any
//!   sandbox dir still names it. The claims live on tmpfs: after a reboot every instance re-claims
//!   its sandboxes' ranges at open; a stopped sandbox whose range was taken meanwhile gets another
//!   one at its next start (its files are stored unshifted, so any range fits them).
//! - **Namespaces.** When a sandbox's network is set up (warm pool, create, start) a throwaway
//!   child is cloned into a new user namespace *and* a new network namespace, which that user
//!   namespace then owns; we write the child's id maps, bind-mount both namespaces (the netns at
//!   `/run/netns/<name>` like `ip netns add`, the userns at `<sandbox>/userns`) and kill it. runc
//!   joins that user namespace by path. Because the sandbox's own user namespace owns its netns,
//!   runc can mount `/sys` and write the net sysctls, root inside binds low ports with its own
//!   CAP_NET_BIND_SERVICE, and `runc exec` (which joins the user namespace first) can join the
//!   netns. The same namespace gives the idmapped layers their mapping (`idmap.rs`).
use crate::error::{Error, IoCtx, Result};
use crate::util;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids per sandbox: uid/gid 0..65535 inside.
pub const RANGE_SIZE: u32 = 65536;
/// Default first host id of the first range.
pub const DEFAULT_BASE: u32 = 0x1000_0000;
/// Default number of ranges (0x10000000..0x30000000).
pub const DEFAULT_RANGES: u32 = 8192;
/// Default host-wide claims directory.
pub const DEFAULT_CLAIMS_DIR: &str = "/run/soulbox/userns";
/// Highest host id a range may reach (signed 32-bit; `ping_group_range` is written up to it).
const MAX_HOST_ID: u64 = 0x7FFF_FFFF;
/// Lowest allowed base: never host root or the system's own accounts.
const MIN_BASE: u32 = 0x0008_0000;

/// A sandbox's range: inside id `k` is host id `host_base + k`, for `k < size`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    pub host_base: u32,
    pub size: u32,
}

impl IdRange {
    pub fn file(sandbox_dir: &Path) -> PathBuf {
        sandbox_dir.join("userns.json")
    }
    /// The range a sandbox dir names, if any.
    pub fn load(sandbox_dir: &Path) -> Option<IdRange> {
        util::read_json(&Self::file(sandbox_dir)).ok()
    }
    /// The range of a sandbox that must have one (given with its network).
    pub fn of_sandbox(sandbox_dir: &Path) -> Result<IdRange> {
        Self::load(sandbox_dir).ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no user namespace range",
                sandbox_dir.display()
            ))
        })
    }
    pub fn contains(&self, host_id: u32) -> bool {
        host_id >= self.host_base && (host_id as u64) < self.host_base as u64 + self.size as u64
    }
    /// `/proc/<pid>/uid_map` line for this range.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }
}

/// Check the configured range space.
pub fn validate(base: u32, ranges: u32) -> Result<()> {
    if base < MIN_BASE || !base.is_multiple_of(RANGE_SIZE) {
        return Err(Error::Invalid(format!(
            "userns base {base:#x} must be a multiple of 65536 and at least {MIN_BASE:#x}"
        )));
    }
    let end = base as u64 + ranges as u64 * RANGE_SIZE as u64;
    if ranges == 0 || end - 1 > MAX_HOST_ID {
        return Err(Error::Invalid(format!(
            "userns ranges: {ranges} ranges of 65536 from {base:#x} must fit below 2^31"
        )));
    }
    Ok(())
}

/// The allocator of one runtime instance over the host-wide claims.
pub struct IdRanges {
    base: u32,
    count: u32,
    claims_dir: PathBuf,
    /// Bases this instance holds (a cache of its claims).
    held: Mutex<BTreeSet<u32>>,
}

impl IdRanges {
    pub fn new(base: u32, count: u32, claims_dir: &Path) -> Result<IdRanges> {
        validate(base, count)?;
        create_private_dir(claims_dir)?;
        Ok(IdRanges {
            base,
            count,
            claims_dir: claims_dir.to_path_buf(),
            held: Default::default(),
        })
    }

    /// The first range of this instance's space (the open-time probe maps it; nothing runs in it).
    pub fn first(&self) -> IdRange {
        IdRange {
            host_base: self.base,
            size: RANGE_SIZE,
        }
    }

    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn claim_file(&self, base: u32) -> PathBuf {
        self.claims_dir.join(format!("{base:08x}"))
    }

    fn host_lock(&self) -> Result<std::fs::File> {
        let p = self.claims_dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx(&p)?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            Error::Io {
                path: p,
                source: e.into(),
            }
        })?;
        Ok(f)
    }

    /// Who holds `base` according to its claim: None (free, or a stale claim), or the sandbox dir.
    fn claimant(&self, base: u32) -> Option<PathBuf> {
        let named = std::fs::read_to_string(self.claim_file(base)).ok()?;
        let dir = PathBuf::from(named.trim_end_matches('\n'));
        (IdRange::load(&dir).map(|r| r.host_base) == Some(base)).then_some(dir)
    }

    fn write_claim(&self, base: u32, sandbox_dir: &Path) -> Result<()> {
        let p = self.claim_file(base);
        let tmp = p.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).ctx(&tmp)?;
        writeln!(f, "{}", sandbox_dir.display()).ctx(&tmp)?;
        drop(f);
        std::fs::rename(&tmp, &p).ctx(&p)
    }

    /// The sandbox's range: the one its `userns.json` names when that is still its own, else a
    /// new one (claimed host-wide, then recorded in the sandbox dir).
    pub fn acquire(&self, sandbox_dir: &Path) -> Result<IdRange> {
        let _lock = self.host_lock()?;
        if let Some(r) = IdRange::load(sandbox_dir)
            && self.keep_locked(sandbox_dir, r)?
        {
            return Ok(r);
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.count {
            let base = self.base + i * RANGE_SIZE;
            if held.contains(&base) || self.claimant(base).is_some() {
                continue;
            }
            // Claim first: a crash before `userns.json` leaves a claim naming a dir that does not
            // name the range, i.e. a stale one.
            self.write_claim(base, sandbox_dir)?;
            let range = IdRange {
                host_base: base,
                size: RANGE_SIZE,
            };
            util::write_json(&IdRange::file(sandbox_dir), &range)?;
            held.insert(base);
            return Ok(range);
        }
        Err(Error::Invalid(format!(
            "all {} user namespace id ranges are in use",
            self.count
        )))
    }

    /// Re-adopt a sandbox's recorded range (reconcile, start). `Ok(false)`: it is held by another
    /// sandbox now (claims were lost with a reboot); the caller's sandbox must not use it.
    pub fn keep(&self, sandbox_dir: &Path, range: IdRange) -> Result<bool> {
        let _lock = self.host_lock()?;
        self.keep_locked(sandbox_dir, range)
    }

    fn keep_locked(&self, sandbox_dir: &Path, range: IdRange) -> Result<bool> {
        let in_space = range.size == RANGE_SIZE
            && range.host_base >= self.base
            && (range.host_base - self.base).is_multiple_of(RANGE_SIZE)
            && (range.host_base - self.base) / RANGE_SIZE < self.count;
        match self.claimant(range.host_base) {
            Some(dir) if dir != sandbox_dir => return Ok(false),
            Some(_) => {}
            // Outside this instance's space (configuration changed): fine while running, but a
            // new claim is only made inside the space.
            None if !in_space => return Ok(false),
            None => self.write_claim(range.host_base, sandbox_dir)?,
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(range.host_base);
        Ok(true)
    }

    /// Reconcile: remove stale claims naming a directory below `sandboxes_dir` (a crash between
    /// the claim and `userns.json`, or a directory removed while the runtime was down).
    pub fn collect_stale(&self, sandboxes_dir: &Path) -> Result<()> {
        let _lock = self.host_lock()?;
        let entries = std::fs::read_dir(&self.claims_dir).ctx(&self.claims_dir)?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(base) = u32::from_str_radix(&name, 16) else {
                continue;
            };
            let named = std::fs::read_to_string(e.path()).unwrap_or_default();
            let ours = Path::new(named.trim_end_matches('\n')).parent() == Some(sandboxes_dir);
            if ours && self.claimant(base).is_none() {
                tracing::info!(
                    base,
                    dir = named.trim_end_matches('\n'),
                    "removing a stale user namespace range claim"
                );
                util::remove_file_idem(&e.path())?;
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&base);
            }
        }
        Ok(())
    }

    /// The sandbox dir is gone (or never named the range): give the range back.
    pub fn release(&self, sandbox_dir: &Path, range: IdRange) -> Result<()> {
        let _lock = self.host_lock()?;
        let p = self.claim_file(range.host_base);
        let named = std::fs::read_to_string(&p).unwrap_or_default();
        if Path::new(named.trim_end_matches('\n')) == sandbox_dir
            && IdRange::load(sandbox_dir) != Some(range)
        {
            util::remove_file_idem(&p)?;
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&range.host_base);
        Ok(())
    }
}

/// At `Runtime::open`: the allocator when user namespaces are on and this kernel and these
/// filesystems support idmapped overlay layers (`idmap::probe`); otherwise None, loudly.
pub fn open(
    cfg: &crate::RuntimeConfig,
    store: &crate::template::Store,
) -> Result<Option<IdRanges>> {
    if !cfg.user_namespaces {
        tracing::warn!(
            "user namespaces are OFF by configuration: root in a sandbox is root on the host"
        );
        return Ok(None);
    }
    let ranges = IdRanges::new(cfg.userns_base, cfg.userns_ranges, &cfg.userns_claims_dir)?;
    crate::perms::check_traversable(&cfg.data_dir, cfg.userns_base)?;
    let probe = (|| {
        let range = ranges.first();
        let ns = new_namespace(range)?;
        let tmp = store.temp_layer()?;
        let res = crate::idmap::probe(
            &tmp,
            &cfg.sandboxes_dir(),
            range,
            std::os::fd::AsFd::as_fd(&ns),
        );
        let _ = std::fs::remove_dir_all(&tmp);
        res
    })();
    match probe {
        Ok(()) => {
            tracing::info!(
                base = ranges.base,
                ranges = ranges.count,
                "user namespaces: one id range per sandbox, idmapped layers"
            );
            Ok(Some(ranges))
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "USER NAMESPACES UNAVAILABLE: this kernel or filesystem cannot mount overlayfs on idmapped layers \
                 (Linux >= 5.19 and a filesystem with idmapped mounts, e.g. ext4, xfs, btrfs). Sandboxes run WITHOUT \
                 a user namespace: root in a sandbox is root on the host"
            );
            Ok(None)
        }
    }
}

/// Create `dir` (and parents) and make it 0700.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).ctx(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ctx(dir)
}

/// Where a sandbox's user namespace is pinned (a bind mount of its nsfs file).
pub fn userns_path(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("userns")
}

/// A child cloned with `flags` (new namespaces) that only waits to be killed; `f` gets its pid.
fn with_child<T>(flags: libc::c_int, f: impl FnOnce(libc::pid_t) -> Result<T>) -> Result<T> {
    // A multi-threaded process cannot unshare(CLONE_NEWUSER) itself: a child is born in the new
    // namespaces (fork-like clone), the caller sets them up through /proc/<pid> and we kill it.
    // SAFETY: the child runs nothing but pause(2) until it is killed: no allocation, no locks,
    // nothing that the fork of a multi-threaded process makes unsafe.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls only. Should we die before killing the child, it goes too.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        loop {
            // SAFETY: as above; the parent kills us.
            unsafe { libc::pause() };
        }
    }
    if pid < 0 {
        return Err(Error::Io {
            path: "clone(new namespaces)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let pid = pid as libc::pid_t;
    let res = f(pid);
    // SAFETY: `pid` is our own child; it is killed and reaped here.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    res
}

fn write_maps(pid: libc::pid_t, range: IdRange) -> Result<()> {
    let line = range.map_line();
    for map in ["uid_map", "gid_map"] {
        let p = PathBuf::from(format!("/proc/{pid}/{map}"));
        std::fs::write(&p, &line).ctx(&p)?;
    }
    Ok(())
}

/// A new user namespace mapping 0..size to the range, held by the returned fd only.
pub fn new_namespace(range: IdRange) -> Result<OwnedFd> {
    with_child(libc::CLONE_NEWUSER, |pid| {
        write_maps(pid, range)?;
        let p = PathBuf::from(format!("/proc/{pid}/ns/user"));
        std::fs::File::open(&p).map(OwnedFd::from).ctx(&p)
    })
}

/// The sandbox's namespaces (module docs): a user namespace of `range` pinned at `userns_at`, and
/// a network namespace it owns pinned at `netns_at` (in `/run/netns`, so `ip -n` finds it).
pub fn create_namespaces(range: IdRange, userns_at: &Path, netns_at: &Path) -> Result<()> {
    if let Some(dir) = netns_at.parent() {
        shared_mount_dir(dir)?;
    }
    with_child(libc::CLONE_NEWUSER | libc::CLONE_NEWNET, |pid| {
        write_maps(pid, range)?;
        let pinned = pin(pid, "net", netns_at).and_then(|()| pin(pid, "user", userns_at));
        if pinned.is_err() {
            for p in [netns_at, userns_at] {
                let _ = unpin(p);
            }
        }
        pinned
    })
}

/// Bind-mount `/proc/<pid>/ns/<ns>` on a new empty file `at`.
fn pin(pid: libc::pid_t, ns: &str, at: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(at)
        .ctx(at)?;
    let src = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
    rustix::mount::mount_bind(&src, at).map_err(|e| Error::Io {
        path: at.into(),
        source: e.into(),
    })
}

/// Undo [`pin`] (idempotent).
pub fn unpin(at: &Path) -> Result<()> {
    crate::rootfs::umount_path(at)?;
    util::remove_file_idem(at)
}

/// What `ip netns add` does to `/run/netns` first: a shared mount, so a namespace pinned there
/// and later removed is unpinned in every mount namespace that copied it.
fn shared_mount_dir(dir: &Path) -> Result<()> {
    use rustix::mount::{MountPropagationFlags, mount_bind_recursive, mount_change};
    std::fs::create_dir_all(dir).ctx(dir)?;
    let shared = || {
        mount_change(
            dir,
            MountPropagationFlags::SHARED | MountPropagationFlags::REC,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => {
            // not a mount point yet
            mount_bind_recursive(dir, dir)
                .and_then(|()| shared())
                .map_err(|e| Error::Io {
                    path: dir.into(),
                    source: e.into(),
                })
        }
        Err(e) => Err(Error::Io {
            path: dir.into(),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_space_is_validated() {
        assert!(validate(DEFAULT_BASE, DEFAULT_RANGES).is_ok());
        assert!(validate(0, 1).is_err(), "host root's range");
        assert!(validate(100_001, 1).is_err(), "not a multiple of 65536");
        assert!(validate(0x7FFF_0000, 2).is_err(), "past 2^31");
        assert!(validate(0x7FFF_0000, 1).is_ok());
        assert!(validate(DEFAULT_BASE, 0).is_err());
        let r = IdRange {
            host_base: 0x1000_0000,
            size: RANGE_SIZE,
        };
        assert!(
            r.contains(0x1000_0000)
                && r.contains(0x1000_FFFF)
                && !r.contains(0x1001_0000)
                && !r.contains(0)
        );
        assert_eq!(r.map_line(), "0 268435456 65536\n");
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("soulbox-userns-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn claims_are_host_wide_and_survive_until_the_dir_forgets_them() {
        let root = tmp("claims");
        let claims = root.join("claims");
        let (a, b) = (
            IdRanges::new(0x2000_0000, 3, &claims).unwrap(),
            IdRanges::new(0x2000_0000, 3, &claims).unwrap(),
        );
        let dirs: Vec<PathBuf> = (0..4).map(|i| root.join(format!("s{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        // two instances on one claims dir never hand out the same range
        let r0 = a.acquire(&dirs[0]).unwrap();
        let r1 = b.acquire(&dirs[1]).unwrap();
        let r2 = a.acquire(&dirs[2]).unwrap();
        assert_eq!(
            BTreeSet::from([r0.host_base, r1.host_base, r2.host_base]).len(),
            3
        );
        assert!(b.acquire(&dirs[3]).is_err(), "space exhausted");
        // acquiring again for the same dir keeps its range
        assert_eq!(a.acquire(&dirs[0]).unwrap(), r0);
        // a stopped sandbox (dir kept) still holds its range after its instance is gone
        drop(a);
        let c = IdRanges::new(0x2000_0000, 3, &claims).unwrap();
        assert!(
            c.acquire(&dirs[3]).is_err(),
            "a range named by a sandbox dir was handed out"
        );
        // the other instance cannot re-adopt a range another dir holds
        assert!(!c.keep(&dirs[3], r0).unwrap());
        assert!(c.keep(&dirs[0], r0).unwrap());
        // the dir goes: the range is free again
        std::fs::remove_dir_all(&dirs[0]).unwrap();
        c.release(&dirs[0], r0).unwrap();
        assert_eq!(c.acquire(&dirs[3]).unwrap(), r0);
        // a stale claim (its dir no longer names the range) is taken over
        std::fs::remove_file(IdRange::file(&dirs[2])).unwrap();
        let d4 = root.join("s4");
        std::fs::create_dir_all(&d4).unwrap();
        assert_eq!(c.acquire(&d4).unwrap(), r2);
        // a crash between the claim and userns.json: the claim is collected at reconcile, others stay
        std::fs::remove_file(IdRange::file(&d4)).unwrap();
        c.collect_stale(&root).unwrap();
        assert!(!c.claim_file(r2.host_base).exists(), "stale claim kept");
        assert!(
            c.claim_file(r1.host_base).exists(),
            "a live claim was collected"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
