//! Template COPY context uploads: stored per template, streamed to disk under a size limit, never replaced once
//! in place, and checked against the step's `filesHash` before a build uses them.
//!
//! **Storage.** `<uploads>/<template>/<filesHash>`: the URL an upload arrives on (`PUT
//! /templates/{id}/files/{hash}?token=`) names both, and its token is an HMAC of both, so one template's
//! uploads can never be read or overwritten through another's. The body streams into a temp file in the same
//! directory (never whole in memory), over the limit it is refused with 413, and the finished file is renamed
//! into place with `RENAME_NOREPLACE`: the first complete upload of a hash stays, a second one is discarded.
//!
//! **Verification.** E2B's SDKs compute `filesHash` as
//! `sha256("COPY {src} {dest}" ‖ for each file, in archive order: relpath ‖ st_mode ‖ st_size (not for
//! directories) ‖ content (a symlink: its target))` — `packages/python-sdk/e2b/template/utils.py`
//! `calculate_files_hash`, and `soulbox::template::files_hash` for the Rust SDK. Everything in it is in the tar
//! they upload (names, type and permission bits, sizes, contents, link targets), except `src` and `dest`, which
//! only arrive with the build's steps. So the hash cannot be checked when the upload arrives, only when a build
//! starts: [`verify`] recomputes it from the archive for the step's `src`/`dest`; a mismatch refuses the build
//! (400) and deletes the upload, so the next attempt uploads again.
//!
//! E2B's older SDKs (2.45 does, 2.63 does not) also hashed a directory's `st_size`, which a tar does not carry
//! and which depends on the client's filesystem. For an archive with directories that does not verify, the
//! legacy form is tried with 4096 bytes per directory (ext4 and most Linux filesystems for directories of
//! ordinary size); an old SDK on another filesystem (tmpfs, btrfs, APFS, …) has its directory COPYs refused
//! with a message saying to update the SDK.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use soulbox_templates::unpack::Compression;

/// Hard links (a tar's second name for a file) whose content is re-read to verify a hash; more are refused.
const MAX_HARDLINKS: usize = 64;
/// The directory `st_size` tried for E2B's legacy hash (see the module doc).
const LEGACY_DIR_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload over the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("storing the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`Uploads::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// This upload is now the template's files for the hash (`n` bytes).
    New(u64),
    /// The template already had files for this hash; they were kept and this upload discarded.
    AlreadyPresent,
}

/// A node's uploads directory.
#[derive(Debug, Clone)]
pub struct Uploads {
    root: PathBuf,
}

impl Uploads {
    pub fn new(root: PathBuf) -> Uploads {
        Uploads { root }
    }

    /// A team's uploads on a node: each team's COPY uploads live in their own directory, so no team can build
    /// from (or probe for) another's.
    pub fn for_team(files_dir: &Path, team_id: &str) -> Uploads {
        Uploads::new(files_dir.join(team_id))
    }

    /// Where a template's uploads are (`template` is a validated template name).
    pub fn dir(&self, template: &str) -> PathBuf {
        self.root.join(template)
    }

    pub fn path(&self, template: &str, hash: &str) -> PathBuf {
        self.dir(template).join(hash)
    }

    pub fn present(&self, template: &str, hash: &str) -> bool {
        self.path(template, hash).is_file()
    }

