//! `soulbox-runtime-gateway-bench`: what the egress gateway (`gateway.rs`) costs a sandbox's connections, against
//! the same connections straight out, in one run: passed through (host-name rules), and intercepted (header rules:
//! TLS terminated with the egress CA and re-made upstream, headers set on each request).
//!
//! A fake outside world (netns `gwbench-out`, 203.0.113.96/30, routed from the host; checked before any request)
//! runs an HTTP/1.0 server on 80 and the same over TLS on 443 (a bench CA's certificate for its address); the
//! client is this process with its socket in the sandbox's network namespace, so its traffic takes the sandbox's
//! path (veth, firewall, redirect, gateway). Measured, alternating between the policies so machine load hits all
//! alike: new connection + request + response of a small answer (p50/p99), and a large download (MiB/s).
//! Needs root. Example (after `scripts/build-envd.sh`):
//!   cargo run --release -p soulbox-runtime --bin soulbox-runtime-gateway-bench -- --requests 300 --mib 256
use clap::Parser;
use soulbox_runtime::{NetworkPolicy, Runtime, RuntimeConfig, SandboxSpec};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
/// With `tls`, the same over TLS.
fn serve(port: u16, mib: usize, tls: Option<Arc<rustls::ServerConfig>>) {
    let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind outside");
    let chunk = Arc::new(vec![b'x'; 1 << 20]);
    for conn in listener.incoming().flatten() {
        let (chunk, tls) = (chunk.clone(), tls.clone());
        std::thread::spawn(move || match tls {
            Some(config) => {
                if let Ok(server) = rustls::ServerConnection::new(config) {
                    answer(rustls::StreamOwned::new(server, conn), mib, &chunk)
                }
            }
            None => answer(conn, mib, &chunk),
        });
    }
}

fn answer(mut conn: impl Read + Write, mib: usize, chunk: &[u8]) {
    let mut head = [0u8; 1024];
    let n = conn.read(&mut head).unwrap_or(0);
    let big = head[..n].starts_with(b"GET /big");
    let len = if big { mib << 20 } else { 2 };
    let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {len}\r\n\r\n");
    if big {
        for _ in 0..mib {
            if conn.write_all(chunk).is_err() {
                return;
            }
        }
    } else {
        let _ = conn.write_all(b"ok");
    }
    let _ = conn.flush();
}

/// The bench CA and the outside server's TLS configuration (a certificate for [`OUTSIDE`]).
fn outside_tls() -> anyhow::Result<(String, Arc<rustls::ServerConfig>)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "gateway bench CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![OUTSIDE.to_string()])?.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?,
        )?;
    Ok((ca_cert.pem(), Arc::new(config)))
}

/// A client trusting the given PEM certificates.
fn client_tls(pems: &[&str]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(anyhow::Error::msg)?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Refuses to go on unless the outside address is routed to the bench's own link (else its traffic would leave
/// the machine).
fn check_route() -> anyhow::Result<()> {
    let out = std::process::Command::new("ip").args(["route", "get", &OUTSIDE.to_string()]).output()?;
    let route = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(route.contains(&format!("dev {LINK}")), "{OUTSIDE} is not routed to {LINK}: {route}");
    Ok(())
}

/// One request on a new connection from inside the sandbox's netns (over TLS with `tls`); returns (milliseconds,
/// bytes received).
fn fetch(netns: &str, path: &'static str, tls: Option<Arc<rustls::ClientConfig>>) -> (f64, usize) {
    in_netns(netns, move || {
        let t = Instant::now();
        let port = if tls.is_some() { 443 } else { 80 };
        let tcp = TcpStream::connect((OUTSIDE, port)).expect("connect");
        // As curl and most HTTP clients do: without it a TLS client's request waits for the ACK of its Finished.
        tcp.set_nodelay(true).expect("nodelay");
        let request = format!("GET {path} HTTP/1.0\r\nHost: {OUTSIDE}\r\n\r\n");
        let total = match tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(OUTSIDE).into());
                let client = rustls::ClientConnection::new(config, name).expect("TLS client");
                exchange(rustls::StreamOwned::new(client, tcp), &request)
            }
            None => exchange(tcp, &request),
        };
        (t.elapsed().as_secs_f64() * 1000.0, total)
    })
    .join()
    .expect("client thread")
}

