//! Templates: an ordered list of read-only, content-addressed layer directories plus JSON metadata.
//!
//! On disk (under the store dir):
//! - `layers/<sha256>/` — a directory tree (an overlayfs lower layer; may hold overlay whiteouts).
//! - `templates/<name>/template.json` — [`TemplateMeta`]: layers bottom→top and defaults.
//!
//! A later template-build system adds one layer per build step; the format is ready for it.
//!
//! **Shifted stores.** A runtime in the shared user namespace mode (`userns.rs`) mounts layers without
//! idmapping, so its layers hold files owned by the host ids its sandboxes see (uid `k` inside stored
//! as `base + k`). Those live in a store of their own, `<store_dir>/shifted-<base in hex>/` ([`Store::shifted`]),
//! never mixed with the unshifted one at `<store_dir>/`: templates, layers and every cache under the store
//! root (the server's OCI layer, bootstrap and build-step caches) belong to one way of storing files. Trees
//! made on the host unshifted (an image layer, an mmdebstrap root, the `test` template) are committed with
//! [`Store::commit_unshifted_layer`], which shifts them first; trees taken from a sandbox's writable layer
//! (snapshots, build steps) are already stored the store's way and go through [`Store::commit_layer`].
use crate::error::{Error, IoCtx, Result};
use crate::util;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

mod shift;
mod transfer;
pub use shift::shift_tree;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMeta {
    pub name: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    pub default_user: String,
    pub default_workdir: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub start_cmd: Option<String>,
    #[serde(default)]
    pub ready_cmd: Option<String>,
    pub cpu_count: u32,
    pub memory_mb: u64,
    #[serde(default)]
    pub disk_mb: Option<u64>,
    /// Hash of the recipe that produced this template (cache key).
    pub recipe_hash: String,
    #[serde(default)]
    pub parent: Option<String>,
    /// The OCI runtime its sandboxes run on, by name (`runc`, `runsc`); `None`: the node's default. A node that
    /// does not have it refuses to start the template's sandboxes (`RuntimeConfig::extra_runtimes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// `Some(base)`: a shifted store (module docs), files owned by `[base, base + 65536)`.
    id_shift: Option<u32>,
}

