//! `bootstrap:<debian|ubuntu>:<suite>`: a minimal root filesystem straight from the distribution's package
//! mirror, built with `mmdebstrap` (the host's Debian package), for hosts that reach a package mirror but no
//! image registry.
//!
//! The result is one content-addressed layer. Everything that decides its content — distribution, suite,
//! mirror, variant, package list, components, keyring and the SoulBox hook — is hashed into a cache key;
//! `<store>/cache/bootstrap-<key>` names the layer, so a second build with the same inputs reuses it (logged
//! as `CACHED`). The entry is written only after the layer was committed, and a file lock per key keeps two
//! builds from bootstrapping the same thing at once.
//!
//! mmdebstrap runs in its own process group inside a private mount namespace (`unshare --mount`): the
//! `/proc`, `/sys` and `/dev` mounts it makes inside the target die with it, so a build that is cancelled
//! (timeout) or a server that crashes leaves no mounts behind; the cancelled process group is killed and its
//! temporary directory removed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::source::{Distro, Rewrites};
use super::{LogLevel, LogSink, sha256_hex};

/// What a plain `bootstrap:` base contains besides the variant: the tools E2B users expect in a sandbox, so
/// no build step needs the network for them. The `base` template bootstraps with exactly this set, so a
/// `FROM debian:bookworm` build shares its (already built) layer.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "attr",
    "bash",
    "ca-certificates",
    "curl",
    "git",
    "iproute2",
    "passwd",
    "procps",
    "python3",
    "python3-pip",
    "sudo",
];

pub const DEFAULT_UBUNTU_MIRROR: &str = "http://archive.ubuntu.com/ubuntu";
/// Where the `ubuntu-keyring` package puts the archive keyring. Debian bookworm does not ship that package,
/// so on a Debian host this file must be provided by the administrator.
pub const DEFAULT_UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";

/// Bumped when the way a bootstrap is made changes (the hook, the arguments), so old cache entries are not
/// reused for a different recipe.
const RECIPE_VERSION: u32 = 1;

/// Runtime plumbing every SoulBox root filesystem needs: the mount point of the envd binary.
const SOULBOX_HOOK: &str = "mkdir -p \"$1/.soulbox\" && touch \"$1/.soulbox/envd\"";

/// The Debian mirror bootstraps use unless configured (`debian_mirror`, `SOULBOX_DEBIAN_MIRROR`).
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// How many mmdebstrap output lines a failure message carries.
const FAILURE_TAIL: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// The server config's `debian_mirror`.
    pub debian_mirror: String,
    /// `SOULBOX_UBUNTU_MIRROR`, default [`DEFAULT_UBUNTU_MIRROR`].
    pub ubuntu_mirror: String,
    /// `SOULBOX_UBUNTU_KEYRING`, default [`DEFAULT_UBUNTU_KEYRING`].
    pub ubuntu_keyring: PathBuf,
    /// mmdebstrap's `--variant` (`minbase`: Essential packages and apt).
    pub variant: String,
    /// `--include`: packages on top of the variant.
    pub packages: Vec<String>,
}

impl BootstrapConfig {
    /// The defaults with the given Debian mirror; the Ubuntu mirror and keyring come from
    /// `SOULBOX_UBUNTU_MIRROR` / `SOULBOX_UBUNTU_KEYRING` when set.
    pub fn new(debian_mirror: impl Into<String>) -> BootstrapConfig {
        BootstrapConfig {
            debian_mirror: debian_mirror.into(),
            ubuntu_mirror: std::env::var("SOULBOX_UBUNTU_MIRROR").unwrap_or_else(|_| DEFAULT_UBUNTU_MIRROR.to_string()),
            ubuntu_keyring: std::env::var_os("SOULBOX_UBUNTU_KEYRING")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_UBUNTU_KEYRING)),
            variant: "minbase".to_string(),
            packages: DEFAULT_PACKAGES.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Whether Ubuntu can be bootstrapped here (its archive keyring is present).
    pub fn ubuntu_available(&self) -> bool {
        self.ubuntu_keyring.is_file()
    }
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig::new(DEFAULT_MIRROR)
    }
}

/// The Docker Hub references that become bootstraps by default, unless the config maps them itself.
const DEBIAN_DEFAULTS: &[(&str, &str)] = &[
    ("debian:bookworm", "bookworm"),
    ("debian:12", "bookworm"),
    ("debian:bookworm-slim", "bookworm"),
    ("debian:12-slim", "bookworm"),
];
const UBUNTU_DEFAULTS: &[(&str, &str)] =
    &[("ubuntu:22.04", "jammy"), ("ubuntu:jammy", "jammy"), ("ubuntu:24.04", "noble"), ("ubuntu:noble", "noble")];

