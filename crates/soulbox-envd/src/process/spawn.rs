//! Starting a user process: its environment, working directory, credentials, stdio (pipes or a pty), and the
//! few things done in the forked child before `exec`.
//!
//! The command is executed directly (no `/bin/sh` wrapper as E2B uses): the OOM score and the credentials are
//! set in the child between clone and exec ([`fork_exec`]), which saves a shell start per command.

use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Gid, Uid};
use rustix::pty::OpenptFlags;
use soulbox_protocol::connect::RpcError;
use soulbox_protocol::process as pb;
use tokio::io::unix::AsyncFd;
use tokio::process::ChildStdin;

use super::fork_exec::{self, Child, Program};
use crate::process_table::handle::winsize;
use crate::users::User;

/// The `PATH` every process starts with (envd's own environment is never passed on).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// E2B's value: user code is what the OOM killer should pick, not envd (which runs at a protected score).
const OOM_SCORE_ADJ: &[u8] = b"100";

/// Everything needed to start one process.
pub struct SpawnSpec<'a> {
    pub config: &'a pb::ProcessConfig,
    pub user: &'a User,
    pub cwd: &'a Path,
    /// Sandbox-level variables (from `/init`), applied after the base variables and before the call's own.
    pub sandbox_env: &'a std::collections::BTreeMap<String, String>,
    pub pty: Option<pb::pty::Size>,
    pub stdin: bool,
}

/// A started child and the descriptors the service keeps.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub stdio: SpawnedStdio,
}

pub enum SpawnedStdio {
    Pipes { stdin: Option<ChildStdin>, stdout: Arc<AsyncFd<OwnedFd>>, stderr: Arc<AsyncFd<OwnedFd>> },
    Pty { master: Arc<AsyncFd<OwnedFd>> },
}

/// The process environment: base variables, then the sandbox's, then the call's (later entries win).
pub fn environment(
    user: &User,
    sandbox: &std::collections::BTreeMap<String, String>,
    call: &std::collections::HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOME".to_owned(), user.home.to_string_lossy().into_owned()),
        ("USER".to_owned(), user.name.clone()),
        ("LOGNAME".to_owned(), user.name.clone()),
        // E2B's envd marks every process as running inside a sandbox; tools and SDK users test for it.
        ("E2B_SANDBOX".to_owned(), "true".to_owned()),
    ];
    env.extend(sandbox.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(call.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

pub fn spawn(spec: SpawnSpec<'_>) -> Result<Spawned, RpcError> {
    let user_command = std::iter::once(spec.config.cmd.as_str())
        .chain(spec.config.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let start_failed =
        |e: &dyn std::fmt::Display| RpcError::invalid_argument(format!("error starting process '{user_command}': {e}"));

    let env = environment(spec.user, spec.sandbox_env, &spec.config.envs);
    let program = Program::new(&spec.config.cmd, &spec.config.args, &env).map_err(|e| start_failed(&e))?;
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes()).map_err(|e| start_failed(&e))?;
    let setup = ChildSetup {
        credentials: credentials(spec.user).map_err(|e| start_failed(&e))?,
        cwd,
        pty: spec.pty.is_some(),
        no_new_privs: no_new_privs_for(spec.user),
    };

    // The child's ends (close-on-exec; the child installs them as 0, 1 and 2) and what envd keeps.
    let (child_ends, pending): ([OwnedFd; 3], PendingStdio) = match spec.pty {
        Some(size) => {
            let (master, slave) = open_pty(size).map_err(|e| start_failed(&e))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| start_failed(&e));
            ([dup(&slave)?, dup(&slave)?, slave], PendingStdio::Pty { master })
        }
        None => {
            let (stdout, stdout_w) = std::io::pipe().map_err(|e| start_failed(&e))?;
            let (stderr, stderr_w) = std::io::pipe().map_err(|e| start_failed(&e))?;
            let (stdin_r, stdin) = if spec.stdin {
                let (r, w) = std::io::pipe().map_err(|e| start_failed(&e))?;
                (OwnedFd::from(r), Some(OwnedFd::from(w)))
            } else {
                let null = rustix::fs::open(c"/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| start_failed(&e))?;
                (null, None)
            };
            (
                [stdin_r, OwnedFd::from(stdout_w), OwnedFd::from(stderr_w)],
                PendingStdio::Pipes { stdin, stdout: OwnedFd::from(stdout), stderr: OwnedFd::from(stderr) },
            )
        }
    };

    let [a, b, c] = &child_ends;
    let child = fork_exec::spawn(&program, [a, b, c], &|| setup.run()).map_err(|e| start_failed(&e))?;
    // Close our copies of the child's ends (pipe write ends, pty slave) so EOF/EIO arrives when it is done.
    drop(child_ends);
    let pid = child.id();

    let stdio = match pending {
        PendingStdio::Pty { master } => {
            SpawnedStdio::Pty { master: nonblocking(master).map_err(|e| start_failed(&e))? }
        }
        PendingStdio::Pipes { stdin, stdout, stderr } => SpawnedStdio::Pipes {
            stdin: match stdin {
                Some(fd) => {
                    Some(ChildStdin::from_std(std::process::ChildStdin::from(fd)).map_err(|e| start_failed(&e))?)
                }
                None => None,
            },
            stdout: nonblocking(stdout).map_err(|e| start_failed(&e))?,
            stderr: nonblocking(stderr).map_err(|e| start_failed(&e))?,
        },
    };
    Ok(Spawned { child, pid, stdio })
}

enum PendingStdio {
    Pipes { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd },
    Pty { master: OwnedFd },
}

fn nonblocking(fd: OwnedFd) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
    rustix::io::ioctl_fionbio(&fd, true)?;
    // SAFETY: an `OwnedFd` is a valid descriptor that stays open, unchanged, for as long as it is owned.
    let registered = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Arc::new(registered))
}

