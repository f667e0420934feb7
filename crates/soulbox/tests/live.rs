//! SDK tests against a real `soulbox server`. Skipped (with a message) unless `SOULBOX_TEST_API_URL` and
//! `SOULBOX_TEST_API_KEY` are set; `crates/soulbox/tests/run.sh` starts a server and sets them.
//! Optional: `SOULBOX_TEST_SANDBOX_URL` (default: the API URL), `SOULBOX_TEST_TEMPLATE` (default `base`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use soulbox::{
    Client, CommandOptions, ConnectionConfig, EntryType, Error, EventKind, ListQuery, PtyOptions, PtySize, Redirects,
    Sandbox, SandboxState, SignatureScheme, SignedUrlOptions, TimeoutBehavior,
};

struct Env {
    api_url: String,
    sandbox_url: String,
    key: String,
    template: String,
}

fn env() -> Option<Env> {
    let api_url = std::env::var("SOULBOX_TEST_API_URL").ok()?;
    let key = std::env::var("SOULBOX_TEST_API_KEY").ok()?;
    let sandbox_url = std::env::var("SOULBOX_TEST_SANDBOX_URL").unwrap_or_else(|_| api_url.clone());
    let template = std::env::var("SOULBOX_TEST_TEMPLATE").unwrap_or_else(|_| "base".into());
    Some(Env { api_url, sandbox_url, key, template })
}

macro_rules! live {
    () => {
        match env() {
            Some(e) => e,
            None => {
                eprintln!(
                    "skipped: set SOULBOX_TEST_API_URL and SOULBOX_TEST_API_KEY (crates/soulbox/tests/run.sh does)"
                );
                return;
            }
        }
    };
}

fn config(e: &Env) -> ConnectionConfig {
    ConnectionConfig::default().with_api_url(&e.api_url).with_sandbox_url(&e.sandbox_url).with_api_key(&e.key)
}

fn client(e: &Env) -> Client {
    Client::new(config(e)).unwrap()
}

/// Kills the sandbox when the test ends, also on panic, straight through the real API.
struct Guard(ConnectionConfig, String);
impl Drop for Guard {
    fn drop(&mut self) {
        // A fresh client: the sandbox's pooled connections belong to the test's runtime, which is blocked here.
        let (config, id) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                let _ = Client::new(config).unwrap().kill(&id).await;
            })
        })
        .join();
    }
}