/// Adds the default rewrites `debian:bookworm`/`debian:12` (and their `-slim` tags) → `bootstrap:debian:bookworm`
/// and, when the Ubuntu keyring is installed, `ubuntu:22.04`/`24.04` → `bootstrap:ubuntu:<suite>`.
///
/// A registry wins when one is configured: an explicit rewrite of the same reference is kept, and when the
/// config names a Docker Hub mirror (`docker.io` → host) no default is added at all — the administrator said
/// where Docker Hub images come from. Call this after the config's own rewrites were added.
pub fn add_default_rewrites(rewrites: &mut Rewrites, config: &BootstrapConfig) {
    if rewrites.map.contains_key(super::source::DOCKER_HUB) {
        return;
    }
    let ubuntu = if config.ubuntu_available() { UBUNTU_DEFAULTS } else { &[] };
    let defaults =
        DEBIAN_DEFAULTS.iter().map(|(r, s)| (r, "debian", s)).chain(ubuntu.iter().map(|(r, s)| (r, "ubuntu", s)));
    for (reference, distro, suite) in defaults {
        rewrites.map.entry(reference.to_string()).or_insert_with(|| format!("bootstrap:{distro}:{suite}"));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "bootstrap:ubuntu needs the Ubuntu archive keyring at {0}: Debian bookworm does not ship the \
         ubuntu-keyring package, so copy ubuntu-archive-keyring.gpg from an Ubuntu system there (or point \
         SOULBOX_UBUNTU_KEYRING at it)"
    )]
    NoUbuntuKeyring(PathBuf),
    #[error("starting mmdebstrap (is the mmdebstrap package installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("mmdebstrap failed ({status}); last output:\n{tail}")]
    Failed { status: std::process::ExitStatus, tail: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("the layer store: {0}")]
    Store(#[from] soulbox_runtime::Error),
}

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BootstrapError {
    move |source| BootstrapError::Io { context: context.to_string(), source }
}

/// Everything that decides a bootstrap's content; its JSON form hashed is the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootstrapPlan {
    pub distro: &'static str,
    pub suite: String,
    pub mirror: String,
    pub variant: String,
    /// Sorted and without duplicates: the order of `--include` does not change the result.
    pub packages: Vec<String>,
    pub components: Vec<String>,
    pub keyring: Option<PathBuf>,
    hook: &'static str,
    version: u32,
}

impl BootstrapPlan {
    /// `extra`: packages on top of the config's (a `bootstrap:<distro>:<suite>:<pkg>,…` base).
    pub fn new(
        config: &BootstrapConfig,
        distro: Distro,
        suite: &str,
        extra: &[String],
    ) -> Result<BootstrapPlan, BootstrapError> {
        let mut packages = config.packages.clone();
        packages.extend(extra.iter().cloned());
        packages.sort();
        packages.dedup();
        packages.retain(|p| !p.is_empty());
        let (name, mirror, components, keyring) = match distro {
            Distro::Debian => ("debian", config.debian_mirror.clone(), vec!["main".to_string()], None),
            Distro::Ubuntu => {
                if !config.ubuntu_available() {
                    return Err(BootstrapError::NoUbuntuKeyring(config.ubuntu_keyring.clone()));
                }
                // python3-pip and friends live in universe on Ubuntu.
                let components = vec!["main".to_string(), "universe".to_string()];
                ("ubuntu", config.ubuntu_mirror.clone(), components, Some(config.ubuntu_keyring.clone()))
            }
        };
        Ok(BootstrapPlan {
            distro: name,
            suite: suite.to_string(),
            mirror,
            variant: config.variant.clone(),
            packages,
            components,
            keyring,
            hook: SOULBOX_HOOK,
            version: RECIPE_VERSION,
        })
    }

    pub fn cache_key(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        sha256_hex(format!("bootstrap\n{json}").as_bytes())
    }