/// Sends `request` and reads to the end (a TLS peer that closes without close_notify ends it too).
fn exchange(mut s: impl Read + Write, request: &str) -> usize {
    if s.write_all(request.as_bytes()).and_then(|_| s.flush()).is_err() {
        return 0;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
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
    let (bench_ca, server_tls) = outside_tls()?;
    let _http = in_netns(NS, move || serve(80, mib, None));
    let _https = in_netns(NS, move || serve(443, mib, Some(server_tls)));
    let store = soulbox_runtime::Store::new(&a.store)?;
    store.ensure_test_template(Path::new("/bin/busybox"))?;
    std::fs::create_dir_all(&a.data_dir)?;
    let trusted = a.data_dir.join("bench-ca.pem");
    std::fs::write(&trusted, &bench_ca)?;
    let egress_ca = soulbox_runtime::egress_ca::CaPem::generate()?;
    let mut cfg = RuntimeConfig::new(&a.data_dir);
    cfg.store_dir = Some(a.store.clone());
    cfg.envd_path = std::fs::canonicalize(&a.envd)?;
    cfg.prefix = "sbgb".into();
    cfg.pool_net = Ipv4Addr::new(10, 79, 0, 0);
    cfg.pool_prefix_len = 24;
    cfg.pool_size = 0;
    cfg.dns = vec![];
    cfg.egress_ca = Some(egress_ca.clone());
    cfg.egress_trusted_ca = Some(trusted);
    let netns = |id: &str| cfg.netns_name(id);
    let rt = Runtime::open(cfg.clone()).await?;
    let run = async {
        let direct = rt.create(SandboxSpec::new("test")).await?;
        let mut spec = SandboxSpec::new("test");
        // Host rules (so its HTTP goes through the gateway) that never match: requests to an address are judged by
        // address, so no DNS lookup is in the numbers.
        spec.network = NetworkPolicy { deny_hosts: vec!["nothing.invalid".into()], ..NetworkPolicy::open() };
        let gated = rt.create(spec.clone()).await?;
        // Header rules for the outside's address: every connection to it is intercepted.
        let header = soulbox_runtime::spec::HeaderRule {
            host: OUTSIDE.to_string(),
            headers: [("x-bench".to_string(), "1".to_string())].into(),
        };
        spec.network = NetworkPolicy { rules: vec![header], ..NetworkPolicy::open() };
        let ruled = rt.create(spec).await?;
        let (nd, ng, nr) = (netns(&direct.id), netns(&gated.id), netns(&ruled.id));
        let straight_tls = client_tls(&[&bench_ca])?;
        let sandbox_tls = client_tls(&[&bench_ca, &egress_ca.cert_pem])?;
        check_route()?;
        for (ns, tls) in [(&nd, None), (&ng, None), (&nr, None), (&nd, Some(&straight_tls)), (&nr, Some(&sandbox_tls))]
        {
            anyhow::ensure!(fetch(ns, "/small", tls.cloned()).1 > 0, "the outside server is not answering ({ns})");
        }
        let (mut small_d, mut small_g, mut small_r) = (Vec::new(), Vec::new(), Vec::new());
        let (mut tls_d, mut tls_r) = (Vec::new(), Vec::new());
        for _ in 0..a.requests {
            small_d.push(fetch(&nd, "/small", None).0);
            small_g.push(fetch(&ng, "/small", None).0);
            small_r.push(fetch(&nr, "/small", None).0);
            tls_d.push(fetch(&nd, "/small", Some(straight_tls.clone())).0);
            tls_r.push(fetch(&nr, "/small", Some(sandbox_tls.clone())).0);
        }
        check_route()?;
        let rate = |(ms, bytes): (f64, usize)| bytes as f64 / (1 << 20) as f64 / (ms / 1000.0);
        let (mut big_d, mut big_g, mut big_r) = (Vec::new(), Vec::new(), Vec::new());
        let (mut big_td, mut big_tr) = (Vec::new(), Vec::new());
        for _ in 0..a.downloads {
            big_d.push(rate(fetch(&nd, "/big", None)));
            big_g.push(rate(fetch(&ng, "/big", None)));
            big_r.push(rate(fetch(&nr, "/big", None)));
            big_td.push(rate(fetch(&nd, "/big", Some(straight_tls.clone()))));
            big_tr.push(rate(fetch(&nr, "/big", Some(sandbox_tls.clone()))));
        }
        let n = a.requests;
        let line = |what: &str, v: &mut Vec<f64>| {
            let p50 = pct(v, 0.5);
            println!("{what:<44} p50 {p50:7.3} ms  p99 {:7.3} ms  (n={n})", pct(v, 0.99));
            p50
        };
        let d50 = line("HTTP request, straight out", &mut small_d);
        let g50 = line("HTTP request, passed through the gateway", &mut small_g);
        let r50 = line("HTTP request, intercepted (header rules)", &mut small_r);
        let td50 = line("HTTPS request, straight out", &mut tls_d);
        let tr50 = line("HTTPS request, intercepted (header rules)", &mut tls_r);
        println!("  added by the gateway, pass-through (p50)  {:7.3} ms", g50 - d50);
        println!("  added by the gateway, intercepted HTTP    {:7.3} ms", r50 - d50);
        println!("  added by the gateway, intercepted HTTPS   {:7.3} ms", tr50 - td50);
        let (bd, bg, br) = (pct(&mut big_d, 0.5), pct(&mut big_g, 0.5), pct(&mut big_r, 0.5));
        let (btd, btr) = (pct(&mut big_td, 0.5), pct(&mut big_tr, 0.5));
        let mib = a.mib;
        println!("{mib} MiB HTTP download, straight out          {bd:8.0} MiB/s (median of {})", a.downloads);
        println!("{mib} MiB HTTP download, passed through        {bg:8.0} MiB/s   {:5.2}x", bg / bd);
        println!("{mib} MiB HTTP download, intercepted           {br:8.0} MiB/s   {:5.2}x", br / bd);
        println!("{mib} MiB HTTPS download, straight out         {btd:8.0} MiB/s");
        println!("{mib} MiB HTTPS download, intercepted          {btr:8.0} MiB/s   {:5.2}x", btr / btd);
        Ok(())
    }
    .await;
    rt.destroy_all().await?;
    drop(rt);
    let _ = std::fs::remove_dir_all(&a.data_dir);
    run
}
