//! Test harness: one runtime instance per test (own data dir, name prefix, /24 of the pool, nft
//! table), a shared template store, and a guard that deletes everything even when a test fails.
#![allow(dead_code)]
use soulbox_runtime::{Runtime, RuntimeConfig};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn store_dir() -> PathBuf {
    std::env::var_os("SOULBOX_TEST_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/soulbox-test-store"))
}

/// Root check: tests that need root print why and return early.
pub fn skip_unless_root(name: &str) -> bool {
    if !soulbox_runtime::util::is_root() {
        eprintln!("SKIP {name}: needs root (mounts, netns, cgroups, nftables)");
        return true;
    }
    false
}

/// The static envd binary; built with scripts/build-envd.sh when missing.
pub fn envd() -> PathBuf {
    if let Some(p) = std::env::var_os("SOULBOX_ENVD") {
        return PathBuf::from(p);
    }
    let p = workspace().join("target/static/x86_64-unknown-linux-gnu/release/soulbox-envd");
    if !p.exists() {
        let lock = std::fs::File::create(std::env::temp_dir().join("soulbox-envd-build.lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        if !p.exists() {
            eprintln!("building envd with scripts/build-envd.sh ...");
            let st =
                std::process::Command::new("bash").arg(workspace().join("scripts/build-envd.sh")).status().unwrap();
            assert!(st.success(), "scripts/build-envd.sh failed");
        }
    }
    p
}

pub struct Harness {
    pub rt: Option<Runtime>,
    pub cfg: RuntimeConfig,
}

/// `n` selects the test's prefix (`tq<n>`), pool (10.77.<n>.0/24) and data dir.
pub async fn harness(n: u8) -> Harness {
    harness_with(config(n)).await
}

/// A harness on a config made with [`config`] and then adjusted.
pub async fn harness_with(cfg: RuntimeConfig) -> Harness {
    let rt = Runtime::open(cfg.clone()).await.expect("runtime open");
    // in the runtime's store: the shared user namespace mode has one of its own
    rt.store().ensure_test_template(Path::new("/bin/busybox")).unwrap();
    Harness { rt: Some(rt), cfg }
}

pub fn config(n: u8) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(format!("/var/tmp/soulbox-test/t{n}"));
    cfg.store_dir = Some(store_dir());
    cfg.envd_path = envd();
    cfg.prefix = format!("tq{n}");
    cfg.pool_net = Ipv4Addr::new(10, 77, n, 0);
    cfg.pool_prefix_len = 24;
    cfg.dns = vec![];
    cfg
}

/// Open a runtime on a data dir whose previous instance was just dropped (a "crash" within the test process).
/// That instance's background tasks (a pool refill in flight, the firewall watcher) hold its data-dir lock
/// until they end, so `Locked` is retried for a while; a real crash releases the lock with the process.
pub async fn open_after_drop(cfg: RuntimeConfig) -> soulbox_runtime::Result<Runtime> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Runtime::open(cfg.clone()).await {
            Err(soulbox_runtime::Error::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            r => return r,
        }
    }
}

/// [`config`] with a per-sandbox disk image as the disk limit (required) and `pool` warm slots.
pub fn image_config(n: u8, pool: usize) -> RuntimeConfig {
    let mut cfg = config(n);
    cfg.disk_backend = soulbox_runtime::disk::DiskBackend::Image;
    cfg.disk_quota = soulbox_runtime::quota::DiskQuotaMode::Required;
    cfg.pool_size = pool;
    cfg
}

impl Harness {
    pub fn rt(&self) -> &Runtime {
        self.rt.as_ref().unwrap()
    }
    pub async fn base(&self) {
        self.rt().store().ensure_base_template("http://deb.debian.org/debian").await.expect("base template");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let dir = self.cfg.data_dir.clone();
            let _ = std::thread::spawn(move || {
                let tr = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                if let Err(e) = tr.block_on(rt.destroy_all()) {
                    eprintln!("cleanup error: {e}");
                }
                drop(rt);
                let _ = std::fs::remove_dir_all(&dir);
            })
            .join();
        }
    }
}

/// `runc exec <id> sh -c <script>` → (exit code, stdout+stderr).
pub async fn sh(rt: &Runtime, id: &str, script: &str) -> (i32, String) {
    let o = rt.driver().exec(id, &["/bin/sh", "-c", script]).await.expect("exec");
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), s)
}

