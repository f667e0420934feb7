//! Default seccomp profile: allow by default, deny (EPERM) the syscalls a sandbox never needs and
//! that are the usual container-escape or host-wide-effect paths.
//!
//! A deny-list (rather than Docker's allow-list) keeps arbitrary user software working while
//! closing what matters; the capability set already makes most of these fail, this is the second
//! fence. `clone3` answers ENOSYS so libc falls back to `clone`, whose flags can be filtered.
use crate::error::{Error, Result};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};

pub const DENIED: &[&str] = &[
    // mounting and mount-API
    "mount", "umount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "pivot_root",
    // kernel modules and kexec
    "init_module", "finit_module", "delete_module", "create_module", "kexec_load", "kexec_file_load",
    // bpf, perf, tracing of other processes
    "bpf", "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    // kernel keyring
    "keyctl", "add_key", "request_key",
    // raw I/O
    "iopl", "ioperm",
    // filesystem handles (container breakout via open_by_handle_at)
    "open_by_handle_at", "name_to_handle_at",
    // swap, reboot, clock, accounting, quotas, namespaces
    "swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
    "acct", "quotactl", "quotactl_fd", "setns", "lookup_dcookie", "userfaultfd", "fanotify_init",
    "syslog", "vm86", "vm86old", "nfsservctl", "_sysctl", "uselib", "get_kernel_syms", "query_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
];

const CLONE_NEWUSER: u64 = 0x1000_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn sys(names: &[&str], errno: u32) -> Result<LinuxSyscall> {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .build()
        .map_err(|e| Error::Oci(e.to_string()))
}

fn deny_flag(name: &str, index: usize, flag: u64) -> Result<LinuxSyscall> {
    let arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(flag)
        .value_two(flag)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .map_err(|e| Error::Oci(e.to_string()))?;
    LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .args(vec![arg])
        .build()
        .map_err(|e| Error::Oci(e.to_string()))
}

pub fn default_profile() -> Result<LinuxSeccomp> {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .syscalls(vec![
            sys(DENIED, EPERM)?,
            sys(&["clone3"], ENOSYS)?,
            // no new user namespaces (the usual way to regain capabilities)
            deny_flag("clone", 0, CLONE_NEWUSER)?,
            deny_flag("unshare", 0, CLONE_NEWUSER)?,
        ])
        .build()
        .map_err(|e| Error::Oci(e.to_string()))
}