    /// Streams `body` into place (see the module doc); nothing is left behind on failure.
    pub async fn store(
        &self,
        template: &str,
        hash: &str,
        body: impl Stream<Item = Result<Bytes, impl std::fmt::Display>> + Unpin,
        max: u64,
    ) -> Result<Stored, UploadError> {
        let dir = self.dir(template);
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join(format!(".upload-{hash}-{}", crate::ids::access_token()));
        let result = write_then_place(&tmp, &dir.join(hash), body, max).await;
        if result.is_err() || matches!(result, Ok(Stored::AlreadyPresent)) {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    pub async fn remove(&self, template: &str, hash: &str) {
        let _ = tokio::fs::remove_file(self.path(template, hash)).await;
    }

    /// Checks every COPY step's uploaded files against its `filesHash` ([`verify`]); a mismatch deletes that
    /// upload. A step whose files are not uploaded is left to the build (its layer may be cached). Hashes are
    /// validated by the caller's route (hex only) before they become file names; others are skipped here.
    pub async fn verify_recipe(&self, template: &str, recipe: &soulbox_templates::Recipe) -> Result<(), String> {
        let copies = recipe.steps.iter().enumerate().filter(|(_, s)| s.kind == "COPY");
        for (i, step) in copies {
            let Some(hash) = step.files_hash.clone().filter(|h| crate::names::is_valid_files_hash(h)) else {
                continue;
            };
            let archive = self.path(template, &hash);
            if !archive.is_file() {
                continue;
            }
            let src = step.args.first().cloned().unwrap_or_default();
            let dest = step.args.get(1).cloned().unwrap_or_default();
            let expected = hash.clone();
            let verdict = tokio::task::spawn_blocking(move || verify(&archive, &src, &dest, &expected))
                .await
                .map_err(|e| format!("verifying the files of COPY step {}: {e}", i + 1))?;
            if let Err(e) = verdict {
                self.remove(template, &hash).await;
                tracing::warn!(template, hash = %hash, step = i + 1, error = %e, "refused a COPY upload");
                return Err(format!("COPY step {}: {e}", i + 1));
            }
        }
        Ok(())
    }

    /// Removes every upload of a deleted template.
    pub async fn remove_template(&self, template: &str) {
        match tokio::fs::remove_dir_all(self.dir(template)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(template, error = %e, "could not remove a template's uploads");
            }
            _ => {}
        }
    }
}

async fn write_then_place(
    tmp: &Path,
    dest: &Path,
    mut stream: impl Stream<Item = Result<Bytes, impl std::fmt::Display>> + Unpin,
    max: u64,
) -> Result<Stored, UploadError> {
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(tmp).await?;
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(UploadError::TooLarge { max });
        }
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    drop(file);
    let (from, to) = (tmp.to_path_buf(), dest.to_path_buf());
    let placed = tokio::task::spawn_blocking(move || {
        rustix::fs::renameat_with(rustix::fs::CWD, &from, rustix::fs::CWD, &to, rustix::fs::RenameFlags::NOREPLACE)
    })
    .await
    .map_err(|e| UploadError::Io(std::io::Error::other(e)))?;
    match placed {
        Ok(()) => Ok(Stored::New(n)),
        Err(rustix::io::Errno::EXIST) => Ok(Stored::AlreadyPresent),
        Err(e) => Err(UploadError::Io(e.into())),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(
        "the uploaded files do not match filesHash {expected} (they hash to {actual}); the upload was discarded, build again to re-upload (an e2b SDK older than 2.63 hashes a directory's size, which only verifies for 4096-byte directories: update the SDK)"
    )]
    Mismatch { expected: String, actual: String },
    #[error("the uploaded files cannot be read: {0}")]
    Unreadable(String),
}

