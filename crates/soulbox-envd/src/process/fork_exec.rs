//! Starting a child with `clone(CLONE_VM | CLONE_VFORK)` — the technique of glibc's `posix_spawn` — instead of
//! `fork`, and waiting for it through a pidfd.
//!
//! Why: `fork` from envd copies its page tables, and the child's `exec` tears that copy down again; perf put the
//! two at about a third of envd's own CPU time per command (`bench/envd.sh`), on the path every `commands.run`
//! waits for. `posix_spawn` itself cannot switch user, groups or controlling terminal, so this is the same thing by
//! hand. The child shares envd's memory until it execs, so it may only make raw system calls on data prepared
//! before the clone (no allocation, no locks: another envd thread may hold them). The calling thread is
//! suspended until the child has exec'd or exited (CLONE_VFORK), which keeps the child's stack and arguments
//! alive, and it blocks every signal around the clone so that none of envd's handlers runs on the child's side.

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::{Pid, PidfdFlags, WaitOptions};
use tokio::io::unix::AsyncFd;

/// The child's stack: small, as it only runs the setup and `execve`; a guard page below it.
const STACK_SIZE: usize = 64 << 10;
/// Signals are 1..NSIG on Linux (64 of them; glibc refuses its own two internal ones, which is fine).
const NSIG: c_int = 65;
/// `execvp`'s search path when the environment has no `PATH`.
const FALLBACK_PATH: &str = "/bin:/usr/bin";

/// A program, its arguments and environment as the child needs them: C strings and null-terminated pointer
/// arrays, built before the clone.
pub struct Program {
    /// Files to try in turn (`execvp`'s `PATH` search, resolved here rather than in the child).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn c_string(s: &str) -> io::Result<CString> {
    // std's wording for the same failure.
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data"))
}

impl Program {
    /// `env` is the whole environment, later entries winning (as with `Command::env`), passed on sorted by name
    /// like std's `Command` does. A `program` without `/` is looked up in that environment's `PATH`.
    pub fn new(program: &str, args: &[String], env: &[(String, String)]) -> io::Result<Program> {
        let env: std::collections::BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let candidates = if program.contains('/') {
            vec![c_string(program)?]
        } else {
            let path = env.get("PATH").copied().unwrap_or(FALLBACK_PATH);
            path.split(':')
                .map(|dir| if dir.is_empty() { format!("./{program}") } else { format!("{dir}/{program}") })
                .map(|p| c_string(&p))
                .collect::<io::Result<_>>()?
        };
        let argv = std::iter::once(program).chain(args.iter().map(String::as_str)).map(c_string);
        let envp = env.iter().map(|(k, v)| c_string(&format!("{k}={v}")));
        Ok(Program { candidates, argv: argv.collect::<io::Result<_>>()?, envp: envp.collect::<io::Result<_>>()? })
    }

