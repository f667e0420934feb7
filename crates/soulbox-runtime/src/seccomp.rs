//! The default seccomp profile: an allow list. Every syscall not listed fails with EPERM.
//!
//! Modelled on Docker's default profile for a container without CAP_SYS_ADMIN (its unconditional
//! allow list, plus what its capability-conditional rules grant our capability set, which is only
//! `chroot`), with these differences:
//! - denied although Docker allows them: `io_uring_*` (a large, frequently exploited kernel
//!   surface), `ptrace`/`process_vm_readv`/`process_vm_writev` (no debugging of other processes:
//!   root inside could otherwise trace envd), `socketcall`, `name_to_handle_at`;
//! - `socket` only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (Docker refuses only AF_VSOCK);
//!   any other family — AF_VSOCK (the hypervisor's agents on a cloud VM), AF_PACKET, AF_ALG,
//!   AF_BLUETOOTH, AF_XDP, … — fails with EAFNOSUPPORT, as on a kernel without that family, so
//!   software falls back as it would there. `socketpair` only for AF_UNIX;
//! - `unshare` without namespace flags (Docker: only with CAP_SYS_ADMIN), so `unshare(CLONE_FS)`
//!   and friends keep working while `unshare -U` does not; `clone` without namespace flags and
//!   `clone3` answering ENOSYS (libc then falls back to `clone`, whose flags can be checked) as in
//!   Docker;
//! - a few syscalls newer than Docker's list that programs use with a fallback (`fchmodat2`,
//!   `cachestat`, `map_shadow_stack`, `futex_wait`/`wake`/`requeue`, `mseal`).
//!
//! Not allowed, and named here because they are the usual escape paths: the mount API, kernel
//! modules, kexec, `bpf`, `perf_event_open`, `userfaultfd`, the kernel keyring (`keyctl`,
//! `add_key`, `request_key`), `setns`, `open_by_handle_at`, `iopl`/`ioperm`, `swapon`, `reboot`,
//! clock setting, `acct`, `quotactl`, `syslog`, `fanotify_init`, `sethostname`.
//!
//! Architectures: x86_64 only (a 32-bit x86 process is killed at its first syscall; x32 syscall numbers match no
//! rule and fail). 32-bit x86 is left out on purpose: there, socket calls go
//! through the `socketcall` multiplexer whose arguments sit behind a pointer, and libseccomp turns
//! a family-filtered `socket` rule into an unfiltered `socketcall(SYS_SOCKET)` rule — the family
//! filter would not hold.
//!
//! runc (1.1) ignores names its libseccomp does not know and answers ENOSYS for syscalls newer than
//! the newest one in the profile, so the list may name syscalls the host's libseccomp lacks.
use crate::error::{Error, Result};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Allowed unconditionally (x86_64 names; arch-specific ones are added by [`arch_allowed`]).
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "chmod", "chown", "chroot", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
    "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd",
    "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync",
    "ftruncate", "futex", "futex_requeue", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu",
    "getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername",
    "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
    "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "ioprio_get",
    "ioprio_set", "io_setup", "io_submit", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap",
    "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep",
    "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead",
    "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
    "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid", "setgid", "setgroups", "setitimer",
    "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit", "set_robust_list",
    "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setxattr", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "splice", "stat", "statfs", "statx",
    "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
    "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
];

/// Syscalls that exist only on some architectures.
fn arch_allowed() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["arch_prctl", "modify_ldt"],
        "aarch64" => {
            &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"]
        }
        _ => &[],
    }
}

/// The seccomp architectures the filter covers (see the module docs for 32-bit x86).
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        // x32 left out too: no distribution enables its ABI by default, and every architecture in the filter
        // costs runc a compilation of the whole list at each container start (~3 ms measured for x32).
        "x86_64" => vec![Arch::ScmpArchX86_64],
        // 32-bit ARM left out for the same reason as 32-bit x86 (socketcall on OABI kernels).
        "aarch64" => vec![Arch::ScmpArchAarch64],
        _ => vec![],
    }
}

