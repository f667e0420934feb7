//! Driver for a runc-style OCI runtime CLI (`runc`, `runsc`, `crun`): create/start/state/pause/
//! resume/kill/delete/list/exec. Only the commands and flags common to all of them are used; the
//! state root (`--root`) lives under the data dir so the containers are ours alone.
use crate::error::{Error, Result};
use crate::util;
use serde::Deserialize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The descriptor a ready pipe becomes in the container: runc's `--preserve-fds 1` passes fd 3 (the first one
/// after stdio) through to the container's process, which is envd, told so with `--ready-fd`.
pub const READY_FD: i32 = 3;

#[derive(Debug, Clone)]
pub struct Driver {
    bin: String,
    global: Vec<String>,
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
/// (missing, not executable, not a runc-style CLI): `<bin> --version` must succeed.
pub async fn check_runtime_binary(bin: &str) -> Result<()> {
    util::run(bin, &["--version"])
        .await
        .map(|_| ())
        .map_err(|e| Error::Invalid(format!("the OCI runtime {bin:?} does not work: {e}")))
}

impl Driver {
    pub fn new(bin: &str, extra_args: &[String], root: &Path) -> Self {
        let mut global = vec!["--root".to_string(), root.to_string_lossy().into_owned()];
        global.extend(extra_args.iter().cloned());
        Driver { bin: bin.to_string(), global }
    }

    pub fn bin(&self) -> &str {
        &self.bin
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let mut all: Vec<&str> = self.global.iter().map(|s| s.as_str()).collect();
        all.extend_from_slice(args);
        util::run(&self.bin, &all).await
    }

    /// `create --bundle <dir> [--preserve-fds 1] <id>`; the container's stdout/stderr are `stdio` (the sandbox
    /// log's FIFO), as are the runtime CLI's own: a failure's message goes there too, so the caller reads it
    /// from the log. `ready_fd` (if any) becomes fd [`READY_FD`] in the container.
    pub async fn create(&self, id: &str, bundle: &Path, stdio: OwnedFd, ready_fd: Option<OwnedFd>) -> Result<()> {
        self.create_or_run("create", id, bundle, stdio, ready_fd).await
    }

    /// `run --detach`: create + start in one runtime invocation (saves a process start).
    pub async fn run_detached(&self, id: &str, bundle: &Path, stdio: OwnedFd, ready_fd: Option<OwnedFd>) -> Result<()> {
        self.create_or_run("run", id, bundle, stdio, ready_fd).await
    }

    async fn create_or_run(
        &self,
        verb: &str,
        id: &str,
        bundle: &Path,
        stdio: OwnedFd,
        ready_fd: Option<OwnedFd>,
    ) -> Result<()> {
        let stderr = stdio.try_clone().map_err(|e| Error::Io { path: bundle.join("stdio"), source: e })?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(&self.global).arg(verb);
        if verb == "run" {
            cmd.arg("--detach");
        }
        cmd.arg("--bundle").arg(bundle).arg("--pid-file").arg(bundle.join("init.pid"));
        if ready_fd.is_some() {
            cmd.arg("--preserve-fds").arg("1");
        }
        cmd.arg(id).stdin(Stdio::null()).stdout(Stdio::from(stdio)).stderr(Stdio::from(stderr));
        if let Some(fd) = &ready_fd {
            let raw = fd.as_raw_fd();
            // SAFETY: only async-signal-safe calls (dup2/fcntl) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if raw == READY_FD {
                        let flags = libc::fcntl(READY_FD, libc::F_GETFD);
                        if flags < 0 || libc::fcntl(READY_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(raw, READY_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn { cmd: format!("{} {verb}", self.bin), source })?;
        // Our copy of the write end must be closed so that envd's death shows as EOF.
        drop(ready_fd);
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| Error::Spawn { cmd: format!("{} {verb}", self.bin), source })?;
        if !out.status.success() {
            // The message is in the sandbox log; the caller adds it.
            return Err(Error::Command {
                cmd: format!("{} {verb} {id}", self.bin),
                status: out.status.to_string(),
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

fn is_not_exist(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("does not exist") || s.contains("not found") || s.contains("no such")
}
