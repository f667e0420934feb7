//! Template benchmark (not a test; `bench/templates.sh` runs it): the `base` template built cold (empty store:
//! mmdebstrap from the Debian mirror, then the setup step) and fully cached, and create→envd-ready latency
//! of a sandbox from a 1-layer template vs a 20-layer one (both `FROM bootstrap:debian:bookworm`; the
//! 20-layer one adds 19 small RUN/COPY steps through the build engine). Needs root.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use soulbox_runtime::{Runtime, RuntimeConfig, SandboxSpec};
use soulbox_templates::bootstrap::BootstrapConfig;
use soulbox_templates::engine::{Engine, EngineConfig};
use soulbox_templates::source::Rewrites;
use soulbox_templates::{BuildJob, LogSink, Recipe, TemplateStep, base, sha256_hex};

#[derive(Parser)]
struct Args {
    /// Benchmark data dir: `store/` (layers, caches; kept between runs unless --cold) and a per-run node dir.
    #[arg(long, default_value = "/var/tmp/soulbox-bench-templates")]
    data_dir: PathBuf,
    #[arg(long, default_value = "target/static/x86_64-unknown-linux-gnu/release/soulbox-envd")]
    envd: PathBuf,
    #[arg(long, default_value = soulbox_templates::bootstrap::DEFAULT_MIRROR)]
    mirror: String,
    /// Sandboxes created per template.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Start from an empty store (measures the cold base build: downloads from the mirror).
    #[arg(long)]
    cold: bool,
    /// Print every build log line.
    #[arg(long)]
    verbose: bool,
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sink(verbose: bool) -> LogSink {
    Arc::new(move |_, message, step| {
        // The bootstrap's own share of a cold base build.
        if message.starts_with("bootstrap finished in") || message.starts_with("bootstrap layer") {
            eprintln!("  {message}");
        } else if verbose {
            eprintln!("[{}] {}", step.as_deref().unwrap_or("-"), message.lines().next().unwrap_or(""));
        }
    })
}

fn job(name: &str, recipe: Recipe, files_dir: &Path) -> BuildJob {
    BuildJob {
        template_name: name.to_string(),
        build_id: format!("{name}-{}", std::process::id()),
        recipe,
        cpu_count: 1,
        memory_mb: 512,
        files_dir: files_dir.to_path_buf(),
        timeout: Duration::from_secs(3600),
        base_access: Default::default(),
        runtime: None,
    }
}

/// A COPY context (a tar of one small file) stored under its hash, as an upload would be.
fn context(files_dir: &Path, i: usize) -> anyhow::Result<String> {
    let src = files_dir.join(format!("ctx-{i}"));
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join(format!("copied-{i}.txt")), format!("layer {i}\n"))?;
    let tar = files_dir.join(format!("ctx-{i}.tar"));
    let st = std::process::Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()?;
    anyhow::ensure!(st.success(), "tar failed");
    let hash = sha256_hex(&std::fs::read(&tar)?);
    std::fs::rename(&tar, files_dir.join(&hash))?;
    std::fs::remove_dir_all(&src)?;
    Ok(hash)
}