/// Raw HTTP/1.1 request; returns (status, decoded body). The client closes the connection once the response is
/// complete, as the server's proxy does: a server that closed first would hold the connection in TIME_WAIT, which
/// a gVisor sandbox cannot be saved with (`lifecycle/checkpoint.rs`).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
    timeout: Duration,
) -> Option<(u16, Vec<u8>)> {
    http_with(addr, method, path, &[("Content-Type", ctype)], body, timeout).await
}

/// [`http`] with any request headers.
pub async fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Option<(u16, Vec<u8>)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).await.ok()?;
        s.write_all(body).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            match complete_response(&buf) {
                Response::Complete(status, body) => return Some((status, body)),
                Response::Invalid => return None,
                Response::Partial => {}
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                // Closed by the server: whatever arrived is the response (a body up to the end of the stream).
                return match complete_response(&buf) {
                    Response::Complete(status, body) => Some((status, body)),
                    _ => until_close(&buf),
                };
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

enum Response {
    Complete(u16, Vec<u8>),
    Partial,
    Invalid,
}

/// A response whose body is delimited by `Content-Length` or chunked encoding, once all of it is in `buf`.
fn complete_response(buf: &[u8]) -> Response {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Response::Partial };
    let headers = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let Some(status) = headers.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) else {
        return Response::Invalid;
    };
    let rest = &buf[split + 4..];
    if status == 204 || status == 304 {
        return Response::Complete(status, Vec::new());
    }
    if headers.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(p) = rest[i..].windows(2).position(|w| w == b"\r\n") {
            let Ok(len) = usize::from_str_radix(String::from_utf8_lossy(&rest[i..i + p]).trim(), 16) else {
                return Response::Invalid;
            };
            i += p + 2;
            if len == 0 {
                return Response::Complete(status, out);
            }
            let Some(data) = rest.get(i..i + len) else { return Response::Partial };
            out.extend_from_slice(data);
            i += len + 2;
            if i > rest.len() {
                return Response::Partial;
            }
        }
        return Response::Partial;
    }
    let length =
        headers.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) if rest.len() >= n => Response::Complete(status, rest[..n].to_vec()),
        Some(_) => Response::Partial,
        // No length: the body runs to the end of the stream.
        None => Response::Partial,
    }
}

fn until_close(buf: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&buf[..split]);
    let status: u16 = headers.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf[split + 4..].to_vec()))
}

/// The node's secret header for a sandbox's envd (what the server's proxy adds to every request).
/// What a one-shot server the test started inside a sandbox (`nc -l … -e /bin/echo <banner>`) sends to a
/// connection from the host to `ip:port`; tries for ~`attempts` × 50 ms while the server comes up.
pub async fn banner_from(ip: std::net::Ipv4Addr, port: u16, attempts: usize) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = String::new();
    for _ in 0..attempts {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect((ip, port))).await
        {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut got)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

pub fn secret_header(info: &soulbox_runtime::SandboxInfo) -> (&'static str, &str) {
    ("X-Soulbox-Envd-Secret", info.envd_secret.as_ref().expect("every sandbox has an envd secret").expose())
}

/// `GET /health` of a sandbox's envd, as its node (with the secret).
pub async fn health(info: &soulbox_runtime::SandboxInfo, timeout: Duration) -> Option<u16> {
    let addr = format!("{}:49983", info.ip.expect("ip"));
    http_with(&addr, "GET", "/health", &[secret_header(info)], b"", timeout).await.map(|(s, _)| s)
}

