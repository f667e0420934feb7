//! `POST /files`: multipart (`file` parts named by their full target path) or raw octet-stream uploads,
//! optionally gzip-encoded, streamed to disk.
//!
//! Files are truncated and written in place (not written aside and renamed) so that inotify watchers see
//! CREATE/WRITE on the target name, as with E2B's envd. Bad requests are refused before anything is written
//! where possible (metadata, content type, encoding); a request that fails later (a duplicate part, a
//! directory as target, a broken body, a full disk) removes the files and directories it created. A file it
//! overwrote cannot be restored: it keeps what was written.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_compression::tokio::bufread::GzipDecoder;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http::{HeaderMap, StatusCode, Uri, header};
use serde::Serialize;
use soulbox_protocol::signature::Operation;
use tokio::sync::mpsc;
use tokio_util::io::{ReaderStream, StreamReader};

use super::access::{authorize, io_failure, resolve};
use super::as_user::run_as;
use super::metadata::{self, Metadata};
use crate::errors::json_error;
use crate::state::AppState;
use crate::users::User;
use soulbox_protocol::signature::SignedQuery as FilesQuery;

/// More parts than this in one request is refused (each part costs a file and a response entry).
pub const MAX_PARTS: usize = 1000;
/// Chunks in flight between the network and the disk writer: bounds an upload's memory whatever its size.
const WRITE_QUEUE: usize = 16;
const DECODE_CHUNK: usize = 256 * 1024;

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// One uploaded file, as the SDKs expect it back.
#[derive(Debug, Serialize)]
pub struct UploadedEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

pub async fn upload(State(state): State<AppState>, headers: HeaderMap, uri: Uri, body: Body) -> Response {
    match handle(&state, &headers, &uri, body).await {
        Ok(entries) => {
            // The writes are complete: let the watchers queue their events before the client hears back.
            state.watchers.sync();
            Json(entries).into_response()
        }
        Err(response) => response,
    }
}

enum BodyKind {
    Raw,
    Multipart(String),
}

async fn handle(state: &AppState, headers: &HeaderMap, uri: &Uri, body: Body) -> Result<Vec<UploadedEntry>, Response> {
    let bad = |msg: &str| json_error(StatusCode::BAD_REQUEST, msg);
    let query = FilesQuery::parse(uri.query()).map_err(|e| bad(&e.to_string()))?;
    let access = authorize(state, headers, &query, Operation::Write)?;
    let metadata = metadata::from_headers(headers).map_err(|m| bad(&m))?;
    let kind = body_kind(headers).map_err(|m| bad(&m))?;
    let stream = decoded_body(headers, body).map_err(|m| bad(&m))?;
    let workdir = state.config().default_workdir;

    let mut session = UploadSession::new(access.user.clone(), metadata);
    match kind {
        BodyKind::Raw => {
            if query.path.is_none() {
                return Err(bad("the path query parameter is required for application/octet-stream uploads"));
            }
            session.write_file(access.path.clone(), stream).await?;
        }
        BodyKind::Multipart(boundary) => {
            let mut multipart = multer::Multipart::new(stream, boundary);
            let mut parts = 0usize;
            while let Some(field) =
                multipart.next_field().await.map_err(|e| bad(&format!("invalid multipart body: {e}")))?
            {
                parts += 1;
                if parts > MAX_PARTS {
                    return Err(bad(&format!("too many multipart parts (at most {MAX_PARTS})")));
                }
                // Other fields are skipped (multer drains them when the next one is requested), like E2B does.
                if field.name() != Some("file") {
                    continue;
                }
                let target = if query.path.is_some() {
                    access.path.clone()
                } else {
                    match field.file_name() {
                        Some(name) if !name.is_empty() => resolve(name, &access.user, workdir.as_deref())?,
                        _ => {
                            return Err(bad(
                                "multipart part 'file' has no filename and no path query parameter is given",
                            ));
                        }
                    }
                };
                let chunks = futures::stream::unfold(field, |mut field| async move {
                    match field.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), field)),
                        Ok(None) => None,
                        Err(e) => Some((Err(io::Error::new(io::ErrorKind::InvalidData, e)), field)),
                    }
                });
                session.write_file(target, chunks).await?;
            }
            if session.entries.is_empty() {
                return Err(bad("the multipart body has no part named 'file'"));
            }
        }
    }
    Ok(session.commit())
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, String> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Content-Type: use multipart/form-data or application/octet-stream")?;
    let essence = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/octet-stream" => Ok(BodyKind::Raw),
        "multipart/form-data" => multer::parse_boundary(raw)
            .map(BodyKind::Multipart)
            .map_err(|e| format!("invalid multipart Content-Type: {e}")),
        _ => Err(format!("unsupported Content-Type '{raw}': use multipart/form-data or application/octet-stream")),
    }
}

