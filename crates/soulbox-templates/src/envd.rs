//! A small client for the envd inside a (build) sandbox: run a command and stream its output lines, upload a
//! file. Connect JSON over HTTP/1.1, the same wire the SDKs speak (spec §2), plus the node's envd secret: these
//! calls come from the node itself, straight to the sandbox's address.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use soulbox_protocol::connect::EnvelopeDecoder;
use soulbox_protocol::envd_secret;
use soulbox_runtime::{EnvdSecret, SandboxInfo};

/// A sandbox's envd as its node reaches it: the address, the node's secret for it, and the sandbox's access
/// token when it has one.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: String,
    pub secret: Option<EnvdSecret>,
    pub access_token: Option<String>,
}

impl Endpoint {
    /// From the runtime's report of a sandbox (the node's own view, which includes the secret).
    pub fn of(info: &SandboxInfo) -> Result<Endpoint, String> {
        Ok(Endpoint {
            addr: info.envd_addr.clone().ok_or_else(|| format!("sandbox {} has no address", info.id))?,
            secret: info.envd_secret.clone(),
            access_token: info.spec.access_token.clone(),
        })
    }

    /// A request to `path_and_query` with the node's secret and the access token set.
    fn request(&self, path_and_query: &str) -> http::request::Builder {
        let mut req = http::Request::post(format!("http://{}{path_and_query}", self.addr));
        if let Some(secret) = &self.secret
            && let Ok(mut value) = http::HeaderValue::from_str(secret.expose())
        {
            value.set_sensitive(true);
            req = req.header(envd_secret::HEADER, value);
        }
        if let Some(token) = &self.access_token {
            req = req.header("x-access-token", token);
        }
        req
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn basic(user: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:")))
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
#[allow(clippy::too_many_arguments)] // one call site; each argument is one of the process's settings
pub async fn run(
    envd: &Endpoint,
    shell: &str,
    user: &str,
    cmd: &str,
    env: &BTreeMap<String, String>,
    cwd: &str,
    mut on_line: impl FnMut(bool, String) + Send,
) -> Result<i64, String> {
    let msg = serde_json::json!({"process": {"cmd": shell, "args": ["-c", cmd], "envs": env, "cwd": cwd}});
    let payload = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
    let mut body = Vec::with_capacity(payload.len() + 5);
    body.push(0u8);
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let req = envd
        .request("/process.Process/Start")
        .header(http::header::CONTENT_TYPE, "application/connect+json")
        .header("connect-protocol-version", "1")
        .header(http::header::AUTHORIZATION, basic(user))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client().request(req).await.map_err(|e| format!("envd: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(format!("envd answered {status}: {}", String::from_utf8_lossy(&text)));
    }
    let mut body = resp.into_body();
    let mut decoder = EnvelopeDecoder::new(16 * 1024 * 1024);
    let (mut out, mut err) = (Lines::default(), Lines::default());
    let mut exit: Option<i64> = None;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("envd stream: {e}"))?;
        let Ok(data) = frame.into_data() else { continue };
        decoder.push(&data);
        while let Some(env) = decoder.next_envelope().map_err(|e| format!("envd stream: {}", e.message))? {
            if env.is_end_stream() {
                if let Some(e) = env.end_stream_error() {
                    return Err(format!("envd: {}", e.message));
                }
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&env.payload).unwrap_or_default();
            let ev = &v["event"];
            for (key, is_err) in [("stdout", false), ("stderr", true), ("pty", false)] {
                if let Some(s) = ev["data"][key].as_str() {
                    let bytes = b64.decode(s).unwrap_or_default();
                    if is_err { err.push(&bytes, &mut lines) } else { out.push(&bytes, &mut lines) }
                    for l in lines.drain(..) {
                        on_line(is_err, l);
                    }
                }
            }
            if let Some(end) = ev.get("end") {
                // protojson omits a zero exit code
                exit = Some(end["exitCode"].as_i64().unwrap_or(if end["exited"].as_bool() == Some(false) { -1 } else { 0 }));
            }
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
    Ok(exit.unwrap_or(-1))
}

/// Streams the file at `local` to `path` as `user`, never holding it whole in memory; a gzip file (by its magic
/// bytes) is sent with `Content-Encoding: gzip` and stored decompressed by envd.
pub async fn upload_file(envd: &Endpoint, user: &str, path: &str, local: &std::path::Path) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |e: std::io::Error| format!("{}: {e}", local.display());
    let mut file = tokio::fs::File::open(local).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).await.is_ok() && magic == [0x1f, 0x8b];
    file.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut req = envd
        .request(&format!("/files?path={}&username={}", url_encode(path), url_encode(user)))
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, len);
    if gzip {
        req = req.header(http::header::CONTENT_ENCODING, "gzip");
    }
    let req = req.body(body).map_err(|e| e.to_string())?;
    let client: Client<HttpConnector, axum::body::Body> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.map_err(|e| format!("envd: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(format!("envd upload answered {status}: {}", String::from_utf8_lossy(&text)));
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
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
