//! The sandbox filesystem: `/files` for contents, the `filesystem.Filesystem` RPCs for the rest, signed URLs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Deserialize;
use soulbox_protocol::filesystem::{self, EventType, FileType};
use soulbox_protocol::signature::{self, Claims, Operation};
use soulbox_protocol::version::Feature;

use crate::envd::Envd;
use crate::error::{Error, Result};

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Unknown,
}

/// A file or directory.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryInfo {
    pub name: String,
    pub path: String,
    pub entry_type: EntryType,
    pub size: i64,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// RFC 3339.
    pub modified_time: Option<String>,
    pub symlink_target: Option<String>,
    /// `user.e2b.*` extended attributes (needs agent ≥ 0.6.2).
    pub metadata: HashMap<String, String>,
}

impl From<filesystem::EntryInfo> for EntryInfo {
    fn from(e: filesystem::EntryInfo) -> Self {
        let entry_type = match FileType::try_from(e.r#type) {
            Ok(FileType::File) => EntryType::File,
            Ok(FileType::Directory) => EntryType::Dir,
            Ok(FileType::Symlink) => EntryType::Symlink,
            _ => EntryType::Unknown,
        };
        EntryInfo {
            name: e.name,
            path: e.path,
            entry_type,
            size: e.size,
            mode: e.mode,
            permissions: e.permissions,
            owner: e.owner,
            group: e.group,
            modified_time: e
                .modified_time
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            symlink_target: e.symlink_target,
            metadata: e.metadata.into_iter().collect(),
        }
    }
}

/// What a write produced.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WriteInfo {
    pub name: String,
    #[serde(rename = "type", default)]
    pub entry_type: Option<String>,
    pub path: String,
}

/// A filesystem change seen by [`Filesystem::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemEvent {
    /// Path relative to the watched directory.
    pub name: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
    Unknown,
}

/// Options of a signed URL.
#[derive(Debug, Clone, Default)]
pub struct SignedUrlOptions {
    /// The user the transfer acts as (default: the sandbox's default user).
    pub user: Option<String>,
    /// How long the URL stays valid (default: forever).
    pub expires_in: Option<Duration>,
}

/// A sandbox's filesystem.
#[derive(Clone)]
pub struct Filesystem {
    pub(crate) envd: Arc<Envd>,
}

impl Filesystem {
    fn files_request(&self, method: Method, path: &str, user: Option<&str>) -> reqwest::RequestBuilder {
        let mut q = vec![("path", path.to_owned())];
        if let Some(u) = user {
            q.push(("username", u.to_owned()));
        }
        // /files takes the user from the query, not from the Basic header.
        self.envd.request(method, "/files", None).query(&q)
    }

