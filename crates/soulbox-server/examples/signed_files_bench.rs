//! Signed `/files` downloads through the server's proxy with 1 and with 100 sandboxes (issue 11 benchmark):
//! requests per second of `GET /files?path&username&signature` — the URL E2B's SDKs build, which names no
//! sandbox — and of the same URL with SoulBox's `sandbox_id`, once repeated and once new on every request (a
//! new path: nothing can be remembered).
//!
//! Everything runs in this process inside a private network namespace (so the fake envd can listen on
//! 127.0.0.1:49983 without touching the host): a SQLite store, the lifecycle over an in-memory node whose
//! sandboxes all live at 127.0.0.1, the server's app on a loopback port, a fake envd answering every request
//! with 5 bytes, and C keep-alive clients. It uses only what `main` had before the signature index, so the same
//! file measures both (see docs/BENCHMARKS.md).
//!
//! As root: `cargo run --release -p soulbox-server --example signed_files_bench [-- SECONDS CLIENTS]`
//! (default 3 s per measurement, 8 clients)

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use soulbox_protocol::signature::{Claims, Operation, Scheme, sign};
use soulbox_server::api::ApiState;
use soulbox_server::lifecycle::{CreateRequest, Lifecycle, LifecycleConfig};
use soulbox_server::node::*;
use soulbox_server::store::Store;

/// Every sandbox is at 127.0.0.1 (the fake envd); nothing else is needed.
#[derive(Default)]
struct LoopbackNode {
    next: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Node for LoopbackNode {
    async fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: "bench".into(),
            status: NodeStatus::Healthy,
            region: "bench".into(),
            version: "0".into(),
            cpu_count: 2,
            memory_mb: 1 << 20,
            cpu_available: 2.0,
            memory_available_mb: 1 << 20,
            sandbox_count: 0,
            last_health_check_unix_ms: 0,
            trouble: None,
        }
    }
    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        let base = TemplateInfo {
            template_id: "base".into(),
            aliases: vec!["base".into()],
            cpu_count: 1,
            memory_mb: 128,
            disk_size_mb: 0,
            envd_version: "0.6.13".into(),
            created_at_ms: 0,
        };
        Ok(vec![base])
    }
    async fn create(&self, _spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        Ok(CreatedSandbox { sandbox_id: format!("bench{n}"), address: IpAddr::V4(Ipv4Addr::LOCALHOST) })
    }
    async fn pause(&self, _: &str, _: bool) -> Result<(), NodeError> {
        Ok(())
    }
    async fn resume(&self, _: &str) -> Result<IpAddr, NodeError> {
        Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    async fn kill(&self, _: &str) -> Result<(), NodeError> {
        Ok(())
    }
    async fn stats(&self, _: &str) -> Result<SandboxStats, NodeError> {
        Ok(SandboxStats::default())
    }
    async fn logs(&self, _: &str, _: soulbox_server::node::LogQuery) -> Result<Vec<LogLine>, NodeError> {
        Ok(vec![])
    }
}

/// A private network namespace with `lo` up, entered before any thread exists (threads inherit it).
fn enter_private_netns() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (a private network namespace for the fake envd on 127.0.0.1:49983)".into());
    }
    // SAFETY: called first thing in `main`, before any other thread exists, so no thread is left behind in the
    // host's network namespace and nothing else observes the switch.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
    let up =
        std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().map_err(|e| format!("ip: {e}"))?;
    if !up.success() {
        return Err("ip link set lo up failed".into());
    }
    Ok(())
}

async fn fake_envd() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", soulbox_protocol::ENVD_PORT)).await.expect("bind 49983");
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), service).await;
            });
        }
    });
}

/// Where the URLs go: the server's port and the sandbox they are signed for (the last one created).
#[derive(Clone)]
struct Target {
    port: u16,
    id: String,
    token: String,
}

struct Setup {
    target: Target,
    _dir: tempfile::TempDir,
}

async fn setup(sandboxes: usize) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.expect("store");
    let lifecycle = Lifecycle::start(store, Arc::new(LoopbackNode::default()), LifecycleConfig::default())
        .await
        .expect("lifecycle");
    let mut last = (String::new(), String::new());
    for _ in 0..sandboxes {
        let req = CreateRequest { template: "base".into(), secure: true, timeout_s: Some(3600), ..Default::default() };
        let s = lifecycle.create(req).await.expect("create");
        last = (s.id, s.envd_access_token.expect("a secure sandbox has a token"));
    }
    let state = ApiState {
        lifecycle,
        metrics: Arc::new(soulbox_server::metrics::MetricsStore::default()),
        domain: None,
        started: Instant::now(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = soulbox_server::server::app(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Setup { target: Target { port, id: last.0, token: last.1 }, _dir: dir }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    E2bRepeated,
    E2bNewEachTime,
    WithSandboxId,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::E2bRepeated => "E2B URL (no sandbox id), the same URL repeated",
            Variant::E2bNewEachTime => "E2B URL (no sandbox id), a new path every request",
            Variant::WithSandboxId => "SoulBox SDK URL (sandbox_id), a new path every request",
        }
    }
}

fn url(target: &Target, variant: Variant, n: u64) -> String {
    let path =
        if variant == Variant::E2bRepeated { "/home/user/f.txt".to_string() } else { format!("/home/user/f{n}.txt") };
    let claims = Claims { path: &path, operation: Operation::Read, user: "user", expiration: None };
    let sig = sign(Scheme::E2b, &claims, &target.token);
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut u =
        format!("http://127.0.0.1:{}/files?path={}&username=user&signature={}", target.port, enc(&path), enc(&sig));
    if variant == Variant::WithSandboxId {
        u.push_str(&format!("&sandbox_id={}", target.id));
    }
    u
}

/// Requests per second over `seconds` with `clients` keep-alive connections; every answer must be 200.
async fn measure(setup: &Setup, variant: Variant, seconds: u64, clients: usize) -> f64 {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..clients {
        let (client, done, stop, counter) = (client.clone(), done.clone(), stop.clone(), counter.clone());
        let target = setup.target.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let uri: hyper::Uri = url(&target, variant, n).parse().expect("uri");
                let resp = client.get(uri).await.expect("request");
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                assert_eq!(status, 200, "signed download failed");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    if let Err(why) = enter_private_netns() {
        eprintln!("signed_files_bench: {why}");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        fake_envd().await;
        let small = setup(1).await;
        let large = setup(100).await;
        println!(
            "signed /files downloads through the proxy, {clients} keep-alive clients, {seconds} s each (requests/s)"
        );
        println!("{:<58} {:>12} {:>14} {:>10}", "URL", "1 sandbox", "100 sandboxes", "100 / 1");
        for variant in [Variant::E2bRepeated, Variant::E2bNewEachTime, Variant::WithSandboxId] {
            let one = measure(&small, variant, seconds, clients).await;
            let hundred = measure(&large, variant, seconds, clients).await;
            println!("{:<58} {:>12.0} {:>14.0} {:>10.2}", variant.label(), one, hundred, hundred / one);
        }
    });
}