/// Checks that `archive` (a tar, plain or gzip) is what `filesHash` `expected` describes for `COPY src dest`.
/// E2B's current form, or for an archive with directories its legacy form (see the module doc).
pub fn verify(archive: &Path, src: &str, dest: &str, expected: &str) -> Result<(), VerifyError> {
    let (actual, has_dirs) = files_hash(archive, src, dest, None).map_err(VerifyError::Unreadable)?;
    if actual.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    if has_dirs {
        let (legacy, _) = files_hash(archive, src, dest, Some(LEGACY_DIR_SIZE)).map_err(VerifyError::Unreadable)?;
        if legacy.eq_ignore_ascii_case(expected) {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch { expected: expected.to_string(), actual })
}

fn open_tar(archive: &Path) -> Result<tar::Archive<Box<dyn Read>>, String> {
    let compression = Compression::sniff(archive).map_err(|e| e.to_string())?;
    let file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let reader: Box<dyn Read> =
        compression.decoder(BufReader::with_capacity(1 << 16, file)).map_err(|e| e.to_string())?;
    Ok(tar::Archive::new(reader))
}

/// E2B's `filesHash` of the files in `archive` for `COPY src dest` (see the module doc).
/// `legacy_dir_size`: hash this as every directory's `st_size`, as older SDKs did. Also says whether the archive
/// has directories.
pub fn files_hash(
    archive: &Path,
    src: &str,
    dest: &str,
    legacy_dir_size: Option<u64>,
) -> Result<(String, bool), String> {
    let mut h = Sha256::new();
    h.update(format!("COPY {src} {dest}").as_bytes());
    let mut tar = open_tar(archive)?;
    let mut hardlinks = 0usize;
    let mut has_dirs = false;
    let bad = |e: std::io::Error| format!("reading the archive: {e}");
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let type_bits = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => 0o100000,
            tar::EntryType::Directory => 0o040000,
            tar::EntryType::Symlink => 0o120000,
            // PAX/GNU extension records are folded into their entry by `tar`; nothing else is a file.
            _ => continue,
        };
        let name = entry.path_bytes().into_owned();
        let name = name.strip_suffix(b"/").unwrap_or(&name).to_vec();
        let mode = entry.header().mode().map_err(bad)? & 0o7777 | type_bits;
        h.update(&name);
        h.update(mode.to_string().as_bytes());
        match kind {
            tar::EntryType::Directory => {
                has_dirs = true;
                if let Some(size) = legacy_dir_size {
                    h.update(size.to_string().as_bytes());
                }
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                h.update(target.len().to_string().as_bytes());
                h.update(&target);
            }
            tar::EntryType::Link => {
                hardlinks += 1;
                if hardlinks > MAX_HARDLINKS {
                    return Err(format!("more than {MAX_HARDLINKS} hard links"));
                }
                let target = entry.link_name_bytes().map(|t| t.into_owned()).ok_or("a hard link without a target")?;
                hash_linked_content(archive, &target, &mut h)?;
            }
            _ => {
                h.update(entry.size().to_string().as_bytes());
                std::io::copy(&mut entry, &mut HashWriter(&mut h)).map_err(bad)?;
            }
        }
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, has_dirs))
}

