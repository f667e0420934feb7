//! `/files` and `/metrics` through real HTTP: the full router on 127.0.0.1:0 and a minimal HTTP/1.1 client
//! (so that exactly the bytes on the wire are checked, headers and bodies included).

use std::io::{Read, Write as _};
use std::net::SocketAddr;
use std::path::Path;

use soulbox_protocol::signature::{Claims, Operation, Scheme, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::{AppState, SandboxConfig};

const TOKEN: &str = "secret-token";

async fn start(token: Option<&str>) -> SocketAddr {
    let state = AppState::new(SandboxConfig { access_token: token.map(str::to_owned), ..Default::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, crate::server::router(state)).await;
    });
    addr
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "soulboxBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (filename, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"").unwrap();
    let ok = rustix::fs::setxattr(&probe, "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_ok();
    std::fs::remove_file(&probe).unwrap();
    ok
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn octet_stream_upload_then_download() {
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new/sub/a.txt");
    let t = target.to_str().unwrap();
    let r = request(
        addr,
        "POST",
        &format!("/files?path={}", enc(t)),
        &[("Content-Type", "application/octet-stream")],
        b"hello",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!([{"name": "a.txt", "type": "file", "path": t}]));
    assert_eq!(std::fs::read(&target).unwrap(), b"hello");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(std::fs::metadata(target.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o755);

    let r = request(addr, "GET", &format!("/files?path={}", enc(t)), &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-disposition"), Some("inline; filename=a.txt"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert!(r.header("last-modified").is_some());

    // Overwrite in place with a shorter body: truncated.
    let r = request(
        addr,
        "POST",
        &format!("/files?path={}", enc(t)),
        &[("Content-Type", "application/octet-stream")],
        b"hi",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(std::fs::read(&target).unwrap(), b"hi");

    // Raw uploads need a path.
    let r = request(addr, "POST", "/files", &[("Content-Type", "application/octet-stream")], b"x").await;
    assert_eq!(r.status, 400);
    let r = request(addr, "POST", &format!("/files?path={}", enc(t)), &[("Content-Type", "text/plain")], b"x").await;
    assert_eq!(r.status, 400);
    assert_eq!(std::fs::read(&target).unwrap(), b"hi");
}

#[tokio::test]
async fn multipart_single_and_multi_with_full_paths() {
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("x/a.txt");
    let b = dir.path().join("y/z/b.bin");
    let (ct, body) = multipart(&[(a.to_str().unwrap(), b"AAA"), (b.to_str().unwrap(), &[0u8, 1, 2, 255])]);
    let r = request(addr, "POST", "/files", &[("Content-Type", &ct)], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let entries = r.json();
    assert_eq!(entries[0]["path"], a.to_str().unwrap());
    assert_eq!(entries[1]["name"], "b.bin");
    assert_eq!(std::fs::read(&a).unwrap(), b"AAA");
    assert_eq!(std::fs::read(&b).unwrap(), [0u8, 1, 2, 255]);

    // With `path` given, the single part goes there whatever its filename.
    let c = dir.path().join("c.txt");
    let (ct, body) = multipart(&[("ignored-name.txt", b"CCC")]);
    let r =
        request(addr, "POST", &format!("/files?path={}", enc(c.to_str().unwrap())), &[("Content-Type", &ct)], &body)
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(std::fs::read(&c).unwrap(), b"CCC");
    assert!(!dir.path().join("ignored-name.txt").exists());
}

#[tokio::test]
async fn duplicate_parts_and_directory_targets_leave_nothing_behind() {
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fresh/dup.txt");
    let (ct, body) = multipart(&[(p.to_str().unwrap(), b"one"), (p.to_str().unwrap(), b"two")]);
    let r = request(addr, "POST", "/files", &[("Content-Type", &ct)], &body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!p.exists(), "the first part's new file must be removed");
    assert!(!dir.path().join("fresh").exists(), "directories created by the failed request must be removed");

    let sub = dir.path().join("adir");
    std::fs::create_dir(&sub).unwrap();
    let r = request(
        addr,
        "POST",
        &format!("/files?path={}", enc(sub.to_str().unwrap())),
        &[("Content-Type", "application/octet-stream")],
        b"x",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("is a directory"));

    // A second file part to a directory after a good first one: the first (new) file is rolled back too.
    let good = dir.path().join("good.txt");
    let (ct, body) = multipart(&[(good.to_str().unwrap(), b"ok"), (sub.to_str().unwrap(), b"bad")]);
    let r = request(addr, "POST", "/files", &[("Content-Type", &ct)], &body).await;
    assert_eq!(r.status, 400);
    assert!(!good.exists());
}

#[tokio::test]
async fn gzip_request_bodies_and_gzip_downloads() {
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    let p = dir.path().join("g.bin");
    let target = format!("/files?path={}", enc(p.to_str().unwrap()));
    let r = request(
        addr,
        "POST",
        &target,
        &[("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")],
        &gzip(&data),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(std::fs::read(&p).unwrap(), data);

    // gzip applies to the whole multipart body too.
    let q = dir.path().join("m.txt");
    let (ct, body) = multipart(&[(q.to_str().unwrap(), b"multi gz")]);
    let r = request(addr, "POST", "/files", &[("Content-Type", &ct), ("Content-Encoding", "gzip")], &gzip(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(std::fs::read(&q).unwrap(), b"multi gz");

    let r = request(
        addr,
        "POST",
        &target,
        &[("Content-Type", "application/octet-stream"), ("Content-Encoding", "br")],
        b"x",
    )
    .await;
    assert_eq!(r.status, 400);

    let r = request(addr, "GET", &target, &[("Accept-Encoding", "gzip, deflate")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.body.len() < data.len());
    assert_eq!(gunzip(&r.body), data);

    let r = request(addr, "GET", &target, &[("Accept-Encoding", "identity")], b"").await;
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(r.body, data);

    let r = request(addr, "GET", &target, &[("Accept-Encoding", "br, identity;q=0")], b"").await;
    assert_eq!(r.status, 406);
}

#[tokio::test]
async fn ranges_conditionals_and_errors() {
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.txt");
    std::fs::write(&p, b"0123456789").unwrap();
    let target = format!("/files?path={}", enc(p.to_str().unwrap()));

    let r = request(addr, "GET", &target, &[("Range", "bytes=2-5"), ("Accept-Encoding", "gzip")], b"").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("content-encoding"), None);
    let r = request(addr, "GET", &target, &[("Range", "bytes=-3")], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    let r = request(addr, "GET", &target, &[("Range", "bytes=7-")], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    let r = request(addr, "GET", &target, &[("Range", "bytes=10-20")], b"").await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));

    let last_modified = request(addr, "GET", &target, &[], b"").await.header("last-modified").unwrap().to_owned();
    let r = request(addr, "GET", &target, &[("If-Modified-Since", &last_modified)], b"").await;
    assert_eq!(r.status, 304);

    let r = request(addr, "GET", &format!("/files?path={}", enc(dir.path().to_str().unwrap())), &[], b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], format!("path '{}' is a directory", dir.path().display()));
    let missing = dir.path().join("nope.txt");
    let r = request(addr, "GET", &format!("/files?path={}", enc(missing.to_str().unwrap())), &[], b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        serde_json::json!({"code": 404, "message": format!("path '{}' does not exist", missing.display())})
    );

    let r = request(addr, "GET", &format!("{target}&username=no-such-user-xyz"), &[], b"").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].as_str().unwrap().starts_with("error looking up user"));
}

#[tokio::test]
async fn metadata_headers_become_xattrs_and_are_replaced() {
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    if !user_xattrs_supported(dir.path()) {
        eprintln!("skipping: {} has no user xattrs", dir.path().display());
        return;
    }
    let p = dir.path().join("meta.txt");
    let target = format!("/files?path={}", enc(p.to_str().unwrap()));
    let octet = ("Content-Type", "application/octet-stream");
    let r =
        request(addr, "POST", &target, &[octet, ("X-Metadata-Owner", "Alice"), ("X-Metadata-Tag", "v1")], b"m").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["metadata"], serde_json::json!({"owner": "Alice", "tag": "v1"}));
    assert_eq!(xattr(&p, "user.e2b.owner").as_deref(), Some("Alice"));
    assert_eq!(xattr(&p, "user.e2b.tag").as_deref(), Some("v1"));

    let r = request(addr, "POST", &target, &[octet, ("X-Metadata-Tag", "v2")], b"m").await;
    assert_eq!(r.status, 200);
    assert_eq!(xattr(&p, "user.e2b.owner"), None, "keys not sent again are dropped");
    assert_eq!(xattr(&p, "user.e2b.tag").as_deref(), Some("v2"));

    let r = request(addr, "POST", &target, &[octet], b"m").await;
    assert_eq!(r.status, 200);
    assert!(r.json()[0].get("metadata").is_none());
    assert_eq!(xattr(&p, "user.e2b.tag"), None, "an upload without metadata clears it");

    // Invalid metadata is refused before anything is written.
    let fresh = dir.path().join("never.txt");
    let big = "v".repeat(5000);
    let r = request(
        addr,
        "POST",
        &format!("/files?path={}", enc(fresh.to_str().unwrap())),
        &[octet, ("X-Metadata-Big", &big)],
        b"m",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(!fresh.exists());
}

fn signed(path: &str, op: Operation, user: &str, exp: Option<i64>, scheme: Scheme) -> String {
    let sig = sign(scheme, &Claims { path, operation: op, user, expiration: exp }, TOKEN);
    let mut url = format!("/files?path={}", enc(path));
    if !user.is_empty() {
        url.push_str(&format!("&username={}", enc(user)));
    }
    url.push_str(&format!("&signature={}", enc(&sig)));
    if let Some(e) = exp {
        url.push_str(&format!("&signature_expiration={e}"));
    }
    url
}

#[tokio::test]
async fn token_and_signed_urls() {
    let addr = start(Some(TOKEN)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.txt");
    std::fs::write(&p, b"signed").unwrap();
    let path = p.to_str().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;

    let r = request(addr, "GET", &format!("/files?path={}", enc(path)), &[], b"").await;
    assert_eq!((r.status, r.json()["message"].as_str()), (401, Some("missing signature query parameter")));
    let r = request(addr, "GET", &format!("/files?path={}", enc(path)), &[("X-Access-Token", "wrong")], b"").await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (401, Some("access token present in header but does not match"))
    );
    let r = request(addr, "GET", &format!("/files?path={}", enc(path)), &[("X-Access-Token", TOKEN)], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"signed"[..]));

    for scheme in [Scheme::E2b, Scheme::SoulBox] {
        for exp in [None, Some(now + 60)] {
            let r = request(addr, "GET", &signed(path, Operation::Read, "", exp, scheme), &[], b"").await;
            assert_eq!((r.status, r.body.as_slice()), (200, &b"signed"[..]), "{scheme:?} {exp:?}: {}", r.text());
        }
        let r = request(addr, "GET", &signed(path, Operation::Read, "root", None, scheme), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        // A read signature does not allow a write.
        let r = request(
            addr,
            "POST",
            &signed(path, Operation::Read, "", None, scheme),
            &[("Content-Type", "application/octet-stream")],
            b"x",
        )
        .await;
        assert_eq!((r.status, r.json()["message"].as_str()), (401, Some("invalid signature")));
        let r = request(
            addr,
            "POST",
            &signed(path, Operation::Write, "", None, scheme),
            &[("Content-Type", "application/octet-stream")],
            b"written",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        std::fs::write(&p, b"signed").unwrap();

        let r = request(addr, "GET", &signed(path, Operation::Read, "", Some(now - 10), scheme), &[], b"").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json(), serde_json::json!({"code": 401, "message": "signature is already expired"}));
        assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    }
    // Tampered path, tampered expiry (checked before the expiry itself), unparsable expiry.
    let url = signed(path, Operation::Read, "", None, Scheme::E2b).replace("s%2Etxt", "t%2Etxt");
    assert!(url.contains("t%2Etxt"));
    assert_eq!(request(addr, "GET", &url, &[], b"").await.json()["message"], "invalid signature");
    let url = signed(path, Operation::Read, "", Some(now - 10), Scheme::E2b)
        .replace(&format!("={}", now - 10), &format!("={}", now - 11));
    assert_eq!(request(addr, "GET", &url, &[], b"").await.json()["message"], "invalid signature");
    let url = signed(path, Operation::Read, "", Some(now), Scheme::E2b).replace(&format!("={now}"), "=soon");
    assert_eq!(request(addr, "GET", &url, &[], b"").await.status, 400);
}

/// A path only its owner may read; the download as `nobody` is refused by the kernel, not by envd's guess.
#[tokio::test]
async fn downloads_and_uploads_use_the_users_permissions() {
    if crate::users::Accounts::load().user("nobody").is_none() || !rustix::process::geteuid().is_root() {
        eprintln!("skipping: needs root and a 'nobody' account");
        return;
    }
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r =
        request(addr, "GET", &format!("/files?path={}&username=nobody", enc(secret.to_str().unwrap())), &[], b"").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = request(addr, "GET", &format!("/files?path={}", enc(secret.to_str().unwrap())), &[], b"").await;
    assert_eq!(r.status, 200);

    // Writing into a root-owned 0755 directory as nobody: refused, nothing created.
    let target = dir.path().join("new.txt");
    let upload_as_nobody = |target: std::path::PathBuf| async move {
        request(
            addr,
            "POST",
            &format!("/files?path={}&username=nobody", enc(target.to_str().unwrap())),
            &[("Content-Type", "application/octet-stream")],
            b"x",
        )
        .await
    };
    let r = upload_as_nobody(target.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!target.exists());
    // Missing parents there are made for the user, as E2B's agent does (SDK code writes `/0/a.txt` as `user`).
    let nobody = crate::users::Accounts::load().user("nobody").unwrap();
    let target = dir.path().join("sub/deeper/new.txt");
    let r = upload_as_nobody(target.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    use std::os::unix::fs::MetadataExt;
    for made in [dir.path().join("sub"), dir.path().join("sub/deeper"), target.clone()] {
        let md = std::fs::metadata(&made).unwrap();
        assert_eq!(md.uid(), nobody.uid, "{}", made.display());
    }
    assert_eq!(std::fs::metadata(dir.path().join("sub")).unwrap().mode() & 0o7777, 0o755);
    // ... but never through a symlink the user planted: root does not follow it into a directory of root's.
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let planted = dir.path().join("sub/link");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let r = upload_as_nobody(planted.join("new/file.txt")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!victim.join("new").exists(), "root made a directory through the user's symlink");

    // In a directory nobody may write to, the new file and its parents belong to nobody.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let target = open.join("deep/file.txt");
    let r = request(
        addr,
        "POST",
        &format!("/files?path={}&username=nobody", enc(target.to_str().unwrap())),
        &[("Content-Type", "application/octet-stream")],
        b"x",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), nobody.uid);
    assert_eq!(std::fs::metadata(open.join("deep")).unwrap().uid(), nobody.uid);

    // A large upload refused before its body is read is answered, not reset: the client writes all of it and
    // then reads the 403 (without the drain the kernel resets the connection and the writes fail with EPIPE).
    const SIZE: usize = 16 * 1024 * 1024;
    let refused = dir.path().join("refused.bin");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /files?path={}&username=nobody HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\n\r\n",
        enc(refused.to_str().unwrap())
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; 1024 * 1024];
    for i in 0..SIZE / chunk.len() {
        stream.write_all(&chunk).await.unwrap_or_else(|e| panic!("write {i} of the refused upload failed: {e}"));
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert_eq!(parse_reply(&raw).status, 403, "{}", String::from_utf8_lossy(&raw));
    assert!(!refused.exists());
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()
}

/// 128 MiB up and down through one process: its peak RSS must not grow by anything near the file's size.
/// (A panicking test elsewhere in the same run can spoil this: symbolising its backtrace costs ~100 MiB.)
#[tokio::test]
async fn large_transfers_stream() {
    const SIZE: usize = 128 * 1024 * 1024;
    let addr = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.bin");
    let before = vm_hwm_kib();

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /files?path={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\n\r\n",
        enc(p.to_str().unwrap())
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    for _ in 0..SIZE / chunk.len() {
        stream.write_all(&chunk).await.unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert_eq!(parse_reply(&raw).status, 200, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), SIZE as u64);
    eprintln!("peak RSS after upload: {:?} KiB (before {before:?})", vm_hwm_kib());

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /files?path={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", enc(p.to_str().unwrap()));
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut total = 0usize;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total > SIZE && total < SIZE + 1024, "got {total} bytes");

    eprintln!("peak RSS after download: {:?} KiB", vm_hwm_kib());
    if let (Some(before), Some(after)) = (before, vm_hwm_kib()) {
        let grown_mib = after.saturating_sub(before) / 1024;
        assert!(grown_mib < 48, "peak RSS grew by {grown_mib} MiB moving a 128 MiB file");
    }
}

#[tokio::test]
async fn metrics_over_http() {
    let addr = start(None).await;
    let r = request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    for key in [
        "ts",
        "cpu_count",
        "cpu_used_pct",
        "mem_total",
        "mem_used",
        "mem_cache",
        "mem_total_mib",
        "mem_used_mib",
        "disk_used",
        "disk_total",
        "mem_used_pct",
        "disk_read_bytes",
        "disk_write_bytes",
        "net_rx_bytes",
        "net_tx_bytes",
        "process_count",
    ] {
        assert!(m.get(key).is_some(), "missing {key} in {m}");
    }
    assert!(m["cpu_count"].as_u64().unwrap() >= 1);
    assert!(m["cpu_used_pct"].is_f64() && m["mem_used_pct"].is_f64());
    assert!(m["mem_total"].as_u64().unwrap() >= m["mem_used"].as_u64().unwrap());
    assert_eq!(m["mem_total_mib"].as_u64().unwrap(), m["mem_total"].as_u64().unwrap() / (1024 * 1024));
    assert!(m["disk_total"].as_u64().unwrap() >= m["disk_used"].as_u64().unwrap());
    assert!(m["process_count"].as_u64().unwrap() >= 1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((m["ts"].as_i64().unwrap() - now).abs() < 5);
}