/// The request body as a stream of bytes, gunzipped on the fly when `Content-Encoding: gzip`.
fn decoded_body(headers: &HeaderMap, body: Body) -> Result<ByteStream, String> {
    let raw = super::drain::DrainOnDrop::new(body.into_data_stream()).map_err(io::Error::other);
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(Box::pin(raw)),
        Some("gzip") | Some("x-gzip") => {
            let mut decoder = GzipDecoder::new(StreamReader::new(raw));
            decoder.multiple_members(true);
            Ok(Box::pin(ReaderStream::with_capacity(decoder, DECODE_CHUNK)))
        }
        Some(other) => Err(format!("unsupported Content-Encoding '{other}' (supported: gzip, identity)")),
    }
}

/// What one request has written so far. Dropped without [`UploadSession::commit`] (an error, or the client
/// went away and the handler was cancelled), it removes the files and directories the request created.
struct UploadSession {
    user: User,
    metadata: Metadata,
    targets: HashSet<PathBuf>,
    entries: Vec<UploadedEntry>,
    created_files: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
    committed: bool,
}

impl UploadSession {
    fn new(user: User, metadata: Metadata) -> Self {
        UploadSession {
            user,
            metadata,
            targets: HashSet::new(),
            entries: Vec::new(),
            created_files: Vec::new(),
            created_dirs: Vec::new(),
            committed: false,
        }
    }

    fn commit(mut self) -> Vec<UploadedEntry> {
        self.committed = true;
        std::mem::take(&mut self.entries)
    }

