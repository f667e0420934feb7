//! `soulbox-runtime-bench`: create→envd-ready latency (vs. a bare `runc run` of the same rootfs),
//! pause/resume latency, host memory per idle sandbox, and how many idle sandboxes fit — with user
//! namespaces off and on in the same run (`--userns both`): two runtime instances side by side
//! (prefixes `<prefix>o`/`<prefix>u`), creates alternating between them so that load on the machine
//! hits both alike, idle phases alternating for `--rounds` rounds (median reported).
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
    /// User namespaces: `both` (off and on side by side in one run), `on`, `off`.
    #[arg(long, default_value = "both")]
    userns: String,
    /// The OCI runtime (`runc`, `runsc`, …). runsc runs without our user namespaces: use `--userns off`.
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// Idle-capacity phases per mode (alternating between the modes); the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One idle-capacity phase.
struct Idle {
    count: usize,
    mem_per_sandbox_mib: f64,
    kernel_per_sandbox_mib: f64,
    envd_pss_mib: f64,
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

fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn mem_available_kib() -> u64 {
    meminfo_kib("MemAvailable")
}

/// Kernel memory nothing can reclaim: namespaces, cgroups, mounts, page tables, stacks. Less
/// disturbed by other processes' page cache than MemAvailable on a shared machine.
fn kernel_unreclaimable_kib() -> u64 {
    meminfo_kib("SUnreclaim") + meminfo_kib("KernelStack") + meminfo_kib("PageTables")
}

/// Median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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
    let modes: &[bool] = match a.userns.as_str() {
        "both" => &[false, true],
        "on" => &[true],
        "off" => &[false],
        other => anyhow::bail!("--userns {other}: expected both, on or off"),
    };
    let store = soulbox_runtime::Store::new(&a.store)?;
    store.ensure_test_template(Path::new("/bin/busybox"))?;
    let mut templates = vec!["test"];
    if !a.no_base {
        store.ensure_base_template("http://deb.debian.org/debian").await?;
        templates.push("base");
    }
    let mut rts = Vec::new();
    for (i, &userns) in modes.iter().enumerate() {
        let name = if userns { "on" } else { "off" };
        let mut cfg = RuntimeConfig::new(a.data_dir.join(name));
        cfg.store_dir = Some(a.store.clone());
        cfg.envd_path = std::fs::canonicalize(&a.envd)?;
        let p: String = a.prefix.chars().take(4).collect();
        cfg.prefix = format!("{p}{}", if userns { 'u' } else { 'o' });
        let [o1, o2, _, _] = a.pool_net.octets();
        cfg.pool_net = std::net::Ipv4Addr::new(o1, o2.wrapping_add(i as u8), 0, 0);
        if a.disk == "off" {
            cfg.disk_quota = soulbox_runtime::quota::DiskQuotaMode::Off;
        } else {
            cfg.disk_backend = a.disk.parse()?;
        }
        cfg.pool_prefix_len = 16;
        cfg.pool_size = a.pool;
        cfg.dns = vec![];
        cfg.user_namespaces = userns;
        cfg.runtime_bin = a.runtime.clone();
        let rt = Runtime::open(cfg).await?;
        if rt.user_namespaces() != userns {
            rt.destroy_all().await?;
            anyhow::bail!("user namespaces are unavailable on this host (see the log)");
        }
        rts.push((name, rt));
    }
    let res = run(&a, &rts, &store, &templates).await;
    for (_, rt) in &rts {
        rt.destroy_all().await?;
    }
    drop(rts);
    let _ = std::fs::remove_dir_all(&a.data_dir);
    res
}

