//! User namespaces: every sandbox's uid/gid 0..65535 map to a range of unprivileged host ids.
//!
//! **Modes** (`RuntimeConfig::userns_mode`, resolved at open into [`Userns`]):
//! - **per-sandbox**: each sandbox its own range; files stay stored unshifted and the overlay is
//!   mounted on idmapped layers (`idmap.rs`). Needs overlayfs on idmapped mounts (Linux >= 5.19,
//!   a filesystem with idmapped mounts), which the probe at open checks.
//! - **shared** (Docker's userns-remap): one range `[userns_base, userns_base + 65536)` for every
//!   sandbox, no idmapped mounts: files are stored *shifted* (owned by the host ids the sandboxes
//!   see), in a store of their own (`template::Store::shifted`), and the overlay is mounted as it is.
//!   `auto` picks it where the probe fails; sandboxes then share host ids (weaker: an escape from
//!   one reaches the files of all, still never host root).
//!
//! - **Ranges.** 65536 ids each, `RuntimeConfig::userns_base + i * 65536` for `i < userns_ranges`
//!   (default from 0x10000000: inside systemd's container range, far from `/etc/subuid`'s usual
//!   100000+, below 2^31 so `ping_group_range` "0 2147483647" covers every mapped gid).
//! - **Per sandbox** `userns.json` in its directory names its range (`shared: true` for the
//!   shared one: the sandbox's files are shifted, and only a runtime of that range may start it).
//!   It is written before anything uses the range (idmapped mounts, the container), kept by stop
//!   (a stopped sandbox holds its range), and goes with the directory on delete.
//! - **Host-wide claims** (`claims.rs`). Several runtime instances may share a host (tests,
//!   cluster agents, two servers), and two sandboxes sharing host ids would share a uid on the
//!   host. So a range is claimed in a host-wide directory (`RuntimeConfig::userns_claims_dir`,
//!   default `/run/soulbox/userns`) under a host-wide flock: by the sandbox dir that holds it, or,
//!   for the shared range, by the runtimes that use it. A range is never handed out while any
//!   sandbox dir (or shared-mode runtime) still names it. The claims live on tmpfs: after a reboot
//!   every instance re-claims its sandboxes' ranges at open; a stopped sandbox whose range was taken
//!   meanwhile gets another one at its next start (per-sandbox mode: its files are unshifted, so
//!   any range fits them).
//! - **Namespaces.** When a sandbox's network is set up (warm pool, create, start) a throwaway
//!   child is cloned into a new user namespace *and* a new network namespace, which that user
//!   namespace then owns; we write the child's id maps, bind-mount both namespaces (the netns at
//!   `/run/netns/<name>` like `ip netns add`, the userns at `<sandbox>/userns`) and kill it. runc
//!   joins that user namespace by path. Because the sandbox's own user namespace owns its netns,
//!   runc can mount `/sys` and write the net sysctls, root inside binds low ports with its own
//!   CAP_NET_BIND_SERVICE, and `runc exec` (which joins the user namespace first) can join the
//!   netns. The same namespace gives the idmapped layers their mapping (`idmap.rs`). In shared
//!   mode too every sandbox has its own user namespace (with the same mapping): capabilities of
//!   root inside one count for its own namespaces only.
use crate::error::{Error, IoCtx, Result};
use crate::util;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

mod claims;
pub use claims::{IdRanges, SharedRange};
// The settings (mode, range space, defaults) are the config's; here under their old paths.
pub use crate::config::{
    DEFAULT_BASE, DEFAULT_CLAIMS_DIR, DEFAULT_RANGES, RANGE_SIZE, UsernsMode, ranges_needed, validate,
};

/// A sandbox's range: inside id `k` is host id `host_base + k`, for `k < size`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    pub host_base: u32,
    pub size: u32,
    /// The shared range of a shared-mode runtime: the sandbox's files are stored shifted into it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

