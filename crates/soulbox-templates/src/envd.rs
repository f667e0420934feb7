//! The engine's way into a sandbox's envd: the SDK's client ([`soulbox::Sandbox::direct`]) pointed straight at the
//! sandbox's address with the node's envd secret (these calls come from the node itself, not through the proxy):
//! run a command and stream its output lines, upload a file.

use std::collections::BTreeMap;
use std::time::Duration;

use soulbox::{CommandOptions, ConnectionConfig, DirectEnvd, Redirects, Sandbox};
use soulbox_runtime::SandboxInfo;

/// A sandbox's envd as its node reaches it: the address, the node's secret for it, and the sandbox's access
/// token when it has one.
#[derive(Debug, Clone)]
pub struct Endpoint {
    sandbox: Sandbox,
}

impl Endpoint {
    /// From the runtime's report of a sandbox (the node's own view, which includes the secret).
    pub fn of(info: &SandboxInfo) -> Result<Endpoint, String> {
        let direct = DirectEnvd {
            sandbox_id: info.id.clone(),
            template_id: info.template.clone(),
            addr: info.envd_addr.clone().ok_or_else(|| format!("sandbox {} has no address", info.id))?,
            node_secret: info.envd_secret.as_ref().map(|s| s.expose().to_string()),
            access_token: info.spec.access_token.clone(),
            envd_version: None,
        };
        let sandbox = Sandbox::direct(node_client()?, direct).map_err(|e| e.to_string())?;
        Ok(Endpoint { sandbox })
    }
}

/// An SDK client for one sandbox's agent: no API key (only envd is called), no request timeout (a build step or
/// an upload may take long), no redirects. One per [`Endpoint`], not one per node: a sandbox's address is reused
/// by the next sandbox once it is deleted, and a pooled connection to the old one must never carry a request.
fn node_client() -> Result<soulbox::Client, String> {
    let config = ConnectionConfig::default().with_request_timeout(None).with_redirects(Redirects::Off).with_retries(0);
    soulbox::Client::new(config).map_err(|e| e.to_string())
}

/// Splits a byte stream into lines (a trailing partial line is kept until more arrives or `finish`).
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8], out: &mut Vec<String>) {
        self.buf.extend_from_slice(data);
        while let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=p).collect();
            out.push(clean(&line[..line.len() - 1]));
        }
        // A progress bar without newlines must not grow without bound.
        if self.buf.len() > 64 * 1024 {
            out.push(clean(&std::mem::take(&mut self.buf)));
        }
    }
    fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            out.push(clean(&std::mem::take(&mut self.buf)));
        }
    }
}

fn clean(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    // Carriage-return progress output: keep what was shown last.
    s.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("").to_string()
}

/// Runs `cmd` with `shell -c` as `user` in `cwd`; every output line goes to `on_line(is_stderr, line)`.
/// Returns the exit code (-1 when the process ended without one, e.g. killed by a signal).
#[allow(clippy::too_many_arguments)] // each argument is one of the process's settings
pub async fn run(
    envd: &Endpoint,
    shell: &str,
    user: &str,
    cmd: &str,
    env: &BTreeMap<String, String>,
    cwd: &str,
    mut on_line: impl FnMut(bool, String) + Send,
) -> Result<i64, String> {
    // The SDK's callbacks run on its reader task; the chunks come back here, where `on_line` may borrow.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String)>();
    let err_tx = tx.clone();
    let mut opts = CommandOptions::default()
        .shell(shell)
        .user(user)
        .cwd(cwd)
        .timeout(Duration::ZERO)
        .discard_output(true)
        .on_stdout(move |chunk| {
            let _ = tx.send((false, chunk.to_string()));
        })
        .on_stderr(move |chunk| {
            let _ = err_tx.send((true, chunk.to_string()));
        });
    opts.envs = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let handle = envd.sandbox.commands().spawn_with(cmd, opts).await.map_err(|e| match e {
        // E2B's words, which SDK users match on (its SDK tests do): a user that does not exist.
        soulbox::Error::Auth(m) => format!("failed to run command '{cmd}': command failed: unauthenticated: {m}"),
        e => format!("envd: {e}"),
    })?;
    let (mut out, mut err) = (Lines::default(), Lines::default());
    let mut lines = Vec::new();
    // Ends when the SDK's reader task is done with the process (it drops the callbacks and their senders).
    while let Some((is_err, chunk)) = rx.recv().await {
        if is_err {
            err.push(chunk.as_bytes(), &mut lines)
        } else {
            out.push(chunk.as_bytes(), &mut lines)
        }
        for l in lines.drain(..) {
            on_line(is_err, l);
        }
    }
    out.finish(&mut lines);
    for l in lines.drain(..) {
        on_line(false, l);
    }
    err.finish(&mut lines);
    for l in lines.drain(..) {
        on_line(true, l);
    }
    match handle.wait().await {
        Ok(result) => Ok(i64::from(result.exit_code)),
        Err(soulbox::Error::CommandExit { exit_code, .. }) => Ok(i64::from(exit_code)),
        Err(e) => Err(format!("envd: {e}")),
    }
}

/// Streams the file at `local` to `path` as `user`, never holding it whole in memory; a gzip file (by its magic
/// bytes) is sent with `Content-Encoding: gzip` and stored decompressed by envd.
pub async fn upload_file(envd: &Endpoint, user: &str, path: &str, local: &std::path::Path) -> Result<(), String> {
    envd.sandbox.files().upload_file(path, local, Some(user)).await.map(drop).map_err(|e| format!("envd upload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_cleaned() {
        let mut l = Lines::default();
        let mut out = Vec::new();
        l.push(b"a\nb", &mut out);
        assert_eq!(out, vec!["a"]);
        l.push(b"c\r\n10%\r50%\rdone\n", &mut out);
        l.push(b"tail", &mut out);
        l.finish(&mut out);
        assert_eq!(out, vec!["a", "bc", "done", "tail"]);
    }
}
