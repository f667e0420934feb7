//! The test image and a registry to push it to, shared by the image tests: an OCI image built here (a busybox
//! layer, a zstd layer with a whiteout and an opaque dir, a config with Env/WorkingDir/Cmd, under a multi-arch
//! index whose first entry is arm64), written as an OCI layout or pushed with oci-client to Debian's
//! `docker-registry` on a free loopback port (temp config and storage).
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use soulbox_templates::registry;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", soulbox_templates::unpack::hex(&Sha256::digest(data)))
}

/// A blob with its descriptor.
pub struct Blob {
    pub media_type: &'static str,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn digest(&self) -> String {
        sha256(&self.data)
    }
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.data.len()})
    }
}

pub struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    pub fn new() -> TarBuilder {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        TarBuilder(b)
    }
    pub fn header(kind: tar::EntryType, mode: u32, size: u64, owner: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(1_700_000_000);
        h
    }
    pub fn dir(&mut self, path: &str, mode: u32, owner: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0, owner);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64, 0);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.finish().unwrap();
        b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

/// The busybox userland: `/bin/busybox`, its applets, `/etc/passwd`, the usual dirs.
pub fn busybox_tree(t: &mut TarBuilder) {
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
pub struct TestImage {
    pub amd64_layers: Vec<Blob>,
    pub amd64_config: Blob,
    pub amd64_manifest: Blob,
    pub arm64_layer: Blob,
    pub arm64_config: Blob,
    pub arm64_manifest: Blob,
    pub index: Blob,
}

pub fn build_image() -> TestImage {
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
    pub fn blobs(&self) -> Vec<&Blob> {
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
    pub fn write_layout(&self, dir: &Path) {
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
pub struct Registry {
    pub child: std::process::Child,
    pub addr: String,
    pub _dir: tempfile::TempDir,
}

impl Registry {
    /// `htpasswd`: `(user, password)` required for every request (basic auth), else anonymous.
    pub async fn start_with(htpasswd: Option<(&str, &str)>) -> Registry {
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

    pub async fn start() -> Registry {
        Registry::start_with(None).await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn push(reg: &Registry, img: &TestImage) {
    push_as(reg, img, oci_client::secrets::RegistryAuth::Anonymous).await
}

pub async fn push_as(reg: &Registry, img: &TestImage, auth: oci_client::secrets::RegistryAuth) {
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
