//! Local OCI image layouts (`oci-archive:<path>`): a layout directory, or a tar of one extracted with only
//! its `index.json`, `oci-layout` and blobs, read beneath the opened directory and checked blob by blob.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};
use soulbox_runtime::Store;

use super::{
    BlobSource, Descriptor, FetchedBlob, INDEX_TYPES, ImageConfig, ImageError, ImportedImage, MANIFEST_TYPES,
    MAX_JSON_BLOB, Progress, TempDir, blocking, check_digest, file_digest, human_size, import_layers, io_at,
    select_platform, short,
};
use crate::host_path::OpenedPath;
use crate::unpack::{self, Compression};

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestJson {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// An OCI image layout directory (`index.json`, `blobs/<alg>/<hex>`), open: every entry is opened beneath it, so
/// a symbolic link inside the layout cannot make SoulBox read anything outside it.
struct LayoutBlobs {
    dir: std::fs::File,
    shown: PathBuf,
}

impl LayoutBlobs {
    /// A regular file of the layout (a FIFO or device planted there is refused, not read).
    fn open(&self, rel: &str) -> Result<std::fs::File, ImageError> {
        let shown = self.shown.join(rel);
        let file = crate::host_path::open_beneath(&self.dir, Path::new(rel)).map_err(io_at(&shown))?;
        if !file.metadata().map_err(io_at(&shown))?.is_file() {
            return Err(ImageError::Invalid(format!("{} is not a regular file", shown.display())));
        }
        Ok(file)
    }

    fn blob_rel(digest: &str) -> Result<String, ImageError> {
        let (alg, hex) = check_digest(digest)?;
        Ok(format!("blobs/{alg}/{hex}"))
    }

    /// A small JSON file of the layout (at most [`MAX_JSON_BLOB`]).
    fn read_json(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let shown = self.shown.join(rel);
        let file = self.open(rel)?;
        let mut data = Vec::new();
        file.take(MAX_JSON_BLOB + 1).read_to_end(&mut data).map_err(io_at(&shown))?;
        if data.len() as u64 > MAX_JSON_BLOB {
            return Err(ImageError::Invalid(format!(
                "{} is larger than {} (not a manifest or config)",
                shown.display(),
                human_size(MAX_JSON_BLOB)
            )));
        }
        Ok(data)
    }

    /// A small JSON blob, checked against its digest.
    fn read_json_blob(&self, d: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let data = self.read_json(&Self::blob_rel(&d.digest)?)?;
        let actual = match check_digest(&d.digest)?.0 {
            "sha512" => format!("sha512:{}", unpack::hex(&Sha512::digest(&data))),
            _ => format!("sha256:{}", unpack::hex(&Sha256::digest(&data))),
        };
        if actual != d.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob {}", d.media_type),
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(data)
    }
}

#[async_trait::async_trait]
impl BlobSource for LayoutBlobs {
    async fn fetch(&self, layer: &Descriptor, _scratch: &Path) -> Result<FetchedBlob, ImageError> {
        let file = self.open(&Self::blob_rel(&layer.digest)?)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
        let (alg, _) = check_digest(&layer.digest)?;
        let (p, alg) = (path.clone(), alg.to_string());
        let actual = blocking(move || file_digest(&p, &alg)).await?;
        if actual != layer.digest {
            return Err(ImageError::DigestMismatch {
                what: "layer blob".into(),
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(FetchedBlob { path, temp: false, held: Some(file) })
    }
    fn verb(&self) -> &'static str {
        "read"
    }
}

/// Extracts an OCI layout tar (only `index.json`, `oci-layout` and `blobs/<alg>/<hex>` regular files; every
/// other entry is skipped, so nothing can land outside `dest`).
fn extract_layout(archive: &Path, dest: &Path) -> Result<(), ImageError> {
    let compression = Compression::sniff(archive)
        .map_err(|source| ImageError::Unpack { layer: archive.display().to_string(), source })?;
    let file = std::fs::File::open(archive).map_err(io_at(archive))?;
    let reader = compression
        .decoder(std::io::BufReader::new(file))
        .map_err(|source| ImageError::Unpack { layer: archive.display().to_string(), source })?;
    let mut tar = tar::Archive::new(reader);
    let bad_tar = |e: std::io::Error| ImageError::Invalid(format!("{}: {e}", archive.display()));
    for entry in tar.entries().map_err(bad_tar)? {
        let mut entry = entry.map_err(bad_tar)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
        let rel = match name.split('/').collect::<Vec<_>>().as_slice() {
            ["index.json"] | ["oci-layout"] => PathBuf::from(&name),
            ["blobs", alg, hex] if check_digest(&format!("{alg}:{hex}")).is_ok() => PathBuf::from(&name),
            _ => continue,
        };
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&out).map_err(io_at(&out))?;
        std::io::copy(&mut entry, &mut f).map_err(io_at(&out))?;
    }
    Ok(())
}

/// `oci-archive:<path>`: an OCI image layout as a directory or a tar (optionally gzip) file, already open
/// (see [`crate::host_path`] for who may name which path).
pub async fn import_oci_archive(
    store: &Store,
    source: &OpenedPath,
    progress: Progress<'_>,
) -> Result<ImportedImage, ImageError> {
    let shown = source.shown().to_path_buf();
    progress(format!("pull oci-archive:{}", shown.display()));
    let extracted = TempDir::new(store)?;
    let layout = if source.is_dir() {
        let dir = source.file().try_clone().map_err(io_at(&shown))?;
        LayoutBlobs { dir, shown: shown.clone() }
    } else {
        let size = source.file().metadata().map(|m| m.len()).unwrap_or(0);
        let (a, d) = (source.proc_path(), extracted.path().to_path_buf());
        let started = Instant::now();
        blocking(move || extract_layout(&a, &d)).await?;
        progress(format!("extracted the archive ({}) in {:.1} s", human_size(size), started.elapsed().as_secs_f64()));
        let dir = std::fs::File::open(extracted.path()).map_err(io_at(extracted.path()))?;
        LayoutBlobs { dir, shown: shown.clone() }
    };
    let index: IndexJson = serde_json::from_slice(&layout.read_json("index.json")?)
        .map_err(|e| ImageError::Invalid(format!("index.json: {e}")))?;
    let mut entry = select_platform(&index.manifests, "index.json")?.clone();
    for _ in 0..4 {
        if !INDEX_TYPES.contains(&entry.media_type.as_str()) {
            break;
        }
        let nested: IndexJson = serde_json::from_slice(&layout.read_json_blob(&entry)?)
            .map_err(|e| ImageError::Invalid(format!("image index: {e}")))?;
        entry = select_platform(&nested.manifests, "the image index")?.clone();
    }
    if !MANIFEST_TYPES.contains(&entry.media_type.as_str()) {
        return Err(ImageError::Invalid(format!("unsupported manifest media type {:?}", entry.media_type)));
    }
    let manifest: ManifestJson = serde_json::from_slice(&layout.read_json_blob(&entry)?)
        .map_err(|e| ImageError::Invalid(format!("image manifest: {e}")))?;
    let config = ImageConfig::parse(&layout.read_json_blob(&manifest.config)?)?;
    progress(format!("manifest {} ({} layers)", short(&entry.digest), manifest.layers.len()));
    let layers = import_layers(store, &manifest.layers, &config.diff_ids, &layout, progress).await?;
    Ok(ImportedImage { layers, config })
}
