use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY_BYTES: usize = 1 << 20;

/// A server whose only route refuses without reading the body, as an auth gate does.
async fn refusing_server(linger: bool) -> std::net::SocketAddr {
    let mut app = Router::new().route("/refuse", post(|| async { StatusCode::UNAUTHORIZED }));
    if linger {
        app = app.layer(axum::middleware::from_fn(super::linger_on_unread_body));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Reads one response head (these responses have empty bodies); None when the server closed the connection.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Sends the head, reads the refusal, and only then sends the body and a second request on the same connection:
/// the order a streaming client meets when the server answers before the body arrives.
async fn refusal_then_body_then_second_request(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let head = format!("POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: {BODY_BYTES}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    let first = read_head(&mut stream).await.ok_or("no first answer")?;
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    stream.write_all(&vec![b'x'; BODY_BYTES]).await.map_err(|e| format!("writing the body: {e}"))?;
    stream
        .write_all(b"POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .map_err(|e| format!("writing the second request: {e}"))?;
    read_head(&mut stream).await.ok_or_else(|| "the connection was closed under the body".to_string())
}

#[tokio::test]
async fn a_body_sent_after_the_refusal_is_read_and_the_connection_stays_usable() {
    let addr = refusing_server(true).await;
    let second = refusal_then_body_then_second_request(addr).await.expect("the lingering server kept the connection");
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
}

/// The control: without lingering, the same exchange loses the connection (what the defence is for).
#[tokio::test]
async fn without_lingering_the_connection_is_lost_under_the_body() {
    let addr = refusing_server(false).await;
    assert!(refusal_then_body_then_second_request(addr).await.is_err());
}
