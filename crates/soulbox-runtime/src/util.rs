//! Small helpers: running external commands, atomic JSON files.
use crate::error::{Error, IoCtx, Result};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Run a command to completion; non-zero exit becomes `Error::Command` with stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    run_stdin(program, args, None).await
}

/// Run a command feeding `stdin`, returning stdout.
pub async fn run_stdin(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let cmdline = || format!("{} {}", program, args.join(" "));
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { cmd: cmdline(), source })?;
    if let Some(input) = stdin
        && let Some(mut w) = child.stdin.take()
    {
        w.write_all(input.as_bytes()).await.map_err(|source| Error::Spawn { cmd: cmdline(), source })?;
        drop(w);
    }
    let out = child.wait_with_output().await.map_err(|source| Error::Spawn { cmd: cmdline(), source })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: cmdline(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Write JSON atomically (tmp file + rename). No fsync: these records exist to survive a crash of
/// the runtime process (page cache survives that); after a host crash every netns, mount and
/// process is gone anyway and reconcile treats a missing/partial record as garbage to collect.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(|source| Error::Json { path: path.into(), source })?;
    write_atomic(path, &data)
}

/// Records are root's alone: files written here are 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).ctx(&tmp)?;
        // (a leftover temp file keeps its old mode through O_CREAT)
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).ctx(&tmp)?;
        f.write_all(data).ctx(&tmp)?;
    }
    std::fs::rename(&tmp, path).ctx(path)
}

/// [`write_json`] for files with secrets in them (see [`write_atomic_private`]).
pub fn write_json_private<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(|source| Error::Json { path: path.into(), source })?;
    write_atomic_private(path, &data)
}

/// [`write_atomic`] for files with secrets in them: the new file is created 0600 (never readable by another
/// user, not even between create and a chmod) and atomically replaces the old one, whatever mode that had.
pub fn write_atomic_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A fresh name each time: a leftover temp file of a crash (whatever its mode, whoever holds it open) is
    // never reused, and concurrent writers do not share one.
    let tmp = path.with_extension(format!("tmp{:016x}", rand::random::<u64>()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .ctx(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path).ctx(path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates (or truncates) a file with mode 0600, whatever the umask.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .ctx(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).ctx(path)?;
    Ok(f)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).ctx(path)?;
    serde_json::from_slice(&data).map_err(|source| Error::Json { path: path.into(), source })
}

/// Remove a file, treating "not found" as success.
pub fn remove_file_idem(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx(path),
        _ => Ok(()),
    }
}

/// Remove a directory tree, treating "not found" as success.
pub fn remove_dir_all_idem(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx(path),
        _ => Ok(()),
    }
}

/// Whether the effective capability set holds `cap` (from /proc/self/status).
pub fn has_cap(cap: u32) -> bool {
    let st = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    st.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| m & (1u64 << cap) != 0)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Last `n` bytes of a file as lossy text (for error messages).
pub fn tail(path: &Path, n: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.json");
        std::fs::write(dir.path().join("sandbox.tmp"), "old").unwrap(); // a leftover temp file, 0644
        super::write_json(&path, &serde_json::json!({"accessToken": "secret"})).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_json(&path, &serde_json::json!({})).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "rewritten");
    }
}