/// Socket families a sandbox may open: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.
pub const ALLOWED_SOCKET_FAMILIES: &[u64] = &[1, 2, 10, 16];

/// Namespace flags of clone/unshare: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
const CLONE_NAMESPACES: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;
/// CLONE_NEWTIME: only unshare/clone3 take it (in clone's flags the bit means CSIGNAL).
const CLONE_NEWTIME: u64 = 0x80;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const EAFNOSUPPORT: u32 = 97;

fn oci<E: std::fmt::Display>(e: E) -> Error {
    Error::Oci(e.to_string())
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64, value_two: u64) -> Result<LinuxSeccompArg> {
    LinuxSeccompArgBuilder::default().index(index).op(op).value(value).value_two(value_two).build().map_err(oci)
}

/// One rule; `errno` None = allow. Each rule takes at most one condition: libseccomp cannot
/// combine two comparisons of the same argument in one rule, and rules of a syscall are ORed.
fn rule(names: &[&str], errno: Option<u32>, cond: Option<LinuxSeccompArg>) -> Result<LinuxSyscall> {
    let mut b = LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    b = match errno {
        None => b.action(LinuxSeccompAction::ScmpActAllow),
        Some(e) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(e),
    };
    if let Some(c) = cond {
        b = b.args(vec![c]);
    }
    b.build().map_err(oci)
}

fn eq(index: usize, value: u64) -> Result<Option<LinuxSeccompArg>> {
    arg(index, LinuxSeccompOperator::ScmpCmpEq, value, 0).map(Some)
}

/// `(arg & mask) == value`.
fn masked(index: usize, mask: u64, value: u64) -> Result<Option<LinuxSeccompArg>> {
    arg(index, LinuxSeccompOperator::ScmpCmpMaskedEq, mask, value).map(Some)
}

/// Rules answering EAFNOSUPPORT for every family of `syscall` outside `allowed` (one condition per
/// rule, so the complement is covered by equality, masked ranges and a final "greater than").
fn refuse_other_families(syscall: &str, allowed: &[u64]) -> Result<Vec<LinuxSyscall>> {
    let max = allowed.iter().copied().max().unwrap_or(0);
    let mut rules = Vec::new();
    let mut family = 0u64;
    while family <= max {
        if allowed.contains(&family) {
            family += 1;
            continue;
        }
        // The largest aligned power-of-two block starting here that holds no allowed family.
        let mut size = 1u64;
        while family.is_multiple_of(size * 2)
            && family + size * 2 - 1 <= max
            && !(family..family + size * 2).any(|f| allowed.contains(&f))
        {
            size *= 2;
        }
        let cond = if size == 1 { eq(0, family)? } else { masked(0, !(size - 1) & 0xffff_ffff, family)? };
        rules.push(rule(&[syscall], Some(EAFNOSUPPORT), cond)?);
        family += size;
    }
    rules.push(rule(&[syscall], Some(EAFNOSUPPORT), arg(0, LinuxSeccompOperator::ScmpCmpGt, max, 0).map(Some)?)?);
    Ok(rules)
}

