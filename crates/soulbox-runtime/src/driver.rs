//! Driver for a runc-style OCI runtime CLI (`runc`, `runsc`, `crun`): create/start/state/pause/
//! resume/kill/delete/list/exec. Only the commands and flags common to all of them are used; the
//! state root (`--root`) lives under the data dir so the containers are ours alone.
use crate::error::{Error, Result};
use crate::runtime_kind::RuntimeKind;
use crate::util;
use serde::Deserialize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// How long `create`/`run --detach` may take before it is killed and the create fails (gVisor's cold start on a
/// loaded machine takes seconds; this only catches a CLI that never returns).
const CREATE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Driver {
    bin: String,
    global: Vec<String>,
    kind: RuntimeKind,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub bundle: Option<PathBuf>,
}

/// Fail early, before anything is made on the host, when the OCI runtime binary cannot run
/// (missing, not executable, not a runc-style CLI): `<bin> --version` must succeed. Its answer says which
/// runtime it is.
pub async fn check_runtime_binary(bin: &str) -> Result<RuntimeKind> {
    util::run(bin, &["--version"])
        .await
        .map(|out| RuntimeKind::from_version(bin, &out))
        .map_err(|e| Error::Invalid(format!("the OCI runtime {bin:?} does not work: {e}")))
}

impl Driver {
    /// A driver for `bin`, its kind known from the name only (see [`Driver::with_kind`]).
    pub fn new(bin: &str, extra_args: &[String], root: &Path) -> Self {
        Driver::with_kind(bin, RuntimeKind::from_name(bin), extra_args, root)
    }

    /// A driver for `bin` of `kind`: `--root <root>`, the flags the kind needs, then `extra_args`.
    pub fn with_kind(bin: &str, kind: RuntimeKind, extra_args: &[String], root: &Path) -> Self {
        let mut global = vec!["--root".to_string(), root.to_string_lossy().into_owned()];
        global.extend(kind.global_args());
        global.extend(extra_args.iter().cloned());
        Driver { bin: bin.to_string(), global, kind }
    }

    pub fn bin(&self) -> &str {
        &self.bin
    }

    pub fn kind(&self) -> &RuntimeKind {
        &self.kind
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let mut all: Vec<&str> = self.global.iter().map(|s| s.as_str()).collect();
        all.extend_from_slice(args);
        util::run(&self.bin, &all).await
    }

    /// `create --bundle <dir> [--preserve-fds 1] <id>`; the container's stdout/stderr are `stdio` (the sandbox
    /// log's FIFO), as are the runtime CLI's own: a failure's message goes there too, so the caller reads it
    /// from the log. `ready_fd` (if any) becomes fd [`RuntimeKind::ready_fd`] in the container.
    pub async fn create(&self, id: &str, bundle: &Path, stdio: OwnedFd, ready_fd: Option<OwnedFd>) -> Result<()> {
        self.create_or_run(&["create"], id, bundle, stdio, ready_fd).await
    }

    /// `run --detach`: create + start in one runtime invocation (saves a process start).
    pub async fn run_detached(&self, id: &str, bundle: &Path, stdio: OwnedFd, ready_fd: Option<OwnedFd>) -> Result<()> {
        self.create_or_run(&["run", "--detach"], id, bundle, stdio, ready_fd).await
    }

    /// `restore --detach --image-path <image> --bundle <dir> <id>` (runsc): the container continues from the
    /// state [`Driver::checkpoint`] saved; stdio as for [`Driver::create`].
    pub async fn restore(&self, id: &str, bundle: &Path, stdio: OwnedFd, image: &Path) -> Result<()> {
        let image = image.to_string_lossy();
        self.create_or_run(&["restore", "--detach", "--image-path", &image], id, bundle, stdio, None).await
    }

    /// `checkpoint --image-path <image> <id>` (runsc): saves the container's memory and state; the container
    /// stops, whether the save succeeded or not.
    pub async fn checkpoint(&self, id: &str, image: &Path) -> Result<()> {
        self.run(&["checkpoint", "--image-path", &image.to_string_lossy(), id]).await.map(|_| ())
    }

