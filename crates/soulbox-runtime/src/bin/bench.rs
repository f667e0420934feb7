//! `soulbox-runtime-bench`: create→envd-ready latency (vs. a bare `runc run` of the same rootfs),
//! pause/resume latency, host memory per idle sandbox, and how many idle sandboxes fit.
//! Needs root. Example:
//!   cargo run --release -p soulbox-runtime --bin soulbox-runtime-bench -- --iterations 50 --idle 500
use clap::Parser;
use soulbox_runtime::{Runtime, RuntimeConfig, SandboxSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "/var/tmp/soulbox-bench")]
    data_dir: PathBuf,
    #[arg(long, default_value = "/var/tmp/soulbox-test-store")]
    store: PathBuf,
    #[arg(long, default_value = "target/static/x86_64-unknown-linux-gnu/release/soulbox-envd")]
    envd: PathBuf,
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Warm pool size (prepared netns + veth + address).
    #[arg(long, default_value_t = 4)]
    pool: usize,
    /// Idle sandboxes to try to fit (0 = skip).
    #[arg(long, default_value_t = 500)]
    idle: usize,
    /// Time budget for the idle-capacity phase.
    #[arg(long, default_value_t = 180)]
    idle_secs: u64,
    /// Skip the base template (needs mmdebstrap and a Debian mirror the first time).
    #[arg(long)]
    no_base: bool,
    /// Host name prefix (netns, veth, nft table, cgroup parent) of the bench's runtime instance.
    #[arg(long, default_value = "sbxb")]
    prefix: String,
    /// Address pool (a /16) of the bench's sandboxes.
    #[arg(long, default_value = "10.78.0.0")]
    pool_net: std::net::Ipv4Addr,
    /// Disk limit: `off`, or the backend: `auto`, `project-quota`, `image`.
    #[arg(long, default_value = "auto")]
    disk: String,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:").and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// Bare `runc run -d` of the same layers (overlay mounted once), default-ish spec, no extras.