impl Store {
    /// The unshifted store at `root` (per-sandbox user namespaces, or none).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open(root.into(), None)
    }

    /// The shifted store of the shared user namespace range from `base` (module docs), below `store_dir`.
    pub fn shifted(store_dir: &Path, base: u32) -> Result<Self> {
        Self::open(Self::shifted_root(store_dir, base), Some(base))
    }

    /// Where [`Store::shifted`] keeps its layers and templates.
    pub fn shifted_root(store_dir: &Path, base: u32) -> PathBuf {
        store_dir.join(format!("shifted-{base:08x}"))
    }

    /// `Some(base)` for a shifted store: unshifted trees are committed with owners `base + id`.
    pub fn id_shift(&self) -> Option<u32> {
        self.id_shift
    }

    fn open(root: PathBuf, id_shift: Option<u32>) -> Result<Self> {
        for d in ["layers", "templates"] {
            std::fs::create_dir_all(root.join(d)).ctx(root.join(d))?;
            // Layers hold files as the templates' builds made them (setuid-root binaries too):
            // root's alone (`perms.rs`).
            crate::perms::set_mode(&root.join(d), 0o700)?;
        }
        Ok(Store { root, id_shift })
    }
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root.join("layers").join(digest)
    }
    fn template_file(&self, name: &str) -> PathBuf {
        self.root.join("templates").join(name).join("template.json")
    }
    pub fn get(&self, name: &str) -> Result<TemplateMeta> {
        check_name(name)?;
        let f = self.template_file(name);
        if !f.exists() {
            return Err(Error::TemplateNotFound(name.into()));
        }
        let meta: TemplateMeta = util::read_json(&f)?;
        for l in &meta.layers {
            if !self.layer_dir(l).is_dir() {
                return Err(Error::TemplateNotFound(format!("{name} (layer {l} missing)")));
            }
        }
        Ok(meta)
    }
    pub fn put(&self, meta: &TemplateMeta) -> Result<()> {
        check_name(&meta.name)?;
        let f = self.template_file(&meta.name);
        if let Some(p) = f.parent() {
            std::fs::create_dir_all(p).ctx(p)?;
        }
        util::write_json(&f, meta)
    }
    /// Remove template `name` (its layers stay: they may be shared). `Ok(false)` when there was none.
    pub fn delete(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let dir = self.root.join("templates").join(name);
        if !dir.exists() {
            return Ok(false);
        }
        util::remove_dir_all_idem(&dir)?;
        Ok(true)
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Layer directories bottom→top.
    pub fn layer_dirs(&self, meta: &TemplateMeta) -> Vec<PathBuf> {
        meta.layers.iter().map(|l| self.layer_dir(l)).collect()
    }
    /// A fresh temp directory inside the layer store (same filesystem, so it can be renamed in).
    pub fn temp_layer(&self) -> Result<PathBuf> {
        let p =
            self.root.join("layers").join(format!(".tmp-{}-{}", std::process::id(), crate::config::new_sandbox_id()));
        std::fs::create_dir_all(&p).ctx(&p)?;
        Ok(p)
    }
    /// Hash `tmp` and move it to `layers/<digest>` (dropping it if that layer already exists).
    pub fn commit_layer(&self, tmp: &Path) -> Result<String> {
        let digest = digest_tree(tmp)?;
        let dst = self.layer_dir(&digest);
        if dst.exists() {
            util::remove_dir_all_idem(tmp)?;
        } else {
            std::fs::rename(tmp, &dst).ctx(&dst)?;
        }
        Ok(digest)
    }
    /// [`Store::commit_layer`] for a tree made on the host with unshifted owners (root = 0): a shifted
    /// store shifts it into its range first (module docs).
    pub fn commit_unshifted_layer(&self, tmp: &Path) -> Result<String> {
        if let Some(base) = self.id_shift {
            shift_tree(tmp, base)?;
        }
        self.commit_layer(tmp)
    }
    /// Remove temp layers left by a crashed process (`.tmp-<pid>-…` whose pid is gone); a store
    /// may be shared by several processes, so live builders' temp dirs are kept.
    pub fn gc_temp(&self) {
        if let Ok(rd) = std::fs::read_dir(self.root.join("layers")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(".tmp-") else { continue };
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    // a crashed mmdebstrap may have left /proc, /sys, /dev/pts mounted inside
                    for m in crate::rootfs::mounts_under(&e.path()) {
                        let _ = crate::rootfs::umount_path(&m);
                    }
                    if crate::rootfs::mounts_under(&e.path()).is_empty() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }
    /// Holds the store-wide lock of template `name` until the file is dropped: builders of the same template in
    /// runtimes sharing this store (node agents on one host) take turns, and the later ones find it built.
    pub fn lock(&self, name: &str) -> Result<std::fs::File> {
        let p = self.root.join("templates").join(format!(".{name}.lock"));
        let f = std::fs::File::create(&p).ctx(&p)?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::Io { path: p, source: e.into() })?;
        Ok(f)
    }

    /// The tiny `test` template: busybox-static (from the host's Debian package) and a user `user`.
    pub fn ensure_test_template(&self, busybox: &Path) -> Result<TemplateMeta> {
        let bb = std::fs::read(busybox).ctx(busybox)?;
        let recipe = format!("test-v2\n{}", hex(&Sha256::digest(&bb)));
        let recipe_hash = hex(&Sha256::digest(recipe.as_bytes()));
        let _lock = self.lock("test")?;
        if let Ok(m) = self.get("test")
            && m.recipe_hash == recipe_hash
        {
            return Ok(m);
        }
        let tmp = self.temp_layer()?;
        let res = (|| -> Result<String> {
            for d in
                ["bin", "etc", "tmp", "root", "home/user", "proc", "sys", "dev", "run", "var/tmp", ".soulbox", "code"]
            {
                std::fs::create_dir_all(tmp.join(d)).ctx(tmp.join(d))?;
            }
            set_mode(&tmp.join("tmp"), 0o1777)?;
            set_mode(&tmp.join("var/tmp"), 0o1777)?;
            set_mode(&tmp.join("code"), 0o777)?;
            std::os::unix::fs::chown(tmp.join("home/user"), Some(1000), Some(1000)).ctx(tmp.join("home/user"))?;
            std::fs::write(tmp.join("bin/busybox"), &bb).ctx(tmp.join("bin/busybox"))?;
            set_mode(&tmp.join("bin/busybox"), 0o755)?;
            let out = std::process::Command::new(busybox).arg("--list").output().ctx(busybox)?;
            for applet in String::from_utf8_lossy(&out.stdout).lines() {
                let applet = applet.trim();
                if applet.is_empty() || applet.contains('/') || applet == "busybox" {
                    continue;
                }
                let _ = std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet));
            }
            std::os::unix::fs::symlink("bin", tmp.join("sbin")).ctx(tmp.join("sbin"))?;
            std::fs::create_dir_all(tmp.join("usr")).ctx(tmp.join("usr"))?;
            std::os::unix::fs::symlink("../bin", tmp.join("usr/bin")).ctx(tmp.join("usr/bin"))?;
            let files = [
                (
                    "etc/passwd",
                    "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
                ),
                ("etc/group", "root:x:0:\nsudo:x:27:user\nuser:x:1000:\nnogroup:x:65534:\n"),
                ("etc/hosts", "127.0.0.1 localhost\n"),
                ("etc/hostname", "sandbox\n"),
                ("etc/resolv.conf", ""),
                (".soulbox/envd", ""),
            ];
            for (p, c) in files {
                std::fs::write(tmp.join(p), c).ctx(tmp.join(p))?;
            }
            self.commit_unshifted_layer(&tmp)
        })();
        let digest = match res {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let meta = TemplateMeta {
            name: "test".into(),
            layers: vec![digest],
            default_user: "user".into(),
            default_workdir: "/home/user".into(),
            env: BTreeMap::new(),
            start_cmd: None,
            ready_cmd: None,
            cpu_count: 1,
            memory_mb: 256,
            disk_mb: None,
            recipe_hash,
            parent: None,
            runtime: None,
        };
        self.put(&meta)?;
        Ok(meta)
    }

    /// The `base` template: Debian 12 via mmdebstrap with what E2B users expect.
    /// Cached by recipe hash; progress lines go to stderr.
    ///
    /// A fixture of the runtime's own tests, bench and `soulbox-runtime template base` only (the runtime cannot
    /// depend on the build engine). The product's `base` — `soulbox server` and `soulbox node` alike — is the
    /// build engine's recipe (`soulbox-templates/src/base.rs`); both give the same properties.
    pub async fn ensure_base_template(&self, mirror: &str) -> Result<TemplateMeta> {
        let recipe = base_recipe(mirror);
        let recipe_hash = hex(&Sha256::digest(recipe.join("\n").as_bytes()));
        let store = self.clone();
        let _lock = tokio::task::spawn_blocking(move || store.lock("base"))
            .await
            .map_err(|e| Error::TemplateBuild(e.to_string()))??;
        if let Ok(m) = self.get("base")
            && m.recipe_hash == recipe_hash
        {
            eprintln!("[template base] cached ({})", &recipe_hash[..12]);
            return Ok(m);
        }
        eprintln!("[template base] building with mmdebstrap (recipe {})", &recipe_hash[..12]);
        let tmp = self.temp_layer()?;
        // mmdebstrap wants to create/own the target directory itself.
        let target = tmp.join("root");
        // In a private mount namespace: the /proc, /sys, /dev binds mmdebstrap makes inside the target vanish
        // with it, even when it is killed mid-build, so removing the temp layer can never walk into a mount of
        // the host's (a leftover bind of /dev/shm once cost a removal the host's shared memory).
        let mut args: Vec<String> =
            ["--mount", "--propagation", "private", "--", "mmdebstrap"].map(String::from).to_vec();
        args.extend(recipe_args(&recipe, &target));
        let res = run_progress("unshare", &args).await;
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        eprintln!("[template base] hashing layer");
        let store = self.clone();
        let t2 = tmp.clone();
        let digest = tokio::task::spawn_blocking(move || {
            let r = store.commit_unshifted_layer(&t2.join("root"));
            let _ = std::fs::remove_dir_all(&t2);
            r
        })
        .await
        .map_err(|e| Error::TemplateBuild(e.to_string()))??;
        let meta = TemplateMeta {
            name: "base".into(),
            layers: vec![digest],
            default_user: "user".into(),
            default_workdir: "/home/user".into(),
            env: BTreeMap::new(),
            start_cmd: None,
            ready_cmd: None,
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: None,
            recipe_hash,
            parent: None,
            runtime: None,
        };
        self.put(&meta)?;
        eprintln!("[template base] done");
        Ok(meta)
    }
}

