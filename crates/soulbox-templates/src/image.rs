//! Image bases: OCI image layers (from a registry or a local OCI layout) and rootfs tarballs imported into the
//! runtime's content-addressed layer store, one OCI layer = one SoulBox layer.
//!
//! A layer is cached by its OCI digest (`<store>/cache/oci-layer-<alg>-<hex>` → SoulBox layer digest): a
//! re-pull, or another image sharing that layer, neither downloads nor unpacks it again. Every blob is
//! checked against its digest before it is unpacked (registry blobs while they stream to a temp file, local
//! blobs by hashing the file), and a layer's uncompressed stream against the config's `diff_id`. Temp files
//! and half-unpacked layers live in `.tmp-<pid>-…` dirs of the layer store, removed on every failure (and by
//! `Store::gc_temp` after a crash); the cache entry is written only after the layer was committed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};
use soulbox_runtime::Store;

use super::host_path::OpenedPath;
use super::unpack::{self, Compression, UnpackError, UnpackStats};

mod layout;

pub use layout::import_oci_archive;

/// Manifests, indexes and configs are small; anything bigger is refused rather than read into memory.
const MAX_JSON_BLOB: u64 = 16 << 20;
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("layer {layer}: {source}")]
    Unpack { layer: String, source: UnpackError },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("layer store: {0}")]
    Store(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {expected}: content has digest {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.display().to_string(), source }
}

fn store_err(e: soulbox_runtime::Error) -> ImageError {
    ImageError::Store(e.to_string())
}

/// Build log lines of the base phase.
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

/// What a build starts with from an image's config (`config` of the OCI image config JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Entrypoint + Cmd, shell-quoted; `None` when both are empty or it is just an interactive shell.
    pub start_cmd: Option<String>,
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawRunConfig {
    env: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRootfs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawImageConfig {
    config: Option<RawRunConfig>,
    rootfs: RawRootfs,
}

impl ImageConfig {
    /// The config of an image without one (a rootfs tarball): root in `/` with the default PATH.
    pub fn plain() -> ImageConfig {
        let mut c = ImageConfig::default();
        c.env.insert("PATH".into(), DEFAULT_PATH.into());
        c
    }

    pub fn parse(json: &[u8]) -> Result<ImageConfig, ImageError> {
        let raw: RawImageConfig =
            serde_json::from_slice(json).map_err(|e| ImageError::Invalid(format!("image config: {e}")))?;
        let run = raw.config.unwrap_or_default();
        let mut c = ImageConfig::plain();
        for kv in run.env.unwrap_or_default() {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            if !k.is_empty() {
                c.env.insert(k.to_string(), v.to_string());
            }
        }
        c.user = run.user.filter(|u| !u.is_empty());
        c.workdir = run.working_dir.filter(|w| w.starts_with('/'));
        let argv: Vec<String> =
            run.entrypoint.unwrap_or_default().into_iter().chain(run.cmd.unwrap_or_default()).collect();
        let just_a_shell =
            argv.len() == 1 && matches!(argv[0].as_str(), "sh" | "bash" | "/bin/sh" | "/bin/bash" | "/usr/bin/bash");
        if !argv.is_empty() && !just_a_shell {
            c.start_cmd = Some(argv.iter().map(|a| super::dockerfile::shell_quote(a)).collect::<Vec<_>>().join(" "));
        }
        c.diff_ids = raw.rootfs.diff_ids;
        Ok(c)
    }
}

/// An image imported into the layer store.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    /// SoulBox layer digests, bottom first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
}

/// An OCI content descriptor (the fields SoulBox uses).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// `(algorithm, hex)` of a digest SoulBox accepts: `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase). Digests
/// become file names (cache keys, blob paths), so nothing else gets through.
pub fn check_digest(digest: &str) -> Result<(&str, &str), ImageError> {
    let bad = || ImageError::Invalid(format!("invalid digest {digest:?}"));
    let (alg, hex) = digest.split_once(':').ok_or_else(bad)?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad());
    }
    Ok((alg, hex))
}

/// `sha256:0123456789ab` for log lines.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

fn cache_file(store: &Store, digest: &str) -> Result<PathBuf, ImageError> {
    let (alg, hex) = check_digest(digest)?;
    // `nosuid`: layers unpacked since setuid bits and file capabilities are dropped (`unpack.rs`); a layer
    // cached under the old name still has them and is not reused.
    Ok(store.root().join("cache").join(format!("oci-layer-nosuid-{alg}-{hex}")))
}

/// The build log's note that an image layer's privileges were dropped.
fn privileges_note(label: &str, stats: &UnpackStats) -> Option<String> {
    (stats.privileges_dropped > 0).then(|| {
        format!(
            "layer {label}: setuid/setgid bits or file capabilities of {} files dropped (an image's files get no privileges; a RUN step can set them again)",
            stats.privileges_dropped
        )
    })
}

