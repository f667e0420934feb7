//! Root integration tests of `bootstrap:` bases and the `base` recipe, on a real node runtime (runc, envd).
//! mmdebstrap downloads from the Debian mirror (`SOULBOX_DEBIAN_MIRROR`, default deb.debian.org).
//!
//! - `bootstrap_minbase_streams_caches_and_boots`: a fresh store, `FROM bootstrap:debian:bookworm` with the bare
//!   `minbase` variant (no extra packages, ~40 s): mmdebstrap's lines arrive live at step `base`, the second build
//!   says `CACHED` and reuses the layer, a sandbox of the result boots Debian 12.
//! - `base_recipe_properties_in_a_sandbox`: the server's `base` recipe (persistent store under /var/tmp, so only
//!   the first run bootstraps) → user, sudo, workdir, umask, xattrs, python/git/curl in a started sandbox.
//!
//! Each test has its own runtime prefix, address pool and data dir, and deletes all of them even on failure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use soulbox_runtime::{Runtime, RuntimeConfig, SandboxSpec};
use soulbox_templates::bootstrap::BootstrapConfig;
use soulbox_templates::engine::{Engine, EngineConfig};
use soulbox_templates::source::Rewrites;
use soulbox_templates::{BuildJob, LogLevel, LogSink, Recipe, TemplateStep, base, envd};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn envd_binary() -> PathBuf {
    std::env::var_os("SOULBOX_ENVD")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"))
}

/// Skips (with the reason) unless root with the static envd and mmdebstrap present.
fn skip(name: &str) -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        "needs root (mounts, netns, cgroups, nftables)".to_string()
    } else if !envd_binary().is_file() {
        format!("no static envd at {} (scripts/build-envd.sh, or set SOULBOX_ENVD)", envd_binary().display())
    } else if !Path::new("/usr/bin/mmdebstrap").exists() {
        "mmdebstrap is not installed".to_string()
    } else {
        return false;
    };
    eprintln!("SKIP {name}: {why}");
    true
}

fn mirror() -> String {
    std::env::var("SOULBOX_DEBIAN_MIRROR").unwrap_or_else(|_| soulbox_templates::bootstrap::DEFAULT_MIRROR.to_string())
}

/// A runtime of its own; `destroy_all` and the data dir removal happen on drop, also after a failed assert.
struct Node {
    runtime: Option<Runtime>,
    data_dir: PathBuf,
}

impl Node {
    async fn open(prefix: &str, subnet: u8, store_dir: Option<PathBuf>) -> Node {
        let data_dir = PathBuf::from(format!("/var/tmp/soulbox-test-bootstrap/{prefix}-{}", std::process::id()));
        let mut cfg = RuntimeConfig::new(&data_dir);
        cfg.store_dir = store_dir;
        cfg.envd_path = envd_binary();
        cfg.prefix = prefix.to_string();
        cfg.pool_net = Ipv4Addr::new(10, 243, subnet, 0);
        cfg.pool_prefix_len = 24;
        cfg.pool_size = 0;
        cfg.dns = vec![];
        let runtime = Runtime::open(cfg).await.expect("runtime open");
        Node { runtime: Some(runtime), data_dir }
    }

    fn rt(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let dir = self.data_dir.clone();
            let _ = std::thread::spawn(move || {
                let tr = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
                if let Err(e) = tr.block_on(rt.destroy_all()) {
                    eprintln!("cleanup error: {e}");
                }
                // destroy_all leaves the (empty) cgroup v2 parent of a hybrid hierarchy behind.
                let cgroup = format!("/sys/fs/cgroup/unified/{}", rt.config().cgroup_parent());
                drop(rt);
                let _ = std::fs::remove_dir(cgroup);
                let _ = std::fs::remove_dir_all(&dir);
            })
            .join();
        }
    }
}

/// A log line with the time it arrived: (arrival, level, message, step).
type Entry = (Instant, LogLevel, String, Option<String>);

/// Every log line with the time it arrived.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Entry>>>);

impl Captured {
    fn sink(&self) -> LogSink {
        let lines = self.0.clone();
        Arc::new(move |level, message, step| {
            eprintln!("[{}] {message}", step.as_deref().unwrap_or("-"));
            lines.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), level, message, step));
        })
    }
    fn lines(&self) -> Vec<Entry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn text(&self) -> String {
        self.lines().iter().map(|l| l.2.clone()).collect::<Vec<_>>().join("\n")
    }
}

fn job(name: &str, recipe: Recipe, files_dir: &Path) -> BuildJob {
    BuildJob {
        template_name: name.to_string(),
        build_id: format!("{name}-{}", std::process::id()),
        recipe,
        cpu_count: 1,
        memory_mb: 512,
        files_dir: files_dir.to_path_buf(),
        timeout: Duration::from_secs(1200),
        base_access: Default::default(),
        runtime: None,
    }
}