impl IdRange {
    /// The (per-sandbox) range of 65536 ids from `host_base`.
    pub fn at(host_base: u32) -> IdRange {
        IdRange { host_base, size: RANGE_SIZE, shared: false }
    }
    /// The shared range of 65536 ids from `host_base`.
    pub fn shared_at(host_base: u32) -> IdRange {
        IdRange { shared: true, ..IdRange::at(host_base) }
    }
    pub fn file(sandbox_dir: &Path) -> PathBuf {
        sandbox_dir.join("userns.json")
    }
    /// The range a sandbox dir names, if any.
    pub fn load(sandbox_dir: &Path) -> Option<IdRange> {
        util::read_json(&Self::file(sandbox_dir)).ok()
    }
    /// The range of a sandbox that must have one (given with its network).
    pub fn of_sandbox(sandbox_dir: &Path) -> Result<IdRange> {
        Self::load(sandbox_dir)
            .ok_or_else(|| Error::Invalid(format!("{} has no user namespace range", sandbox_dir.display())))
    }
    pub fn contains(&self, host_id: u32) -> bool {
        host_id >= self.host_base && (host_id as u64) < self.host_base as u64 + self.size as u64
    }
    /// `/proc/<pid>/uid_map` line for this range.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }
}

/// User namespaces as a runtime instance runs them (module docs).
pub enum Userns {
    PerSandbox(IdRanges),
    Shared(SharedRange),
}

impl Userns {
    pub fn mode(&self) -> UsernsMode {
        match self {
            Userns::PerSandbox(_) => UsernsMode::PerSandbox,
            Userns::Shared(_) => UsernsMode::Shared,
        }
    }

    /// The shared range, in shared mode: layers and writable layers are stored shifted into it.
    pub fn shifted(&self) -> Option<IdRange> {
        match self {
            Userns::Shared(s) => Some(s.range()),
            Userns::PerSandbox(_) => None,
        }
    }

    /// The sandbox's range (recorded in its dir before anything uses it).
    pub fn acquire(&self, sandbox_dir: &Path) -> Result<IdRange> {
        match self {
            Userns::PerSandbox(r) => r.acquire(sandbox_dir),
            Userns::Shared(s) => s.acquire(sandbox_dir),
        }
    }

    /// Re-adopt a kept sandbox's recorded range (reconcile). `Ok(false)`: not this runtime's to use.
    pub fn keep(&self, sandbox_dir: &Path, range: IdRange) -> Result<bool> {
        match self {
            Userns::PerSandbox(r) if !range.shared => r.keep(sandbox_dir, range),
            Userns::Shared(s) => Ok(range == s.range()),
            Userns::PerSandbox(_) => Ok(false),
        }
    }

    /// Whether a stopped sandbox whose recorded range [`Userns::keep`] refused may forget it and get
    /// another at its next start: only a per-sandbox range in per-sandbox mode (its files are
    /// unshifted). A shared range's record says how the files are stored and stays.
    pub fn may_forget(&self, range: IdRange) -> bool {
        matches!(self, Userns::PerSandbox(_)) && !range.shared
    }

    /// The sandbox dir is gone: give its range back (the shared range stays the runtime's).
    pub fn release(&self, sandbox_dir: &Path, range: IdRange) -> Result<()> {
        match self {
            Userns::PerSandbox(r) if !range.shared => r.release(sandbox_dir, range),
            _ => Ok(()),
        }
    }

    /// Reconcile: stale claims of this instance's sandbox dirs.
    pub fn collect_stale(&self, sandboxes_dir: &Path) -> Result<()> {
        match self {
            Userns::PerSandbox(r) => r.collect_stale(sandboxes_dir),
            Userns::Shared(_) => Ok(()),
        }
    }
}

/// Whether a sandbox's files (its writable layer, its template's layers) are stored the way a
/// runtime with `userns` mounts them: shifted into this runtime's shared range, or unshifted. A
/// sandbox of the other kind (a mode or `userns_base` changed) is refused at start and snapshot
/// instead of showing every file with the wrong owner.
pub fn check_files(userns: Option<&Userns>, sandbox_dir: &Path) -> Result<()> {
    let stored = IdRange::load(sandbox_dir).filter(|r| r.shared);
    let wanted = userns.and_then(Userns::shifted);
    if stored.map(|r| r.host_base) == wanted.map(|r| r.host_base) {
        return Ok(());
    }
    let how = |r: Option<IdRange>| match r {
        Some(r) => format!("shifted into the shared user namespace range {:#x}", r.host_base),
        None => "unshifted".to_string(),
    };
    let fix = match stored {
        Some(r) => format!("userns_mode = \"shared\" with userns_base = {:#x}", r.host_base),
        None => "userns_mode = \"per-sandbox\" (or user namespaces off)".to_string(),
    };
    Err(Error::Invalid(format!(
        "the files of {} are stored {}, but this runtime stores them {}: run it with {fix}",
        sandbox_dir.display(),
        how(stored),
        how(wanted)
    )))
}