/// The SoulBox layer an OCI layer digest was imported as, if it is still in the store.
pub fn cached_layer(store: &Store, digest: &str) -> Option<String> {
    let layer = std::fs::read_to_string(cache_file(store, digest).ok()?).ok()?;
    let layer = layer.trim().to_string();
    store.layer_dir(&layer).is_dir().then_some(layer)
}

fn remember_layer(store: &Store, digest: &str, layer: &str) -> Result<(), ImageError> {
    let file = cache_file(store, digest)?;
    let dir = store.root().join("cache");
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, layer).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &file).map_err(io_at(&file))
}

/// A `.tmp-<pid>-…` dir of the layer store, removed when dropped unless taken.
pub struct TempDir(Option<PathBuf>);

impl TempDir {
    pub fn new(store: &Store) -> Result<TempDir, ImageError> {
        Ok(TempDir(Some(store.temp_layer().map_err(store_err)?)))
    }
    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }
    fn take(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_dir_all(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove a temp dir");
        }
    }
}

/// Streams `path` through `alg` and returns `alg:<hex>`.
pub fn file_digest(path: &Path, alg: &str) -> Result<String, ImageError> {
    fn run<D: Digest>(path: &Path, mut h: D) -> Result<Vec<u8>, ImageError> {
        let mut f = std::fs::File::open(path).map_err(io_at(path))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(io_at(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().to_vec())
    }
    let bytes = match alg {
        "sha512" => run(path, Sha512::new())?,
        _ => run(path, Sha256::new())?,
    };
    Ok(format!("{alg}:{}", unpack::hex(&bytes)))
}

/// Unpacks the blob file into a new layer and commits it (blocking: call from `spawn_blocking`). Nothing is
/// left in the store on failure.
pub fn import_blob(
    store: &Store,
    blob: &Path,
    compression: Compression,
    expected_diff_id: Option<&str>,
    label: &str,
) -> Result<(String, UnpackStats), ImageError> {
    let tmp = TempDir::new(store)?;
    let file = std::fs::File::open(blob).map_err(io_at(blob))?;
    let reader = compression
        .decoder(std::io::BufReader::with_capacity(1 << 16, file))
        .map_err(|source| ImageError::Unpack { layer: label.into(), source })?;
    // shifted into the store's range in a shared user namespace store (`soulbox_runtime::template`)
    let opts = unpack::UnpackOptions { id_shift: store.id_shift(), keep_privileges: false };
    let stats = unpack::unpack_with(reader, tmp.path(), &opts)
        .map_err(|source| ImageError::Unpack { layer: label.into(), source })?;
    if let Some(expected) = expected_diff_id
        && expected != stats.diff_id
    {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {label}: uncompressed content (diff_id)"),
            expected: expected.into(),
            actual: stats.diff_id,
        });
    }
    let path = tmp.take();
    match store.commit_layer(&path) {
        Ok(digest) => Ok((digest, stats)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&path);
            Err(store_err(e))
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ImageError::Store(format!("a blocking task failed: {e}")))?
}

/// A verified layer blob on the local disk.
pub struct FetchedBlob {
    /// Where to read it (for a blob of a host directory, its open file's `/proc/self/fd/N`).
    pub path: PathBuf,
    /// A temp file in the scratch dir, removed once unpacked.
    pub temp: bool,
    /// Keeps the file `path` names open.
    pub held: Option<std::fs::File>,
}

/// Where layer blobs come from.
#[async_trait::async_trait]
pub trait BlobSource: Send + Sync {
    /// A local file holding the verified blob of `layer` (temp files go to `scratch`).
    async fn fetch(&self, layer: &Descriptor, scratch: &Path) -> Result<FetchedBlob, ImageError>;
    /// "downloaded" / "read" for the log.
    fn verb(&self) -> &'static str;
}