/// A hard link stands for the file it links to: its size and content, read from that entry in a second pass.
fn hash_linked_content(archive: &Path, target: &[u8], h: &mut Sha256) -> Result<(), String> {
    let bad = |e: std::io::Error| format!("reading the archive: {e}");
    let mut tar = open_tar(archive)?;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type().is_file() && entry.path_bytes().as_ref() == target {
            h.update(entry.size().to_string().as_bytes());
            std::io::copy(&mut entry, &mut HashWriter(h)).map_err(bad)?;
            return Ok(());
        }
    }
    Err(format!("hard link to {} which the archive does not hold", String::from_utf8_lossy(target)))
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context the SDK hashes: a file, a directory with a file, a symlink.
    fn context() -> tempfile::TempDir {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ctx.path().join("app/sub")).unwrap();
        std::fs::write(ctx.path().join("app/main.py"), b"print('hi')\n").unwrap();
        std::fs::write(ctx.path().join("app/sub/data.bin"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("main.py", ctx.path().join("app/link")).unwrap();
        ctx
    }

    #[test]
    fn the_rust_sdks_uploads_verify_and_any_change_is_caught() {
        let ctx = context();
        let expected = soulbox::files_hash(ctx.path(), "app", "/app").unwrap();
        let archive = ctx.path().join("upload.tar.gz");
        std::fs::write(&archive, rust_sdk_archive(ctx.path(), "app")).unwrap();
        assert_eq!(verify(&archive, "app", "/app", &expected), Ok(()));
        // The same files for another destination, or other files, are another hash.
        assert!(matches!(verify(&archive, "app", "/elsewhere", &expected), Err(VerifyError::Mismatch { .. })));
        std::fs::write(ctx.path().join("app/main.py"), b"print('evil')\n").unwrap();
        let tampered = ctx.path().join("tampered.tar.gz");
        std::fs::write(&tampered, rust_sdk_archive(ctx.path(), "app")).unwrap();
        let err = verify(&tampered, "app", "/app", &expected).unwrap_err();
        assert!(err.to_string().contains("do not match filesHash"), "{err}");
    }

    /// e2b 2.45's form: like today's, plus every directory's `st_size` (4096 on ext4).
    fn legacy_hash(ctx: &Path, src: &str, dest: &str, dir_size: u64) -> String {
        use std::os::unix::fs::MetadataExt;
        let mut paths = vec![ctx.join(src)];
        let mut i = 0;
        while i < paths.len() {
            if paths[i].is_dir() && !paths[i].is_symlink() {
                paths.extend(std::fs::read_dir(&paths[i]).unwrap().map(|e| e.unwrap().path()));
            }
            i += 1;
        }
        paths.sort();
        let mut h = Sha256::new();
        h.update(format!("COPY {src} {dest}"));
        for p in paths {
            let md = std::fs::symlink_metadata(&p).unwrap();
            h.update(p.strip_prefix(ctx).unwrap().to_string_lossy().as_bytes());
            h.update(md.mode().to_string());
            h.update(if md.is_dir() { dir_size } else { md.len() }.to_string());
            if md.is_symlink() {
                h.update(std::fs::read_link(&p).unwrap().to_string_lossy().as_bytes());
            } else if md.is_file() {
                h.update(std::fs::read(&p).unwrap());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn older_sdks_hashing_directory_sizes_verify_for_4096_byte_directories_only() {
        let ctx = context();
        let archive = ctx.path().join("upload.tar.gz");
        std::fs::write(&archive, rust_sdk_archive(ctx.path(), "app")).unwrap();
        let legacy = |size| legacy_hash(ctx.path(), "app", "/app", size);
        assert_eq!(verify(&archive, "app", "/app", &legacy(4096)), Ok(()));
        assert!(verify(&archive, "app", "/app", &legacy(60)).is_err(), "tmpfs-sized dirs");
        assert!(verify(&archive, "app", "/x", &legacy(4096)).is_err());
    }

    /// What `soulbox::Template` uploads: a gzip'd tar of the hashed entries, in the hashed order.
    fn rust_sdk_archive(ctx: &Path, src: &str) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        let mut entries = vec![ctx.join(src)];
        let mut i = 0;
        while i < entries.len() {
            if entries[i].is_dir() && !entries[i].is_symlink() {
                let mut children: Vec<PathBuf> =
                    std::fs::read_dir(&entries[i]).unwrap().map(|e| e.unwrap().path()).collect();
                children.sort();
                entries.extend(children);
            }
            i += 1;
        }
        entries.sort();
        for path in entries {
            let name = path.strip_prefix(ctx).unwrap();
            if path.is_dir() && !path.is_symlink() {
                tar.append_dir(name, &path).unwrap();
            } else {
                tar.append_path_with_name(&path, name).unwrap();
            }
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[tokio::test]
    async fn uploads_stream_under_a_limit_and_the_first_one_stays() {
        let root = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(root.path().to_path_buf());
        let body = |data: &'static [u8]| axum::body::Body::from(data).into_data_stream();
        assert_eq!(uploads.store("app", "abc", body(b"first"), 100).await.unwrap(), Stored::New(5));
        assert_eq!(uploads.store("app", "abc", body(b"second"), 100).await.unwrap(), Stored::AlreadyPresent);
        assert_eq!(std::fs::read(uploads.path("app", "abc")).unwrap(), b"first", "never overwritten");
        assert!(!uploads.present("other", "abc"), "per template");
        let over = uploads.store("app", "big", body(&[0u8; 101]), 100).await.unwrap_err();
        assert!(matches!(over, UploadError::TooLarge { max: 100 }), "{over}");
        let left: Vec<_> = std::fs::read_dir(uploads.dir("app")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("abc")], "no temp file left");
        uploads.remove_template("app").await;
        assert!(!uploads.dir("app").exists());
    }
}