async fn wait_pool(rt: &Runtime, n: usize) {
    while rt.pool_len() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run(
    a: &Args,
    rts: &[(&str, Runtime)],
    store: &soulbox_runtime::Store,
    templates: &[&str],
) -> anyhow::Result<()> {
    let disk = rts.first().map(|(_, rt)| rt.disk_mechanism());
    println!(
        "## soulbox-runtime bench ({} iterations, warm pool {}, disk limit: {disk:?}, runtime: {})",
        a.iterations, a.pool, a.runtime
    );
    println!("| template | user namespaces | create→envd-ready p50 | p99 | bare `runc run -d` p50 | p99 | ratio p50 |");
    println!("|---|---|---|---|---|---|---|");
    // (template, mode) → create p50
    let mut p50s: Vec<(String, &str, f64, f64)> = Vec::new();
    for t in templates {
        let bare = bare_runc(store, t, &a.data_dir, a.iterations).await?;
        let mut ours: Vec<Vec<f64>> = vec![Vec::new(); rts.len()];
        for _ in 0..a.iterations {
            // alternating, each in steady state: its pool refilled between requests
            for (i, (_, rt)) in rts.iter().enumerate() {
                wait_pool(rt, a.pool).await;
                let t0 = Instant::now();
                let info = rt.create(SandboxSpec::new(t)).await?;
                ours[i].push(ms(t0.elapsed()));
                rt.delete(&info.id).await?;
            }
        }
        let mut b = bare.clone();
        let (bp50, bp99) = (pct(&mut b, 0.5), pct(&mut b, 0.99));
        for (i, (mode, _)) in rts.iter().enumerate() {
            let (op50, op99) = (pct(&mut ours[i], 0.5), pct(&mut ours[i], 0.99));
            println!(
                "| {t} | {mode} | {op50:.1} ms | {op99:.1} ms | {bp50:.1} ms | {bp99:.1} ms | {:.2}× |",
                op50 / bp50
            );
            p50s.push((t.to_string(), mode, op50, op99));
        }
    }
    if let Some((_, rt)) = rts.first() {
        network_costs(a, rt).await?;
    }
    // pause / resume
    println!();
    println!("| op | user namespaces | p50 | p99 |\n|---|---|---|---|");
    for (mode, rt) in rts {
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
        println!("| pause | {mode} | {:.1} ms | {:.1} ms |", pct(&mut p.clone(), 0.5), pct(&mut p, 0.99));
        println!("| resume | {mode} | {:.1} ms | {:.1} ms |", pct(&mut r.clone(), 0.5), pct(&mut r, 0.99));
    }

    let mut idle: Vec<Vec<Idle>> = (0..rts.len()).map(|_| Vec::new()).collect();
    if a.idle > 0 {
        println!();
        for (_, rt) in rts {
            rt.drain_pool().await?;
        }
        for _ in 0..a.rounds.max(1) {
            for (i, (mode, rt)) in rts.iter().enumerate() {
                let m = idle_phase(a, rt).await?;
                println!(
                    "idle sandboxes ({mode}): {} created, host MemAvailable drop {:.2} MiB/sandbox, unreclaimable kernel memory {:.2} MiB/sandbox, envd PSS {:.2} MiB/sandbox",
                    m.count, m.mem_per_sandbox_mib, m.kernel_per_sandbox_mib, m.envd_pss_mib
                );
                idle[i].push(m);
            }
        }
    }
    if rts.len() == 2 {
        println!();
        println!("## user namespaces on vs off (same run)");
        println!("| measure | off | on | on/off |");
        println!("|---|---|---|---|");
        for t in templates {
            let get = |mode: &str| {
                p50s.iter().find(|(tt, m, _, _)| tt == t && *m == mode).map(|(_, _, p50, p99)| (*p50, *p99))
            };
            if let (Some((off50, off99)), Some((on50, on99))) = (get("off"), get("on")) {
                println!("| create→ready p50, `{t}` | {off50:.1} ms | {on50:.1} ms | {:.2}× |", on50 / off50);
                println!("| create→ready p99, `{t}` | {off99:.1} ms | {on99:.1} ms | {:.2}× |", on99 / off99);
            }
        }
        let med = |v: &[Idle], f: fn(&Idle) -> f64| median(v.iter().map(f).collect());
        if !idle[0].is_empty() && !idle[1].is_empty() {
            let rounds = a.rounds.max(1);
            let n = idle.iter().flatten().map(|m| m.count).min().unwrap_or(0);
            let (off, on) = (med(&idle[0], |m| m.mem_per_sandbox_mib), med(&idle[1], |m| m.mem_per_sandbox_mib));
            println!(
                "| host MemAvailable drop per idle sandbox (median of {rounds}, ≥{n} idle) | {off:.2} MiB | {on:.2} MiB | {:.2}× |",
                on / off
            );
            let (off, on) = (med(&idle[0], |m| m.kernel_per_sandbox_mib), med(&idle[1], |m| m.kernel_per_sandbox_mib));
            println!(
                "| unreclaimable kernel memory per idle sandbox (median of {rounds}) | {off:.2} MiB | {on:.2} MiB | {:.2}× |",
                on / off
            );
            let (off, on) = (med(&idle[0], |m| m.envd_pss_mib), med(&idle[1], |m| m.envd_pss_mib));
            println!("| envd PSS per idle sandbox | {off:.2} MiB | {on:.2} MiB | |");
        }
    }
    Ok(())
}

/// Create up to `--idle` idle `test` sandboxes, measure, delete them again.
async fn idle_phase(a: &Args, rt: &Runtime) -> anyhow::Result<Idle> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, kernel_before) = (mem_available_kib(), kernel_unreclaimable_kib());
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
    let (after, kernel_after) = (mem_available_kib(), kernel_unreclaimable_kib());
    let mut pss_kib = 0u64;
    for id in &ids {
        if let Ok(pid) = std::fs::read_to_string(rt.sandbox_dir(id).join("init.pid")) {
            pss_kib += std::fs::read_to_string(format!("/proc/{}/smaps_rollup", pid.trim()))
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Pss:").and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
        }
    }
    let n = ids.len().max(1) as f64;
    eprintln!(
        "idle phase: {} created in {:.1} s ({})",
        ids.len(),
        took.as_secs_f64(),
        match &err {
            Some(e) => format!("stopped by error: {e}"),
            None if ids.len() < a.idle => "stopped by time budget".to_string(),
            None => "no errors".to_string(),
        }
    );
    let m = Idle {
        count: ids.len(),
        mem_per_sandbox_mib: before.saturating_sub(after) as f64 / 1024.0 / n,
        kernel_per_sandbox_mib: kernel_after.saturating_sub(kernel_before) as f64 / 1024.0 / n,
        envd_pss_mib: pss_kib as f64 / 1024.0 / n,
    };
    for id in ids {
        rt.delete(&id).await?;
    }
    Ok(m)
}