/// Runs `cmd` in a sandbox of `template` as `user`; returns (exit code, stdout+stderr).
async fn run_in(rt: &Runtime, id: &str, user: &str, cmd: &str) -> (i64, String) {
    let info = rt.info(id).await.expect("sandbox info");
    let envd = envd::Endpoint::of(&info).expect("envd endpoint");
    let mut out = String::new();
    let code = envd::run(&envd, "/bin/bash", user, cmd, &BTreeMap::new(), "/", |_, line| {
        out.push_str(&line);
        out.push('\n');
    })
    .await
    .expect("envd run");
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_minbase_streams_caches_and_boots() {
    if skip("bootstrap_minbase_streams_caches_and_boots") {
        return;
    }
    let node = Node::open("tbs1", 231, None).await;
    let rt = node.rt();
    let mut bootstrap = BootstrapConfig::new(mirror());
    bootstrap.packages.clear(); // bare minbase: Essential packages and apt
    let engine = Engine::new(rt.clone(), EngineConfig::new(Rewrites::with_defaults(), Default::default(), bootstrap));
    let files = node.data_dir.join("uploads");
    let recipe = Recipe {
        from_image: Some("debian:12".into()), // the default rewrite → bootstrap:debian:bookworm
        steps: vec![TemplateStep::new("RUN", vec!["cp /etc/debian_version /bootstrapped && echo step-ran".into()])],
        ..Recipe::default()
    };

    let first = Captured::default();
    let meta = engine.build(job("tbs1-a", recipe.clone(), &files), first.sink()).await.expect("first build");
    let lines = first.lines();
    let mmdebstrap: Vec<_> =
        lines.iter().filter(|l| l.2.starts_with("I: ") && l.3.as_deref() == Some("base")).collect();
    assert!(mmdebstrap.len() >= 5, "mmdebstrap's lines at step base: {}", first.text());
    let finished = lines.iter().find(|l| l.2.starts_with("bootstrap finished")).expect("bootstrap finished line");
    // Live: the first line arrived long before mmdebstrap ended (not collected at the end).
    assert!(finished.0.duration_since(mmdebstrap[0].0) > Duration::from_secs(2), "{}", first.text());
    assert!(first.text().contains("step-ran"));
    assert_eq!(meta.layers.len(), 2);
    assert_eq!((meta.default_user.as_str(), meta.default_workdir.as_str()), ("root", "/"));
    let bootstrap_layer = meta.layers[0].clone();
    assert!(
        rt.store().layer_dir(&bootstrap_layer).join(".soulbox/envd").is_file(),
        "the layer has the envd mount point"
    );
    // mmdebstrap ran in a private mount namespace: nothing stays mounted in the store (the store is the data dir
    // here, where the runtime's own proc view is mounted while it is open).
    let held: Vec<_> = soulbox_runtime::rootfs::mounts_under(rt.store().root())
        .into_iter()
        .filter(|m| *m != node.data_dir.join("procview"))
        .collect();
    assert!(held.is_empty(), "{held:?}");

    let second = Captured::default();
    let again = engine.build(job("tbs1-b", recipe, &files), second.sink()).await.expect("second build");
    assert!(second.text().contains("CACHED bootstrap debian bookworm"), "{}", second.text());
    assert!(!second.text().contains("I: "), "no mmdebstrap run: {}", second.text());
    assert_eq!(again.layers, meta.layers, "bootstrap and step layers reused");

    let sbx = rt.create(SandboxSpec::new("tbs1-a")).await.expect("create from the bootstrapped template");
    let (code, out) = run_in(rt, &sbx.id, "root", "cat /bootstrapped; id -un").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("12."), "{out}");
    assert!(out.ends_with("root\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_recipe_properties_in_a_sandbox() {
    if skip("base_recipe_properties_in_a_sandbox") {
        return;
    }
    // Persistent: the base bootstrap (~1-2 min) happens once per machine, later runs are cached.
    let store = PathBuf::from("/var/tmp/soulbox-test-bootstrap/base-store");
    let node = Node::open("tbs2", 232, Some(store)).await;
    let rt = node.rt();
    let engine = Engine::new(
        rt.clone(),
        EngineConfig::new(Rewrites::with_defaults(), Default::default(), BootstrapConfig::new(mirror())),
    );
    let log = Captured::default();
    base::ensure_base(&engine, node.data_dir.join("uploads"), log.sink()).await.expect("base build");
    let meta = rt.store().get("base").expect("base registered");
    assert_eq!((meta.default_user.as_str(), meta.default_workdir.as_str()), ("user", "/home/user"));

    let sbx = rt.create(SandboxSpec::new("base")).await.expect("create from base");
    let check = "cd /home/user && id -un && bash -lc umask && sudo -n id -u && python3 -c 'print(6*7)' \
                 && git --version >/dev/null && echo git && curl --version >/dev/null && echo curl \
                 && pip --version >/dev/null && echo pip \
                 && touch x && setfattr -n user.t -v 1 x && getfattr -n user.t --only-values x && echo \
                 && stat -c %a /code && stat -c %U /home/user";
    let (code, out) = run_in(rt, &sbx.id, "user", check).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "user\n0022\n0\n42\ngit\ncurl\npip\n1\n777\nuser\n");

    // A second ensure is all cache hits.
    let again = Captured::default();
    base::ensure_base(&engine, node.data_dir.join("uploads"), again.sink()).await.expect("cached base");
    assert!(again.text().contains("CACHED bootstrap") && again.text().contains("CACHED [1/3] RUN"), "{}", again.text());
    assert_eq!(rt.store().get("base").expect("base").layers, meta.layers);
}