    /// Streams a file's contents.
    pub async fn read_stream(&self, path: &str) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static + use<>> {
        let resp = self.files_request(Method::GET, path, None).send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(self.envd.http_error(resp).await);
        }
        let id = self.envd.sandbox_id.clone();
        Ok(resp.bytes_stream().map_err(move |e| {
            if e.is_timeout() { Error::Timeout(e.to_string()) } else { Error::SandboxKilled(id.clone()) }
        }))
    }

    /// Reads a whole file.
    pub async fn read(&self, path: &str) -> Result<Bytes> {
        let mut rb = self.files_request(Method::GET, path, None);
        if let Some(t) = self.envd.client.config().request_timeout {
            rb = rb.timeout(t);
        }
        let resp = rb.send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(self.envd.http_error(resp).await);
        }
        resp.bytes().await.map_err(|e| self.envd.body_error(e))
    }

    /// Reads a file as UTF-8 (lossy).
    pub async fn read_text(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path).await?).into_owned())
    }

    /// Writes (creates or replaces) a file, making parent directories.
    pub async fn write(&self, path: &str, data: impl Into<Bytes>) -> Result<WriteInfo> {
        self.write_with_metadata(path, data, &HashMap::new()).await
    }

    /// Writes a file and sets its metadata (`user.e2b.*` xattrs; needs agent ≥ 0.6.2).
    pub async fn write_with_metadata(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        metadata: &HashMap<String, String>,
    ) -> Result<WriteInfo> {
        let data: Bytes = data.into();
        if !metadata.is_empty() {
            self.envd.require(Feature::FileMetadata)?;
        }
        let mut rb = if self.envd.version >= Feature::OctetStreamUpload.min_version() {
            self.files_request(Method::POST, path, None).header("Content-Type", "application/octet-stream").body(data)
        } else {
            let part = reqwest::multipart::Part::stream(data).file_name(path.to_owned());
            self.files_request(Method::POST, path, None).multipart(reqwest::multipart::Form::new().part("file", part))
        };
        for (k, v) in metadata {
            rb = rb.header(format!("X-Metadata-{k}"), v);
        }
        if let Some(t) = self.envd.client.config().request_timeout {
            rb = rb.timeout(t);
        }
        self.finish_write(rb).await?.into_iter().next().ok_or_else(|| Error::Other("upload answered no entry".into()))
    }

    /// Writes a file from a stream of chunks (never buffered whole; needs agent ≥ 0.5.7).
    pub async fn write_stream<S>(&self, path: &str, stream: S) -> Result<WriteInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        self.envd.require(Feature::OctetStreamUpload)?;
        let rb = self
            .files_request(Method::POST, path, None)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        self.finish_write(rb).await?.into_iter().next().ok_or_else(|| Error::Other("upload answered no entry".into()))
    }

    /// Streams the local file `local` to `path`, as `user` (`None`: the sandbox's default user), never holding it
    /// whole in memory; a gzip file (by its magic bytes) is sent with `Content-Encoding: gzip` and the agent
    /// stores it decompressed. No request timeout: an upload may be gigabytes.
    pub async fn upload_file(&self, path: &str, local: &std::path::Path, user: Option<&str>) -> Result<WriteInfo> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        self.envd.require(Feature::OctetStreamUpload)?;
        let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", local.display()));
        let mut file = tokio::fs::File::open(local).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).await.is_ok() && magic == [0x1f, 0x8b];
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
        let mut rb = self
            .files_request(Method::POST, path, user)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len)
            .body(body);
        if gzip {
            rb = rb.header("Content-Encoding", "gzip");
        }
        self.finish_write(rb).await?.into_iter().next().ok_or_else(|| Error::Other("upload answered no entry".into()))
    }

    /// Writes several files in one multipart request (each part named by its full path).
    pub async fn write_many(&self, files: Vec<(String, Bytes)>) -> Result<Vec<WriteInfo>> {
        let mut form = reqwest::multipart::Form::new();
        for (path, data) in files {
            form = form.part("file", reqwest::multipart::Part::stream(data).file_name(path));
        }
        let mut rb = self.envd.request(Method::POST, "/files", None).multipart(form);
        if let Some(t) = self.envd.client.config().request_timeout {
            rb = rb.timeout(t);
        }
        self.finish_write(rb).await
    }

    async fn finish_write(&self, rb: reqwest::RequestBuilder) -> Result<Vec<WriteInfo>> {
        let resp = rb.send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(self.envd.http_error(resp).await);
        }
        resp.json().await.map_err(|e| Error::Other(format!("upload: bad response: {e}")))
    }

    /// Lists a directory (`depth` 1 = direct children).
    pub async fn list(&self, path: &str, depth: u32) -> Result<Vec<EntryInfo>> {
        let req = filesystem::ListDirRequest { path: path.into(), depth: depth.max(1) };
        let resp: filesystem::ListDirResponse =
            self.envd.unary("filesystem.Filesystem/ListDir", &req, None, None).await?;
        Ok(resp.entries.into_iter().map(Into::into).collect())
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.get_info(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Details of a path.
    pub async fn get_info(&self, path: &str) -> Result<EntryInfo> {
        let req = filesystem::StatRequest { path: path.into() };
        let resp: filesystem::StatResponse = self.envd.unary("filesystem.Filesystem/Stat", &req, None, None).await?;
        resp.entry.map(Into::into).ok_or_else(|| Error::Other("stat answered no entry".into()))
    }

    /// A file's metadata (needs agent ≥ 0.6.2).
    pub async fn metadata(&self, path: &str) -> Result<HashMap<String, String>> {
        self.envd.require(Feature::FileMetadata)?;
        Ok(self.get_info(path).await?.metadata)
    }

    /// Creates a directory and its parents; `Ok(false)` when it already existed.
    pub async fn make_dir(&self, path: &str) -> Result<bool> {
        let req = filesystem::MakeDirRequest { path: path.into() };
        match self.envd.unary::<_, filesystem::MakeDirResponse>("filesystem.Filesystem/MakeDir", &req, None, None).await
        {
            Ok(_) => Ok(true),
            Err(Error::Invalid(m)) if m.starts_with("already_exists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a file or a directory tree.
    pub async fn remove(&self, path: &str) -> Result<()> {
        let req = filesystem::RemoveRequest { path: path.into() };
        let _: filesystem::RemoveResponse = self.envd.unary("filesystem.Filesystem/Remove", &req, None, None).await?;
        Ok(())
    }

    /// Moves `from` to `to`.
    pub async fn rename(&self, from: &str, to: &str) -> Result<EntryInfo> {
        let req = filesystem::MoveRequest { source: from.into(), destination: to.into() };
        let resp: filesystem::MoveResponse = self.envd.unary("filesystem.Filesystem/Move", &req, None, None).await?;
        resp.entry.map(Into::into).ok_or_else(|| Error::Other("move answered no entry".into()))
    }

    /// Watches a directory; the stream yields events until dropped. `recursive` needs agent ≥ 0.1.4.
    pub async fn watch(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<impl Stream<Item = Result<FilesystemEvent>> + Send + 'static + use<>> {
        if recursive {
            self.envd.require(Feature::RecursiveWatch)?;
        }
        let req = filesystem::WatchDirRequest {
            path: path.into(),
            recursive,
            include_entry: false,
            allow_network_mounts: false,
        };
        let mut stream = self
            .envd
            .stream::<_, filesystem::WatchDirResponse>("filesystem.Filesystem/WatchDir", &req, None, None)
            .await?;
        // The agent confirms the watch with a start event; wait for it so no change after this call is missed.
        match stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(Error::Other("watch ended before it started".into())),
        }
        Ok(stream.filter_map(|item| async move {
            match item {
                Ok(filesystem::WatchDirResponse {
                    event: Some(filesystem::watch_dir_response::Event::Filesystem(ev)),
                }) => {
                    let kind = match EventType::try_from(ev.r#type) {
                        Ok(EventType::Create) => EventKind::Create,
                        Ok(EventType::Write) => EventKind::Write,
                        Ok(EventType::Remove) => EventKind::Remove,
                        Ok(EventType::Rename) => EventKind::Rename,
                        Ok(EventType::Chmod) => EventKind::Chmod,
                        _ => EventKind::Unknown,
                    };
                    Some(Ok(FilesystemEvent { name: ev.name, kind }))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        }))
    }

    /// A URL anyone can download `path` from, without the access token (seed feature 2).
    pub fn download_url(&self, path: &str, opts: &SignedUrlOptions) -> Result<String> {
        self.signed_url(path, Operation::Read, opts)
    }

    /// A URL anyone can upload `path` to (POST multipart or octet-stream).
    pub fn upload_url(&self, path: &str, opts: &SignedUrlOptions) -> Result<String> {
        self.signed_url(path, Operation::Write, opts)
    }

    fn signed_url(&self, path: &str, operation: Operation, opts: &SignedUrlOptions) -> Result<String> {
        let token = self.envd.access_token.as_deref().ok_or_else(|| {
            Error::Invalid(
                "this sandbox has no access token (not created with secure): its /files needs no signature".into(),
            )
        })?;
        let expiration = opts.expires_in.map(|d| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
            now + d.as_secs() as i64
        });
        let user = opts.user.as_deref().unwrap_or("");
        let sig = signature::sign(
            self.envd.client.config().signature_scheme,
            &Claims { path, operation, user, expiration },
            token,
        );
        let mut url =
            reqwest::Url::parse(&format!("{}/files", self.envd.url)).map_err(|e| Error::Invalid(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("path", path);
            if let Some(u) = &opts.user {
                q.append_pair("username", u);
            }
            q.append_pair("signature", &sig);
            if let Some(e) = expiration {
                q.append_pair("signature_expiration", &e.to_string());
            }
            // Not signed and not read by envd: it lets SoulBox's proxy route the URL without searching for the
            // token the signature was made with (E2B's SDKs cannot be routed that cheaply).
            q.append_pair(soulbox_protocol::signature::SANDBOX_ID_PARAM, &self.envd.sandbox_id);
        }
        Ok(url.to_string())
    }
}