/// What the network defences cost: a create with a non-default policy (its host chain and its
/// netns guard are written on the create path; the warm pool prepares only the open policy) next
/// to a default create, interleaved; and how long the firewall watcher takes from someone deleting
/// the table to the table being back.
async fn network_costs(a: &Args, rt: &Runtime) -> anyhow::Result<()> {
    let restricted = soulbox_runtime::NetworkPolicy {
        allow_internet: false,
        allow_out: vec!["203.0.113.0/24".into()],
        deny_out: vec![],
        ..Default::default()
    };
    let (mut open_ms, mut restricted_ms) = (Vec::new(), Vec::new());
    for _ in 0..a.iterations {
        for (policy, out) in
            [(soulbox_runtime::NetworkPolicy::open(), &mut open_ms), (restricted.clone(), &mut restricted_ms)]
        {
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
    println!(
        "| internet off + allowOut (chain and guard on the create path) | {rp50:.1} ms | {:.1} ms |",
        pct(&mut restricted_ms, 0.99)
    );
    println!("restricted / default p50: {:.2}×", rp50 / op50);

    // Firewall repair: delete the table, wait for the watcher's repair (with two sandboxes in it).
    let held: Vec<_> = [rt.create(SandboxSpec::new("test")).await?, rt.create(SandboxSpec::new("test")).await?]
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut repairs = rt.firewall_repairs();
    let mut repair_ms = Vec::new();
    for _ in 0..a.iterations.min(20) {
        let seen = *repairs.borrow_and_update();
        let t0 = Instant::now();
        let st = tokio::process::Command::new("nft")
            .args(["delete", "table", "inet", &rt.config().nft_table()])
            .status()
            .await?;
        anyhow::ensure!(st.success(), "nft delete table failed");
        tokio::time::timeout(Duration::from_secs(30), repairs.wait_for(|n| *n > seen)).await??;
        repair_ms.push(ms(t0.elapsed()));
    }
    println!(
        "firewall table deleted → rebuilt by the watcher: p50 {:.1} ms, p99 {:.1} ms (includes the `nft delete` process)",
        pct(&mut repair_ms.clone(), 0.5),
        pct(&mut repair_ms, 0.99)
    );
    for id in held {
        rt.delete(&id).await?;
    }
    Ok(())
}