/// Imports `layers` in order (cache first), checking `diff_ids` when the config lists one per layer.
pub async fn import_layers(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[String],
    source: &dyn BlobSource,
    progress: Progress<'_>,
) -> Result<Vec<String>, ImageError> {
    let scratch = TempDir::new(store)?;
    let total = layers.len();
    let mut out = Vec::with_capacity(total);
    for (i, layer) in layers.iter().enumerate() {
        let n = i + 1;
        check_digest(&layer.digest)?;
        let label = format!("{n}/{total} {}", short(&layer.digest));
        if let Some(cached) = cached_layer(store, &layer.digest) {
            progress(format!("layer {label} CACHED (layer {})", &cached[..12]));
            out.push(cached);
            continue;
        }
        let compression = Compression::from_media_type(&layer.media_type)
            .map_err(|source| ImageError::Unpack { layer: label.clone(), source })?;
        let started = Instant::now();
        let fetched = source.fetch(layer, scratch.path()).await?;
        let blob = fetched.path.clone();
        let size = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
        progress(format!(
            "layer {label}: {} {} in {:.1} s, digest verified",
            source.verb(),
            human_size(size),
            started.elapsed().as_secs_f64()
        ));
        let started = Instant::now();
        let diff_id = (diff_ids.len() == total).then(|| diff_ids[i].clone());
        let (st, b, l) = (store.clone(), blob.clone(), label.clone());
        let (digest, stats) = blocking(move || import_blob(&st, &b, compression, diff_id.as_deref(), &l)).await?;
        if fetched.temp {
            let _ = std::fs::remove_file(&blob);
        }
        drop(fetched);
        progress(format!(
            "unpack layer {label}: {} entries, {} of files, {} whiteouts, {} opaque dirs in {:.1} s → layer {}",
            stats.entries,
            human_size(stats.file_bytes),
            stats.whiteouts,
            stats.opaque_dirs,
            started.elapsed().as_secs_f64(),
            &digest[..12]
        ));
        if let Some(note) = privileges_note(&label, &stats) {
            progress(note);
        }
        remember_layer(store, &layer.digest, &digest)?;
        out.push(digest);
    }
    Ok(out)
}

const MANIFEST_TYPES: [&str; 2] =
    ["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];
const INDEX_TYPES: [&str; 2] =
    ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// Picks the linux/amd64 entry of an index (or its only entry).
pub fn select_platform<'a>(entries: &'a [Descriptor], what: &str) -> Result<&'a Descriptor, ImageError> {
    let images: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| MANIFEST_TYPES.contains(&d.media_type.as_str()) || INDEX_TYPES.contains(&d.media_type.as_str()))
        .collect();
    if let Some(d) =
        images.iter().find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
    {
        return Ok(d);
    }
    match images.as_slice() {
        [only] if only.platform.is_none() => Ok(only),
        [] => Err(ImageError::Invalid(format!("{what} lists no image manifest"))),
        _ => Err(ImageError::Invalid(format!("{what} has no linux/amd64 image"))),
    }
}

