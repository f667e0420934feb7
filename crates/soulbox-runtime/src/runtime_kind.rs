//! Which OCI runtime runs the sandboxes, and everything that differs between them — in one place, so the rest
//! of the crate asks a question ("does pause freeze the cgroup?") instead of comparing binary names.
//!
//! The kind is decided at `Runtime::open` from the `--version` output the runtime is checked with anyway (so no
//! extra process start), falling back to the binary's file name.
//!
//! **runsc (gVisor)** differs from runc/crun in:
//! - no `--preserve-fds`: envd's ready pipe is its stdin (`--ready-fd 0`); runsc hands the caller's stdio to the
//!   container's first process.
//! - its own network stack (`--network=sandbox`, runsc's default): runsc copies the addresses and routes of the
//!   netns's `eth0` into gVisor's netstack and then *removes* them from the host kernel's interface. Its removal
//!   cannot match a point-to-point (`peer`) address, so a runsc sandbox's `eth0` gets `ip/32` plus an on-link
//!   route to the gateway instead (`network::setup`). The guard table inside the netns never sees the sandbox's
//!   packets (netstack sends through a packet socket); the host-side chain still does.
//! - runsc up to at least 2022-12 decides "this is the host's network namespace, refuse" by whether
//!   `/proc/sys/net/core/rmem_default` exists after joining the netns; since Linux 6.x that sysctl exists in
//!   every netns, so every sandbox would be refused. Its `create`/`run` therefore run in a mount namespace
//!   of their own with an empty read-only tmpfs over `/proc/sys/net` (`driver.rs`).
//! - pause is runsc's own (it stops the sentry's tasks), not the cgroup freezer: pause/resume go through the CLI.
//! - it is its own kernel: the spec's seccomp profile is ignored (the sentry has its own filters on the host),
//!   masked paths and sysctls are gVisor's own `/proc`/`/sys`, and the per-sandbox user namespaces
//!   (`userns.rs`) are not used: the sentry and gofer run in namespaces runsc makes, and files written by root
//!   inside are stored as root, as with user namespaces off (see the README).
//! - the host pids cgroup counts gVisor's host tasks, not the sandbox's processes ([`RuntimeKind::host_pids_limit`]).
//! - no pause to disk: this runsc cannot checkpoint a sandbox whose envd listens, and a failed checkpoint kills
//!   the container, so `runsc checkpoint` is never called (README, "gVisor").
use std::path::Path;

/// The OCI runtime family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Runc,
    Crun,
    /// gVisor.
    Runsc,
    /// Another runc-compatible CLI: treated like runc, but pause goes through the CLI.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeKind {
    pub family: Family,
    /// The first line of `--version` (empty when only the name was known).
    pub version: String,
}

/// The descriptor envd's ready pipe becomes where the runtime passes extra descriptors (`--preserve-fds 1`: the
/// first one after stdio).
pub const PRESERVED_READY_FD: i32 = 3;

/// runsc: host tasks per sandbox process, and of the sandbox itself ([`RuntimeKind::host_pids_limit`]).
const RUNSC_TASKS_PER_PROCESS: i64 = 9;
const RUNSC_BASE_TASKS: i64 = 64;

impl RuntimeKind {
    /// From the binary's file name only (no process start): `runc`, `crun`, `runsc`, else `Other`.
    pub fn from_name(bin: &str) -> RuntimeKind {
        let name = Path::new(bin).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let family = match name.as_str() {
            "runc" => Family::Runc,
            "crun" => Family::Crun,
            "runsc" => Family::Runsc,
            _ => Family::Other,
        };
        RuntimeKind { family, version: String::new() }
    }

    /// From `<bin> --version`'s output; its first word names the runtime (`runc version 1.1.5`,
    /// `runsc version 0.0~20221219.0`, `crun version 1.8`), else the binary's name decides.
    pub fn from_version(bin: &str, version_output: &str) -> RuntimeKind {
        let first = version_output.lines().next().unwrap_or("").trim().to_string();
        let family = match first.split_whitespace().next() {
            Some("runc") => Family::Runc,
            Some("crun") => Family::Crun,
            Some("runsc") => Family::Runsc,
            _ => RuntimeKind::from_name(bin).family,
        };
        RuntimeKind { family, version: first }
    }