async fn bare_runc(store: &soulbox_runtime::Store, template: &str, dir: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let meta = store.get(template)?;
    let bundle = dir.join(format!("bare-{template}"));
    let _ = std::fs::create_dir_all(&bundle);
    soulbox_runtime::rootfs::mount(&bundle, &store.layer_dirs(&meta))?;
    let root = dir.join("bare-root");
    let mut spec = oci_spec::runtime::Spec::default();
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(vec!["/bin/sleep".into(), "100000".into()]));
    spec.set_process(Some(p));
    spec.set_root(Some(oci_spec::runtime::RootBuilder::default().path("rootfs").readonly(false).build()?));
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let rootarg = root.to_string_lossy().to_string();
    let mut v = Vec::new();
    for i in 0..n {
        let id = format!("bare{i}");
        let t = Instant::now();
        let st = tokio::process::Command::new("runc")
            .args(["--root", &rootarg, "run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await?;
        v.push(ms(t.elapsed()));
        anyhow::ensure!(st.success(), "bare runc run failed");
        tokio::process::Command::new("runc").args(["--root", &rootarg, "delete", "-f", &id]).status().await?;
    }
    soulbox_runtime::rootfs::unmount(&bundle)?;
    let _ = std::fs::remove_dir_all(&bundle);
    let _ = std::fs::remove_dir_all(&root);
    Ok(v)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut cfg = RuntimeConfig::new(&a.data_dir);
    cfg.store_dir = Some(a.store.clone());
    cfg.envd_path = std::fs::canonicalize(&a.envd)?;
    cfg.prefix = a.prefix.clone();
    cfg.pool_net = a.pool_net;
    if a.disk == "off" {
        cfg.disk_quota = soulbox_runtime::quota::DiskQuotaMode::Off;
    } else {
        cfg.disk_backend = a.disk.parse()?;
    }
    cfg.pool_prefix_len = 16;
    cfg.pool_size = a.pool;
    cfg.dns = vec![];
    let store = soulbox_runtime::Store::new(&a.store)?;
    store.ensure_test_template(Path::new("/bin/busybox"))?;
    let mut templates = vec!["test"];
    if !a.no_base {
        store.ensure_base_template("http://deb.debian.org/debian").await?;
        templates.push("base");
    }
    let rt = Runtime::open(cfg.clone()).await?;
    let res = run(&a, &rt, &store, &templates).await;
    rt.destroy_all().await?;
    drop(rt);
    let _ = std::fs::remove_dir_all(&a.data_dir);
    res
}

async fn run(a: &Args, rt: &Runtime, store: &soulbox_runtime::Store, templates: &[&str]) -> anyhow::Result<()> {
    println!("## soulbox-runtime bench ({} iterations, warm pool {}, disk limit: {:?})", a.iterations, a.pool, rt.disk_mechanism());
    println!("| template | create→envd-ready p50 | p99 | bare `runc run -d` p50 | p99 | ratio p50 |");
    println!("|---|---|---|---|---|---|");
    for t in templates {
        let bare = bare_runc(store, t, &a.data_dir, a.iterations).await?;
        let mut ours = Vec::new();
        for _ in 0..a.iterations {
            // steady state: the pool has been refilled between requests
            while rt.pool_len() < a.pool {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let t0 = Instant::now();
            let info = rt.create(SandboxSpec::new(t)).await?;
            ours.push(ms(t0.elapsed()));
            rt.delete(&info.id).await?;
        }
        let (mut o, mut b) = (ours.clone(), bare.clone());
        let (op50, op99, bp50, bp99) = (pct(&mut o, 0.5), pct(&mut o, 0.99), pct(&mut b, 0.5), pct(&mut b, 0.99));
        println!("| {t} | {op50:.1} ms | {op99:.1} ms | {bp50:.1} ms | {bp99:.1} ms | {:.2}× |", op50 / bp50);
    }
    network_costs(a, rt).await?;
    // pause / resume
    let info = rt.create(SandboxSpec::new("test")).await?;
    let (mut p, mut r) = (Vec::new(), Vec::new());
    for _ in 0..a.iterations {
        let t0 = Instant::now();
        rt.pause(&info.id).await?;
        p.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        rt.resume(&info.id).await?;
        r.push(ms(t0.elapsed()));
    }
    rt.delete(&info.id).await?;
    println!();
    println!("| op | p50 | p99 |\n|---|---|---|");
    println!("| pause | {:.1} ms | {:.1} ms |", pct(&mut p.clone(), 0.5), pct(&mut p, 0.99));
    println!("| resume | {:.1} ms | {:.1} ms |", pct(&mut r.clone(), 0.5), pct(&mut r, 0.99));

    if a.idle == 0 {
        return Ok(());
    }
    rt.drain_pool().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = mem_available_kib();
    let deadline = Instant::now() + Duration::from_secs(a.idle_secs);
    let mut ids = Vec::new();
    let mut err = None;
    let t0 = Instant::now();
    while ids.len() < a.idle && Instant::now() < deadline {
        match rt.create(SandboxSpec::new("test")).await {
            Ok(i) => ids.push(i.id),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mem_available_kib();
    let mut pss_kib = 0u64;
    for id in &ids {
        if let Ok(pid) = std::fs::read_to_string(rt.sandbox_dir(id).join("init.pid")) {
            pss_kib += std::fs::read_to_string(format!("/proc/{}/smaps_rollup", pid.trim()))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Pss:").and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
                .unwrap_or(0);
        }
    }
    let n = ids.len().max(1) as f64;
    println!();
    println!(
        "idle sandboxes: {} created in {:.1} s ({}), host MemAvailable drop {:.2} MiB/sandbox, envd PSS {:.2} MiB/sandbox",
        ids.len(),
        took.as_secs_f64(),
        match &err {
            Some(e) => format!("stopped by error: {e}"),
            None if ids.len() < a.idle => "stopped by time budget".to_string(),
            None => "no errors".to_string(),
        },
        (before.saturating_sub(after)) as f64 / 1024.0 / n,
        pss_kib as f64 / 1024.0 / n
    );
    for id in ids {
        rt.delete(&id).await?;
    }
    Ok(())
}

/// What the network defences cost: a create with a non-default policy (its host chain and its
/// netns guard are written on the create path; the warm pool prepares only the open policy) next
/// to a default create, interleaved; and how long the firewall watcher takes from someone deleting
/// the table to the table being back.
async fn network_costs(a: &Args, rt: &Runtime) -> anyhow::Result<()> {
    let restricted = soulbox_runtime::NetworkPolicy { allow_internet: false, allow_out: vec!["203.0.113.0/24".into()], deny_out: vec![] };
    let (mut open_ms, mut restricted_ms) = (Vec::new(), Vec::new());
    for _ in 0..a.iterations {
        for (policy, out) in [(soulbox_runtime::NetworkPolicy::open(), &mut open_ms), (restricted.clone(), &mut restricted_ms)] {
            while rt.pool_len() < a.pool {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut spec = SandboxSpec::new("test");
            spec.network = policy;
            let t0 = Instant::now();
            let info = rt.create(spec).await?;
            out.push(ms(t0.elapsed()));
            rt.delete(&info.id).await?;
        }
    }
    let (op50, rp50) = (pct(&mut open_ms, 0.5), pct(&mut restricted_ms, 0.5));
    println!();
    println!("| network policy (template test) | create→envd-ready p50 | p99 |\n|---|---|---|");
    println!("| default (open, prepared by the warm pool) | {op50:.1} ms | {:.1} ms |", pct(&mut open_ms, 0.99));
    println!("| internet off + allowOut (chain and guard on the create path) | {rp50:.1} ms | {:.1} ms |", pct(&mut restricted_ms, 0.99));
    println!("restricted / default p50: {:.2}×", rp50 / op50);

    // Firewall repair: delete the table, wait for the watcher's repair (with two sandboxes in it).
    let held: Vec<_> = [rt.create(SandboxSpec::new("test")).await?, rt.create(SandboxSpec::new("test")).await?].into_iter().map(|i| i.id).collect();
    let mut repairs = rt.firewall_repairs();
    let mut repair_ms = Vec::new();
    for _ in 0..a.iterations.min(20) {
        let seen = *repairs.borrow_and_update();
        let t0 = Instant::now();
        let st = tokio::process::Command::new("nft").args(["delete", "table", "inet", &rt.config().nft_table()]).status().await?;
        anyhow::ensure!(st.success(), "nft delete table failed");
        tokio::time::timeout(Duration::from_secs(30), repairs.wait_for(|n| *n > seen)).await??;
        repair_ms.push(ms(t0.elapsed()));
    }
    println!("firewall table deleted → rebuilt by the watcher: p50 {:.1} ms, p99 {:.1} ms (includes the `nft delete` process)", pct(&mut repair_ms.clone(), 0.5), pct(&mut repair_ms, 0.99));
    for id in held {
        rt.delete(&id).await?;
    }
    Ok(())
}
