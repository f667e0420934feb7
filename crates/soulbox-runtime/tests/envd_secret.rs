//! The per-sandbox envd secret on real sandboxes (root only; run under /tmp/soulbox-heavy.lock): envd answers
//! nothing that reaches its address without it, the secret lasts as long as the sandbox (pause/resume,
//! stop/start, a runtime restart), and no process inside and no snapshot can get at it.
mod common;
use common::*;
use soulbox_runtime::{SandboxInfo, SandboxSpec, Status};
use std::path::Path;
use std::time::Duration;

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

const T: Duration = Duration::from_secs(10);
const SECRET_HEADER: &str = "X-Soulbox-Envd-Secret";
const REFUSED: &str = "x-soulbox-envd-refused: secret";

/// A request straight to a sandbox's envd (as anything on the host that reaches its address could send), with
/// the given headers; returns (status, head + body as text).
async fn raw(info: &SandboxInfo, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let addr = format!("{}:49983", info.ip.expect("ip"));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect to envd");
        let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    };
    tokio::time::timeout(T, fut).await.expect("envd answered in time")
}

fn secret(info: &SandboxInfo) -> &str {
    info.envd_secret.as_ref().expect("every sandbox has an envd secret").expose()
}

fn envelope(json: &str) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&(json.len() as u32).to_be_bytes());
    body.extend_from_slice(json.as_bytes());
    body
}

/// Runs `cmd` through envd's process API as `user`, with the node's secret; returns its stdout+stderr.
async fn envd_sh(info: &SandboxInfo, user: &str, cmd: &str) -> String {
    let (_, out, err) = envd_run_as(info, Some(user), cmd).await.expect("envd runs processes");
    out + &err
}

async fn health_status(info: &SandboxInfo, secret: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = secret.map(|s| vec![(SECRET_HEADER, s)]).unwrap_or_default();
    raw(info, "GET", "/health", &headers, b"").await.0
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Every regular file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file()
                && std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envd_answers_only_the_node_that_started_it() {
    root_or_skip!("envd_answers_only_the_node_that_started_it");
    let h = harness(45).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.expect("create a");
    let b = rt.create(SandboxSpec::new("test")).await.expect("create b");
    assert_ne!(secret(&a), secret(&b), "every sandbox has its own secret");
    assert_eq!(rt.envd_secret(&a.id).as_ref(), a.envd_secret.as_ref(), "the in-memory map knows it");

    let start = envelope(r#"{"process":{"cmd":"/bin/sh","args":["-c","touch /tmp/pwned"]}}"#);
    let init = br#"{"accessToken":"attacker"}"#;
    let attacks: [(&str, &str, &[u8], &str); 5] = [
        ("GET", "/health", b"", "text/plain"),
        ("POST", "/init", init, "application/json"),
        ("POST", "/process.Process/Start", &start, "application/connect+json"),
        ("GET", "/files?path=/etc/passwd", b"", "text/plain"),
        ("POST", "/files?path=/tmp/pwned", b"x", "application/octet-stream"),
    ];
    // Without a secret, with garbage, and with another sandbox's secret (a request that reached the wrong envd).
    for presented in [None, Some("garbage"), Some(secret(&b))] {
        for (method, path, body, ctype) in attacks {
            let mut headers = vec![("Content-Type", ctype)];
            headers.extend(presented.map(|s| (SECRET_HEADER, s)));
            let (status, text) = raw(&a, method, path, &headers, body).await;
            assert_eq!(status, 403, "{method} {path} with {presented:?}: {text}");
            assert!(text.to_ascii_lowercase().contains(REFUSED), "refusal is marked for the proxy: {text}");
        }
    }
    // None of it happened, and the node itself still gets through.
    assert_eq!(health_status(&a, Some(secret(&a))).await, 200);
    assert_eq!(envd_sh(&a, "root", "[ -e /tmp/pwned ] && echo PWNED; echo done").await, "done\n");
    assert_eq!(health_status(&b, Some(secret(&b))).await, 200);

    // On the host: only root reads the record and the bundle that hold it.
    let dir = rt.sandbox_dir(&a.id);
    for file in ["sandbox.json", "config.json"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert!(std::fs::read_to_string(dir.join("sandbox.json")).unwrap().contains(secret(&a)));
    // Never serialized with the sandbox's info (what the runtime's CLI prints).
    assert!(!serde_json::to_string(&a).unwrap().contains(secret(&a)));

    rt.delete(&a.id).await.unwrap();
    assert_eq!(rt.envd_secret(&a.id), None, "a deleted sandbox's secret is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_lasts_as_long_as_the_sandbox_and_nothing_inside_can_read_it() {
    root_or_skip!("the_secret_lasts_as_long_as_the_sandbox_and_nothing_inside_can_read_it");
    let mut h = harness(46).await;
    let a = h.rt().create(SandboxSpec::new("test")).await.expect("create");
    let s = secret(&a).to_owned();

    // Processes envd starts, as root and as a user: no environment holds the boot configuration, and envd's own
    // (PID 1 and the server) cannot be read.
    for user in ["root", "user"] {
        let out = envd_sh(
            &a,
            user,
            "cat /proc/1/environ >/dev/null 2>&1 && echo READABLE-1; \
             for f in /proc/[0-9]*/environ; do cat $f 2>/dev/null; echo; done | tr '\\0' '\\n' | grep -c SOULBOX_ENVD_INIT; \
             env | grep -c SOULBOX_ENVD_INIT",
        )
        .await;
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0"], "as {user}: {out}");
    }

    // pause/resume
    h.rt().pause(&a.id).await.unwrap();
    h.rt().resume(&a.id).await.unwrap();
    assert_eq!(health_status(&a, Some(&s)).await, 200);

    // stop to disk / start: a new address, the same secret
    h.rt().stop(&a.id).await.unwrap();
    let started = h.rt().start(&a.id).await.unwrap();
    assert_eq!(secret(&started), s);
    assert_eq!(health_status(&started, None).await, 403);
    assert_eq!(health_status(&started, Some(&s)).await, 200);

    // a runtime restart re-adopts the running sandbox with its secret
    drop(h.rt.take());
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    assert_eq!(h.rt().envd_secret(&a.id).map(|x| x.expose().to_owned()), Some(s.clone()));
    let info = h.rt().info(&a.id).await.unwrap();
    assert_eq!(secret(&info), s);
    assert_eq!(health_status(&info, Some(&s)).await, 200);

    // ... and a stopped one keeps it for its next start
    h.rt().stop(&a.id).await.unwrap();
    drop(h.rt.take());
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    assert_eq!(h.rt().info(&a.id).await.unwrap().status, Status::Stopped);
    assert_eq!(h.rt().envd_secret(&a.id).map(|x| x.expose().to_owned()), Some(s.clone()));
    let again = h.rt().start(&a.id).await.unwrap();
    assert_eq!(health_status(&again, Some(&s)).await, 200);

    // A snapshot (what templates are made of) does not carry it: nothing in the sandbox's files has it.
    envd_sh(&again, "root", "echo data > /root/file").await;
    let meta = h.rt().snapshot(&a.id, "tq46snap").await.unwrap();
    let layer = h.rt().store().layer_dir(meta.layers.last().unwrap());
    assert!(layer.join("root/file").exists(), "the snapshot has the sandbox's files");
    assert_eq!(files_containing(&layer, &s), Vec::<String>::new());
    assert!(!serde_json::to_string(&meta).unwrap().contains(&s));
    h.rt().store().delete("tq46snap").unwrap();
    h.rt().delete(&a.id).await.unwrap();
}