pub fn default_profile() -> Result<LinuxSeccomp> {
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    allowed.extend_from_slice(arch_allowed());
    let mut syscalls = vec![rule(&allowed, None, None)?];
    for family in ALLOWED_SOCKET_FAMILIES {
        syscalls.push(rule(&["socket"], None, eq(0, *family)?)?);
    }
    syscalls.extend(refuse_other_families("socket", ALLOWED_SOCKET_FAMILIES)?);
    syscalls.push(rule(&["socketpair"], None, eq(0, 1)?)?);
    syscalls.extend(refuse_other_families("socketpair", &[1])?);
    // personality: only the values Docker allows (Linux, 32-bit/UNAME26 variants, query).
    for p in [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        syscalls.push(rule(&["personality"], None, eq(0, p)?)?);
    }
    // No new namespaces: a new user namespace is the usual way to regain capabilities.
    syscalls.push(rule(&["clone"], None, masked(0, CLONE_NAMESPACES, 0)?)?);
    syscalls.push(rule(&["unshare"], None, masked(0, CLONE_NAMESPACES | CLONE_NEWTIME, 0)?)?);
    syscalls.push(rule(&["clone3"], Some(ENOSYS), None)?);
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
        .map_err(oci)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families a rule set lets through: (allowed, refused with EAFNOSUPPORT, default).
    fn classify(profile: &LinuxSeccomp, syscall: &str, family: u64) -> &'static str {
        let mut verdict = "default";
        for r in profile.syscalls().as_ref().unwrap() {
            if !r.names().iter().any(|n| n == syscall) {
                continue;
            }
            let matches = match r.args() {
                None => true,
                Some(args) => args.iter().all(|a| match a.op() {
                    LinuxSeccompOperator::ScmpCmpEq => family == a.value(),
                    LinuxSeccompOperator::ScmpCmpGt => family > a.value(),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => family & a.value() == a.value_two().unwrap_or(0),
                    _ => false,
                }),
            };
            if matches {
                let v = if r.action() == LinuxSeccompAction::ScmpActAllow { "allow" } else { "eafnosupport" };
                assert!(verdict == "default" || verdict == v, "{syscall}({family}) matches conflicting rules");
                verdict = v;
            }
        }
        verdict
    }

    #[test]
    fn socket_families_outside_the_allow_list_are_refused() {
        let p = default_profile().unwrap();
        for family in 0..64u64 {
            let want = if ALLOWED_SOCKET_FAMILIES.contains(&family) { "allow" } else { "eafnosupport" };
            assert_eq!(classify(&p, "socket", family), want, "socket family {family}");
            let want = if family == 1 { "allow" } else { "eafnosupport" };
            assert_eq!(classify(&p, "socketpair", family), want, "socketpair family {family}");
        }
        // AF_VSOCK 40, AF_PACKET 17, AF_ALG 38, AF_BLUETOOTH 31, AF_XDP 44; a value with high bits set.
        for family in [40, 17, 38, 31, 44, 0x1_0000_0002] {
            assert_eq!(classify(&p, "socket", family), "eafnosupport");
        }
    }

    #[test]
    fn escape_paths_are_not_allowed() {
        let p = default_profile().unwrap();
        let rules = p.syscalls().as_ref().unwrap();
        let named: Vec<&str> = rules.iter().flat_map(|r| r.names().iter().map(String::as_str)).collect();
        for denied in [
            "mount",
            "umount2",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "pivot_root",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "setns",
            "open_by_handle_at",
            "name_to_handle_at",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "iopl",
            "ioperm",
            "swapon",
            "reboot",
            "settimeofday",
            "clock_settime",
            "acct",
            "quotactl",
            "syslog",
            "socketcall",
            "sethostname",
            "kcmp",
            "pidfd_getfd",
        ] {
            assert!(!named.contains(&denied), "{denied} is in the profile");
        }
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        if std::env::consts::ARCH == "x86_64" {
            assert!(
                !p.architectures().as_ref().unwrap().contains(&Arch::ScmpArchX86),
                "32-bit x86 would bypass the socket filter"
            );
        }
    }

    #[test]
    fn clone_and_unshare_refuse_namespace_flags() {
        let p = default_profile().unwrap();
        let rules = p.syscalls().as_ref().unwrap();
        for name in ["clone", "unshare"] {
            let r: Vec<_> = rules.iter().filter(|r| r.names().iter().any(|n| n == name)).collect();
            assert_eq!(r.len(), 1, "{name}");
            let a = &r[0].args().as_ref().unwrap()[0];
            assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
            assert_eq!(a.value() & 0x1000_0000, 0x1000_0000, "{name}: CLONE_NEWUSER not masked");
            assert_eq!(a.value_two().unwrap_or(0), 0);
        }
        let clone3: Vec<_> = rules.iter().filter(|r| r.names().iter().any(|n| n == "clone3")).collect();
        assert_eq!(clone3[0].errno_ret(), Some(ENOSYS));
    }
}