    /// The same program run by `/bin/sh`, as `execvp` does with a file the kernel cannot execute (ENOEXEC):
    /// a script without `#!`.
    fn through_shell(&self, file: &CString) -> Program {
        let mut argv = vec![c"/bin/sh".to_owned(), file.clone()];
        argv.extend(self.argv.iter().skip(1).cloned());
        Program { candidates: vec![c"/bin/sh".to_owned()], argv, envp: self.envp.clone() }
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// What the child reports when it could not exec; read by the parent once the clone has returned.
struct Failure {
    errno: AtomicI32,
    /// The candidate that failed with ENOEXEC, or -1.
    noexec: AtomicI32,
}

/// Everything the child reads, all prepared by the parent.
struct ChildArgs<'a> {
    candidates: &'a [*const libc::c_char],
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Descriptors to install as 0, 1 and 2.
    stdio: [RawFd; 3],
    setup: &'a dyn Fn() -> io::Result<()>,
    failure: Failure,
}

/// The child: stdio, the caller's setup, signals back to their defaults, then `execve`. Returns only by
/// `_exit(127)`, with the reason in `failure`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` on the stack of the parent thread, which is suspended until we exec or
    // exit (CLONE_VFORK), so it is alive and nothing else touches it.
    let args = unsafe { &*(arg as *const ChildArgs<'_>) };
    let errno = match prepare(args) {
        Ok(()) => exec(args),
        Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
    };
    args.failure.errno.store(errno, Ordering::Relaxed);
    // SAFETY: ends the child without running any of envd's exit handlers.
    unsafe { libc::_exit(127) }
}

fn prepare(args: &ChildArgs<'_>) -> io::Result<()> {
    for (target, &fd) in args.stdio.iter().enumerate() {
        let target = target as RawFd;
        // SAFETY: plain descriptor system calls on descriptors the parent keeps open until we exec.
        let ok = unsafe {
            if fd == target {
                // dup2 onto itself would leave close-on-exec set.
                libc::fcntl(fd, libc::F_SETFD, 0) != -1
            } else {
                libc::dup2(fd, target) != -1
            }
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
    }
    (args.setup)()?;
    // SAFETY: sigaction/sigprocmask on this thread only; the structures live on this stack.
    unsafe {
        // envd's handlers are envd's: caught signals go back to their default (ignored ones stay ignored, as
        // with fork+exec), SIGPIPE too (Rust ignores it in envd; std's Command restores it the same way).
        for sig in 1..NSIG {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            if sig == libc::SIGPIPE || (current.sa_sigaction != libc::SIG_IGN && current.sa_sigaction != libc::SIG_DFL)
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    Ok(())
}

/// `execve` on each candidate in turn, with `execvp`'s rules: a missing file or directory moves on, EACCES
/// moves on but is what gets reported if nothing else works, anything else stops. Returns the errno.
fn exec(args: &ChildArgs<'_>) -> c_int {
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for (i, &file) in args.candidates.iter().enumerate() {
        // SAFETY: null-terminated arrays of pointers to C strings owned by the parent's `Program`.
        unsafe { libc::execve(file, args.argv, args.envp) };
        last = io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOENT);
        match last {
            libc::EACCES => saw_eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            libc::ENOEXEC => {
                args.failure.noexec.store(i as i32, Ordering::Relaxed);
                return last;
            }
            _ => return last,
        }
    }
    if saw_eacces { libc::EACCES } else { last }
}

/// An anonymous mapping for the child's stack, unmapped on drop.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = STACK_SIZE + page;
        // SAFETY: a fresh private anonymous mapping; its lowest page becomes the guard.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { base, len };
            if libc::mprotect(base, page, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The initial stack pointer: the top of the mapping (the stack grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        ((self.base as usize + self.len) & !15) as *mut c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used: the child has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts `program` with `stdio` as its descriptors 0, 1 and 2, running `setup` in the child first (raw system
/// calls only). Returns once the child has exec'd; an exec or setup failure is returned as the error.
pub fn spawn(program: &Program, stdio: [&OwnedFd; 3], setup: &dyn Fn() -> io::Result<()>) -> io::Result<Child> {
    match spawn_once(program, stdio, setup)? {
        Ok(child) => Ok(child),
        Err(file) => match spawn_once(&program.through_shell(&file), stdio, setup)? {
            Ok(child) => Ok(child),
            Err(_) => Err(io::Error::from_raw_os_error(libc::ENOEXEC)),
        },
    }
}

/// `Ok(Err(file))` when `file` exists but is no executable the kernel knows (ENOEXEC).
fn spawn_once(
    program: &Program,
    stdio: [&OwnedFd; 3],
    setup: &dyn Fn() -> io::Result<()>,
) -> io::Result<Result<Child, CString>> {
    let candidates: Vec<*const libc::c_char> = program.candidates.iter().map(|c| c.as_ptr()).collect();
    let argv = null_terminated(&program.argv);
    let envp = null_terminated(&program.envp);
    let args = ChildArgs {
        candidates: &candidates,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: stdio.map(|fd| fd.as_raw_fd()),
        setup,
        failure: Failure { errno: AtomicI32::new(0), noexec: AtomicI32::new(-1) },
    };
    let stack = Stack::new()?;

    // SAFETY: the signal mask of this thread, restored right after the clone; `child_main` only reads `args`
    // (alive: CLONE_VFORK suspends us until the child execs or exits) and runs on its own `stack`.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs<'_> as *mut c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut());
        if pid == -1 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned pid 0"))?;

    let errno = args.failure.errno.load(Ordering::Relaxed);
    if errno != 0 {
        // The child has exited (or is about to): reap it.
        while let Err(rustix::io::Errno::INTR) = rustix::process::waitpid(Some(pid), WaitOptions::empty()) {}
        let noexec = args.failure.noexec.load(Ordering::Relaxed);
        if errno == libc::ENOEXEC
            && let Some(file) = usize::try_from(noexec).ok().and_then(|i| program.candidates.get(i))
        {
            return Ok(Err(file.clone()));
        }
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(Ok(Child::new(pid)))
}

/// A started child, waited for through a pidfd (or, where pidfds are missing, on a blocking thread).
pub struct Child {
    pid: Pid,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Child {
    fn new(pid: Pid) -> Child {
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::NONBLOCK).ok().and_then(|fd| {
            // SAFETY: an `OwnedFd` stays open and unchanged for as long as it is owned.
            unsafe { AsyncFd::register(fd) }.ok()
        });
        Child { pid, pidfd }
    }

    pub fn id(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// Waits for the child to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = self.pid;
        let Some(pidfd) = &self.pidfd else {
            return tokio::task::spawn_blocking(move || wait_blocking(pid)).await.map_err(io::Error::other)?;
        };
        loop {
            let mut ready = pidfd.readable().await?;
            match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => return Ok(ExitStatus::from_raw(status.as_raw())),
                Ok(None) => ready.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn wait_blocking(pid: Pid) -> io::Result<ExitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(ExitStatus::from_raw(status.as_raw())),
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