/// `rootfs:<path>`: a root filesystem tarball (plain, gzip or zstd), already open; one layer, cached by the
/// file's sha256.
pub async fn import_rootfs(
    store: &Store,
    source: &OpenedPath,
    progress: Progress<'_>,
) -> Result<ImportedImage, ImageError> {
    progress(format!("pull rootfs:{}", source.shown().display()));
    if source.is_dir() {
        return Err(ImageError::Invalid(format!("{} is a directory, not a tarball", source.shown().display())));
    }
    let path = source.proc_path();
    let p = path.clone();
    let digest = blocking(move || file_digest(&p, "sha256")).await?;
    let size = source.file().metadata().map(|m| m.len()).unwrap_or(0);
    let label = format!("1/1 {}", short(&digest));
    let layer = if let Some(cached) = cached_layer(store, &digest) {
        progress(format!("layer {label} CACHED (layer {})", &cached[..12]));
        cached
    } else {
        let compression =
            Compression::sniff(&path).map_err(|source| ImageError::Unpack { layer: label.clone(), source })?;
        let started = Instant::now();
        let (st, p, l) = (store.clone(), path.clone(), label.clone());
        let (layer, stats) = blocking(move || import_blob(&st, &p, compression, None, &l)).await?;
        progress(format!(
            "unpack layer {label}: {} ({:?}), {} entries, {} of files in {:.1} s → layer {}",
            human_size(size),
            compression,
            stats.entries,
            human_size(stats.file_bytes),
            started.elapsed().as_secs_f64(),
            &layer[..12]
        ));
        if let Some(note) = privileges_note(&label, &stats) {
            progress(note);
        }
        remember_layer(store, &digest, &layer)?;
        layer
    };
    Ok(ImportedImage { layers: vec![layer], config: ImageConfig::plain() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused layer leaves nothing in the store: no layer registered, no half-unpacked temp dir.
    #[test]
    fn a_hostile_layer_is_not_imported_and_leaves_nothing() {
        use soulbox_layer::testing::Tar;
        let store_dir = tempfile::tempdir().unwrap();
        let store = soulbox_runtime::Store::new(store_dir.path()).unwrap();
        let blob = store_dir.path().join("hostile.tar");
        std::fs::write(&blob, Tar::new().file("ok", b"fine").symlink("etc", "/").file("etc/passwd", b"x").bytes())
            .unwrap();
        let err = import_blob(&store, &blob, Compression::None, None, "1/1").unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        let left: Vec<_> =
            std::fs::read_dir(store_dir.path().join("layers")).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// In a shifted store (the runtime's shared user namespace mode) an imported layer's owners are shifted
    /// into the store's range and its layer and cache entry are the shifted store's own.
    #[test]
    fn a_layer_imported_into_a_shifted_store_is_stored_shifted() {
        use soulbox_layer::testing::Tar;
        use std::os::unix::fs::MetadataExt;
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: needs root to give files owners");
            return;
        }
        let base = 0x2600_0000;
        let store_dir = tempfile::tempdir().unwrap();
        let plain = soulbox_runtime::Store::new(store_dir.path()).unwrap();
        let shifted = soulbox_runtime::Store::shifted(store_dir.path(), base).unwrap();
        let blob = store_dir.path().join("layer.tar");
        let tar = Tar::new()
            .file_as("etc/conf", b"c", 0o644, (0, 0))
            .file_as("home/app/data", b"d", 0o600, (1000, 1000))
            .bytes();
        std::fs::write(&blob, tar).unwrap();
        let (unshifted, _) = import_blob(&plain, &blob, Compression::None, None, "1/1").unwrap();
        let (layer, _) = import_blob(&shifted, &blob, Compression::None, None, "1/1").unwrap();
        assert_ne!(layer, unshifted, "one layer for both ways of storing files");
        let owner = |store: &Store, digest: &str, p: &str| {
            let md = std::fs::symlink_metadata(store.layer_dir(digest).join(p)).unwrap();
            (md.uid(), md.gid())
        };
        assert_eq!(owner(&plain, &unshifted, "home/app/data"), (1000, 1000));
        assert_eq!(owner(&shifted, &layer, "etc/conf"), (base, base));
        assert_eq!(owner(&shifted, &layer, "etc"), (base, base), "a parent the tar does not list");
        assert_eq!(owner(&shifted, &layer, "home/app/data"), (base + 1000, base + 1000));
        assert!(!plain.layer_dir(&layer).exists() && !shifted.layer_dir(&unshifted).exists());
        // the OCI layer cache of one store never names a layer of the other
        let oci = &format!("sha256:{}", "a".repeat(64));
        remember_layer(&plain, oci, &unshifted).unwrap();
        assert_eq!(cached_layer(&shifted, oci), None);
        remember_layer(&shifted, oci, &layer).unwrap();
        assert_eq!(cached_layer(&shifted, oci), Some(layer));
        assert_eq!(cached_layer(&plain, oci), Some(unshifted));
    }

    #[test]
    fn config_maps_env_user_workdir_and_start_command() {
        let c = ImageConfig::parse(
            br#"{"config":{"Env":["PATH=/bin","A=1=2","B"],"User":"app","WorkingDir":"/srv","Entrypoint":["/bin/run"],"Cmd":["--port","80 80"]},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
        )
        .unwrap();
        assert_eq!(c.env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(c.env.get("A").map(String::as_str), Some("1=2"));
        assert_eq!(c.env.get("B").map(String::as_str), Some(""));
        assert_eq!((c.user.as_deref(), c.workdir.as_deref()), (Some("app"), Some("/srv")));
        assert_eq!(c.start_cmd.as_deref(), Some("/bin/run --port '80 80'"));
        assert_eq!(c.diff_ids, vec!["sha256:x".to_string()]);
        let shell = ImageConfig::parse(br#"{"config":{"Cmd":["bash"]}}"#).unwrap();
        assert_eq!(shell.start_cmd, None, "an interactive shell is no start command");
        assert_eq!(shell.env.get("PATH").map(String::as_str), Some(DEFAULT_PATH));
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::plain());
    }

    #[test]
    fn digests_that_could_be_paths_are_refused() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(check_digest(&good).is_ok());
        for bad in ["sha256:../../etc", "md5:abc", "sha256:ABC", &format!("sha256:{}/x", "a".repeat(62))] {
            assert!(check_digest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_selection() {
        let d = |mt: &str, os: &str, arch: &str| Descriptor {
            media_type: mt.into(),
            digest: format!("sha256:{}{}", arch.len(), "0".repeat(63)),
            size: 1,
            platform: Some(Platform { os: os.into(), architecture: arch.into() }),
        };
        let list = vec![d(MANIFEST_TYPES[0], "linux", "arm64"), d(MANIFEST_TYPES[0], "linux", "amd64")];
        assert_eq!(select_platform(&list, "x").unwrap().platform.as_ref().unwrap().architecture, "amd64");
        assert!(select_platform(&list[..1], "x").is_err());
        let plain = vec![Descriptor { media_type: MANIFEST_TYPES[0].into(), ..Default::default() }];
        assert!(select_platform(&plain, "x").is_ok());
    }
}
