//! Running a host tool (`nft`, `ss`) inside a sandbox's network namespace: the tool is the host's,
//! only its network namespace is the sandbox's (`setns` between fork and exec).
use crate::error::{Error, Result};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// Runs `program args` in the network namespace `/run/netns/<netns>`, feeding it `stdin`; returns its
/// stdout, or the command's error with its stderr.
pub(crate) async fn run(netns: &str, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
    let ns_path = std::path::Path::new("/run/netns").join(netns);
    let ns = std::fs::File::open(&ns_path).map_err(|source| Error::Io { path: ns_path.clone(), source })?;
    let ns_fd = ns.as_raw_fd();
    let cmd = || format!("{program} {} (in netns {netns})", args.join(" "));
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only setns(2) runs, on a descriptor opened above that lives
    // until the spawn returns (close-on-exec closes it in the child after setns).
    unsafe {
        command.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| Error::Spawn { cmd: cmd(), source })?;
    drop(ns);
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await.map_err(|source| Error::Spawn { cmd: cmd(), source })?;
    }
    let out = child.wait_with_output().await.map_err(|source| Error::Spawn { cmd: cmd(), source })?;
    succeeded(cmd, out)
}

/// A host tool's stdout when it exited 0, else the command's error with its stderr.
pub(crate) fn succeeded(cmd: impl FnOnce() -> String, out: std::process::Output) -> Result<Vec<u8>> {
    if !out.status.success() {
        return Err(Error::Command {
            cmd: cmd(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}