/// The base recipe: everything that decides its content (hashing it gives the cache key).
fn base_recipe(mirror: &str) -> Vec<String> {
    let hook = [
        "set -e",
        "chroot \"$1\" useradd -m -s /bin/bash -u 1000 user",
        "chroot \"$1\" usermod -aG sudo user",
        "echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > \"$1/etc/sudoers.d/user\"",
        "chmod 0440 \"$1/etc/sudoers.d/user\"",
        "chroot \"$1\" passwd -d root",
        "sed -i 's/^UMASK.*/UMASK 022/' \"$1/etc/login.defs\"",
        "echo 'umask 022' > \"$1/etc/profile.d/umask.sh\"",
        "mkdir -p \"$1/code\" \"$1/.soulbox\" && chmod 777 \"$1/code\" && chmod -R 777 \"$1/usr/local\"",
        "touch \"$1/.soulbox/envd\"",
        "chroot \"$1\" chown -R user:user /home/user",
    ]
    .join("\n");
    vec![
        "recipe=base-v1".into(),
        "--variant=minbase".into(),
        "--include=bash,python3,python3-pip,git,curl,sudo,ca-certificates,procps,attr,iproute2".into(),
        format!("--customize-hook={hook}"),
        "bookworm".into(),
        mirror.to_string(),
    ]
}

