//! The test client of the process service: the router on 127.0.0.1:0 in-process, a raw HTTP/1.1 client that
//! reads Connect envelopes as they arrive, and helpers to start a command and collect what it printed.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::state::{AppState, SandboxConfig};

pub(super) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) state: AppState,
}

pub(super) async fn server() -> Server {
    let state = AppState::new(SandboxConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = crate::server::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server { addr, state }
}

/// A response body being read as it arrives (chunked or content-length).
pub(super) struct Body {
    pub(super) reader: BufReader<TcpStream>,
    pub(super) chunked: bool,
    pub(super) remaining: usize,
    pub(super) buf: Vec<u8>,
    pub(super) done: bool,
}

impl Body {
    pub(super) async fn fill(&mut self) -> bool {
        if self.done {
            return false;
        }
        if self.chunked {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                self.done = true;
                return false;
            }
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            if size == 0 {
                self.done = true;
                return false;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.unwrap();
            self.buf.extend_from_slice(&chunk[..size]);
        } else {
            if self.remaining == 0 {
                self.done = true;
                return false;
            }
            let mut chunk = vec![0; self.remaining.min(65536)];
            let n = self.reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                self.done = true;
                return false;
            }
            self.remaining -= n;
            self.buf.extend_from_slice(&chunk[..n]);
        }
        true
    }

    pub(super) async fn all(mut self) -> Vec<u8> {
        while self.fill().await {}
        self.buf
    }
}

pub(super) async fn request(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Body) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(head.as_bytes()).await.unwrap();
    reader.get_mut().write_all(body).await.unwrap();
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut chunked, mut remaining) = (false, 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        match k.to_ascii_lowercase().as_str() {
            "transfer-encoding" if v.trim() == "chunked" => chunked = true,
            "content-length" => remaining = v.trim().parse().unwrap(),
            "content-type" if path.contains("Start") || path.contains("Connect") => {
                assert_eq!(v.trim(), "application/connect+json")
            }
            _ => {}
        }
    }
    (status, Body { reader, chunked, remaining, buf: Vec::new(), done: false })
}

pub(super) async fn unary(addr: SocketAddr, method: &str, msg: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) =
        request(addr, &format!("/process.Process/{method}"), "application/json", msg.to_string().as_bytes(), headers)
            .await;
    let bytes = body.all().await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

pub(super) fn envelope(flags: u8, msg: &Value) -> Vec<u8> {
    let payload = msg.to_string().into_bytes();
    let mut out = vec![flags];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// One server stream: messages, then the end-stream payload.
pub(super) struct Events {
    pub(super) body: Body,
    pub(super) end: Option<Value>,
}

impl Events {
    pub(super) async fn open(addr: SocketAddr, method: &str, msg: Value, headers: &[(&str, &str)]) -> Events {
        let (status, body) = request(
            addr,
            &format!("/process.Process/{method}"),
            "application/connect+json",
            &envelope(0, &msg),
            headers,
        )
        .await;
        assert_eq!(status, 200);
        Events { body, end: None }
    }

    /// The next message's `event`, or None at end-stream (kept in `self.end`).
    pub(super) async fn next(&mut self) -> Option<Value> {
        if self.end.is_some() {
            return None;
        }
        loop {
            if self.body.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.body.buf[1..5].try_into().unwrap()) as usize;
                if self.body.buf.len() >= 5 + len {
                    let flags = self.body.buf[0];
                    let value: Value = serde_json::from_slice(&self.body.buf[5..5 + len]).unwrap();
                    self.body.buf.drain(..5 + len);
                    if flags & 2 != 0 {
                        self.end = Some(value);
                        return None;
                    }
                    return Some(value["event"].clone());
                }
            }
            assert!(self.body.fill().await, "stream ended without an end-stream envelope");
        }
    }

    pub(super) async fn start_pid(&mut self) -> u64 {
        let first = self.next().await.expect("a start event");
        first["start"]["pid"].as_u64().unwrap_or_else(|| panic!("expected start, got {first}"))
    }

    /// Reads to the end: (stdout, stderr, pty, end event, keepalives).
    pub(super) async fn collect(&mut self) -> Collected {
        let mut c = Collected::default();
        while let Some(event) = self.next().await {
            if let Some(data) = event.get("data") {
                for (key, sink) in [("stdout", &mut c.stdout), ("stderr", &mut c.stderr), ("pty", &mut c.pty)] {
                    if let Some(b) = data.get(key) {
                        sink.extend(B64.decode(b.as_str().unwrap()).unwrap());
                    }
                }
            } else if let Some(end) = event.get("end") {
                assert!(c.end.is_none(), "two end events");
                c.end = Some(end.clone());
            } else if event.get("keepalive").is_some() {
                c.keepalives += 1;
            } else {
                panic!("unexpected event {event}");
            }
        }
        c
    }
}

#[derive(Default, Debug)]
pub(super) struct Collected {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) pty: Vec<u8>,
    pub(super) end: Option<Value>,
    pub(super) keepalives: usize,
}

impl Collected {
    pub(super) fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub(super) fn start_msg(cmd: &str, args: &[&str]) -> Value {
    json!({"process": {"cmd": cmd, "args": args}})
}

pub(super) fn sh(script: &str) -> Value {
    start_msg("/bin/sh", &["-c", script])
}

pub(super) async fn run(s: &Server, msg: Value) -> (u64, Collected) {
    let mut events = Events::open(s.addr, "Start", msg, &[]).await;
    let pid = events.start_pid().await;
    let c = events.collect().await;
    assert_eq!(events.end, Some(json!({})), "clean end-stream");
    (pid, c)
}

pub(super) fn pid_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for a (non-reaping) init counts as gone: it no longer runs.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub(super) async fn wait_gone(pid: u64) -> bool {
    for _ in 0..100 {
        if pid_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
