//! A build whose future is dropped (an admin's cancel, a node agent whose control plane hung up) leaves nothing:
//! its build sandbox goes. Root only (runc, netns, mounts): skips otherwise. No network traffic.
mod test_node;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use soulbox_runtime::RuntimeConfig;
use soulbox_templates::engine::{Engine, EngineConfig};
use soulbox_templates::{BuildJob, LogSink, Recipe, TemplateStep};
use test_node::TestNode;

fn envd_binary() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = workspace.join("target/static/x86_64-unknown-linux-gnu/release/soulbox-envd");
    p.exists().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_build_removes_its_build_sandbox() {
    let Some(envd) =
        envd_binary().filter(|_| rustix::process::geteuid().is_root() && Path::new("/bin/busybox").exists())
    else {
        eprintln!("skipping: needs root, /bin/busybox and the static envd (scripts/build-envd.sh)");
        return;
    };
    // Prefix `tqcan`, pool 10.77.238.0/24, its own data dir (removed at the end, also on failure).
    let dir = PathBuf::from(format!("/var/tmp/soulbox-test-cancel-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(dir.join("node"));
    cfg.envd_path = envd;
    cfg.prefix = "tqcan".into();
    cfg.pool_net = std::net::Ipv4Addr::new(10, 77, 238, 0);
    cfg.pool_prefix_len = 24;
    cfg.dns = vec![];
    let node = TestNode::open(cfg, dir).await;
    let rt = node.rt();
    rt.store().ensure_test_template(Path::new("/bin/busybox")).unwrap();
    let engine = Engine::new(rt.clone(), EngineConfig::default());
    let recipe = Recipe {
        from_template: Some("test".into()),
        steps: vec![TemplateStep::new("RUN", vec!["sleep 600".into(), "root".into()])],
        ..Recipe::default()
    };
    let job = BuildJob {
        template_name: "cancelled".into(),
        build_id: "cancel-test".into(),
        recipe,
        cpu_count: 1,
        memory_mb: 128,
        files_dir: std::env::temp_dir(),
        timeout: Duration::from_secs(600),
        base_access: Default::default(),
        runtime: None,
    };
    let log: LogSink = Arc::new(|_, line, _| eprintln!("{line}"));
    // Boxed, so that `drop` below drops the future itself (a pinned-on-stack one lives to the end of the scope).
    let mut build = Box::pin(engine.build(job, log));
    // Until the RUN step's sandbox exists (bounded: a build that ends first is a failure).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while rt.list().await.is_empty() {
        tokio::select! {
            r = &mut build => panic!("the build ended before it could be cancelled: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "the build never started its sandbox");
    }
    drop(build);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !rt.list().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancelled build's sandbox was left: {:?}",
            rt.list().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rt.store().get("cancelled").is_err(), "a cancelled build registered its template");
}
