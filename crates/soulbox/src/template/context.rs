//! The COPY context: which files a COPY step takes, E2B's `filesHash` of them, and the tar.gz uploaded.
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The files of `src` under `context`, sorted: the source itself and, for a directory, everything below it.
fn collect(context: &Path, src: &str) -> Result<Vec<PathBuf>> {
    let rel = Path::new(src.trim_start_matches("./"));
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::Invalid(format!("COPY source '{src}' must be a path inside the context")));
    }
    if src.contains(['*', '?', '[']) {
        return Err(Error::Invalid(format!("COPY source '{src}': glob patterns are not supported by this SDK yet")));
    }
    let root = context.join(rel);
    let meta =
        std::fs::symlink_metadata(&root).map_err(|e| Error::Invalid(format!("COPY source {}: {e}", root.display())))?;
    let mut out = Vec::new();
    if rel.as_os_str().is_empty() || rel == Path::new(".") {
        // The whole context: its entries, not the directory itself.
    } else {
        out.push(root.clone());
    }
    if meta.is_dir() {
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|e| Error::Other(format!("reading {}: {e}", dir.display())))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::Other(format!("reading {}: {e}", dir.display())))?;
                let path = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path.clone());
                }
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn rel_name(context: &Path, path: &Path) -> String {
    path.strip_prefix(context).unwrap_or(path).to_string_lossy().into_owned()
}

/// E2B's `filesHash`: sha256 of `"COPY {src} {dest}"`, then per entry its relative path, `st_mode`, size (not
/// for directories) and content (a symlink: its target).
pub fn files_hash(context: &Path, src: &str, dest: &str) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("COPY {src} {dest}").as_bytes());
    let io = |p: &Path, e: std::io::Error| Error::Other(format!("hashing {}: {e}", p.display()));
    for path in collect(context, src)? {
        h.update(rel_name(context, &path).as_bytes());
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        h.update(meta.mode().to_string().as_bytes());
        if !meta.is_dir() {
            h.update(meta.len().to_string().as_bytes());
        }
        if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(&path).map_err(|e| io(&path, e))?.to_string_lossy().as_bytes());
        } else if meta.is_file() {
            let mut f = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = f.read(&mut chunk).map_err(|e| io(&path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&chunk[..n]);
            }
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A gzip'd tar of `src` (members relative to the context), spooled to an anonymous temporary file.
pub(super) fn tar_gz(context: &Path, src: &str) -> Result<std::fs::File> {
    let err = |e: std::io::Error| Error::Other(format!("packing the COPY context: {e}"));
    let file = tempfile::tempfile().map_err(err)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for path in collect(context, src)? {
        let name = rel_name(context, &path);
        let meta = std::fs::symlink_metadata(&path).map_err(err)?;
        if meta.is_dir() {
            tar.append_dir(&name, &path).map_err(err)?;
        } else {
            tar.append_path_with_name(&path, &name).map_err(err)?;
        }
    }
    let mut file = tar.into_inner().map_err(err)?.finish().map_err(err)?;
    use std::io::Seek;
    file.rewind().map_err(err)?;
    Ok(file)
}