/// Run a command as the sandbox's default user (`user`, cwd /home/user) through envd's process
/// API; while envd answers `unimplemented` for it, through `runc exec --user 1000:1000`.
pub async fn run_user(rt: &Runtime, info: &soulbox_runtime::SandboxInfo, cmd: &str) -> (i64, String, String) {
    if let Some(r) = envd_run(info, cmd).await {
        return r;
    }
    let o = rt
        .driver()
        .exec_as(&info.id, Some("1000:1000"), Some("/home/user"), &["/bin/sh", "-c", cmd])
        .await
        .expect("exec");
    (
        o.status.code().unwrap_or(-1) as i64,
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run a command through envd's process API (Connect, JSON). Returns (exit code, stdout, stderr),
/// or None when envd does not implement the call yet.
pub async fn envd_run(info: &soulbox_runtime::SandboxInfo, cmd: &str) -> Option<(i64, String, String)> {
    envd_run_as(info, None, cmd).await
}

/// [`envd_run`] as `user` (HTTP Basic, as the SDKs name it), or the sandbox's default user.
pub async fn envd_run_as(
    info: &soulbox_runtime::SandboxInfo,
    user: Option<&str>,
    cmd: &str,
) -> Option<(i64, String, String)> {
    use base64::Engine;
    let req = serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", cmd]}});
    let path = "/process.Process/Start".to_string();
    let body = serde_json::to_vec(&req).unwrap();
    let mut env = vec![0u8];
    env.extend_from_slice(&(body.len() as u32).to_be_bytes());
    env.extend_from_slice(&body);
    let addr = format!("{}:49983", info.ip.expect("ip"));
    let auth = user.map(|u| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:"))));
    let mut headers = vec![("Content-Type", "application/connect+json"), secret_header(info)];
    headers.extend(auth.as_deref().map(|a| ("Authorization", a)));
    let (status, resp) =
        http_with(&addr, "POST", &path, &headers, &env, Duration::from_secs(30)).await.expect("envd request");
    assert_eq!(status, 200, "envd status: {}", String::from_utf8_lossy(&resp));
    if resp.len() > 5 && resp[0] & 2 != 0 && String::from_utf8_lossy(&resp[5..]).contains("unimplemented") {
        return None;
    }
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), -1i64);
    let mut i = 0;
    while i + 5 <= resp.len() {
        let len = u32::from_be_bytes(resp[i + 1..i + 5].try_into().unwrap()) as usize;
        let msg: serde_json::Value = serde_json::from_slice(&resp[i + 5..i + 5 + len]).unwrap_or_default();
        i += 5 + len;
        let ev = &msg["event"];
        let b64 = base64::engine::general_purpose::STANDARD;
        if let Some(s) = ev["data"]["stdout"].as_str() {
            out.extend(b64.decode(s).unwrap_or_default());
        }
        if let Some(s) = ev["data"]["stderr"].as_str() {
            err.extend(b64.decode(s).unwrap_or_default());
        }
        if ev.get("end").is_some() {
            code = ev["end"]["exitCode"].as_i64().unwrap_or(0);
        }
    }
    Some((code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned()))
}

/// Leftovers of one instance on the host: (netns, links, mounts, cgroups, containers).
pub async fn leftovers(cfg: &RuntimeConfig) -> Vec<String> {
    let mut v = Vec::new();
    v.extend(soulbox_runtime::network::netns_list(&cfg.prefix).into_iter().map(|n| format!("netns {n}")));
    v.extend(soulbox_runtime::network::host_links(&cfg.prefix).into_iter().map(|n| format!("link {n}")));
    // The node-level disk image mounted on `sandboxes/` is not a per-sandbox resource: see node_leftovers. Nor is
    // the runtime's proc view (one FUSE mount while it is open; its own tests check that closing removes it).
    v.extend(
        soulbox_runtime::rootfs::mounts_under(&cfg.data_dir)
            .into_iter()
            .filter(|m| *m != cfg.sandboxes_dir() && *m != cfg.proc_view_dir())
            .map(|m| format!("mount {}", m.display())),
    );
    // Loop devices of per-sandbox disk images (they go with their mount: autoclear).
    v.extend(
        soulbox_runtime::loopdev::devices_backed_under(&cfg.sandboxes_dir())
            .into_iter()
            .map(|(d, b)| format!("loop device {d} ({})", b.display())),
    );
    v.extend(soulbox_runtime::cgroup::children(&cfg.cgroup_parent()).into_iter().map(|c| format!("cgroup {c}")));
    let d = soulbox_runtime::driver::Driver::new(&cfg.runtime_bin, &[], &cfg.runtime_root());
    v.extend(d.list().await.unwrap_or_default().into_iter().map(|c| format!("container {}", c.id)));
    v
}

/// Node-level leftovers after `destroy_all`: the disk image's mount and loop devices.
pub fn node_leftovers(cfg: &RuntimeConfig) -> Vec<String> {
    let mut v = Vec::new();
    if soulbox_runtime::rootfs::is_mounted(&cfg.sandboxes_dir()) {
        v.push(format!("mount {}", cfg.sandboxes_dir().display()));
    }
    let img = cfg.data_dir.join(soulbox_runtime::quota::IMAGE_FILE);
    v.extend(soulbox_runtime::quota::loop_devices_for(&img).into_iter().map(|d| format!("loop device {d}")));
    v
}

/// The disk image's loop device goes with the mount (autoclear); give the kernel a moment.
pub async fn wait_no_node_leftovers(cfg: &RuntimeConfig) -> Vec<String> {
    for _ in 0..50 {
        if node_leftovers(cfg).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node_leftovers(cfg)
}

/// Awaits `fut`, or panics after `limit` naming `what` with the host's process tree (a hung runtime CLI or
/// lock shows there): a step that hangs fails in a minute with a lead instead of at nextest's timeout without one.
pub async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => {
            let ps = std::process::Command::new("ps")
                .args(["-eo", "pid,ppid,stat,etimes,wchan:24,args", "--forest"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!("{what} did not finish within {limit:?}; processes:\n{ps}");
        }
    }
}

/// The runtime's debug log on stderr, which nextest shows when the test fails or times out.
pub fn trace_runtime() {
    let filter = tracing_subscriber::EnvFilter::new("soulbox_runtime=debug");
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
}

/// A DNS server (UDP 53) inside network namespace `ns` answering A queries for `names`, NXDOMAIN for the rest;
/// stops when dropped.
pub struct FakeDns {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    pub fn start(ns: &str, names: Vec<(&str, Ipv4Addr)>) -> FakeDns {
        let names: std::collections::HashMap<String, Ipv4Addr> =
            names.into_iter().map(|(n, ip)| (n.to_string(), ip)).collect();
        let ns_file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on this thread only, with a descriptor that lives for the call.
            assert_eq!(unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let socket = std::net::UdpSocket::bind("0.0.0.0:53").unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                if let Some(answer) = dns_answer(&buf[..n], &names) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        ready.recv_timeout(Duration::from_secs(10)).expect("the fake DNS server started");
        FakeDns { stop, thread: Some(thread) }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to one DNS query: an A record for a known name (no records for other types), NXDOMAIN otherwise.
fn dns_answer(query: &[u8], names: &std::collections::HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let found = names.get(&labels.join("."));
    let records = u16::from(found.is_some() && qtype == 1);
    let rcode = if found.is_some() { 0 } else { 3 };
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, records as u8, 0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    if let (Some(ip), 1) = (found, records) {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

/// A TLS ClientHello naming `name`, as rustls sends it, as `printf` octal escapes.
pub fn client_hello_escaped(name: &str) -> String {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// A SOCKS5 server (RFC 1928, CONNECT to IPv4, optional RFC 1929 user/password) inside network namespace `ns`,
/// logging `CONNECT ip:port` for every tunnel it opens and `auth refused` for bad credentials.
pub struct FakeSocks {
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSocks {
    pub fn start(ns: &str, port: u16, credentials: Option<(&str, &str)>) -> FakeSocks {
        let ns_file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stopping, logging) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on this thread only (threads it spawns inherit it).
            assert_eq!(unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (credentials, log) = (credentials.clone(), logging.clone());
                        std::thread::spawn(move || {
                            let _ = socks_session(client, credentials, &log);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ready.recv_timeout(Duration::from_secs(10)).expect("the fake SOCKS5 server started");
        FakeSocks { log, stop, thread: Some(thread) }
    }

    pub fn logged(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeSocks {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn socks_session(
    mut client: std::net::TcpStream,
    credentials: Option<(String, String)>,
    log: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = [0u8; 2];
    client.read_exact(&mut head)?;
    let mut methods = vec![0u8; head[1] as usize];
    client.read_exact(&mut methods)?;
    let method = if credentials.is_some() { 2 } else { 0 };
    if head[0] != 5 || !methods.contains(&method) {
        return client.write_all(&[5, 0xff]);
    }
    client.write_all(&[5, method])?;
    if let Some((user, password)) = credentials {
        let field = |c: &mut std::net::TcpStream| -> std::io::Result<String> {
            let mut len = [0u8; 1];
            c.read_exact(&mut len)?;
            let mut v = vec![0u8; len[0] as usize];
            c.read_exact(&mut v)?;
            Ok(String::from_utf8_lossy(&v).into_owned())
        };
        let mut version = [0u8; 1];
        client.read_exact(&mut version)?;
        let (u, p) = (field(&mut client)?, field(&mut client)?);
        if u != user || p != password {
            log.lock().unwrap().push("auth refused".into());
            return client.write_all(&[1, 1]);
        }
        client.write_all(&[1, 0])?;
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    if request[1] != 1 || request[3] != 1 {
        return client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    let mut target = [0u8; 6];
    client.read_exact(&mut target)?;
    let ip = Ipv4Addr::new(target[0], target[1], target[2], target[3]);
    let port = u16::from_be_bytes([target[4], target[5]]);
    log.lock().unwrap().push(format!("CONNECT {ip}:{port}"));
    let upstream = std::net::TcpStream::connect((ip, port))?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
    client.set_read_timeout(None)?;
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    let (mut c1, mut u1) = (client, upstream);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c1, &mut u1);
        let _ = u1.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut u2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}