fn recipe_args(recipe: &[String], target: &Path) -> Vec<String> {
    let mut args: Vec<String> = recipe[1..recipe.len() - 1].to_vec();
    args.push(target.to_string_lossy().into_owned());
    args.push(recipe[recipe.len() - 1].clone());
    args
}

/// Run a long build command, relaying its output as plain progress lines.
async fn run_progress(program: &str, args: &[String]) -> Result<()> {
    let program = program.to_string();
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn { cmd: program.clone(), source })?;
        let stdout = child.stdout.take();
        let t = std::thread::spawn(move || {
            if let Some(o) = stdout {
                for l in std::io::BufReader::new(o).lines().map_while(|l| l.ok()) {
                    eprintln!("[template base] {l}");
                }
            }
        });
        let mut last = Vec::new();
        if let Some(e) = child.stderr.take() {
            for l in std::io::BufReader::new(e).lines().map_while(|l| l.ok()) {
                eprintln!("[template base] {l}");
                last.push(l);
                if last.len() > 20 {
                    last.remove(0);
                }
            }
        }
        let _ = t.join();
        let st = child.wait().map_err(|source| Error::Spawn { cmd: program.clone(), source })?;
        if !st.success() {
            return Err(Error::TemplateBuild(format!("{program} {st}: {}", last.join("\n"))));
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::TemplateBuild(e.to_string()))?
}

pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || name.starts_with('.')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(Error::Invalid(format!("bad template name {name:?}")));
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).ctx(p)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Content digest of a directory tree: paths, types, modes, owners, symlink targets, device
/// numbers and file contents, in sorted order. (xattrs are not part of the digest.)
pub fn digest_tree(root: &Path) -> Result<String> {
    let mut h = Sha256::new();
    fn walk(dir: &Path, rel: &str, h: &mut Sha256) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir).ctx(dir)?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let path = e.path();
            let relp = format!("{rel}/{}", name.to_string_lossy());
            let md = std::fs::symlink_metadata(&path).ctx(&path)?;
            let ft = md.file_type();
            h.update(relp.as_bytes());
            h.update(format!("\0{:o}:{}:{}", md.mode(), md.uid(), md.gid()).as_bytes());
            if ft.is_symlink() {
                let t = std::fs::read_link(&path).ctx(&path)?;
                h.update(t.as_os_str().as_encoded_bytes());
            } else if ft.is_file() {
                let mut f = std::fs::File::open(&path).ctx(&path)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).ctx(&path)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                h.update(md.rdev().to_le_bytes());
            } else if ft.is_dir() {
                walk(&path, &relp, h)?;
            }
            h.update(b"\n");
        }
        Ok(())
    }
    walk(root, "", &mut h)?;
    Ok(hex(&h.finalize()))
}
