//! `soulbox-runtime-gateway-bench`: what the egress gateway (host-name rules, `gateway.rs`) costs a sandbox's
//! connections, against the same sandbox's connections straight out, in one run.
//!
//! A fake outside world (netns `gwbench-out`, 203.0.113.96/30, routed from the host; checked before any request) runs an HTTP/1.0 server; the
//! client is this process with its socket in the sandbox's network namespace, so its traffic takes the sandbox's
//! path (veth, firewall, redirect, gateway). Measured, alternating between the two policies so machine load hits
//! both alike: connect + request + response of a small answer (p50/p99), and a large download (MB/s).
//! Needs root. Example (after `scripts/build-envd.sh`):
//!   cargo run --release -p soulbox-runtime --bin soulbox-runtime-gateway-bench -- --requests 300 --mib 256
use clap::Parser;
use soulbox_runtime::{NetworkPolicy, Runtime, RuntimeConfig, SandboxSpec};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "/var/tmp/soulbox-gateway-bench")]
    data_dir: PathBuf,
    #[arg(long, default_value = "/var/tmp/soulbox-test-store")]
    store: PathBuf,
    #[arg(long, default_value = "target/static/x86_64-unknown-linux-gnu/release/soulbox-envd")]
    envd: PathBuf,
    /// Small requests per policy.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Size of the large download.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Large downloads per policy.
    #[arg(long, default_value_t = 3)]
    downloads: usize,
}

// Not under the runtime's prefix (`sbgb`): the runtime removes links of its prefix it does not know.
const NS: &str = "gwbench-out";
const LINK: &str = "gwbenchout0";
const HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 97);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 98);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("ip").args(args).status()?;
    anyhow::ensure!(status.success(), "ip {args:?} failed");
    Ok(())
}

fn teardown() {
    let _ = std::process::Command::new("ip").args(["link", "del", LINK]).stderr(std::process::Stdio::null()).status();
    let _ = std::process::Command::new("ip").args(["netns", "del", NS]).stderr(std::process::Stdio::null()).status();
}

/// Runs `f` on a new thread whose network namespace is `/run/netns/<ns>`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("the netns exists");
    std::thread::spawn(move || {
        // SAFETY: setns(2) on this thread only, with a descriptor that lives for the call.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        f()
    })
}

/// The outside world's server: `GET /small` answers 2 bytes, `GET /big` `mib` MiB; one request per connection.
fn serve(mib: usize) {
    let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).expect("bind :80 outside");
    let chunk = vec![b'x'; 1 << 20];
    for conn in listener.incoming().flatten() {
        let chunk = chunk.clone();
        std::thread::spawn(move || {
            let mut conn = conn;
            let mut head = [0u8; 1024];
            let n = conn.read(&mut head).unwrap_or(0);
            let big = head[..n].starts_with(b"GET /big");
            let len = if big { mib << 20 } else { 2 };
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {len}\r\n\r\n");
            if big {
                for _ in 0..mib {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            } else {
                let _ = conn.write_all(b"ok");
            }
        });
    }
}

/// Refuses to go on unless the outside address is routed to the bench's own link (else its traffic would leave
/// the machine).
fn check_route() -> anyhow::Result<()> {
    let out = std::process::Command::new("ip").args(["route", "get", &OUTSIDE.to_string()]).output()?;
    let route = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(route.contains(&format!("dev {LINK}")), "{OUTSIDE} is not routed to {LINK}: {route}");
    Ok(())
}

/// One request from inside the sandbox's netns; returns (milliseconds, bytes received).
fn fetch(netns: &str, path: &'static str) -> (f64, usize) {
    in_netns(netns, move || {
        let t = Instant::now();
        let mut s = TcpStream::connect((OUTSIDE, 80)).expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).expect("send");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        (t.elapsed().as_secs_f64() * 1000.0, total)
    })
    .join()
    .expect("client thread")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    teardown();
    ip(&["netns", "add", NS])?;
    let result = bench(&a).await;
    teardown();
    result
}