async fn sandbox(e: &Env) -> (Sandbox, Guard) {
    let s = Sandbox::builder(&e.template)
        .client(client(e))
        .timeout(Duration::from_secs(300))
        .secure(true)
        .create()
        .await
        .unwrap();
    let g = Guard(config(e), s.id().to_owned());
    (s, g)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn lifecycle_list_info_timeout_refresh_metrics_pause_resume_kill() {
    let e = live!();
    let c = client(&e);
    let tag = format!("t{}", now());
    let mk = || {
        Sandbox::builder(&e.template)
            .client(c.clone())
            .timeout(Duration::from_secs(120))
            .metadata("suite", &tag)
            .env("GREETING", "hi")
            .set_timeout_behavior(TimeoutBehavior::Pause { grace: Duration::from_secs(5) })
            .auto_resume(false)
            .allow_internet_access(false)
            .create()
    };
    let (a, b) = (mk().await.unwrap(), mk().await.unwrap());
    let (_ga, _gb) = (Guard(config(&e), a.id().into()), Guard(config(&e), b.id().into()));
    assert!(a.envd_version() >= &semver::Version::new(0, 1, 0));

    let info = a.get_info().await.unwrap();
    assert_eq!(info.sandbox_id, a.id());
    assert_eq!(info.metadata.as_ref().unwrap()["suite"], tag);
    assert_eq!(info.lifecycle.as_ref().unwrap().on_timeout, soulbox::protocol::api::OnTimeout::Pause);
    assert_eq!(a.commands().run("echo $GREETING").await.unwrap().stdout, "hi\n");

    // Listing: a metadata filter, pages of one, as a stream.
    let q = ListQuery::default().metadata("suite", &tag).limit(1);
    let page = c.list_page(&q, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.next_token.is_some());
    let all: Vec<_> = c.list(q).collect::<Vec<_>>().await.into_iter().map(Result::unwrap).collect();
    let mut ids: Vec<_> = all.iter().map(|s| s.sandbox_id.clone()).collect();
    ids.sort();
    let mut want = vec![a.id().to_owned(), b.id().to_owned()];
    want.sort();
    assert_eq!(ids, want);

    // Timeout and refresh (seed 7): refresh within the max lifetime works, past it is refused.
    a.set_timeout(Duration::from_secs(60)).await.unwrap();
    let end1 = a.get_info().await.unwrap().end_at;
    a.refresh(Duration::from_secs(120)).await.unwrap(); // lives at least 120 s from now (never shortens)
    let end2 = a.get_info().await.unwrap().end_at;
    assert!(end2 > end1, "{end1} -> {end2}");
    let err = a.refresh(Duration::from_secs(400 * 24 * 3600)).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");

    // Metrics by time range (seed 8): the sampler runs every 5 s.
    let mut samples = Vec::new();
    for _ in 0..30 {
        samples = a.get_metrics(Some(now() - 60), Some(now() + 1)).await.unwrap();
        if !samples.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!samples.is_empty(), "no metrics sample within 15 s");
    assert!(samples[0].mem_total > 0);
    assert!(a.get_metrics(Some(now() + 3600), None).await.unwrap().is_empty());

    // Pause / resume.
    assert!(a.is_running().await.unwrap());
    assert!(a.pause().await.unwrap());
    assert!(!a.pause().await.unwrap(), "second pause reports already paused");
    assert!(!a.is_running().await.unwrap());
    assert_eq!(c.get_info(a.id()).await.unwrap().state, SandboxState::Paused);
    assert!(matches!(Sandbox::get(&c, a.id()).await.unwrap_err(), Error::Invalid(_)));
    let a2 = a.resume(Some(Duration::from_secs(60))).await.unwrap();
    assert!(a2.is_running().await.unwrap());
    let a3 = Sandbox::get(&c, a.id()).await.unwrap();
    assert_eq!(a3.envd_version(), a.envd_version());
    assert_eq!(a3.access_token(), a2.access_token());
    assert_eq!(a2.commands().run("echo back").await.unwrap().stdout, "back\n");

    // Kill: true, then false; info is NotFound; a command on it is SandboxKilled.
    assert!(b.kill().await.unwrap());
    assert!(!b.kill().await.unwrap());
    assert!(matches!(c.get_info(b.id()).await.unwrap_err(), Error::NotFound(_)));
    let err = b.commands().run("true").await.unwrap_err();
    assert!(matches!(err, Error::SandboxKilled(_)), "{err:?}");
}

#[tokio::test]
async fn commands_run_spawn_handle_stdin_kill_connect_list() {
    let e = live!();
    let (s, _g) = sandbox(&e).await;
    let cmds = s.commands();

    // run with callbacks
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    let errs = Arc::new(AtomicUsize::new(0));
    let errs2 = errs.clone();
    let opts = CommandOptions::default()
        .env("X", "42")
        .cwd("/tmp")
        .on_stdout(move |c| seen2.lock().unwrap().push_str(c))
        .on_stderr(move |_| {
            errs2.fetch_add(1, Ordering::SeqCst);
        });
    let r = cmds.run_with("echo $X; pwd; echo oops >&2", opts).await.unwrap();
    assert_eq!(r.stdout, "42\n/tmp\n");
    assert_eq!(r.stderr, "oops\n");
    assert_eq!(*seen.lock().unwrap(), "42\n/tmp\n");
    assert!(errs.load(Ordering::SeqCst) >= 1);

    // non-zero exit carries the output
    match cmds.run("echo out; echo err >&2; exit 3").await.unwrap_err() {
        Error::CommandExit { exit_code, stdout, stderr, .. } => {
            assert_eq!((exit_code, stdout.as_str(), stderr.as_str()), (3, "out\n", "err\n"));
        }
        other => panic!("{other:?}"),
    }

    // a handle read mid-run (seed 5)
    let h = cmds.spawn("echo first; sleep 2; echo second").await.unwrap();
    let t0 = std::time::Instant::now();
    while !h.stdout().contains("first") {
        assert!(t0.elapsed() < Duration::from_secs(5), "no partial output");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.stdout(), "first\n");
    assert!(!h.is_finished());
    assert_eq!(h.exit_code(), None);
    let r = h.wait().await.unwrap();
    assert_eq!(r.stdout, "first\nsecond\n");
    assert!(h.is_finished());
    assert_eq!(h.exit_code(), Some(0));

    // the command timeout maps to Connect-Timeout-Ms and is reported as Timeout
    let t0 = std::time::Instant::now();
    let err = cmds.run_with("sleep 30", CommandOptions::default().timeout(Duration::from_secs(1))).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // stdin
    let h = cmds.spawn_with("cat", CommandOptions::default().stdin(true)).await.unwrap();
    h.send_stdin("hello ").await.unwrap();
    cmds.send_stdin(h.pid(), "stdin\n").await.unwrap();
    h.close_stdin().await.unwrap();
    assert_eq!(h.wait().await.unwrap().stdout, "hello stdin\n");

    // list, connect by pid and tag, kill
    let h =
        cmds.spawn_with("sleep 60", CommandOptions::default().tag("sleeper").timeout(Duration::ZERO)).await.unwrap();
    let procs = cmds.list().await.unwrap();
    let p = procs.iter().find(|p| p.pid == h.pid()).expect("listed");
    assert_eq!(p.tag.as_deref(), Some("sleeper"));
    let by_pid = cmds.connect(h.pid()).await.unwrap();
    let by_tag = cmds.connect_tag("sleeper").await.unwrap();
    assert_eq!(by_tag.pid(), h.pid());
    assert!(cmds.kill(h.pid()).await.unwrap());
    for w in [h.wait().await, by_pid.wait().await, by_tag.wait().await] {
        match w.unwrap_err() {
            Error::CommandExit { exit_code, .. } => assert_ne!(exit_code, 0),
            other => panic!("{other:?}"),
        }
    }
    assert!(!cmds.kill(h.pid()).await.unwrap());
    assert!(matches!(cmds.connect(999_999).await.unwrap_err(), Error::NotFound(_)));
}

#[tokio::test]
async fn pty_create_input_resize_kill() {
    let e = live!();
    let (s, _g) = sandbox(&e).await;
    let out = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let pty = s.pty();
    let h = pty
        .create(
            PtySize { cols: 80, rows: 24 },
            PtyOptions::default().on_data(move |b| o2.lock().unwrap().extend_from_slice(b)),
        )
        .await
        .unwrap();
    pty.resize(h.pid(), PtySize { cols: 120, rows: 40 }).await.unwrap();
    pty.send_input(h.pid(), "stty size; echo pty-$((6*7))\n").await.unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        if text.contains("pty-42") && text.contains("40 120") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "pty output: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.stdout().contains("pty-42"));
    assert!(pty.kill(h.pid()).await.unwrap());
    assert!(h.wait().await.is_err());
}

#[tokio::test]
async fn files_read_write_list_info_dirs_rename_remove_metadata_watch() {
    let e = live!();
    let (s, _g) = sandbox(&e).await;
    let fs = s.files();
    let dir = "/tmp/sdk-files";
    assert!(fs.make_dir(dir).await.unwrap());
    assert!(!fs.make_dir(dir).await.unwrap());

    // recursive watch (started before the writes)
    let mut watch = Box::pin(fs.watch(dir, true).await.unwrap());

    let w = fs.write(&format!("{dir}/a.txt"), "hello").await.unwrap();
    assert_eq!(w.path, format!("{dir}/a.txt"));
    assert_eq!(fs.read_text(&format!("{dir}/a.txt")).await.unwrap(), "hello");
    assert_eq!(&fs.read(&format!("{dir}/a.txt")).await.unwrap()[..], b"hello");

    // stream both ways, 3 MiB
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    fs.write_stream(&format!("{dir}/sub/big.bin"), futures::stream::iter(chunks)).await.unwrap();
    let mut got = Vec::new();
    let mut rs = Box::pin(fs.read_stream(&format!("{dir}/sub/big.bin")).await.unwrap());
    while let Some(c) = rs.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got.len(), big.len());
    assert!(got == big);

    let many = fs
        .write_many(vec![
            (format!("{dir}/m1"), bytes::Bytes::from_static(b"1")),
            (format!("{dir}/m2"), bytes::Bytes::from_static(b"2")),
        ])
        .await
        .unwrap();
    assert_eq!(many.len(), 2);

    let names: Vec<String> = fs.list(dir, 1).await.unwrap().into_iter().map(|e| e.name).collect();
    for n in ["a.txt", "sub", "m1", "m2"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let deep = fs.list(dir, 2).await.unwrap();
    assert!(deep.iter().any(|e| e.name == "big.bin"));

    let info = fs.get_info(&format!("{dir}/sub/big.bin")).await.unwrap();
    assert_eq!(info.entry_type, EntryType::File);
    assert_eq!(info.size, big.len() as i64);
    assert!(fs.exists(dir).await.unwrap());
    assert!(!fs.exists("/nope/nope").await.unwrap());
    assert!(matches!(fs.read("/nope/nope").await.unwrap_err(), Error::NotFound(_)));

    let moved = fs.rename(&format!("{dir}/a.txt"), &format!("{dir}/b.txt")).await.unwrap();
    assert_eq!(moved.name, "b.txt");
    fs.remove(&format!("{dir}/m1")).await.unwrap();
    assert!(!fs.exists(&format!("{dir}/m1")).await.unwrap());

    let meta = [("owner".to_string(), "sdk".to_string())].into_iter().collect();
    fs.write_with_metadata("/tmp/meta.txt", "x", &meta).await.unwrap();
    assert_eq!(fs.metadata("/tmp/meta.txt").await.unwrap().get("owner").map(String::as_str), Some("sdk"));

    // events from the nested directory arrive
    let t0 = std::time::Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|(n, _): &(String, EventKind)| n == "sub/big.bin") {
        let ev = tokio::time::timeout(Duration::from_secs(5).saturating_sub(t0.elapsed()), watch.next()).await;
        let ev = ev.expect("watch event").expect("stream open").unwrap();
        seen.push((ev.name, ev.kind));
    }
    assert!(seen.iter().any(|(n, k)| n == "a.txt" && *k == EventKind::Create), "{seen:?}");
}

