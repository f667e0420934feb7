//! `soulbox cp`: files to and from a sandbox, streamed, with a progress bar for large files; `-r` directories as a
//! tar stream (`archive.rs` packs and unpacks; the sandbox's own `tar` does its side through a file in /tmp).

use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use soulbox::{Error, Sandbox};
use tokio::io::AsyncWriteExt;

use super::CpArgs;

/// Files at least this big get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 1024 * 1024;

/// `<sandbox-id>:<path>` → (id, path). Local paths containing ':' can be written as `./a:b`.
pub(super) fn remote(spec: &str) -> Option<(&str, &str)> {
    if spec.starts_with('/') || spec.starts_with('.') {
        return None;
    }
    let (id, path) = spec.split_once(':')?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then_some((id, path))
}

fn bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet || len < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

pub async fn cp(a: CpArgs) -> soulbox::Result<i32> {
    let client = a.conn.client()?;
    match (remote(&a.src), remote(&a.dst)) {
        (None, Some((id, path))) => {
            let s = Sandbox::get(&client, id).await?;
            let file = tokio::fs::File::open(&a.src).await.map_err(|e| Error::Invalid(format!("{}: {e}", a.src)))?;
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let pb = bar(len, a.quiet);
            let pb2 = pb.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |c| {
                if let Ok(c) = c {
                    pb2.inc(c.len() as u64);
                }
            });
            let path = if path.ends_with('/') {
                let name = std::path::Path::new(&a.src)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{path}{name}")
            } else {
                path.to_owned()
            };
            let info = s.files().write_stream(&path, stream).await?;
            pb.finish_and_clear();
            if a.conn.json {
                super::print_json(&serde_json::json!({ "path": info.path, "bytes": len }));
            } else {
                eprintln!("{len} bytes -> {id}:{}", info.path);
            }
        }
        (Some((id, path)), None) => {
            let s = Sandbox::get(&client, id).await?;
            let len = s.files().get_info(path).await?.size.max(0) as u64;
            let pb = bar(len, a.quiet);
            let mut dst = a.dst.clone();
            if std::path::Path::new(&dst).is_dir() {
                let name = path.rsplit('/').next().unwrap_or("file");
                dst = std::path::Path::new(&dst).join(name).to_string_lossy().into_owned();
            }
            let mut out = tokio::fs::File::create(&dst).await.map_err(|e| Error::Invalid(format!("{dst}: {e}")))?;
            let mut stream = std::pin::pin!(s.files().read_stream(path).await?);
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                out.write_all(&chunk).await.map_err(|e| Error::Other(format!("{dst}: {e}")))?;
                total += chunk.len() as u64;
                pb.inc(chunk.len() as u64);
            }
            out.flush().await.map_err(|e| Error::Other(format!("{dst}: {e}")))?;
            pb.finish_and_clear();
            if a.conn.json {
                super::print_json(&serde_json::json!({ "path": dst, "bytes": total }));
            } else {
                eprintln!("{id}:{path} -> {dst} ({total} bytes)");
            }
        }
        _ => return Err(Error::Invalid("exactly one of SRC and DST must be <sandbox-id>:<path>".into())),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::remote;

    #[test]
    fn remote_specs() {
        assert_eq!(remote("abc123:/tmp/x"), Some(("abc123", "/tmp/x")));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/abs/path"), None);
        assert_eq!(remote("file.txt"), None);
    }
}
