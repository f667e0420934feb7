//! Lingering on a refused body. A request whose body the server stops reading (over a body limit, refused before
//! the handler, or a route that never reads one) would otherwise be answered and the connection closed with the
//! client still sending: the kernel then resets the connection, and a client that has not read the answer yet sees
//! "broken pipe" or "server disconnected" instead of the 401 or 413 it was sent. A client that streams its body
//! after the head (the e2b SDK's Connect calls do) loses that race often. Like a web server's lingering close, the
//! rest of such a body is read and discarded in the background — at most [`LINGER_BYTES`] for at most
//! [`LINGER_TIME`] — so the answer arrives first and the connection stays usable.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// The most of an unread body drained per request (a client sending more sees the reset it would have seen).
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: Duration = Duration::from_secs(10);

/// Middleware: every request body drains what is left of it when dropped unread.
pub async fn linger_on_unread_body(request: Request, next: Next) -> Response {
    next.run(request.map(|body| Body::new(Lingering { inner: Some(body), ended: false }))).await
}

struct Lingering {
    inner: Option<Body>,
    ended: bool,
}

impl http_body::Body for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if self.ended || http_body::Body::is_end_stream(&body) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

#[cfg(test)]
mod tests;