/// Shared mode: the sandbox's writable layer root (the rootfs's `/`, which overlayfs takes from the
/// upper dir) belongs to the range's root, as every file root makes inside it does. Made here on
/// first use (owned by host root: `nobody` inside); an owner given inside later is kept.
pub fn own_upper_root(upper: &Path, range: IdRange) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(upper).ctx(upper)?;
    let md = std::fs::symlink_metadata(upper).ctx(upper)?;
    if (md.uid(), md.gid()) == (0, 0) {
        std::os::unix::fs::lchown(upper, Some(range.host_base), Some(range.host_base)).ctx(upper)?;
    }
    Ok(())
}

/// At `Runtime::open`: how sandboxes get user namespaces (module docs), or None (configured off,
/// or no user namespaces at all on this host: loudly).
/// The decision for an OCI runtime that does not take our user namespaces (gVisor: `runtime_kind.rs`): `auto`
/// runs without (the sentry, not the host kernel, is what sandbox processes talk to; runsc runs the sentry and
/// gofer in namespaces of its own), an explicit `per-sandbox` or `shared` is refused.
pub fn not_with_runtime(cfg: &crate::RuntimeConfig, kind: &crate::runtime_kind::RuntimeKind) -> Result<Option<Userns>> {
    if cfg.user_namespaces && cfg.userns_mode != UsernsMode::Auto {
        return Err(Error::Invalid(format!(
            "userns_mode = {}: {} does not run sandboxes in our user namespaces (use auto)",
            cfg.userns_mode, kind.version
        )));
    }
    tracing::info!(
        runtime = %kind.version,
        userns_mode = "off",
        "no per-sandbox user namespaces with this OCI runtime: gVisor's sentry is the sandbox's kernel"
    );
    Ok(None)
}

pub fn open(cfg: &crate::RuntimeConfig, store: &crate::template::Store) -> Result<Option<Userns>> {
    if !cfg.user_namespaces {
        tracing::warn!(
            userns_mode = "off",
            "user namespaces are OFF by configuration: root in a sandbox is root on the host"
        );
        return Ok(None);
    }
    let mode = cfg.userns_mode;
    validate(cfg.userns_base, ranges_needed(cfg))?;
    crate::perms::check_traversable(&cfg.data_dir, cfg.userns_base)?;
    let first = IdRange::at(cfg.userns_base);
    // No user namespace at all (a kernel without them, or `user.max_user_namespaces` 0): no mode works.
    let ns = match new_namespace(first) {
        Ok(ns) => ns,
        Err(e) if mode != UsernsMode::Auto => {
            return Err(Error::Invalid(format!(
                "userns_mode = {mode}, but this host cannot create user namespaces: {e}"
            )));
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                userns_mode = "off",
                "USER NAMESPACES UNAVAILABLE: this host cannot create user namespaces. Sandboxes run WITHOUT a \
                 user namespace: root in a sandbox is root on the host"
            );
            return Ok(None);
        }
    };
    if mode != UsernsMode::Shared {
        let ranges = IdRanges::new(cfg.userns_base, cfg.userns_ranges, &cfg.userns_claims_dir)?;
        let probe = with_temp_layer(store, |tmp| {
            crate::idmap::probe(tmp, &cfg.sandboxes_dir(), first, std::os::fd::AsFd::as_fd(&ns))
        });
        match probe {
            Ok(()) => {
                tracing::info!(
                    userns_mode = %UsernsMode::PerSandbox,
                    base = ranges.base(),
                    ranges = ranges.count(),
                    "user namespaces: one id range per sandbox, idmapped layers"
                );
                return Ok(Some(Userns::PerSandbox(ranges)));
            }
            Err(e) if mode == UsernsMode::PerSandbox => {
                return Err(Error::Invalid(format!(
                    "userns_mode = per-sandbox, but this kernel or filesystem cannot mount overlayfs on idmapped \
                     layers (Linux >= 5.19 and a filesystem with idmapped mounts, e.g. ext4, xfs, btrfs): {e}; \
                     use userns_mode = \"auto\" or \"shared\""
                )));
            }
            Err(e) => tracing::warn!(
                error = %e,
                "this kernel or filesystem cannot mount overlayfs on idmapped layers (Linux >= 5.19 and a filesystem \
                 with idmapped mounts, e.g. ext4, xfs, btrfs): falling back to ONE SHARED user namespace range"
            ),
        }
    }
    let shared_base = cfg.userns_base;
    if let Err(e) = with_temp_layer(store, |tmp| probe_shared(tmp, &cfg.sandboxes_dir(), first)) {
        if mode == UsernsMode::Shared {
            return Err(Error::Invalid(format!(
                "userns_mode = shared, but files cannot be given the range's owners here: {e}"
            )));
        }
        tracing::error!(
            error = %e,
            userns_mode = "off",
            "USER NAMESPACES UNAVAILABLE: neither idmapped layers nor files owned by a shared range work on \
             these filesystems. Sandboxes run WITHOUT a user namespace: root in a sandbox is root on the host"
        );
        return Ok(None);
    }
    let shared = SharedRange::claim(shared_base, &cfg.userns_claims_dir, &cfg.sandboxes_dir())?;
    tracing::warn!(
        userns_mode = %UsernsMode::Shared,
        base = shared_base,
        "user namespaces: ONE SHARED id range for every sandbox (Docker's userns-remap); root inside is never \
         host root, but sandboxes share host ids, so an escape from one reaches the files of every other \
         sandbox on this host; layers are stored shifted in {}",
        crate::template::Store::shifted_root(&cfg.store_dir(), shared_base).display()
    );
    Ok(Some(Userns::Shared(shared)))
}

