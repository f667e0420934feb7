//! Templates FROM images, end to end on the node: Debian's `docker-registry` on a free loopback port (temp
//! config and storage), an image this test builds and pushes itself with oci-client (a busybox layer, a zstd
//! layer with a whiteout and an opaque dir, a config with Env/WorkingDir/Cmd, under a multi-arch index whose
//! first entry is arm64), then builds through the engine FROM the registry, FROM an `oci-archive:` of the same
//! image and FROM a `rootfs:` tarball, starting sandboxes on the runtime and checking what they see.
//!
//! Needs root (runc, netns, mounts), `/usr/bin/docker-registry` (package docker-registry), `/bin/busybox`
//! (busybox-static) and the static envd; skips with a message otherwise. The image and the registry are in
//! `image_fixture/` (shared with `registry_access.rs`).
mod image_fixture;
mod test_node;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use soulbox_runtime::{RuntimeConfig, SandboxSpec, Store};
use soulbox_templates::engine::{Engine, EngineConfig};
use soulbox_templates::{BuildJob, LogLevel, LogSink, Recipe, TemplateStep, envd, host_path, image};

use image_fixture::*;
use test_node::TestNode;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn envd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SOULBOX_ENVD") {
        return Some(PathBuf::from(p));
    }
    let p = workspace().join("target/static/x86_64-unknown-linux-gnu/release/soulbox-envd");
    p.exists().then_some(p)
}

fn trusted(path: &Path) -> host_path::OpenedPath {
    host_path::OpenedPath::open_trusted(path).unwrap()
}

