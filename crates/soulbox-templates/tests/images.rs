//! Templates FROM images, end to end on the node: Debian's `docker-registry` on a free loopback port (temp
//! config and storage), an image this test builds and pushes itself with oci-client (a busybox layer, a zstd
//! layer with a whiteout and an opaque dir, a config with Env/WorkingDir/Cmd, under a multi-arch index whose
//! first entry is arm64), then builds through the engine FROM the registry, FROM an `oci-archive:` of the same
//! image and FROM a `rootfs:` tarball, starting sandboxes on the runtime and checking what they see.
//!
//! Needs root (runc, netns, mounts), `/usr/bin/docker-registry` (package docker-registry), `/bin/busybox`
//! (busybox-static) and the static envd; skips with a message otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use soulbox_runtime::{Runtime, RuntimeConfig, SandboxSpec, Store};
use soulbox_templates::engine::{Engine, EngineConfig};
use soulbox_templates::{BuildJob, LogLevel, LogSink, Recipe, TemplateStep, envd, host_path, image, registry};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

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

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", soulbox_templates::unpack::hex(&Sha256::digest(data)))
}

/// A blob with its descriptor.
struct Blob {
    media_type: &'static str,
    data: Vec<u8>,
}

impl Blob {
    fn digest(&self) -> String {
        sha256(&self.data)
    }
    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.data.len()})
    }
}

struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> TarBuilder {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        TarBuilder(b)
    }
    fn header(kind: tar::EntryType, mode: u32, size: u64, owner: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(1_700_000_000);
        h
    }
    fn dir(&mut self, path: &str, mode: u32, owner: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0, owner);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }
    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64, 0);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.finish().unwrap();
        b.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

/// The busybox userland: `/bin/busybox`, its applets, `/etc/passwd`, the usual dirs.
fn busybox_tree(t: &mut TarBuilder) {
    let bb = std::fs::read("/bin/busybox").unwrap();
    for (d, mode, owner) in [
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("root", 0o700, 0),
        ("home", 0o755, 0),
        ("home/user", 0o755, 1000),
    ] {
        t.dir(d, mode, owner);
    }
    t.file("bin/busybox", &bb, 0o755);
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if !applet.is_empty() && !applet.contains('/') && applet != "busybox" {
            t.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n", 0o644);
    t.file("etc/group", b"root:x:0:\nuser:x:1000:\n", 0o644);
}

/// The test image: two amd64 layers + config, and an arm64 decoy, under an index.
struct TestImage {
    amd64_layers: Vec<Blob>,
    amd64_config: Blob,
    amd64_manifest: Blob,
    arm64_layer: Blob,
    arm64_config: Blob,
    arm64_manifest: Blob,
    index: Blob,
}

fn build_image() -> TestImage {
    let mut l1 = TarBuilder::new();
    busybox_tree(&mut l1);
    l1.dir("app", 0o755, 0).file("app/hello.txt", b"hello from layer 1\n", 0o644).file("app/old.txt", b"old\n", 0o644);
    l1.dir("data", 0o755, 0).dir("data/d1", 0o755, 0).file("data/d1/file", b"d1\n", 0o644);
    let l1_tar = l1.finish();
    let l2_tar = TarBuilder::new()
        .dir("app", 0o755, 0)
        .file("app/.wh.old.txt", b"", 0o644)
        .file("app/layer2.txt", b"layer 2\n", 0o600)
        .dir("data", 0o755, 0)
        .file("data/.wh..wh..opq", b"", 0o644)
        .dir("data/d2", 0o755, 0)
        .file("data/d2/new", b"d2\n", 0o644)
        .finish();
    let l2_zstd = ruzstd::encoding::compress_to_vec(&l2_tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "GREETING=hello from the image config"],
            "WorkingDir": "/app",
            "Cmd": ["/bin/sh", "-c", "echo started > /tmp/started; exec sleep 3600"],
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(&l1_tar), sha256(&l2_tar)]},
    });
    let amd64_layers =
        vec![Blob { media_type: LAYER_GZIP, data: gzip(&l1_tar) }, Blob { media_type: LAYER_ZSTD, data: l2_zstd }];
    let amd64_config = Blob { media_type: OCI_CONFIG, data: serde_json::to_vec(&config).unwrap() };
    let manifest = |config: &Blob, layers: &[&Blob]| Blob {
        media_type: OCI_MANIFEST,
        data: serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
            "layers": layers.iter().map(|l| l.descriptor()).collect::<Vec<_>>(),
        }))
        .unwrap(),
    };
    let amd64_manifest = manifest(&amd64_config, &amd64_layers.iter().collect::<Vec<_>>());
    let arm_tar = TarBuilder::new().file("arm64-only.txt", b"wrong platform\n", 0o644).finish();
    let arm64_layer = Blob { media_type: LAYER_GZIP, data: gzip(&arm_tar) };
    let arm64_config = Blob {
        media_type: OCI_CONFIG,
        data: serde_json::to_vec(&serde_json::json!({"architecture": "arm64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [sha256(&arm_tar)]}})).unwrap(),
    };
    let arm64_manifest = manifest(&arm64_config, &[&arm64_layer]);
    let entry = |m: &Blob, arch: &str| {
        let mut d = m.descriptor();
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        d
    };
    let index = Blob {
        media_type: OCI_INDEX,
        data: serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [entry(&arm64_manifest, "arm64"), entry(&amd64_manifest, "amd64")],
        }))
        .unwrap(),
    };
    TestImage { amd64_layers, amd64_config, amd64_manifest, arm64_layer, arm64_config, arm64_manifest, index }
}

