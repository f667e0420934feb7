//! `soulbox cp -r`: a directory to or from a sandbox as one tar stream. The host side is `archive.rs` (its unpack
//! trusts nothing the sandbox sends); the sandbox side is the sandbox's own `tar` on a file in /tmp, because
//! command output reaches the SDK as text, not bytes.

use std::path::Path;

use futures::StreamExt;
use soulbox::{EntryType, Error, Sandbox};
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use super::CpArgs;
use super::archive;
use super::transfer::remote;

/// A word for `sh -c`, whatever it contains (spaces, quotes).
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// A scratch name in the sandbox's /tmp, unique per copy.
fn scratch() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("/tmp/.soulbox-cp-{}-{nanos}.tar", std::process::id())
}

/// `/a/b/` → (`/a`, `b`); the root and empty names have no name to copy under.
fn split_remote(path: &str) -> soulbox::Result<(String, String)> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && name != ".." && name != "." => {
            Ok((if parent.is_empty() { "/".into() } else { parent.into() }, name.into()))
        }
        None if !trimmed.is_empty() && trimmed != ".." && trimmed != "." => Ok((".".into(), trimmed.into())),
        _ => Err(Error::Invalid(format!("{path:?}: name a directory, not the root or `..`"))),
    }
}

async fn sh(s: &Sandbox, script: &str) -> soulbox::Result<()> {
    match s.commands().run(script).await {
        Ok(_) => Ok(()),
        Err(Error::CommandExit { stderr, exit_code, .. }) => {
            Err(Error::Other(format!("in the sandbox (exit {exit_code}): {}", stderr.trim())))
        }
        Err(e) => Err(e),
    }
}

pub async fn cp_dir(a: CpArgs) -> soulbox::Result<i32> {
    let client = a.conn.client()?;
    match (remote(&a.src), remote(&a.dst)) {
        (None, Some((id, dst))) => {
            let src = Path::new(&a.src);
            if !src.is_dir() {
                return Err(Error::Invalid(format!("{}: not a directory", a.src)));
            }
            let top = std::fs::canonicalize(src)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or_else(|| Error::Invalid(format!("{}: a directory with a name", a.src)))?;
            let s = Sandbox::get(&client, id).await?;
            let tmp = scratch();
            let (writer, reader) = tokio::io::duplex(256 * 1024);
            let bridge = SyncIoBridge::new(writer);
            let src = src.to_path_buf();
            let name = top.clone();
            let packer = tokio::task::spawn_blocking(move || archive::pack(&src, &name, bridge));
            let uploaded = s.files().write_stream(&tmp, ReaderStream::with_capacity(reader, 256 * 1024)).await;
            let packed = packer.await.map_err(|e| Error::Other(e.to_string()))?;
            packed.map_err(|e| Error::Other(format!("{}: {e}", a.src)))?;
            uploaded?;
            // Like docker cp: into an existing directory as <dst>/<name>, else <dst> itself with the contents.
            let (t, d) = (quote(&tmp), quote(dst));
            let script = format!(
                "trap 'rm -f {t}' EXIT; if [ -d {d} ]; then tar --no-same-owner -xf {t} -C {d}; \
                 else mkdir -p {d} && tar --no-same-owner -xf {t} -C {d} --strip-components=1; fi"
            );
            sh(&s, &script).await?;
            if a.conn.json {
                super::print_json(&serde_json::json!({ "path": dst, "sandboxID": id }));
            } else {
                eprintln!("{} -> {id}:{dst}", a.src);
            }
        }
        (Some((id, path)), None) => {
            let s = Sandbox::get(&client, id).await?;
            if s.files().get_info(path).await?.entry_type != EntryType::Dir {
                return Err(Error::Invalid(format!("{id}:{path}: not a directory (cp without -r copies files)")));
            }
            let (parent, name) = split_remote(path)?;
            let tmp = scratch();
            let (t, p, n) = (quote(&tmp), quote(&parent), quote(&name));
            let made = sh(&s, &format!("tar -cf {t} -C {p} {n}")).await;
            let result = match made {
                Ok(()) => download(&s, &tmp, &a.dst).await,
                Err(e) => Err(e),
            };
            let _ = s.files().remove(&tmp).await;
            let got = result?;
            for skipped in &got.skipped {
                eprintln!("skipped {skipped}");
            }
            if a.conn.json {
                super::print_json(&serde_json::json!({
                    "path": a.dst, "files": got.files, "dirs": got.dirs, "links": got.links, "bytes": got.bytes,
                    "skipped": got.skipped,
                }));
            } else {
                eprintln!("{id}:{path} -> {} ({} files, {} bytes)", a.dst, got.files, got.bytes);
            }
        }
        _ => return Err(Error::Invalid("exactly one of SRC and DST must be <sandbox-id>:<path>".into())),
    }
    Ok(0)
}

/// Streams the sandbox's tar into the host unpacker: into `dst` when it is a directory already (keeping the
/// top name), else into a new `dst` with the contents.
async fn download(s: &Sandbox, tmp: &str, dst: &str) -> soulbox::Result<archive::Unpacked> {
    let dst = Path::new(dst).to_path_buf();
    let strip_top = !dst.is_dir();
    if strip_top {
        std::fs::create_dir(&dst).map_err(|e| Error::Invalid(format!("{}: {e}", dst.display())))?;
    }
    let stream = s.files().read_stream(tmp).await?.map(|c| c.map_err(std::io::Error::other));
    let reader = SyncIoBridge::new(StreamReader::new(Box::pin(stream)));
    let shown = dst.display().to_string();
    tokio::task::spawn_blocking(move || archive::unpack(reader, &dst, strip_top))
        .await
        .map_err(|e| Error::Other(e.to_string()))?
        .map_err(|e| Error::Other(format!("{shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_dirs_and_quoting() {
        assert_eq!(split_remote("/home/user/out/").unwrap(), ("/home/user".into(), "out".into()));
        assert_eq!(split_remote("/out").unwrap(), ("/".into(), "out".into()));
        assert!(split_remote("/").is_err() && split_remote("/a/..").is_err());
        assert_eq!(quote("it's a b"), "'it'\\''s a b'");
    }
}