/// Runtime objects of this test: prefix `tqimg`, pool 10.77.237.0/24, own data and store dirs.
async fn open_node(envd: PathBuf) -> TestNode {
    let dir = PathBuf::from(format!("/var/tmp/soulbox-test-images-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(dir.join("node"));
    cfg.store_dir = Some(dir.join("store"));
    cfg.envd_path = envd;
    cfg.prefix = "tqimg".into();
    cfg.pool_net = std::net::Ipv4Addr::new(10, 77, 237, 0);
    cfg.pool_prefix_len = 24;
    cfg.dns = vec![];
    TestNode::open(cfg, dir).await
}

struct Build {
    lines: Vec<String>,
    result: Result<soulbox_runtime::TemplateMeta, String>,
}

async fn build(engine: &Engine, name: &str, recipe: Recipe) -> Build {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let log: LogSink = Arc::new(move |level: LogLevel, message: String, step: Option<String>| {
        let line = format!("[{}] {} {message}", step.unwrap_or_default(), level.as_str());
        eprintln!("{line}");
        sink_lines.lock().unwrap().push(line);
    });
    let job = BuildJob {
        template_name: name.into(),
        build_id: format!("b{}", std::process::id()),
        recipe,
        cpu_count: 1,
        memory_mb: 256,
        files_dir: std::env::temp_dir(),
        timeout: Duration::from_secs(600),
        base_access: Default::default(),
        runtime: None,
    };
    let result = engine.build(job, log).await.map_err(|e| format!("{e} (step {:?})", e.step));
    let lines = lines.lock().unwrap().clone();
    Build { lines, result }
}

/// Runs `cmd` through envd in the sandbox (as the template's user, template env applied by envd).
async fn sh(info: &soulbox_runtime::SandboxInfo, cmd: &str) -> (i64, String) {
    let mut out = String::new();
    let envd = envd::Endpoint::of(info).expect("envd endpoint");
    let code = envd::run(&envd, "/bin/sh", "root", cmd, &BTreeMap::new(), "/", |_, l| {
        out.push_str(&l);
        out.push('\n');
    })
    .await
    .expect("envd run");
    (code, out)
}

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (runc, netns, mounts)".into());
    }
    if !Path::new(REGISTRY_BIN).exists() {
        return Some(format!(
            "{REGISTRY_BIN} is missing (apt-get install docker-registry; scripts/install-deps.sh does)"
        ));
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (busybox-static)".into());
    }
    if envd_binary().is_none() {
        return Some("the static envd is missing (scripts/build-envd.sh, or set SOULBOX_ENVD)".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_from_a_registry_an_oci_archive_and_a_rootfs_tarball() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP templates_from_a_registry_an_oci_archive_and_a_rootfs_tarball: {why}");
        return;
    }
    let img = build_image();
    let reg = Registry::start().await;
    push(&reg, &img).await;
    let node = open_node(envd_binary().unwrap()).await;
    let rt = node.rt();
    // The archives below are written here; a caller's `oci-archive:`/`rootfs:` path must be in a listed dir.
    let work = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    // A loopback registry is reachable only because the config names it (see the egress test below).
    config.registries.insecure = vec![reg.addr.clone()];
    config.host_source_dirs = host_path::HostSourceDirs::new([work.path().to_path_buf()]);
    let engine = Engine::new(rt.clone(), config);
    let image_ref = format!("{}/test/img:1", reg.addr);
    let tname = format!("imgtest-{}", std::process::id());

    // 1. FROM the registry (index → amd64), one RUN step on top.
    let recipe = Recipe {
        from_image: Some(image_ref.clone()),
        steps: vec![TemplateStep::new("RUN", vec!["echo \"built with $GREETING in $(pwd)\" > /app/built.txt".into()])],
        ..Default::default()
    };
    let first = build(&engine, &tname, recipe.clone()).await;
    let meta = first.result.expect("build from the registry");
    let log = first.lines.join("\n");
    assert!(log.contains(&format!("pull {image_ref}")), "{log}");
    assert!(log.contains("index sha256:") && log.contains("linux/amd64 manifest"), "{log}");
    assert_eq!(first.lines.iter().filter(|l| l.contains(": downloaded ")).count(), 2, "two layers downloaded:\n{log}");
    assert_eq!(first.lines.iter().filter(|l| l.contains("unpack layer")).count(), 2, "{log}");
    assert!(!log.contains("CACHED"), "{log}");
    assert_eq!(meta.layers.len(), 3, "2 image layers + the RUN layer");
    assert_eq!((meta.default_user.as_str(), meta.default_workdir.as_str()), ("root", "/app"));
    assert_eq!(meta.env.get("GREETING").map(String::as_str), Some("hello from the image config"));
    assert_eq!(meta.start_cmd.as_deref(), Some("/bin/sh -c 'echo started > /tmp/started; exec sleep 3600'"));

    let info = rt.create(SandboxSpec::new(&meta.name)).await.expect("sandbox from the pulled image");
    let (code, out) = sh(&info, "cat /app/hello.txt /app/layer2.txt /app/built.txt; ls /app; ls /data; ls /; echo \"env=$GREETING\"; stat -c '%a' /app/layer2.txt").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello from layer 1\nlayer 2\nbuilt with hello from the image config in /app\n"), "{out}");
    assert!(!out.contains("old.txt"), "the whiteout hides app/old.txt: {out}");
    assert!(out.contains("d2") && !out.contains("d1"), "the opaque dir hides data/d1: {out}");
    assert!(!out.contains("arm64-only"), "the arm64 image must not be used: {out}");
    assert!(out.contains("env=hello from the image config"), "{out}");
    assert!(out.contains("\n600\n"), "mode kept: {out}");
    // The image's Cmd is the template's start command (E2B semantics: run when a sandbox starts).
    soulbox_templates::start::start_and_wait_ready(rt, &info).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = sh(&info, "test -s /tmp/started").await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the start command did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.delete(&info.id).await.unwrap();

    // 2. The same image again: no download, no unpack, every layer CACHED (the RUN step too).
    let second = build(&engine, &format!("{tname}-2"), recipe).await;
    let meta2 = second.result.expect("second build");
    let log2 = second.lines.join("\n");
    assert_eq!(second.lines.iter().filter(|l| l.contains("CACHED")).count(), 3, "{log2}");
    assert!(!log2.contains("downloaded") && !log2.contains("unpack layer"), "{log2}");
    assert_eq!(meta2.layers, meta.layers);

    // 3. The same image as an OCI layout tar: layers shared with the pull are CACHED; the template works.
    let layout = work.path().join("layout");
    img.write_layout(&layout);
    let archive = work.path().join("img.oci.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        t.append_dir_all(".", &layout).unwrap();
        t.finish().unwrap();
    }
    let from_archive = build(
        &engine,
        &format!("{tname}-oci"),
        Recipe { from_image: Some(format!("oci-archive:{}", archive.display())), ..Default::default() },
    )
    .await;
    let meta3 = from_archive.result.expect("build from oci-archive");
    assert_eq!(
        from_archive.lines.iter().filter(|l| l.contains("CACHED")).count(),
        2,
        "{}",
        from_archive.lines.join("\n")
    );
    assert_eq!(meta3.layers[..], meta.layers[..2]);

    // ... and unpacked for real into a fresh store, from the tar and from the directory.
    let fresh = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = Store::new(fresh.path()).unwrap();
    let quiet = |_: String| {};
    let imported = image::import_oci_archive(&store, &trusted(&archive), &quiet).await.expect("import oci-archive");
    assert_eq!(imported.layers, meta.layers[..2], "same content, same layer digests");
    assert_eq!(imported.config.workdir.as_deref(), Some("/app"));
    let again = image::import_oci_archive(&store, &trusted(&layout), &quiet).await.expect("import layout dir");
    assert_eq!(again.layers, imported.layers);
    let leftovers: Vec<_> = std::fs::read_dir(fresh.path().join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp dirs left: {leftovers:?}");
    // A corrupted blob is refused, nothing registered.
    let l2 = img.amd64_layers[1].digest();
    let corrupt_dir = work.path().join("corrupt");
    img.write_layout(&corrupt_dir);
    std::fs::write(corrupt_dir.join("blobs/sha256").join(l2.trim_start_matches("sha256:")), b"not the layer").unwrap();
    let store2_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store2 = Store::new(store2_dir.path()).unwrap();
    let err = image::import_oci_archive(&store2, &trusted(&corrupt_dir), &quiet).await.unwrap_err();
    assert!(err.to_string().contains("content has digest"), "{err}");
    assert!(image::cached_layer(&store2, &l2).is_none());

    // 4. FROM a plain rootfs tarball (gzip).
    let mut flat = TarBuilder::new();
    busybox_tree(&mut flat);
    flat.file("rootfs-marker", b"from a rootfs tarball\n", 0o644);
    let rootfs = work.path().join("rootfs.tar.gz");
    std::fs::write(&rootfs, gzip(&flat.finish())).unwrap();
    let from_rootfs = build(
        &engine,
        &format!("{tname}-rootfs"),
        Recipe { from_image: Some(format!("rootfs:{}", rootfs.display())), ..Default::default() },
    )
    .await;
    let meta4 = from_rootfs.result.expect("build from rootfs");
    assert!(from_rootfs.lines.iter().any(|l| l.contains("unpack layer 1/1")), "{}", from_rootfs.lines.join("\n"));
    assert_eq!(
        (meta4.default_user.as_str(), meta4.default_workdir.as_str(), meta4.start_cmd.as_deref()),
        ("root", "/", None)
    );
    let info = rt.create(SandboxSpec::new(&meta4.name)).await.expect("sandbox from the rootfs template");
    let (code, out) = sh(&info, "cat /rootfs-marker; echo PATH=$PATH").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("from a rootfs tarball") && out.contains(&format!("PATH={}", image::DEFAULT_PATH)), "{out}");
    rt.delete(&info.id).await.unwrap();

    // 5. A pull of a tag that does not exist fails at step `base` and registers nothing.
    let missing = build(
        &engine,
        &format!("{tname}-missing"),
        Recipe { from_image: Some(format!("{}/test/img:nope", reg.addr)), ..Default::default() },
    )
    .await;
    let err = missing.result.unwrap_err();
    assert!(err.contains("pulling") && err.contains("\"base\""), "{err}");
    assert!(rt.store().get(&format!("{tname}-missing")).is_err());
    drop(reg);
}
