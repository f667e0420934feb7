//! Latency of the Rust SDK against a raw HTTP/1.1 request on a kept-alive socket (the floor).
//!
//! `cargo run --release -p soulbox --example bench` (or debug) with `E2B_API_URL`, `E2B_SANDBOX_URL`,
//! `E2B_API_KEY` set (what `soulbox server` prints). Optional: `BENCH_N` (default 300), `BENCH_CREATES` (20).
//!
//! Measures `commands.run("true")` round trips (Connect `Process/Start` stream to its end) and
//! create → first command, each through the SDK and raw, and prints p50/p99.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use soulbox::{Client, Sandbox};

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

/// One raw HTTP/1.1 exchange on a kept-alive socket; returns the body (chunked or sized).
fn raw(sock: &mut TcpStream, method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    sock.write_all(&out).unwrap();
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    let header_end = loop {
        let n = sock.read(&mut tmp).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let chunked = head.contains("transfer-encoding: chunked");
    let len: Option<usize> =
        head.lines().find_map(|l| l.strip_prefix("content-length: ").and_then(|v| v.trim().parse().ok()));
    loop {
        let body = &buf[header_end..];
        if chunked && body.ends_with(b"0\r\n\r\n") {
            return body.to_vec();
        }
        if let Some(l) = len
            && body.len() >= l
        {
            return body.to_vec();
        }
        let n = sock.read(&mut tmp).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn start_body() -> Vec<u8> {
    let payload = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","true"]}}"#;
    soulbox::protocol::connect::encode_envelope(0, payload).to_vec()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> soulbox::Result<()> {
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let creates: usize = std::env::var("BENCH_CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let client = Client::from_env()?;
    let cfg = client.config().clone();
    let key = cfg.api_key.clone().expect("E2B_API_KEY");
    let api = reqwest::Url::parse(&cfg.api_url).expect("api url");
    let sbx_url = reqwest::Url::parse(cfg.sandbox_url.as_deref().expect("E2B_SANDBOX_URL")).expect("sandbox url");
    let host = |u: &reqwest::Url| format!("{}:{}", u.host_str().unwrap(), u.port_or_known_default().unwrap());

    let sbx = Sandbox::builder("base").client(client.clone()).timeout(Duration::from_secs(600)).create().await?;
    let token = sbx.access_token().unwrap_or_default().to_owned();
    let cmds = sbx.commands();

    // commands.run("true"): SDK and raw HTTP/1.1 (same request and headers, socket kept alive), interleaved so
    // that load from elsewhere on the machine hits both alike.
    let mut sock = TcpStream::connect(host(&sbx_url)).unwrap();
    sock.set_nodelay(true).unwrap();
    let body = start_body();
    let h = host(&sbx_url);
    let headers = [
        ("Content-Type", "application/connect+json"),
        ("Connect-Protocol-Version", "1"),
        ("Connect-Timeout-Ms", "60000"),
        ("E2b-Sandbox-Id", sbx.id()),
        ("E2b-Sandbox-Port", "49983"),
        ("X-Access-Token", token.as_str()),
    ];
    let mut sdk = Vec::with_capacity(n);
    let mut rawt = Vec::with_capacity(n);
    let mut reqw = Vec::with_capacity(n);
    let plain = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().unwrap();
    let start_url = format!("{}/process.Process/Start", cfg.sandbox_url.as_deref().unwrap().trim_end_matches('/'));
    for i in 0..n + 20 {
        // the same request through plain reqwest (the HTTP client the SDK uses), without the SDK
        let t = Instant::now();
        let mut rb = plain.post(&start_url);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let bytes = rb.body(body.clone()).send().await.unwrap().bytes().await.unwrap();
        let d_reqw = t.elapsed();
        assert!(bytes.windows(5).any(|w| w == [2, 0, 0, 0, 2]), "no end-stream");
        let t = Instant::now();
        cmds.run("true").await?;
        let d_sdk = t.elapsed();
        let t = Instant::now();
        let out = raw(&mut sock, "POST", &h, "/process.Process/Start", &headers, &body);
        let d_raw = t.elapsed();
        assert!(out.windows(5).any(|w| w == [2, 0, 0, 0, 2]), "no end-stream");
        if i >= 20 {
            sdk.push(d_sdk);
            rawt.push(d_raw);
            reqw.push(d_reqw);
        }
    }
    sbx.kill().await?;

    // create -> first command
    let mut sdk_c = Vec::new();
    for _ in 0..creates {
        let t = Instant::now();
        let s = Sandbox::builder("base").client(client.clone()).create().await?;
        s.commands().run("true").await?;
        sdk_c.push(t.elapsed());
        s.kill().await?;
    }
    let mut raw_c = Vec::new();
    let mut api_sock = TcpStream::connect(host(&api)).unwrap();
    api_sock.set_nodelay(true).unwrap();
    for _ in 0..creates {
        let t = Instant::now();
        let created = raw(
            &mut api_sock,
            "POST",
            &host(&api),
            "/v2/sandboxes",
            &[("Content-Type", "application/json"), ("X-API-Key", &key)],
            br#"{"templateID":"base"}"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&created).expect("create json");
        let id = v["sandboxID"].as_str().unwrap().to_owned();
        let tok = v["envdAccessToken"].as_str().unwrap_or_default().to_owned();
        let hs = [
            ("Content-Type", "application/connect+json"),
            ("Connect-Protocol-Version", "1"),
            ("E2b-Sandbox-Id", id.as_str()),
            ("E2b-Sandbox-Port", "49983"),
            ("X-Access-Token", tok.as_str()),
        ];
        raw(&mut sock, "POST", &h, "/process.Process/Start", &hs, &body);
        raw_c.push(t.elapsed());
        client.kill(&id).await?;
    }

    let (sp50, sp99) = pct(sdk);
    let (rp50, rp99) = pct(rawt);
    let (qp50, qp99) = pct(reqw);
    let (scp50, scp99) = pct(sdk_c);
    let (rcp50, rcp99) = pct(raw_c);
    println!("{:<34} {:>9} {:>9}", "ms", "p50", "p99");
    println!("{:<34} {:>9.3} {:>9.3}", format!("raw HTTP run(\"true\") n={n}"), rp50, rp99);
    println!("{:<34} {:>9.3} {:>9.3}", format!("plain reqwest run(\"true\") n={n}"), qp50, qp99);
    println!("{:<34} {:>9.3} {:>9.3}", format!("Rust SDK run(\"true\") n={n}"), sp50, sp99);
    println!("{:<34} {:>9.3} {:>9.3}", "  SDK over plain reqwest", sp50 - qp50, sp99 - qp99);
    println!("{:<34} {:>9.3} {:>9.3}", "  SDK over raw socket", sp50 - rp50, sp99 - rp99);
    println!("{:<34} {:>9.3} {:>9.3}", format!("raw create->first cmd n={creates}"), rcp50, rcp99);
    println!("{:<34} {:>9.3} {:>9.3}", format!("Rust SDK create->first cmd n={creates}"), scp50, scp99);
    Ok(())
}
