//! The filesystem service end to end: the real router on a loopback port, spoken to over plain HTTP/1.1
//! with the Connect JSON codec exactly as the SDKs send it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use soulbox_protocol::connect::{Envelope, EnvelopeDecoder, encode_envelope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::state::{AppState, SandboxConfig};
use crate::users::Accounts;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    state: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(config: SandboxConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(config);
    let app = crate::server::router(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server { addr, state, task }
}

fn basic(user: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:")))
}

fn request_head(path: &str, content_type: &str, len: usize, headers: &[(&str, String)]) -> String {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnect-Protocol-Version: 1\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Splits a raw HTTP/1.1 response into status, lower-cased head and (de-chunked) body.
fn parse_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        let mut chunks = ChunkDecoder::default();
        chunks.push(body);
        chunks.data
    } else {
        body.to_vec()
    };
    (status, head, body)
}

/// A unary Connect call with the JSON codec: HTTP status and the JSON body.
async fn unary(server: &Server, method: &str, body: Value, headers: &[(&str, String)]) -> (u16, Value) {
    let payload = body.to_string();
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let path = format!("/filesystem.Filesystem/{method}");
    tcp.write_all(request_head(&path, "application/json", payload.len(), headers).as_bytes()).await.unwrap();
    tcp.write_all(payload.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut raw)).await.unwrap().unwrap();
    let (status, head, body) = parse_response(&raw);
    assert!(head.contains("content-type: application/json"), "{head}");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn ok(server: &Server, method: &str, body: Value) -> Value {
    let (status, resp) = unary(server, method, body.clone(), &[]).await;
    assert_eq!(status, 200, "{method} {body} -> {resp}");
    resp
}

async fn err(server: &Server, method: &str, body: Value) -> (u16, String) {
    let (status, resp) = unary(server, method, body, &[]).await;
    (status, resp["code"].as_str().unwrap_or_default().to_owned())
}

#[derive(Default)]
struct ChunkDecoder {
    raw: Vec<u8>,
    data: Vec<u8>,
    done: bool,
}

impl ChunkDecoder {
    /// Adds raw bytes; moves every complete chunk into `data`.
    fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                self.done = true;
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            self.data.extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }
}

/// An open server stream, read envelope by envelope as the server flushes them.
struct Stream {
    tcp: TcpStream,
    head: Option<String>,
    pending: Vec<u8>,
    chunks: ChunkDecoder,
    envelopes: EnvelopeDecoder,
}

impl Stream {
    async fn open(server: &Server, method: &str, body: Value, headers: &[(&str, String)]) -> Stream {
        let envelope = encode_envelope(0, body.to_string().as_bytes());
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let path = format!("/filesystem.Filesystem/{method}");
        tcp.write_all(request_head(&path, "application/connect+json", envelope.len(), headers).as_bytes())
            .await
            .unwrap();
        tcp.write_all(&envelope).await.unwrap();
        Stream {
            tcp,
            head: None,
            pending: Vec::new(),
            chunks: ChunkDecoder::default(),
            envelopes: EnvelopeDecoder::new(1 << 20),
        }
    }

    async fn next(&mut self) -> Option<Envelope> {
        tokio::time::timeout(TIMEOUT, self.next_inner()).await.expect("stream message in time")
    }

    async fn next_inner(&mut self) -> Option<Envelope> {
        loop {
            if let Some(envelope) = self.envelopes.next_envelope().unwrap() {
                return Some(envelope);
            }
            if self.chunks.done {
                return None;
            }
            let mut buf = [0u8; 8192];
            let n = self.tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                return None;
            }
            if self.head.is_none() {
                self.pending.extend_from_slice(&buf[..n]);
                let Some(split) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&self.pending[..split]).to_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(head.contains("content-type: application/connect+json\r\n"), "{head}");
                let rest = self.pending.split_off(split + 4);
                self.head = Some(head);
                self.chunks.push(&rest);
            } else {
                self.chunks.push(&buf[..n]);
            }
            let data = std::mem::take(&mut self.chunks.data);
            self.envelopes.push(&data);
        }
    }

    /// The next message's JSON (panics on end-stream).
    async fn message(&mut self) -> Value {
        let envelope = self.next().await.expect("a message");
        assert!(
            !envelope.is_end_stream(),
            "unexpected end of stream: {:?}",
            String::from_utf8_lossy(&envelope.payload)
        );
        serde_json::from_slice(&envelope.payload).unwrap()
    }

    /// Filesystem events until `want` (name, type) has been seen; keepalives are skipped.
    async fn events_until(&mut self, want: (&str, &str)) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let msg = self.message().await;
            if let Some(event) = msg.get("filesystem") {
                let done = event["name"] == want.0 && event["type"] == want.1;
                seen.push(event.clone());
                if done {
                    return seen;
                }
            }
        }
    }
}

fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    // Compare against canonical paths (the temp dir itself could sit behind a symlink).
    let root = std::fs::canonicalize(dir.path()).unwrap();
    (dir, root)
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn uid_name(uid: u32) -> String {
    Accounts::load().user_name(uid)
}

fn mode(bits: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(bits)
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn events_named<'a>(events: &'a [Value], name: &str, kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["name"] == name && e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_entry_info_exactly() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    let file = root.join("a.txt");
    std::fs::write(&file, b"abcd").unwrap();
    std::fs::set_permissions(&file, mode(0o644)).unwrap();

    let entry = ok(&server, "Stat", json!({"path": p(&file)})).await["entry"].clone();
    assert_eq!(entry["name"], "a.txt");
    assert_eq!(entry["type"], "FILE_TYPE_FILE");
    assert_eq!(entry["path"], p(&file));
    assert_eq!(entry["size"], "4");
    assert_eq!(entry["mode"], 420);
    assert_eq!(entry["permissions"], "-rw-r--r--");
    assert_eq!(entry["owner"], uid_name(me()));
    // RFC 3339 in UTC with `Z`, as Go's protojson writes it.
    let modified = entry["modifiedTime"].as_str().unwrap();
    assert!(modified.ends_with('Z') && !modified.contains("+00:00"), "{entry}");
    assert!(entry.get("symlinkTarget").is_none() && entry.get("isSymlink").is_none());

    let dir_entry = ok(&server, "Stat", json!({"path": p(&root)})).await["entry"].clone();
    assert_eq!(dir_entry["type"], "FILE_TYPE_DIRECTORY");
    assert!(dir_entry["permissions"].as_str().unwrap().starts_with('d'));

    // Symlinks: the target's type and mode, the link's own permission string.
    std::fs::create_dir(root.join("realdir")).unwrap();
    std::os::unix::fs::symlink(&file, root.join("flink")).unwrap();
    std::os::unix::fs::symlink("realdir", root.join("dlink")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    let flink = ok(&server, "Stat", json!({"path": p(&root.join("flink"))})).await["entry"].clone();
    assert_eq!(
        (&flink["type"], &flink["isSymlink"], &flink["permissions"]),
        (&json!("FILE_TYPE_FILE"), &json!(true), &json!("Lrwxrwxrwx"))
    );
    assert_eq!(flink["symlinkTarget"], p(&file));
    assert_eq!(flink["mode"], 420);
    let dlink = ok(&server, "Stat", json!({"path": p(&root.join("dlink"))})).await["entry"].clone();
    assert_eq!(dlink["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(dlink["symlinkTarget"], p(&root.join("realdir")));
    let dangling = ok(&server, "Stat", json!({"path": p(&root.join("dangling"))})).await["entry"].clone();
    assert!(dangling.get("type").is_none(), "dangling link has no type: {dangling}");
    assert_eq!(dangling["isSymlink"], true);

    assert_eq!(err(&server, "Stat", json!({"path": p(&root.join("missing"))})).await, (404, "not_found".to_owned()));
    // An unknown Basic user is refused before anything is touched.
    let (status, body) =
        unary(&server, "Stat", json!({"path": p(&file)}), &[("Authorization", basic("no-such-user-here"))]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_xattrs_are_surfaced() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    let file = root.join("m.txt");
    std::fs::write(&file, b"").unwrap();
    use std::os::unix::ffi::OsStrExt;
    let raw = file.as_os_str().as_bytes();
    if rustix::fs::lsetxattr(raw, "user.e2b.project", b"soulbox", rustix::fs::XattrFlags::empty()).is_err() {
        eprintln!("skipping: the temp filesystem does not support user xattrs");
        return;
    }
    let entry = ok(&server, "Stat", json!({"path": p(&file)})).await["entry"].clone();
    assert_eq!(entry["metadata"], json!({"project": "soulbox"}));
    let listed = ok(&server, "ListDir", json!({"path": p(&root)})).await;
    assert_eq!(listed["entries"][0]["metadata"], json!({"project": "soulbox"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_dir_creates_parents_and_reports_conflicts() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    let deep = root.join("a/b/c");
    let entry = ok(&server, "MakeDir", json!({"path": p(&deep)})).await["entry"].clone();
    assert_eq!(
        (&entry["name"], &entry["type"], &entry["path"]),
        (&json!("c"), &json!("FILE_TYPE_DIRECTORY"), &json!(p(&deep)))
    );
    assert!(deep.is_dir());
    assert_eq!(err(&server, "MakeDir", json!({"path": p(&deep)})).await, (409, "already_exists".to_owned()));
    std::fs::write(root.join("file"), b"").unwrap();
    assert_eq!(
        err(&server, "MakeDir", json!({"path": p(&root.join("file"))})).await,
        (400, "invalid_argument".to_owned())
    );
    assert_eq!(
        err(&server, "MakeDir", json!({"path": p(&root.join("file/sub"))})).await,
        (400, "invalid_argument".to_owned())
    );

    // Directories made for a user belong to that user (when the sandbox user exists on this machine).
    match Accounts::load().user("user") {
        Some(user) if me() == 0 => {
            let owned = root.join("owned/inner");
            let (status, body) =
                unary(&server, "MakeDir", json!({"path": p(&owned)}), &[("Authorization", basic("user"))]).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["entry"]["owner"], user.name);
            assert_eq!(super::ops::owner_ids(&root.join("owned")), (user.uid, user.gid));
            assert_eq!(super::ops::owner_ids(&owned), (user.uid, user.gid));
        }
        _ => eprintln!("skipping ownership check: no user 'user' here or not running as root"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_creates_destination_parents() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    std::fs::write(root.join("src.txt"), b"hello").unwrap();
    let dest = root.join("x/y/dest.txt");
    let entry =
        ok(&server, "Move", json!({"source": p(&root.join("src.txt")), "destination": p(&dest)})).await["entry"]
            .clone();
    assert_eq!((&entry["name"], &entry["path"], &entry["size"]), (&json!("dest.txt"), &json!(p(&dest)), &json!("5")));
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    assert!(!root.join("src.txt").exists());
    assert_eq!(
        err(&server, "Move", json!({"source": p(&root.join("src.txt")), "destination": p(&dest)})).await,
        (404, "not_found".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_dir_and_move_never_follow_a_planted_link_as_root() {
    let Some(nobody) = Accounts::load().user("nobody").filter(|_| me() == 0) else {
        return eprintln!("skipping: needs root and a 'nobody' account");
    };
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    std::fs::set_permissions(&root, mode(0o755)).unwrap();
    let as_nobody = [("Authorization", basic("nobody"))];
    // The user's own directory, with a link into a directory of root's and one into a directory it may write.
    let (home, victim, open) = (root.join("home"), root.join("victim"), root.join("open"));
    for d in [&home, &victim, &open] {
        std::fs::create_dir(d).unwrap();
    }
    std::os::unix::fs::chown(&home, Some(nobody.uid), Some(nobody.gid)).unwrap();
    std::fs::set_permissions(&open, mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&victim, home.join("link")).unwrap();
    std::os::unix::fs::symlink(&open, home.join("ok")).unwrap();
    std::fs::write(home.join("mine.txt"), b"x").unwrap();
    std::os::unix::fs::chown(home.join("mine.txt"), Some(nobody.uid), Some(nobody.gid)).unwrap();

    let (status, body) = unary(&server, "MakeDir", json!({"path": p(&home.join("link/new/deeper"))}), &as_nobody).await;
    assert_eq!((status, &body["code"]), (403, &json!("permission_denied")), "{body}");
    let moved = json!({"source": p(&home.join("mine.txt")), "destination": p(&home.join("link/new/mine.txt"))});
    let (status, body) = unary(&server, "Move", moved, &as_nobody).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "root made a directory through the user's link");
    // A link the user may follow still works, and so does a directory below one of root's (E2B's behaviour).
    for made in [home.join("ok/new"), root.join("made/inner")] {
        let (status, body) = unary(&server, "MakeDir", json!({"path": p(&made)}), &as_nobody).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(super::ops::owner_ids(&made), (nobody.uid, nobody.gid), "{}", made.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dir_depth_symlinks_and_errors() {
    let (_dir, root) = temp_root();
    let server = start(SandboxConfig { default_workdir: Some(p(&root)), ..Default::default() }).await;
    std::fs::create_dir_all(root.join("sub/inner")).unwrap();
    std::fs::write(root.join("a.txt"), b"1").unwrap();
    std::fs::write(root.join("sub/b.txt"), b"22").unwrap();
    std::fs::write(root.join("sub/inner/c.txt"), b"333").unwrap();
    let paths = |resp: Value| -> Vec<String> {
        resp["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()).collect()
    };
    let r = |rel: &str| p(&root.join(rel));

    // depth 0 means 1; an empty path is the default workdir.
    let one = paths(ok(&server, "ListDir", json!({"path": p(&root), "depth": 0})).await);
    assert_eq!(one, [r("a.txt"), r("sub")]);
    assert_eq!(paths(ok(&server, "ListDir", json!({})).await), one);
    let two = paths(ok(&server, "ListDir", json!({"path": p(&root), "depth": 2})).await);
    assert_eq!(two, [r("a.txt"), r("sub"), r("sub/b.txt"), r("sub/inner")]);

    // A symlinked directory is followed, but entries keep the requested path.
    std::os::unix::fs::symlink(root.join("sub"), root.join("link")).unwrap();
    let via_link = ok(&server, "ListDir", json!({"path": r("link")})).await;
    assert_eq!(paths(via_link.clone()), [r("link/b.txt"), r("link/inner")]);
    assert_eq!(via_link["entries"][0]["name"], "b.txt");
    assert_eq!(via_link["entries"][0]["size"], "2");
    // Symlinks inside the tree are listed, not followed.
    let top = ok(&server, "ListDir", json!({"path": p(&root), "depth": 3})).await;
    let link_entry = top["entries"].as_array().unwrap().iter().find(|e| e["name"] == "link").unwrap().clone();
    assert_eq!((&link_entry["isSymlink"], &link_entry["type"]), (&json!(true), &json!("FILE_TYPE_DIRECTORY")));
    assert!(!paths(top).iter().any(|p| p.contains("link/")));

    assert_eq!(err(&server, "ListDir", json!({"path": r("missing")})).await, (404, "not_found".to_owned()));
    assert_eq!(err(&server, "ListDir", json!({"path": r("a.txt")})).await, (400, "invalid_argument".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_is_recursive_and_tolerates_missing() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::write(root.join("d/e/f"), b"").unwrap();
    std::fs::write(root.join("g"), b"").unwrap();
    ok(&server, "Remove", json!({"path": p(&root.join("d"))})).await;
    ok(&server, "Remove", json!({"path": p(&root.join("g"))})).await;
    assert!(!root.join("d").exists() && !root.join("g").exists());
    ok(&server, "Remove", json!({"path": p(&root.join("d"))})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_dir_streams_events_with_entries() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    let mut stream = Stream::open(
        &server,
        "WatchDir",
        json!({"path": p(&root), "includeEntry": true}),
        &[("Keepalive-Ping-Interval", "1".to_owned())],
    )
    .await;
    assert_eq!(stream.message().await, json!({"start": {}}));
    assert_eq!(server.state.watchers.len(), 1);

    std::fs::write(root.join("a.txt"), b"hello").unwrap();
    let events = stream.events_until(("a.txt", "EVENT_TYPE_WRITE")).await;
    let create = events_named(&events, "a.txt", "EVENT_TYPE_CREATE");
    assert_eq!(create.len(), 1, "{events:?}");
    assert_eq!(create[0]["entry"]["path"], p(&root.join("a.txt")));
    assert_eq!(events.last().unwrap()["entry"]["size"], "5");

    std::fs::set_permissions(root.join("a.txt"), mode(0o600)).unwrap();
    let events = stream.events_until(("a.txt", "EVENT_TYPE_CHMOD")).await;
    assert_eq!(events.last().unwrap()["entry"]["mode"], 0o600);

    std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
    let events = stream.events_until(("b.txt", "EVENT_TYPE_CREATE")).await;
    let rename = events_named(&events, "a.txt", "EVENT_TYPE_RENAME");
    assert_eq!(rename.len(), 1, "{events:?}");
    assert!(rename[0].get("entry").is_none(), "RENAME never carries an entry");

    std::fs::remove_file(root.join("b.txt")).unwrap();
    let events = stream.events_until(("b.txt", "EVENT_TYPE_REMOVE")).await;
    assert!(events.last().unwrap().get("entry").is_none());

    // Idle: keepalives at the requested interval.
    assert_eq!(stream.message().await, json!({"keepalive": {}}));

    // The client going away removes the watcher (noticed on the next write to the dead connection).
    drop(stream);
    let gone = tokio::time::timeout(TIMEOUT, async {
        let mut i = 0;
        while server.state.watchers.len() != 0 {
            std::fs::write(root.join(format!("poke{i}")), b"x").unwrap();
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "watcher not removed after the client disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_picks_up_new_subdirectories() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    std::fs::create_dir(root.join("existing")).unwrap();
    let mut stream = Stream::open(&server, "WatchDir", json!({"path": p(&root), "recursive": true}), &[]).await;
    assert_eq!(stream.message().await, json!({"start": {}}));

    std::fs::write(root.join("existing/x"), b"1").unwrap();
    stream.events_until(("existing/x", "EVENT_TYPE_WRITE")).await;

    // Through MakeDir (which syncs watchers), then straight into the new directory.
    ok(&server, "MakeDir", json!({"path": p(&root.join("made/deeper"))})).await;
    std::fs::write(root.join("made/deeper/y"), b"2").unwrap();
    let events = stream.events_until(("made/deeper/y", "EVENT_TYPE_WRITE")).await;
    assert_eq!(events_named(&events, "made", "EVENT_TYPE_CREATE").len(), 1, "{events:?}");
    assert_eq!(events_named(&events, "made/deeper", "EVENT_TYPE_CREATE").len(), 1, "{events:?}");
    assert!(events.iter().all(|e| e.get("entry").is_none()), "no entries unless asked");

    // A directory created behind our back, with content already inside by the time we see it.
    std::fs::create_dir_all(root.join("raw/inner")).unwrap();
    std::fs::write(root.join("raw/inner/z"), b"3").unwrap();
    stream.events_until(("raw/inner/z", "EVENT_TYPE_CREATE")).await;
    std::fs::write(root.join("raw/inner/late"), b"4").unwrap();
    stream.events_until(("raw/inner/late", "EVENT_TYPE_WRITE")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_errors() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    std::fs::write(root.join("file"), b"").unwrap();
    for (path, code) in [(root.join("missing"), "not_found"), (root.join("file"), "invalid_argument")] {
        let mut stream = Stream::open(&server, "WatchDir", json!({"path": p(&path)}), &[]).await;
        let end = stream.next().await.unwrap();
        assert!(end.is_end_stream());
        assert_eq!(end.end_stream_error().unwrap().code.as_str(), code);
        let status = if code == "not_found" { 404 } else { 400 };
        assert_eq!(err(&server, "CreateWatcher", json!({"path": p(&path)})).await, (status, code.to_owned()));
    }
    assert_eq!(server.state.watchers.len(), 0);
    assert_eq!(err(&server, "GetWatcherEvents", json!({"watcherId": "wnope"})).await, (404, "not_found".to_owned()));
    assert_eq!(err(&server, "RemoveWatcher", json!({"watcherId": "wnope"})).await, (404, "not_found".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_watcher_sees_a_completed_write_after_sync() {
    let server = start(SandboxConfig::default()).await;
    let (_dir, root) = temp_root();
    let created = ok(&server, "CreateWatcher", json!({"path": p(&root), "includeEntry": true})).await;
    let id = created["watcherId"].as_str().unwrap().to_owned();
    assert!(id.starts_with('w'));

    // What the upload handler does: write, then sync, then answer; the client polls right away.
    std::fs::write(root.join("w.txt"), b"data").unwrap();
    server.state.watchers.sync();
    let events = ok(&server, "GetWatcherEvents", json!({"watcherId": id})).await["events"].clone();
    let events = events.as_array().unwrap();
    let write = events_named(events, "w.txt", "EVENT_TYPE_WRITE");
    assert_eq!(write.len(), 1, "{events:?}");
    assert_eq!(write[0]["entry"]["size"], "4");
    // Drained: the next poll is empty.
    let again = ok(&server, "GetWatcherEvents", json!({"watcherId": id})).await;
    assert!(again.get("events").is_none(), "{again}");

    ok(&server, "RemoveWatcher", json!({"watcherId": id})).await;
    assert_eq!(err(&server, "GetWatcherEvents", json!({"watcherId": id})).await, (404, "not_found".to_owned()));
    assert_eq!(err(&server, "RemoveWatcher", json!({"watcherId": id})).await, (404, "not_found".to_owned()));
    assert_eq!(server.state.watchers.len(), 0);
}