impl TestImage {
    fn blobs(&self) -> Vec<&Blob> {
        let mut v: Vec<&Blob> = self.amd64_layers.iter().collect();
        v.extend([
            &self.amd64_config,
            &self.amd64_manifest,
            &self.arm64_layer,
            &self.arm64_config,
            &self.arm64_manifest,
            &self.index,
        ]);
        v
    }

    /// An OCI image layout: `index.json` → (nested) index → manifests → blobs.
    fn write_layout(&self, dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for b in self.blobs() {
            std::fs::write(blobs.join(b.digest().trim_start_matches("sha256:")), &b.data).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let top = serde_json::json!({"schemaVersion": 2, "manifests": [self.index.descriptor()]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    }
}

/// `docker-registry serve` on a free loopback port; killed (by its pid) and its storage removed when dropped.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// `htpasswd`: `(user, password)` required for every request (basic auth), else anonymous.
    async fn start_with(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: soulbox-test\n    path: {}\n", file.display()));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = std::process::Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let reg = Registry { child, addr, _dir: dir };
        // Ready when it accepts connections (bounded: 30 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&reg.addr).await.is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen on {} within 30 s", reg.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reg
    }

    async fn start() -> Registry {
        Registry::start_with(None).await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn push(reg: &Registry, img: &TestImage) {
    push_as(reg, img, oci_client::secrets::RegistryAuth::Anonymous).await
}

async fn push_as(reg: &Registry, img: &TestImage, auth: oci_client::secrets::RegistryAuth) {
    use oci_client::Reference;
    let settings = registry::RegistrySettings::default();
    let client = registry::client_for(&reg.addr, &settings);
    let tagged = Reference::with_tag(reg.addr.clone(), "test/img".into(), "1".into());
    // Any call stores the auth for the registry; a tags listing of an empty repository is harmless.
    client.store_auth_if_needed(tagged.resolve_registry(), &auth).await;
    for b in [&img.amd64_layers[0], &img.amd64_layers[1], &img.amd64_config, &img.arm64_layer, &img.arm64_config] {
        client.push_blob(&tagged, b.data.clone(), &b.digest()).await.unwrap();
    }
    for (m, ct) in [(&img.amd64_manifest, OCI_MANIFEST), (&img.arm64_manifest, OCI_MANIFEST)] {
        let by_digest = Reference::with_digest(reg.addr.clone(), "test/img".into(), m.digest());
        client.push_manifest_raw(&by_digest, m.data.clone(), http::HeaderValue::from_static(ct)).await.unwrap();
    }
    client.push_manifest_raw(&tagged, img.index.data.clone(), http::HeaderValue::from_static(OCI_INDEX)).await.unwrap();
}

/// Runtime objects of this test: prefix `tqimg`, pool 10.77.237.0/24, own data and store dirs.
struct Node {
    rt: Option<Runtime>,
    dir: PathBuf,
}

impl Node {
    async fn open(envd: PathBuf) -> Node {
        let dir = PathBuf::from(format!("/var/tmp/soulbox-test-images-{}", std::process::id()));
        let mut cfg = RuntimeConfig::new(dir.join("node"));
        cfg.store_dir = Some(dir.join("store"));
        cfg.envd_path = envd;
        cfg.prefix = "tqimg".into();
        cfg.pool_net = std::net::Ipv4Addr::new(10, 77, 237, 0);
        cfg.pool_prefix_len = 24;
        cfg.dns = vec![];
        let rt = Runtime::open(cfg).await.expect("runtime open");
        Node { rt: Some(rt), dir }
    }
    fn rt(&self) -> &Runtime {
        self.rt.as_ref().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let dir = self.dir.clone();
            let _ = std::thread::spawn(move || {
                let tr = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                if let Err(e) = tr.block_on(rt.destroy_all()) {
                    eprintln!("cleanup error: {e}");
                }
                drop(rt);
                let _ = std::fs::remove_dir_all(&dir);
            })
            .join();
        }
    }
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
    let node = Node::open(envd_binary().unwrap()).await;
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

/// Basic auth against a registry that requires it (htpasswd): the configured credentials pull, no credentials
/// and wrong ones fail with nothing cached. Needs no runtime (the image is imported into a temp store).
#[tokio::test]
async fn registry_basic_auth_from_the_config() {
    if !Path::new(REGISTRY_BIN).exists() || !Path::new("/bin/busybox").exists() {
        eprintln!(
            "SKIP registry_basic_auth_from_the_config: needs {REGISTRY_BIN} (docker-registry) and /bin/busybox (busybox-static)"
        );
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP registry_basic_auth_from_the_config: needs root (the image has whiteouts: mknod)");
        return;
    }
    let img = build_image();
    let reg = Registry::start_with(Some(("puller", "s3cret"))).await;
    push_as(&reg, &img, oci_client::secrets::RegistryAuth::Basic("puller".into(), "s3cret".into())).await;
    let store_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = Store::new(store_dir.path()).unwrap();
    let image_ref = soulbox_templates::source::ImageRef::parse(&format!("{}/test/img:1", reg.addr)).unwrap();
    let quiet = |_: String| {};
    let named = registry::RegistrySettings { insecure: vec![reg.addr.clone()], ..Default::default() };
    let anonymous = registry::pull(&store, &named, &image_ref, &quiet).await.unwrap_err();
    assert!(anonymous.to_string().contains("manifest"), "{anonymous}");
    let cfg = |password: &str| soulbox_templates::config::TemplatesConfig {
        registry_auth: toml::from_str(&format!(
            "[\"{}\"]\nusername = \"puller\"\npassword = \"{password}\"\n",
            reg.addr
        ))
        .unwrap(),
        ..Default::default()
    };
    let wrong = registry::pull(
        &store,
        &cfg("nope").engine_config(soulbox_templates::bootstrap::DEFAULT_MIRROR).registries,
        &image_ref,
        &quiet,
    )
    .await
    .unwrap_err();
    assert!(!wrong.to_string().contains("nope"), "no secret in errors: {wrong}");
    assert!(image::cached_layer(&store, &img.amd64_layers[0].digest()).is_none());
    let pulled = registry::pull(
        &store,
        &cfg("s3cret").engine_config(soulbox_templates::bootstrap::DEFAULT_MIRROR).registries,
        &image_ref,
        &quiet,
    )
    .await
    .expect("pull with basic auth");
    assert_eq!(pulled.layers.len(), 2);
    assert!(image::cached_layer(&store, &img.amd64_layers[0].digest()).is_some());
    drop(reg);
}

/// Registry pulls never reach loopback (nor link-local or private) addresses unless the config names the
/// registry: an unnamed loopback registry is refused before any connection reaches it, with a message naming the
/// settings; named in `insecure_registries` (or `registry_private_hosts`, or as a rewrite target) it pulls.
/// Only loopback is used here: no traffic is ever sent to a private or metadata address.
#[tokio::test]
async fn a_loopback_registry_not_named_in_the_config_is_refused() {
    if !Path::new(REGISTRY_BIN).exists() || !Path::new("/bin/busybox").exists() || !rustix::process::geteuid().is_root()
    {
        eprintln!(
            "SKIP a_loopback_registry_not_named_in_the_config_is_refused: needs root, {REGISTRY_BIN} and /bin/busybox"
        );
        return;
    }
    let img = build_image();
    let reg = Registry::start().await;
    push(&reg, &img).await;
    let store_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = Store::new(store_dir.path()).unwrap();
    let quiet = |_: String| {};
    let image_ref = soulbox_templates::source::ImageRef::parse(&format!("{}/test/img:1", reg.addr)).unwrap();
    let log_before = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();

    for unnamed in [
        registry::RegistrySettings::default(),
        registry::RegistrySettings {
            insecure: vec!["127.0.0.1:1".into()],
            private_hosts: vec!["localhost".into()],
            ..Default::default()
        },
    ] {
        let err = registry::pull(&store, &unnamed, &image_ref, &quiet).await.unwrap_err().to_string();
        assert!(err.contains("not a public address") && err.contains("insecure_registries"), "{err}");
        assert!(image::cached_layer(&store, &img.amd64_layers[0].digest()).is_none());
    }
    let log_after = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
    let requests = |log: &str| log.matches("response completed").count();
    assert_eq!(requests(&log_before), requests(&log_after), "the registry saw no request:\n{log_after}");

    // The same registry named by a config key of each kind pulls.
    let by_private_hosts = registry::RegistrySettings { private_hosts: vec![reg.addr.clone()], ..Default::default() };
    let pulled = registry::pull(&store, &by_private_hosts, &image_ref, &quiet)
        .await
        .expect("pull from a named loopback registry");
    assert_eq!(pulled.layers.len(), 2);
    let log = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
    assert!(
        requests(&log) > requests(&log_after),
        "the log counts requests, so the check above means something:\n{log}"
    );
    let rewrite: soulbox_templates::config::TemplatesConfig =
        toml::from_str(&format!("[image_rewrites]\n\"docker.io\" = \"{}\"\n", reg.addr)).unwrap();
    let via_rewrite = rewrite.engine_config(soulbox_templates::bootstrap::DEFAULT_MIRROR).registries;
    let again = registry::pull(&store, &via_rewrite, &image_ref, &quiet).await.expect("pull from a rewrite target");
    assert_eq!(again.layers, pulled.layers);
    drop(reg);
}