    async fn create_or_run(
        &self,
        verb: &[&str],
        id: &str,
        bundle: &Path,
        stdio: OwnedFd,
        ready_fd: Option<OwnedFd>,
    ) -> Result<()> {
        let what = format!("{} {}", self.bin, verb[0]);
        let stderr = stdio.try_clone().map_err(|e| Error::Io { path: bundle.join("stdio"), source: e })?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(&self.global).args(verb);
        cmd.arg("--bundle").arg(bundle).arg("--pid-file").arg(bundle.join("init.pid"));
        let passed = match ready_fd {
            Some(fd) if self.kind.passes_extra_fds() => {
                cmd.arg("--preserve-fds").arg("1");
                cmd.stdin(Stdio::null());
                Some(fd)
            }
            // No `--preserve-fds` (runsc): the pipe is the container's stdin, which the runtime passes on.
            Some(fd) => {
                cmd.stdin(Stdio::from(fd));
                None
            }
            None => {
                cmd.stdin(Stdio::null());
                None
            }
        };
        cmd.arg(id).stdout(Stdio::from(stdio)).stderr(Stdio::from(stderr));
        if let Some(fd) = &passed {
            let raw = fd.as_raw_fd();
            let target = self.kind.ready_fd();
            // SAFETY: only async-signal-safe calls (dup2/fcntl) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if raw == target {
                        let flags = libc::fcntl(target, libc::F_GETFD);
                        if flags < 0 || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(raw, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.kind.hide_proc_sys_net() {
            // SAFETY: only raw syscalls (unshare/mount) between fork and exec.
            unsafe { cmd.pre_exec(hide_proc_sys_net) };
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn { cmd: what.clone(), source })?;
        // Our copy of the write end must be closed so that envd's death shows as EOF.
        drop(passed);
        drop(cmd);
        // Bounded: a runtime CLI that never returns must not hold a create (and its caller) forever.
        let status = match tokio::time::timeout(CREATE_DEADLINE, child.wait()).await {
            Ok(waited) => waited.map_err(|source| Error::Spawn { cmd: what.clone(), source })?,
            Err(_) => {
                let _ = child.start_kill();
                tracing::error!(sandbox = id, cmd = %what, secs = CREATE_DEADLINE.as_secs(), "the runtime CLI did not return");
                return Err(Error::Command {
                    cmd: format!("{what} {id}"),
                    status: format!("did not return within {} s (killed)", CREATE_DEADLINE.as_secs()),
                    stderr: String::new(),
                });
            }
        };
        if !status.success() {
            // The message is in the sandbox log; the caller adds it.
            return Err(Error::Command {
                cmd: format!("{what} {id}"),
                status: status.to_string(),
                stderr: String::new(),
            });
        }
        Ok(())
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.run(&["start", id]).await.map(|_| ())
    }
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.run(&["pause", id]).await.map(|_| ())
    }
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.run(&["resume", id]).await.map(|_| ())
    }
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.run(&["kill", id, signal]).await.map(|_| ())
    }

    /// `state <id>`; `Ok(None)` when the runtime does not know the container.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        match self.run(&["state", id]).await {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|source| Error::Json { path: PathBuf::from(format!("{} state {id}", self.bin)), source }),
            Err(Error::Command { stderr, .. }) if is_not_exist(&stderr) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Force-delete (kills if running). Idempotent: an unknown container is success.
    pub async fn delete_force(&self, id: &str) -> Result<()> {
        // runsc cannot force-delete a paused container: it panics ("invalid state transition: paused =>
        // stopped") after dropping its state, leaving the sandbox's processes behind. Thaw it first.
        if self.kind.is_runsc()
            && let Ok(Some(state)) = self.state(id).await
            && state.status == "paused"
        {
            self.resume(id).await?;
        }
        match self.run(&["delete", "--force", id]).await {
            Ok(_) => Ok(()),
            Err(Error::Command { stderr, .. }) if is_not_exist(&stderr) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self) -> Result<Vec<ContainerState>> {
        let out = self.run(&["list", "--format", "json"]).await?;
        let t = out.trim();
        if t.is_empty() || t == "null" {
            return Ok(vec![]);
        }
        serde_json::from_str(t)
            .map_err(|source| Error::Json { path: PathBuf::from(format!("{} list", self.bin)), source })
    }

    /// `exec <id> <args…>` collecting output (tests and debugging; the product path is envd).
    pub async fn exec(&self, id: &str, args: &[&str]) -> Result<std::process::Output> {
        self.exec_as(id, None, None, args).await
    }

    /// `exec [--user uid:gid] [--cwd dir] <id> <args…>`.
    pub async fn exec_as(
        &self,
        id: &str,
        user: Option<&str>,
        cwd: Option<&str>,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(&self.global).arg("exec");
        if let Some(u) = user {
            cmd.arg("--user").arg(u);
        }
        if let Some(c) = cwd {
            cmd.arg("--cwd").arg(c);
        }
        cmd.arg(id).args(args).stdin(Stdio::null());
        cmd.output().await.map_err(|source| Error::Spawn { cmd: format!("{} exec", self.bin), source })
    }
}

/// In the forked child, before exec: a mount namespace of its own (a slave of the host's where those mounts
/// are shared) with an empty read-only tmpfs over `/proc/sys/net`. runsc (2022) takes the presence of
/// `/proc/sys/net/core/rmem_default` in the joined netns as "this is the host's netns" and refuses to set up
/// the sandbox's network; since Linux 6.x that sysctl exists in every netns (`runtime_kind.rs`). The namespace
/// goes with the CLI process: the sandbox and gofer processes runsc starts from it `pivot_root` into mount
/// namespaces of their own holding only their root (checked: no other sandbox's mounts), and need nothing under
/// `/proc/sys/net` (netstack's buffer sizes fall back to defaults).
fn hide_proc_sys_net() -> std::io::Result<()> {
    // SAFETY: plain syscalls on constant, NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let none = c"none".as_ptr();
        if libc::mount(none, c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(none, c"/proc/sys/net".as_ptr(), c"tmpfs".as_ptr(), flags, c"size=4k".as_ptr().cast()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn is_not_exist(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("does not exist") || s.contains("not found") || s.contains("no such")
}