/// `FROM bootstrap:debian:bookworm` + 19 small layer-producing steps (every fourth a COPY) = 20 layers.
fn twenty_layers(files_dir: &Path) -> anyhow::Result<Recipe> {
    let mut steps = Vec::new();
    for i in 1..20 {
        if i % 4 == 0 {
            let mut copy =
                TemplateStep::new("COPY", vec![".".into(), "/opt/bench/".into(), "root".into(), String::new()]);
            copy.files_hash = Some(context(files_dir, i)?);
            steps.push(copy);
        } else {
            steps.push(TemplateStep::new("RUN", vec![format!("mkdir -p /opt/bench && echo {i} > /opt/bench/run-{i}")]));
        }
    }
    Ok(Recipe { from_image: Some("bootstrap:debian:bookworm".into()), steps, ..Recipe::default() })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let store_dir = a.data_dir.join("store");
    if a.cold {
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    let node_dir = a.data_dir.join(format!("node-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(&node_dir);
    cfg.store_dir = Some(store_dir.clone());
    cfg.envd_path = std::fs::canonicalize(&a.envd).with_context(|| format!("envd {}", a.envd.display()))?;
    cfg.prefix = "sbtb".into();
    cfg.pool_net = Ipv4Addr::new(10, 244, 0, 0);
    cfg.pool_prefix_len = 16;
    cfg.pool_size = 4;
    cfg.dns = vec![];
    let rt = Runtime::open(cfg).await?;
    let res = run(&a, &rt, &node_dir).await;
    rt.destroy_all().await?;
    let cgroup = format!("/sys/fs/cgroup/unified/{}", rt.config().cgroup_parent());
    drop(rt);
    let _ = std::fs::remove_dir(cgroup);
    let _ = std::fs::remove_dir_all(&node_dir);
    res
}

async fn run(a: &Args, rt: &Runtime, node_dir: &Path) -> anyhow::Result<()> {
    let engine = Engine::new(
        rt.clone(),
        EngineConfig::new(Rewrites::with_defaults(), Default::default(), BootstrapConfig::new(a.mirror.clone())),
    );
    let files_dir = node_dir.join("uploads");
    std::fs::create_dir_all(&files_dir)?;
    let fail = |f: soulbox_templates::BuildFailure| anyhow::anyhow!("step {:?}: {}", f.step, f.message);

    let first = base::ensure_base(&engine, files_dir.clone(), sink(a.verbose)).await.map_err(fail)?;
    let cached = base::ensure_base(&engine, files_dir.clone(), sink(a.verbose)).await.map_err(fail)?;
    println!(
        "## templates bench ({}, {} creates per template)",
        if a.cold { "cold store" } else { "existing store" },
        a.iterations
    );
    println!("| measure | time |");
    println!("|---|---|");
    println!(
        "| base template, {} | {:.1} ms |",
        if a.cold { "cold (empty store)" } else { "first build in this run" },
        ms(first)
    );
    println!("| base template, fully cached | {:.1} ms |", ms(cached));

    let t = Instant::now();
    let one = engine
        .build(
            job(
                "bench-l1",
                Recipe { from_image: Some("bootstrap:debian:bookworm".into()), ..Recipe::default() },
                &files_dir,
            ),
            sink(a.verbose),
        )
        .await
        .map_err(fail)?;
    println!("| 1-layer template build (bootstrap layer cached) | {:.1} ms |", ms(t.elapsed()));
    let recipe = twenty_layers(&files_dir)?;
    let t = Instant::now();
    let twenty = engine.build(job("bench-l20", recipe.clone(), &files_dir), sink(a.verbose)).await.map_err(fail)?;
    println!(
        "| 20-layer template build (19 steps{}) | {:.1} s |",
        if a.cold { "" } else { ", maybe cached" },
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    engine.build(job("bench-l20", recipe, &files_dir), sink(a.verbose)).await.map_err(fail)?;
    println!("| 20-layer template rebuild, fully cached | {:.1} ms |", ms(t.elapsed()));
    anyhow::ensure!(
        one.layers.len() == 1 && twenty.layers.len() == 20,
        "layer counts {} / {}",
        one.layers.len(),
        twenty.layers.len()
    );

    // Interleaved so that load changes on the machine hit both alike; the warm pool is refilled before each.
    let names = ["bench-l1", "bench-l20", "base"];
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..a.iterations {
        for name in names {
            while rt.pool_len() < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let t = Instant::now();
            let info = rt.create(SandboxSpec::new(name)).await?;
            times.entry(name).or_default().push(ms(t.elapsed()));
            rt.delete(&info.id).await?;
        }
    }
    println!();
    println!("| template | layers | create→envd-ready p50 | p99 |");
    println!("|---|---|---|---|");
    for name in names {
        let layers = rt.store().get(name)?.layers.len();
        let v = &times[name];
        println!("| {name} | {layers} | {:.1} ms | {:.1} ms |", pct(v, 0.5), pct(v, 0.99));
    }
    Ok(())
}
