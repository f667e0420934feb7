//! The HTTP front over real loopback sockets: the connection cap, the header-read and idle timeouts, and
//! requests in flight that outlive both.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve::{self, HttpSettings};

/// A server on a free loopback port: `/ok` answers at once, `/slow` after 120 s (virtual time in paused tests).
async fn start(settings: HttpSettings) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new().route("/ok", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            "slow"
        }),
    );
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve::serve(listener, app, settings, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn settings(header: Duration, idle: Duration, max_connections: usize) -> HttpSettings {
    HttpSettings { header_read_timeout: header, idle_timeout: idle, max_connections, ..HttpSettings::default() }
}

/// Sends a keep-alive `GET path` and reads one response (bodies here are short and have a length).
async fn get_on(sock: &mut TcpStream, path: &str) -> Option<String> {
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Some(text);
            }
        }
    }
}

/// Reads until the server closes the connection (EOF or reset); `true` if it did within `bound`.
async fn closed_within(sock: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(bound, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn over_the_cap_new_connections_are_closed_and_established_ones_keep_working() {
    let (addr, _stop) = start(settings(Duration::from_secs(30), Duration::from_secs(30), 3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(get_on(&mut s, "/ok").await.unwrap().ends_with("ok"));
        held.push(s);
    }
    // The fourth is accepted and closed at once: EOF without a response, even to a complete request.
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut over, "/ok").await.is_none(), "a connection over the cap must not be served");
    for s in &mut held {
        assert!(get_on(s, "/ok").await.unwrap().ends_with("ok"), "established connections are unaffected");
    }
    // A slot freed is a slot for the next client (the server notices the close asynchronously: retry, bounded).
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if get_on(&mut s, "/ok").await.is_some() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "a new connection is served once one closed");
}

#[tokio::test]
async fn slow_or_missing_request_heads_are_dropped_after_the_header_timeout() {
    let (addr, _stop) = start(settings(Duration::from_millis(300), Duration::from_secs(600), 100)).await;
    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n").await.unwrap();
    // Connected, nothing sent.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Kept alive after a request, then a new head that never ends.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut kept, "/ok").await.is_some());
    kept.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
    for (name, sock) in [("slowloris", &mut slow), ("silent", &mut silent), ("second head", &mut kept)] {
        assert!(closed_within(sock, Duration::from_secs(20)).await, "{name} connection was not closed");
    }
}

/// Virtual time: the kept-alive connection outlives the (short) header timeout and is closed at the idle
/// timeout; a request in flight outlives both.
#[tokio::test(start_paused = true)]
async fn idle_connections_close_at_the_idle_timeout_and_requests_in_flight_never_time_out() {
    let (addr, _stop) = start(settings(Duration::from_secs(1), Duration::from_secs(30), 100)).await;
    let mut kept = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut kept, "/ok").await.is_some());
    let idle_from = tokio::time::Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(3600)).await);
    let idle_for = idle_from.elapsed();
    assert!(idle_for >= Duration::from_secs(30) && idle_for < Duration::from_secs(60), "closed after {idle_for:?}");

    let mut streaming = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let answer = get_on(&mut streaming, "/slow").await.expect("the slow response arrives");
    assert!(answer.ends_with("slow") && started.elapsed() >= Duration::from_secs(120), "{answer}");
}

/// Virtual time: a POST whose small body arrives after its head, answered by a handler that never reads it (as
/// the API-key check does), leaves the kept-alive connection usable for the next request.
#[tokio::test(start_paused = true)]
async fn a_small_body_is_read_before_the_app_so_an_unread_one_cannot_break_keep_alive() {
    let ran = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = ran.clone();
    let app = Router::new().route("/ok", get(|| async { "ok" })).route(
        "/reject",
        axum::routing::post(move || {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                (http::StatusCode::UNAUTHORIZED, "no")
            }
        }),
    );
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(listener, app, HttpSettings::default(), std::future::pending()));
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"POST /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n").await.unwrap();
    // The body follows once the server has nothing else to do (virtual time advances only then), or at once if
    // the handler already ran without it.
    tokio::select! {
        _ = ran.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    sock.write_all(b"0123456789").await.unwrap();
    let mut first = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&first).ends_with("no") {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the first response");
        first.extend_from_slice(&chunk[..n]);
    }
    assert!(first.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&first));
    let second = get_on(&mut sock, "/ok").await;
    assert!(second.is_some_and(|r| r.ends_with("ok")), "the kept-alive connection must still serve");
}

/// A response sent before the body was read (a 413) must reach a client that is still sending: the close
/// lingers, reading what still comes, instead of resetting the client's writes.
#[tokio::test]
async fn an_early_answer_reaches_a_client_still_sending_its_body() {
    let app = Router::new()
        .route("/refuse", axum::routing::post(|| async { (http::StatusCode::PAYLOAD_TOO_LARGE, "too large") }));
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve::serve(listener, app, HttpSettings::default(), async move {
        let _ = stopped.await;
    }));
    let body_len: usize = 16 << 20;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(format!("POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The answer comes before a byte of the body was sent.
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&head).contains("too large") {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before answering");
        head.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 413"));
    // A client that sends its body before reading (most do) must still be able to send all of it.
    let block = vec![b'x'; 1 << 20];
    for _ in 0..body_len / block.len() {
        sock.write_all(&block).await.expect("the server reset the connection while the body was being sent");
    }
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest).await.expect("a clean end after the body");
    let _ = stop.send(());
}