    /// mmdebstrap's arguments for a bootstrap into `target` (a directory mmdebstrap creates).
    pub fn mmdebstrap_args(&self, target: &Path) -> Vec<String> {
        let mut args =
            vec!["--mode=root".to_string(), format!("--variant={}", self.variant), "--format=directory".to_string()];
        if !self.packages.is_empty() {
            args.push(format!("--include={}", self.packages.join(",")));
        }
        args.push(format!("--components={}", self.components.join(",")));
        if let Some(k) = &self.keyring {
            args.push(format!("--keyring={}", k.display()));
        }
        args.push(format!("--customize-hook={}", self.hook));
        args.push(self.suite.clone());
        args.push(target.to_string_lossy().into_owned());
        args.push(self.mirror.clone());
        args
    }

    /// A short description for log lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {} from {} ({}, {} extra packages)",
            self.distro,
            self.suite,
            self.mirror,
            self.variant,
            self.packages.len()
        )
    }
}

/// The layer of `plan`: the cached one, or a fresh bootstrap whose output lines go to `log` (step `base`).
pub async fn bootstrap_layer(
    store: &soulbox_runtime::Store,
    plan: &BootstrapPlan,
    log: &LogSink,
) -> Result<String, BootstrapError> {
    let key = plan.cache_key();
    let cache_dir = store.root().join("cache");
    tokio::fs::create_dir_all(&cache_dir).await.map_err(io_err(cache_dir.display()))?;
    let entry = cache_dir.join(format!("bootstrap-{key}"));
    let base = || Some("base".to_string());
    if let Some(digest) = cached(store, &entry) {
        log(LogLevel::Info, format!("CACHED bootstrap {}: layer {}", plan.describe(), short(&digest)), base());
        return Ok(digest);
    }
    let lock_path = cache_dir.join(format!(".bootstrap-{key}.lock"));
    let _lock = tokio::task::spawn_blocking(move || lock_exclusive(&lock_path)).await.map_err(|e| {
        BootstrapError::Io { context: "waiting for the bootstrap lock".into(), source: std::io::Error::other(e) }
    })??;
    // Another build may have made it while this one waited for the lock.
    if let Some(digest) = cached(store, &entry) {
        log(LogLevel::Info, format!("CACHED bootstrap {}: layer {}", plan.describe(), short(&digest)), base());
        return Ok(digest);
    }
    log(LogLevel::Info, format!("Bootstrapping {} with mmdebstrap", plan.describe()), base());
    let started = std::time::Instant::now();
    let tmp = store.temp_layer()?;
    let mut guard = TempGuard { process_group: None, dir: Some(tmp.clone()) };
    let target = tmp.join("root");
    run_mmdebstrap(&plan.mmdebstrap_args(&target), log, &mut guard).await?;
    log(
        LogLevel::Info,
        format!("bootstrap finished in {:.1} s; hashing the layer", started.elapsed().as_secs_f64()),
        base(),
    );
    let store2 = store.clone();
    // mmdebstrap made it with host ids: shifted first in a shared user namespace store
    let digest = tokio::task::spawn_blocking(move || store2.commit_unshifted_layer(&target))
        .await
        .map_err(|e| BootstrapError::Io { context: "hashing the layer".into(), source: std::io::Error::other(e) })??;
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    guard.dir = None;
    remember(&entry, &digest).await?;
    log(
        LogLevel::Info,
        format!("bootstrap layer {} ({:.1} s)", short(&digest), started.elapsed().as_secs_f64()),
        base(),
    );
    Ok(digest)
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn cached(store: &soulbox_runtime::Store, entry: &Path) -> Option<String> {
    let digest = std::fs::read_to_string(entry).ok()?.trim().to_string();
    store.layer_dir(&digest).is_dir().then_some(digest)
}

async fn remember(entry: &Path, digest: &str) -> Result<(), BootstrapError> {
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    tokio::fs::write(&tmp, digest).await.map_err(io_err(tmp.display()))?;
    tokio::fs::rename(&tmp, entry).await.map_err(io_err(entry.display()))
}

fn lock_exclusive(path: &Path) -> Result<std::fs::File, BootstrapError> {
    let file = std::fs::File::create(path).map_err(io_err(path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err(path.display())(e.into()))?;
    Ok(file)
}

/// Undoes a bootstrap that did not finish (an error, or the build future dropped on timeout): kills
/// mmdebstrap's process group and removes the temporary directory (in a thread: it can be large).
struct TempGuard {
    process_group: Option<i32>,
    dir: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.process_group.take() {
            // SAFETY: killpg only sends a signal; the group is the one mmdebstrap was started in.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
        if let Some(dir) = self.dir.take() {
            std::thread::spawn(move || {
                // Killed processes may still be writing for a moment: one retry.
                if std::fs::remove_dir_all(&dir).is_err() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            });
        }
    }
}

fn level_of(line: &str) -> LogLevel {
    if line.starts_with("E:") {
        LogLevel::Error
    } else if line.starts_with("W:") {
        LogLevel::Warn
    } else {
        LogLevel::Info
    }
}

/// Runs mmdebstrap (in a private mount namespace, its own process group), every output line to `log` as it
/// comes.
async fn run_mmdebstrap(args: &[String], log: &LogSink, guard: &mut TempGuard) -> Result<(), BootstrapError> {
    let mut child = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "mmdebstrap"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(BootstrapError::Spawn)?;
    guard.process_group = child.id().and_then(|id| i32::try_from(id).ok());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(BootstrapError::Io {
            context: "mmdebstrap's output".into(),
            source: std::io::Error::other("no pipes"),
        });
    };
    // Split on bytes, not UTF-8 lines: a stray non-UTF-8 byte must not stop the reader (and block mmdebstrap).
    let mut out = BufReader::new(stdout).split(b'\n');
    let mut err = BufReader::new(stderr).split(b'\n');
    let (mut out_open, mut err_open) = (true, true);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(FAILURE_TAIL);
    while out_open || err_open {
        let bytes = tokio::select! {
            s = out.next_segment(), if out_open => match s.map_err(io_err("reading mmdebstrap's output"))? {
                Some(bytes) => bytes,
                None => {
                    out_open = false;
                    continue;
                }
            },
            s = err.next_segment(), if err_open => match s.map_err(io_err("reading mmdebstrap's output"))? {
                Some(bytes) => bytes,
                None => {
                    err_open = false;
                    continue;
                }
            },
        };
        let line = String::from_utf8_lossy(&bytes).trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        log(level_of(&line), line.clone(), Some("base".into()));
        if tail.len() == FAILURE_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await.map_err(io_err("waiting for mmdebstrap"))?;
    guard.process_group = None;
    if !status.success() {
        return Err(BootstrapError::Failed { status, tail: Vec::from(tail).join("\n") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BootstrapConfig {
        BootstrapConfig {
            debian_mirror: "http://deb.example/debian".into(),
            ubuntu_mirror: "http://ubuntu.example/ubuntu".into(),
            ubuntu_keyring: PathBuf::from("/nonexistent/ubuntu.gpg"),
            variant: "minbase".into(),
            packages: vec!["sudo".into(), "bash".into()],
        }
    }

    #[test]
    fn cache_key_covers_every_input_but_not_package_order() {
        let c = config();
        let key = BootstrapPlan::new(&c, Distro::Debian, "bookworm", &[]).unwrap().cache_key();
        assert_eq!(key.len(), 64);
        let mut reordered = c.clone();
        reordered.packages = vec!["bash".into(), "sudo".into(), "bash".into()];
        assert_eq!(
            key,
            BootstrapPlan::new(&reordered, Distro::Debian, "bookworm", &[]).unwrap().cache_key(),
            "order and duplicates"
        );
        assert_ne!(key, BootstrapPlan::new(&c, Distro::Debian, "trixie", &[]).unwrap().cache_key(), "suite");
        let mut other = c.clone();
        other.debian_mirror = "http://mirror.example/debian".into();
        assert_ne!(key, BootstrapPlan::new(&other, Distro::Debian, "bookworm", &[]).unwrap().cache_key(), "mirror");
        let mut other = c.clone();
        other.variant = "apt".into();
        assert_ne!(key, BootstrapPlan::new(&other, Distro::Debian, "bookworm", &[]).unwrap().cache_key(), "variant");
        let mut other = c.clone();
        other.packages.push("git".into());
        assert_ne!(key, BootstrapPlan::new(&other, Distro::Debian, "bookworm", &[]).unwrap().cache_key(), "packages");
        let extra = BootstrapPlan::new(&c, Distro::Debian, "bookworm", &["git".into()]).unwrap();
        assert_eq!(extra, BootstrapPlan::new(&other, Distro::Debian, "bookworm", &[]).unwrap(), "extra = config's");
        let mut ubuntu = c.clone();
        ubuntu.ubuntu_keyring = PathBuf::from("/dev/null");
        // /dev/null is not a file: still refused; a real file is accepted and keys differently from Debian.
        assert!(matches!(
            BootstrapPlan::new(&ubuntu, Distro::Ubuntu, "noble", &[]),
            Err(BootstrapError::NoUbuntuKeyring(_))
        ));
        let keyring = tempfile::NamedTempFile::new().unwrap();
        ubuntu.ubuntu_keyring = keyring.path().to_path_buf();
        let u = BootstrapPlan::new(&ubuntu, Distro::Ubuntu, "bookworm", &[]).unwrap();
        assert_ne!(key, u.cache_key(), "distro");
    }

    #[test]
    fn mmdebstrap_arguments() {
        let plan = BootstrapPlan::new(&config(), Distro::Debian, "bookworm", &[]).unwrap();
        let args = plan.mmdebstrap_args(Path::new("/store/layers/.tmp-1/root"));
        assert_eq!(
            args,
            [
                "--mode=root",
                "--variant=minbase",
                "--format=directory",
                "--include=bash,sudo",
                "--components=main",
                "--customize-hook=mkdir -p \"$1/.soulbox\" && touch \"$1/.soulbox/envd\"",
                "bookworm",
                "/store/layers/.tmp-1/root",
                "http://deb.example/debian",
            ]
        );
        let keyring = tempfile::NamedTempFile::new().unwrap();
        let mut c = config();
        c.ubuntu_keyring = keyring.path().to_path_buf();
        c.packages.clear();
        let args = BootstrapPlan::new(&c, Distro::Ubuntu, "noble", &[]).unwrap().mmdebstrap_args(Path::new("/t"));
        assert!(!args.iter().any(|a| a.starts_with("--include")));
        assert!(args.contains(&"--components=main,universe".to_string()));
        assert!(args.contains(&format!("--keyring={}", keyring.path().display())));
        assert_eq!(&args[args.len() - 3..], ["noble", "/t", "http://ubuntu.example/ubuntu"]);
    }

    #[test]
    fn ubuntu_without_keyring_says_why() {
        let e = BootstrapPlan::new(&config(), Distro::Ubuntu, "noble", &[]).unwrap_err().to_string();
        assert!(e.contains("ubuntu-keyring") && e.contains("/nonexistent/ubuntu.gpg"), "{e}");
    }

    #[test]
    fn default_rewrites_yield_to_configured_registries() {
        use super::super::source::BaseSource;
        let c = config();
        let mut rw = Rewrites::with_defaults();
        add_default_rewrites(&mut rw, &c);
        let bookworm = BaseSource::Bootstrap { distro: Distro::Debian, suite: "bookworm".into(), packages: vec![] };
        for r in ["debian:bookworm", "debian:12", "docker.io/library/debian:12", "debian:bookworm-slim"] {
            assert_eq!(rw.resolve(r).unwrap(), bookworm, "{r}");
        }
        assert!(
            matches!(rw.resolve("ubuntu:24.04").unwrap(), BaseSource::Registry(_)),
            "no keyring, no Ubuntu default"
        );
        // An explicit rewrite of the same reference is kept.
        let mut rw = Rewrites::with_defaults();
        rw.map.insert("debian:12".into(), "template:my-debian".into());
        add_default_rewrites(&mut rw, &c);
        assert_eq!(rw.resolve("debian:12").unwrap(), BaseSource::Template("my-debian".into()));
        assert_eq!(rw.resolve("debian:bookworm").unwrap(), bookworm);
        // A configured Docker Hub mirror wins over every default.
        let mut rw = Rewrites::with_defaults();
        rw.map.insert("docker.io".into(), "127.0.0.1:5000".into());
        add_default_rewrites(&mut rw, &c);
        assert!(
            matches!(rw.resolve("debian:bookworm").unwrap(), BaseSource::Registry(r) if r.registry == "127.0.0.1:5000")
        );
        // With the keyring, Ubuntu LTS tags bootstrap too.
        let keyring = tempfile::NamedTempFile::new().unwrap();
        let mut c = config();
        c.ubuntu_keyring = keyring.path().to_path_buf();
        let mut rw = Rewrites::with_defaults();
        add_default_rewrites(&mut rw, &c);
        assert_eq!(
            rw.resolve("ubuntu:24.04").unwrap(),
            BaseSource::Bootstrap { distro: Distro::Ubuntu, suite: "noble".into(), packages: vec![] }
        );
    }

    #[test]
    fn mmdebstrap_line_levels() {
        assert_eq!(level_of("E: cannot find package"), LogLevel::Error);
        assert_eq!(level_of("W: cannot check"), LogLevel::Warn);
        assert_eq!(level_of("I: extracting archives..."), LogLevel::Info);
    }
}