    /// Streams `chunks` into `target`: parent directories are created and the file opened with the user's
    /// identity; a blocking writer puts the bytes on disk while the next ones arrive.
    async fn write_file(
        &mut self,
        target: PathBuf,
        chunks: impl Stream<Item = io::Result<Bytes>>,
    ) -> Result<(), Response> {
        if !self.targets.insert(target.clone()) {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                &format!("path '{}' is the target of more than one part", target.display()),
            ));
        }
        let path = target.clone();
        let (created_dirs, mut opened) = run_as(&self.user, move || Ok(open_for_write(&path)))
            .await
            .map_err(|e| io_failure(&e, &target, &self.user))?;
        self.created_dirs.extend(created_dirs);
        if matches!(&opened, Err(e) if e.kind() == io::ErrorKind::PermissionDenied) {
            opened = self.with_parents_made_for_user(&target).await;
        }
        let (file, created) = opened.map_err(|e| self.open_failure(&e, &target))?;
        if created {
            self.created_files.push(target.clone());
        }

        // `None` marks the end of the body; a channel closing without it means the upload was abandoned.
        let (tx, rx) = mpsc::channel::<Option<Bytes>>(WRITE_QUEUE);
        let finish = Finish { uid: self.user.uid, gid: self.user.gid, metadata: self.metadata.clone() };
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, rx, finish));
        let mut chunks = std::pin::pin!(chunks);
        let mut body_error = None;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                // A failed send means the writer stopped on an error; its result says which.
                Ok(chunk) => {
                    if tx.send(Some(chunk)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        if body_error.is_none() {
            // Fails only when the writer already stopped on an error, which its result reports.
            let _ = tx.send(None).await;
        }
        drop(tx);
        if let Some(e) = body_error {
            return Err(json_error(StatusCode::BAD_REQUEST, &format!("error reading the request body: {e}")));
        }
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io_failure(&e, &target, &self.user)),
            Err(e) => return Err(json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("file writer failed: {e}"))),
        }
        self.entries.push(UploadedEntry {
            name: target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            kind: "file",
            path: target.to_string_lossy().into_owned(),
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.clone()),
        });
        Ok(())
    }

    /// The user could not make `target`'s missing parents: envd makes them for the user (E2B's behaviour,
    /// `parents.rs`) and the file is opened again, as the user. Existing parents are not the user's to gain: when
    /// none was missing the first answer stands.
    async fn with_parents_made_for_user(&mut self, target: &Path) -> io::Result<(File, bool)> {
        let denied = || Err(io::Error::from(io::ErrorKind::PermissionDenied));
        let Some(parent) = target.parent().map(Path::to_path_buf) else { return denied() };
        if !rustix::process::geteuid().is_root() || parent.is_dir() {
            return denied();
        }
        let (uid, gid) = (self.user.uid, self.user.gid);
        let made = tokio::task::spawn_blocking(move || super::parents::make_for_user(&parent, uid, gid))
            .await
            .map_err(io::Error::other)??;
        self.created_dirs.extend(made);
        let path = target.to_path_buf();
        let (_, opened) = run_as(&self.user, move || Ok(open_for_write(&path))).await?;
        opened
    }

    fn open_failure(&self, e: &io::Error, target: &Path) -> Response {
        if e.kind() == io::ErrorKind::NotADirectory {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("path '{}' has a parent that is not a directory", target.display()),
            );
        }
        io_failure(e, target, &self.user)
    }
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Rare path; unlink/rmdir are quick metadata calls, done inline rather than spawned so that the
        // clean-up also happens when the runtime is cancelling this request.
        for file in &self.created_files {
            if let Err(e) = std::fs::remove_file(file) {
                tracing::warn!(path = %file.display(), error = %e, "could not remove partial upload");
            }
        }
        for dir in self.created_dirs.iter().rev() {
            // Fails harmlessly when something else has been put there meanwhile.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Creates the missing parents of `path` (mode 0755, whatever the umask) and opens `path` for writing:
/// a new file is created 0644, an existing one truncated (keeping its mode). Returns the directories it
/// created even when the open fails, so that they can be removed again.
fn open_for_write(path: &Path) -> (Vec<PathBuf>, io::Result<(File, bool)>) {
    let mut created_dirs = Vec::new();
    let result = (|| {
        if let Some(parent) = path.parent() {
            create_parents(parent, &mut created_dirs)?;
        }
        open_target(path)
    })();
    (created_dirs, result)
}

fn create_parents(dir: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(d) = current {
        match std::fs::metadata(d) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d.to_path_buf()),
            Err(e) => return Err(e),
        }
        current = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(&d) {
            Ok(()) => {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
                created.push(d);
            }
            // Created concurrently by someone else: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open_target(path: &Path) -> io::Result<(File, bool)> {
    let flags = rustix::fs::OFlags::NOCTTY.bits() as i32;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(flags).open(path) {
        Ok(file) => {
            // The umask may have taken bits away; new uploads are 0644 like in E2B's sandboxes.
            // Only when needed: every extra chmod is an extra CHMOD event for watchers (E2B's sequence for a new
            // file is CREATE, CHMOD (chown), WRITE).
            if file.metadata()?.permissions().mode() & 0o7777 != 0o644 {
                file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            }
            Ok((file, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = std::fs::OpenOptions::new().write(true).truncate(true).custom_flags(flags).open(path)?;
            Ok((file, false))
        }
        Err(e) => Err(e),
    }
}

/// What happens to a file once its bytes are on disk.
struct Finish {
    uid: u32,
    gid: u32,
    metadata: Metadata,
}

/// The blocking half of an upload: writes chunks as they arrive; at the end marker the file gets its owner
/// and metadata. Without the marker (a broken body, a cancelled request) it stops and leaves the clean-up to
/// the session.
fn write_chunks(mut file: File, mut rx: mpsc::Receiver<Option<Bytes>>, finish: Finish) -> io::Result<()> {
    // Ownership before content, as E2B does: watchers then see CHMOD (from the chown) before WRITE.
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            &file,
            Some(rustix::process::Uid::from_raw(finish.uid)),
            Some(rustix::process::Gid::from_raw(finish.gid)),
        )?;
    }
    loop {
        match rx.blocking_recv() {
            Some(Some(chunk)) => file.write_all(&chunk)?,
            Some(None) => break,
            None => return Err(io::Error::new(io::ErrorKind::Interrupted, "upload abandoned")),
        }
    }
    metadata::replace_on(&file, &finish.metadata)?;
    Ok(())
}
