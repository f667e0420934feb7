//! `Sandbox::direct`: an agent reached at its address by its node (the template engine's envd client), against a
//! local envd double. Runs without a server.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request};
use axum::routing::post;
use base64::Engine as _;
use soulbox::{CommandOptions, ConnectionConfig, DirectEnvd, Error, Redirects, Sandbox};
use soulbox_protocol::connect::{FLAG_END_STREAM, encode_envelope};

/// An upload as the double saw it: query, `Content-Encoding`, `Content-Length`, body.
type Upload = (std::collections::HashMap<String, String>, Option<String>, Option<String>, Vec<u8>);

#[derive(Default, Debug)]
struct Seen {
    secret: Vec<String>,
    authorization: Vec<String>,
    process: Option<serde_json::Value>,
    upload: Option<Upload>,
}

async fn fake_envd(seen: Arc<Mutex<Seen>>) -> String {
    let s1 = seen.clone();
    let s2 = seen.clone();
    let app = axum::Router::new()
        .route(
            "/process.Process/Start",
            post(move |req: Request| {
                let seen = s1.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                    {
                        let mut g = seen.lock().unwrap();
                        g.secret.extend(parts.headers.get(soulbox_protocol::envd_secret::HEADER).map(|v| v.to_str().unwrap().to_string()));
                        g.authorization.extend(parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_string()));
                        g.process = Some(serde_json::from_slice(&body[5..]).unwrap());
                    }
                    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                    let mut out = Vec::new();
                    for msg in [
                        serde_json::json!({"event": {"start": {"pid": 7}}}),
                        serde_json::json!({"event": {"data": {"stdout": b64("one\ntw")}}}),
                        serde_json::json!({"event": {"data": {"stderr": b64("err\n")}}}),
                        serde_json::json!({"event": {"data": {"stdout": b64("o\n")}}}),
                        serde_json::json!({"event": {"end": {"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"}}}),
                    ] {
                        out.extend_from_slice(&encode_envelope(0, msg.to_string().as_bytes()));
                    }
                    out.extend_from_slice(&encode_envelope(FLAG_END_STREAM, b"{}"));
                    ([(http::header::CONTENT_TYPE, "application/connect+json")], out)
                }
            }),
        )
        .route(
            "/files",
            post(move |Query(q): Query<std::collections::HashMap<String, String>>, req: Request| {
                let seen = s2.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let header = |n: &str| parts.headers.get(n).map(|v| v.to_str().unwrap().to_string());
                    let (encoding, length) = (header("content-encoding"), header("content-length"));
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
                    let path = q.get("path").cloned().unwrap_or_default();
                    let mut g = seen.lock().unwrap();
                    g.secret.extend(header(soulbox_protocol::envd_secret::HEADER));
                    g.upload = Some((q, encoding, length, body));
                    axum::Json(serde_json::json!([{"name": "x", "type": "file", "path": path}]))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

fn direct(addr: String) -> Sandbox {
    let client =
        soulbox::Client::new(ConnectionConfig::default().with_request_timeout(None).with_redirects(Redirects::Off))
            .unwrap();
    let envd =
        DirectEnvd { sandbox_id: "sbx1".into(), addr, node_secret: Some("node-secret".into()), ..Default::default() };
    Sandbox::direct(client, envd).unwrap()
}

#[tokio::test]
async fn a_direct_command_carries_the_node_secret_runs_with_the_given_shell_and_streams_output() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sbx = direct(fake_envd(seen.clone()).await);
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let (c1, c2) = (chunks.clone(), chunks.clone());
    let opts = CommandOptions::default()
        .shell("/bin/sh")
        .user("root")
        .cwd("/work")
        .discard_output(true)
        .on_stdout(move |s| c1.lock().unwrap().push(format!("out:{s}")))
        .on_stderr(move |s| c2.lock().unwrap().push(format!("err:{s}")));
    let err = sbx.commands().run_with("echo hi", opts).await.unwrap_err();
    let Error::CommandExit { exit_code, stdout, .. } = err else { panic!("{err:?}") };
    assert_eq!(exit_code, 3);
    assert_eq!(stdout, "", "discard_output keeps nothing");
    assert_eq!(*chunks.lock().unwrap(), vec!["out:one\ntw", "err:err\n", "out:o\n"]);
    let g = seen.lock().unwrap();
    assert_eq!(g.secret, vec!["node-secret"]);
    let basic = base64::engine::general_purpose::STANDARD.encode("root:");
    assert_eq!(g.authorization, vec![format!("Basic {basic}")]);
    let process = &g.process.as_ref().unwrap()["process"];
    assert_eq!(process["cmd"], "/bin/sh");
    assert_eq!(process["args"], serde_json::json!(["-c", "echo hi"]));
    assert_eq!(process["cwd"], "/work");
}

#[tokio::test]
async fn upload_file_streams_as_the_user_and_marks_gzip() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sbx = direct(fake_envd(seen.clone()).await);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.tar");
    std::fs::write(&plain, b"plain bytes").unwrap();
    let info = sbx.files().upload_file("/tmp/a.tar", &plain, Some("root")).await.unwrap();
    assert_eq!(info.path, "/tmp/a.tar");
    {
        let g = seen.lock().unwrap();
        let (q, encoding, length, body) = g.upload.as_ref().unwrap();
        assert_eq!((q["path"].as_str(), q["username"].as_str()), ("/tmp/a.tar", "root"));
        assert_eq!((encoding.as_deref(), length.as_deref()), (None, Some("11")));
        assert_eq!(body, b"plain bytes");
        assert_eq!(g.secret, vec!["node-secret"]);
    }
    let gz = dir.path().join("ctx.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, b"inside").unwrap();
    let gz_bytes = enc.finish().unwrap();
    std::fs::write(&gz, &gz_bytes).unwrap();
    sbx.files().upload_file("/tmp/b.tar", &gz, Some("user")).await.unwrap();
    let g = seen.lock().unwrap();
    let (q, encoding, _, body) = g.upload.as_ref().unwrap();
    assert_eq!(q["username"], "user");
    assert_eq!(encoding.as_deref(), Some("gzip"), "a gzip file is sent as Content-Encoding: gzip");
    assert_eq!(body, &gz_bytes, "the body is the file as it is (the agent decompresses)");
}
