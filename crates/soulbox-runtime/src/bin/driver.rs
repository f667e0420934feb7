//! `soulbox-runtime`: a small driver to exercise the runtime alone.
//!
//! Every invocation opens the runtime (which reconciles), so running sandboxes survive between
//! invocations and are re-adopted.
use clap::{Parser, Subcommand};
use soulbox_runtime::{NetworkPolicy, Runtime, RuntimeConfig, SandboxSpec};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "SoulBox node runtime test driver")]
struct Cli {
    #[arg(long, env = "SOULBOX_DATA_DIR", default_value = "/var/lib/soulbox")]
    data_dir: PathBuf,
    #[arg(long, env = "SOULBOX_ENVD", default_value = "target/static/x86_64-unknown-linux-gnu/release/soulbox-envd")]
    envd: PathBuf,
    #[arg(long, env = "SOULBOX_OCI_RUNTIME", default_value = "runc")]
    oci_runtime: String,
    /// Template store (layers/, templates/); default: the data dir.
    #[arg(long, env = "SOULBOX_STORE_DIR")]
    store: Option<PathBuf>,
    /// Host name prefix of this instance (netns, veth, nft table, cgroup parent).
    #[arg(long, default_value = "sbx")]
    prefix: String,
    /// Sandbox address pool.
    #[arg(long, default_value = "10.77.0.0/16")]
    pool: String,
    /// Replace envd as PID 1 (plumbing tests), e.g. `--init "/bin/sleep 1d"`.
    #[arg(long)]
    init: Option<String>,
    /// Run sandboxes without user namespaces (root inside is root on the host).
    #[arg(long)]
    no_userns: bool,
    /// auto | per-sandbox | shared: one id range per sandbox (idmapped layers) or one shared by all
    /// (`template` builds into the shared mode's own store only when this says `shared`).
    #[arg(long, default_value = "auto")]
    userns_mode: soulbox_runtime::userns::UsernsMode,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (or reuse) a template: `test` or `base`.
    Template {
        name: String,
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
    },
    Create {
        #[arg(long, default_value = "test")]
        template: String,
        #[arg(long)]
        no_internet: bool,
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        cpus: Option<u32>,
        #[arg(long)]
        allow_out: Vec<String>,
        #[arg(long)]
        deny_out: Vec<String>,
    },
    List,
    Info {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Stop {
        id: String,
    },
    Start {
        id: String,
    },
    Snapshot {
        id: String,
        name: String,
    },
    Delete {
        id: String,
    },
    Stats {
        id: String,
    },
    /// Run a command through the OCI runtime's exec (debugging).
    Exec {
        id: String,
        args: Vec<String>,
    },
    /// Open (reconcile) and exit.
    Gc,
    /// Delete all sandboxes and the firewall table.
    DestroyAll,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut cfg = RuntimeConfig::new(&cli.data_dir);
    cfg.envd_path = std::fs::canonicalize(&cli.envd).unwrap_or(cli.envd.clone());
    cfg.runtime_bin = cli.oci_runtime.clone();
    cfg.store_dir = cli.store.clone();
    cfg.prefix = cli.prefix.clone();
    let (net, len) = cli.pool.split_once('/').ok_or_else(|| anyhow::anyhow!("--pool wants a CIDR"))?;
    cfg.pool_net = net.parse()?;
    cfg.pool_prefix_len = len.parse()?;
    cfg.user_namespaces = !cli.no_userns;
    cfg.userns_mode = cli.userns_mode;
    cfg.init_override = cli.init.as_ref().map(|s| s.split_whitespace().map(String::from).collect());
    if let Cmd::Template { name, mirror } = &cli.cmd {
        let store = if cfg.user_namespaces && cfg.userns_mode == soulbox_runtime::userns::UsernsMode::Shared {
            soulbox_runtime::Store::shifted(&cfg.store_dir(), cfg.userns_base)?
        } else {
            soulbox_runtime::Store::new(cfg.store_dir())?
        };
        let meta = match name.as_str() {
            "test" => store.ensure_test_template(std::path::Path::new("/bin/busybox"))?,
            "base" => store.ensure_base_template(mirror).await?,
            other => anyhow::bail!("unknown template {other} (test|base)"),
        };
        println!("{}", serde_json::to_string_pretty(&meta)?);
        return Ok(());
    }
    let rt = Runtime::open(cfg).await?;
    let out = |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    match cli.cmd {
        Cmd::Template { .. } => {}
        Cmd::Create { template, no_internet, memory_mb, cpus, allow_out, deny_out } => {
            let mut spec = SandboxSpec::new(&template);
            spec.network = NetworkPolicy { allow_internet: !no_internet, allow_out, deny_out, ..Default::default() };
            spec.memory_mb = memory_mb;
            spec.cpu_count = cpus;
            let t = std::time::Instant::now();
            let info = rt.create(spec).await?;
            eprintln!("created in {:?}", t.elapsed());
            out(serde_json::to_value(info)?);
        }
        Cmd::List => out(serde_json::to_value(rt.list().await)?),
        Cmd::Info { id } => out(serde_json::to_value(rt.info(&id).await?)?),
        Cmd::Pause { id } => rt.pause(&id).await?,
        Cmd::Resume { id } => rt.resume(&id).await?,
        Cmd::Stop { id } => rt.stop(&id).await?,
        Cmd::Start { id } => out(serde_json::to_value(rt.start(&id).await?)?),
        Cmd::Snapshot { id, name } => out(serde_json::to_value(rt.snapshot(&id, &name).await?)?),
        Cmd::Delete { id } => rt.delete(&id).await?,
        Cmd::Stats { id } => out(serde_json::to_value(rt.stats(&id).await?)?),
        Cmd::Exec { id, args } => {
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let o = rt.driver().exec(&id, &a).await?;
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            std::process::exit(o.status.code().unwrap_or(1));
        }
        Cmd::Gc => {}
        Cmd::DestroyAll => rt.destroy_all().await?,
    }
    Ok(())
}