/// A new pty pair with the requested window size. Both ends are close-on-exec; the child gets the slave
/// through its stdio (dup2 clears the flag there).
fn open_pty(size: pb::pty::Size) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::termios::tcsetwinsize(&master, winsize(size.cols, size.rows))?;
    Ok((master, slave))
}

struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// The identity switch to make in the child, if any: none when envd already runs as that user; an error when
/// envd is not root and would need to become someone else.
fn credentials(user: &User) -> io::Result<Option<Credentials>> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        if euid.as_raw() == user.uid && rustix::process::getegid().as_raw() == user.gid {
            return Ok(None);
        }
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("envd is not root and cannot run processes as '{}'", user.name),
        ));
    }
    let mut groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if groups.is_empty() {
        groups.push(Gid::from_raw(user.gid));
    }
    Ok(Some(Credentials { uid: Uid::from_raw(user.uid), gid: Gid::from_raw(user.gid), groups }))
}

/// Whether a process started as `user` gets `no_new_privs`: yes for root, no for everyone else.
///
/// Root's processes gain nothing from setuid binaries or file capabilities, so the flag costs them
/// nothing, and it keeps a root-started chain that drops to another user (a daemon running as
/// `www-data`, `su user -c …`) from climbing back through setuid binaries or file capabilities.
/// For other users it stays off: E2B users expect passwordless `sudo` from `user`, and `sudo` is a
/// setuid binary, which the flag disarms. The flag cannot be cleared once set, so it is set per
/// process here and never on envd itself (every process would inherit it).
pub fn no_new_privs_for(user: &User) -> bool {
    user.uid == 0
}

/// What the child does between clone and exec. Runs in the child, which shares envd's memory until it execs: raw
/// system calls only, no allocation.
struct ChildSetup {
    credentials: Option<Credentials>,
    cwd: CString,
    pty: bool,
    no_new_privs: bool,
}

impl ChildSetup {
    fn run(&self) -> io::Result<()> {
        // Best effort, like E2B's wrapper (which fails the command only when /proc is missing entirely).
        if let Ok(fd) = rustix::fs::open(c"/proc/self/oom_score_adj", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()) {
            let _ = rustix::io::write(&fd, OOM_SCORE_ADJ);
        }
        // A session of its own: the process leads its own process group, so signals can reach everything it
        // starts, and a pty can become its controlling terminal.
        rustix::process::setsid()?;
        if self.pty {
            // SAFETY: fd 0 is the pty slave, installed by the stdio setup that ran before this closure.
            rustix::process::ioctl_tiocsctty(unsafe { BorrowedFd::borrow_raw(0) })?;
        }
        if let Some(c) = &self.credentials {
            // Raw per-thread syscalls are right here: the child is a single thread (and glibc's setuid() would
            // signal envd's threads, whose memory the child shares).
            rustix::thread::set_thread_groups(&c.groups)?;
            rustix::thread::set_thread_gid(c.gid)?;
            rustix::thread::set_thread_uid(c.uid)?;
        }
        // After dropping privileges, so the user must be able to enter the directory (as with Go's exec).
        rustix::process::chdir(self.cwd.as_c_str())?;
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true)?;
        }
        Ok(())
    }
}