#[tokio::test]
async fn signed_urls_both_schemes_and_expiry() {
    let e = live!();
    let (s, _g) = sandbox(&e).await;
    assert!(s.access_token().is_some(), "secure sandbox has a token");
    s.files().write("/tmp/signed.txt", "signed-content").await.unwrap();
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    // the raw /files URL without a token is refused
    let raw = format!("{}/files?path=/tmp/signed.txt", s.envd_url());
    assert!(!plain.get(&raw).header("E2b-Sandbox-Id", s.id()).send().await.unwrap().status().is_success());

    for scheme in [SignatureScheme::E2b, SignatureScheme::SoulBox] {
        let c = Client::new(config(&e).with_signature_scheme(scheme)).unwrap();
        let s2 = Sandbox::connect(&c, s.id(), None).await.unwrap();
        let url = s2.files().download_url("/tmp/signed.txt", &SignedUrlOptions::default()).unwrap();
        assert!(url.contains(if scheme == SignatureScheme::E2b { "signature=v1_" } else { "signature=sb1_" }), "{url}");
        assert!(url.contains(&format!("sandbox_id={}", s.id())), "the proxy routes by id, not by search: {url}");
        let body = plain.get(&url).send().await.unwrap();
        assert_eq!(body.status(), 200, "{url}");
        assert_eq!(body.text().await.unwrap(), "signed-content");

        let up = s2
            .files()
            .upload_url(
                "/tmp/up.txt",
                &SignedUrlOptions { user: Some("user".into()), expires_in: Some(Duration::from_secs(60)) },
            )
            .unwrap();
        let r =
            plain.post(&up).header("Content-Type", "application/octet-stream").body("uploaded").send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        assert_eq!(s2.files().read_text("/tmp/up.txt").await.unwrap(), "uploaded");
        // a read signature does not allow writes
        let r = plain.post(&url).header("Content-Type", "application/octet-stream").body("x").send().await.unwrap();
        assert!(!r.status().is_success());
    }

    // expiry: valid now, refused after it passes
    let url = s
        .files()
        .download_url("/tmp/signed.txt", &SignedUrlOptions { user: None, expires_in: Some(Duration::from_secs(1)) })
        .unwrap();
    assert_eq!(plain.get(&url).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = plain.get(&url).send().await.unwrap();
    assert!(r.status().is_client_error() || r.status().as_u16() == 502, "{}", r.status());
    let text = r.text().await.unwrap();
    assert!(text.contains("expired") || text.contains("not found"), "{text}");
}

/// A local server answering every request with 307 to the real server (seed 6).
async fn redirector(target: String) -> String {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let target = target.clone();
        async move {
            let pq = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            (http::StatusCode::TEMPORARY_REDIRECT, [(http::header::LOCATION, format!("{target}{pq}"))])
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn redirects_are_followed_with_the_auth_headers_or_refused_when_off() {
    let e = live!();
    let api = redirector(e.api_url.clone()).await;
    let sbx_url = redirector(e.sandbox_url.clone()).await;
    let cfg = ConnectionConfig::default().with_api_url(&api).with_sandbox_url(&sbx_url).with_api_key(&e.key);
    let c = Client::new(cfg.clone()).unwrap();
    // API calls (POST with a body, GET) and agent calls (unary, stream, with X-Access-Token) through a 307.
    let s = Sandbox::builder(&e.template)
        .client(c.clone())
        .secure(true)
        .timeout(Duration::from_secs(120))
        .create()
        .await
        .unwrap();
    let _g = Guard(config(&e), s.id().into());
    assert_eq!(c.get_info(s.id()).await.unwrap().sandbox_id, s.id());
    assert_eq!(s.commands().run("echo via-redirect").await.unwrap().stdout, "via-redirect\n");
    assert!(s.files().exists("/tmp").await.unwrap());

    let off = Client::new(cfg.with_redirects(Redirects::Off)).unwrap();
    let err = off.get_info(s.id()).await.unwrap_err();
    assert!(err.to_string().contains("redirect"), "{err}");
}

#[tokio::test]
async fn auth_errors_not_found_nodes_health() {
    let e = live!();
    let bad = Client::new(config(&e).with_api_key("e2b_0000000000000000000000000000000000000000")).unwrap();
    assert!(matches!(bad.get_info("x").await.unwrap_err(), Error::Auth(_)));
    let c = client(&e);
    assert!(matches!(c.get_info("doesnotexist").await.unwrap_err(), Error::NotFound(_)));
    assert!(!c.kill("doesnotexist").await.unwrap());
    let nodes = c.list_nodes().await.unwrap();
    assert!(!nodes.is_empty());
    assert!(nodes[0].memory_mb > 0, "{nodes:?}");
    assert!(!nodes[0].status.is_empty());
    assert_eq!(c.health().await.unwrap()["status"], "healthy");
}

#[tokio::test]
async fn timeout_behavior_pause_after_grace() {
    let e = live!();
    let c = client(&e);
    let s = Sandbox::builder(&e.template)
        .client(c.clone())
        .timeout(Duration::from_secs(1))
        .set_timeout_behavior(TimeoutBehavior::Pause { grace: Duration::from_secs(2) })
        .create()
        .await
        .unwrap();
    let _g = Guard(config(&e), s.id().into());
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(c.get_info(s.id()).await.unwrap().state, SandboxState::Running, "still in its grace period");
    loop {
        if c.get_info(s.id()).await.unwrap().state == SandboxState::Paused {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not paused after timeout + grace");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(t0.elapsed() >= Duration::from_secs(3), "paused before timeout + grace: {:?}", t0.elapsed());
    // A paused sandbox can be connected to again.
    let s2 = Sandbox::connect(&c, s.id(), Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(s2.commands().run("echo resumed").await.unwrap().stdout, "resumed\n");
}