async fn bench(a: &Args) -> anyhow::Result<()> {
    ip(&["link", "add", LINK, "type", "veth", "peer", "name", "eth0", "netns", NS])?;
    ip(&["addr", "add", &format!("{HOST}/30"), "dev", LINK])?;
    ip(&["link", "set", LINK, "up"])?;
    for args in [
        vec!["-n", NS, "addr", "add", "203.0.113.98/30", "dev", "eth0"],
        vec!["-n", NS, "link", "set", "eth0", "up"],
        vec!["-n", NS, "link", "set", "lo", "up"],
        vec!["-n", NS, "route", "add", "default", "via", "203.0.113.97"],
    ] {
        ip(&args)?;
    }
    let mib = a.mib;
    let _server = in_netns(NS, move || serve(mib));
    let store = soulbox_runtime::Store::new(&a.store)?;
    store.ensure_test_template(Path::new("/bin/busybox"))?;
    let mut cfg = RuntimeConfig::new(&a.data_dir);
    cfg.store_dir = Some(a.store.clone());
    cfg.envd_path = std::fs::canonicalize(&a.envd)?;
    cfg.prefix = "sbgb".into();
    cfg.pool_net = Ipv4Addr::new(10, 79, 0, 0);
    cfg.pool_prefix_len = 24;
    cfg.pool_size = 0;
    cfg.dns = vec![];
    let netns = |id: &str| cfg.netns_name(id);
    let rt = Runtime::open(cfg.clone()).await?;
    let run = async {
        let direct = rt.create(SandboxSpec::new("test")).await?;
        let mut spec = SandboxSpec::new("test");
        // Host rules (so its HTTP goes through the gateway) that never match: requests without a Host are judged
        // by address, so no DNS lookup is in the numbers.
        spec.network = NetworkPolicy { deny_hosts: vec!["nothing.invalid".into()], ..NetworkPolicy::open() };
        let gated = rt.create(spec).await?;
        let (nd, ng) = (netns(&direct.id), netns(&gated.id));
        check_route()?;
        anyhow::ensure!(
            fetch(&nd, "/small").1 > 0 && fetch(&ng, "/small").1 > 0,
            "the outside server is not answering"
        );
        let (mut small_d, mut small_g) = (Vec::new(), Vec::new());
        for _ in 0..a.requests {
            small_d.push(fetch(&nd, "/small").0);
            small_g.push(fetch(&ng, "/small").0);
        }
        check_route()?;
        let (mut big_d, mut big_g) = (Vec::new(), Vec::new());
        for _ in 0..a.downloads {
            let (ms, bytes) = fetch(&nd, "/big");
            big_d.push(bytes as f64 / (1 << 20) as f64 / (ms / 1000.0));
            let (ms, bytes) = fetch(&ng, "/big");
            big_g.push(bytes as f64 / (1 << 20) as f64 / (ms / 1000.0));
        }
        let (d50, g50) = (pct(&mut small_d, 0.5), pct(&mut small_g, 0.5));
        println!(
            "small request, straight out        p50 {d50:7.3} ms  p99 {:7.3} ms  (n={})",
            pct(&mut small_d, 0.99),
            a.requests
        );
        println!(
            "small request, through the gateway p50 {g50:7.3} ms  p99 {:7.3} ms  (n={})",
            pct(&mut small_g, 0.99),
            a.requests
        );
        println!("  added by the gateway (p50)        {:7.3} ms", g50 - d50);
        let (bd, bg) = (pct(&mut big_d, 0.5), pct(&mut big_g, 0.5));
        println!("{} MiB download, straight out      {bd:8.0} MiB/s (median of {})", a.mib, a.downloads);
        println!("{} MiB download, through the gateway {bg:8.0} MiB/s", a.mib);
        println!("  gateway / straight                {:8.2}x", bg / bd);
        Ok(())
    }
    .await;
    rt.destroy_all().await?;
    drop(rt);
    let _ = std::fs::remove_dir_all(&a.data_dir);
    run
}