/// `f` on a fresh temp dir of the store (removed afterwards).
fn with_temp_layer(store: &crate::template::Store, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = store.temp_layer()?;
    let res = f(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

/// Can files be stored shifted here? A file in the store and one on the sandboxes' filesystem are
/// given an owner of the range (NFS with root squashing, for one, refuses). Leaves nothing behind.
fn probe_shared(store_tmp: &Path, sandboxes_dir: &Path, range: IdRange) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let id = range.host_base + 1000;
    let work = sandboxes_dir.join(".userns-probe-shared");
    let res = [store_tmp.to_path_buf(), work.clone()].iter().try_for_each(|dir| {
        std::fs::create_dir_all(dir).ctx(dir)?;
        let f = dir.join("probe");
        std::fs::write(&f, "shared").ctx(&f)?;
        std::os::unix::fs::lchown(&f, Some(id), Some(id)).ctx(&f)?;
        let md = std::fs::symlink_metadata(&f).ctx(&f)?;
        if (md.uid(), md.gid()) != (id, id) {
            return Err(Error::Invalid(format!(
                "{} was given owner {id} but is owned by {}:{}",
                f.display(),
                md.uid(),
                md.gid()
            )));
        }
        Ok(())
    });
    let _ = crate::util::remove_dir_all_idem(&work);
    res
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
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls only. Should we die before killing the child, it goes too.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
        loop {
            // SAFETY: as above; the parent kills us.
            unsafe { libc::pause() };
        }
    }
    if pid < 0 {
        return Err(Error::Io { path: "clone(new namespaces)".into(), source: std::io::Error::last_os_error() });
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
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(at).ctx(at)?;
    let src = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
    rustix::mount::mount_bind(&src, at).map_err(|e| Error::Io { path: at.into(), source: e.into() })
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
    let shared = || mount_change(dir, MountPropagationFlags::SHARED | MountPropagationFlags::REC);
    match shared() {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => {
            // not a mount point yet
            mount_bind_recursive(dir, dir)
                .and_then(|()| shared())
                .map_err(|e| Error::Io { path: dir.into(), source: e.into() })
        }
        Err(e) => Err(Error::Io { path: dir.into(), source: e.into() }),
    }
}

#[cfg(test)]
mod tests;