    /// The name templates ask for it by (`TemplateMeta::runtime`): `runc`, `crun`, `runsc`, or for another
    /// runtime its binary's file name.
    pub fn name(&self, bin: &str) -> String {
        match self.family {
            Family::Runc => "runc".into(),
            Family::Crun => "crun".into(),
            Family::Runsc => "runsc".into(),
            Family::Other => Path::new(bin).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }

    pub fn is_runsc(&self) -> bool {
        self.family == Family::Runsc
    }

    /// Whether the runtime's pause is the cgroup freezer, so the runtime may write it directly.
    pub fn pause_is_cgroup_freezer(&self) -> bool {
        matches!(self.family, Family::Runc | Family::Crun)
    }

    /// The descriptor envd gets its ready pipe on: fd 3 through `--preserve-fds 1`, or stdin where the runtime
    /// has no `--preserve-fds` (runsc).
    pub fn ready_fd(&self) -> i32 {
        if self.passes_extra_fds() { PRESERVED_READY_FD } else { 0 }
    }

    /// Whether `create`/`run` take `--preserve-fds`.
    pub fn passes_extra_fds(&self) -> bool {
        !self.is_runsc()
    }

    /// Whether the sandbox gets its own user namespace from us (`userns.rs`): not with gVisor (module docs).
    pub fn supports_user_namespaces(&self) -> bool {
        !self.is_runsc()
    }

    /// Whether the sandbox's network stack is the runtime's own (gVisor's netstack), which takes over the
    /// netns's `eth0`: its address must be a plain `/32` with an on-link route to the gateway, and the guard
    /// table in the netns does not see the sandbox's packets.
    pub fn own_network_stack(&self) -> bool {
        self.is_runsc()
    }

    /// Whether `create`/`run` must not see `/proc/sys/net` (runsc's root-netns check, module docs).
    pub fn hide_proc_sys_net(&self) -> bool {
        self.is_runsc()
    }

    /// The host pids cgroup limit for a sandbox allowed `processes` processes. runsc: the host cgroup counts
    /// gVisor's host tasks, not the sandbox's processes — measured on the ptrace platform: ~44 for the sentry,
    /// gofer and their threads, then ~8.4 more per sandbox process (each address space has a stub process and
    /// threads). So the limit is scaled to let about `processes` processes run; past it the sentry cannot make
    /// threads and the whole sandbox fails (the host and other sandboxes are untouched).
    pub fn host_pids_limit(&self, processes: i64) -> i64 {
        if self.is_runsc() {
            processes.saturating_mul(RUNSC_TASKS_PER_PROCESS).saturating_add(RUNSC_BASE_TASKS)
        } else {
            processes
        }
    }

    /// Whether the runtime applies the spec's seccomp profile (runsc ignores it without `--oci-seccomp`).
    pub fn applies_spec_seccomp(&self) -> bool {
        !self.is_runsc()
    }

    /// Global flags the runtime needs from us, before the configured `runtime_args` (which may override
    /// them: the last flag wins). runsc: writes go to the rootfs the gofer serves (our overlay, its disk
    /// limit), never to a sentry-side overlay in memory or a filestore outside the limit; and the sandbox counts
    /// as many CPUs as its quota allows (`nproc`, `/proc/cpuinfo`; gVisor shows at least 2), not the host's.
    pub fn global_args(&self) -> Vec<String> {
        if self.is_runsc() {
            vec!["--overlay2=none".into(), "--network=sandbox".into(), "--cpu-num-from-quota".into()]
        } else {
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_runtime() {
        let k = RuntimeKind::from_version("/opt/bin/oci", "runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n");
        assert_eq!(k.family, Family::Runsc);
        assert_eq!(k.version, "runsc version 0.0~20221219.0");
        assert_eq!((k.ready_fd(), k.passes_extra_fds(), k.pause_is_cgroup_freezer()), (0, false, false));
        assert!(!k.supports_user_namespaces() && k.own_network_stack() && k.hide_proc_sys_net());
        assert_eq!(k.host_pids_limit(64), 64 * 9 + 64);
        let k = RuntimeKind::from_version("runc", "runc version 1.1.5\ncommit: v1.1.5-0-gf19387a\n");
        assert_eq!(k.family, Family::Runc);
        assert_eq!((k.ready_fd(), k.passes_extra_fds(), k.pause_is_cgroup_freezer()), (3, true, true));
        assert!(k.supports_user_namespaces() && !k.own_network_stack() && k.global_args().is_empty());
        assert_eq!(k.host_pids_limit(64), 64);
        assert_eq!(RuntimeKind::from_version("/usr/bin/crun", "").family, Family::Crun);
        assert_eq!(RuntimeKind::from_version("/x/runsc", "something else").family, Family::Runsc);
        let other = RuntimeKind::from_name("youki");
        assert_eq!(other.family, Family::Other);
        assert!(!other.pause_is_cgroup_freezer() && other.passes_extra_fds());
    }
}
