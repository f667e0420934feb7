//! An upload refused part-way (a part the user may not write, a duplicate target, a full disk) is answered while
//! the client may still be sending. Closing then makes the kernel reset the connection, and clients see `EPIPE` or
//! "connection reset" (the official JS SDK's multi-file write does) instead of the error. So the rest of a body
//! the handler dropped unread is read and discarded in the background — at most [`DRAIN_BYTES`] for at most
//! [`DRAIN_TIME`] — and the answer arrives first, as with a web server's lingering close.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::BodyDataStream;
use futures::{Stream, StreamExt};

const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A request body, drained in the background if dropped before its end.
pub struct DrainOnDrop {
    inner: Option<BodyDataStream>,
    ended: bool,
}

impl DrainOnDrop {
    pub fn new(inner: BodyDataStream) -> Self {
        DrainOnDrop { inner: Some(inner), ended: false }
    }
}

impl Stream for DrainOnDrop {
    type Item = <BodyDataStream as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut rest) = self.inner.take() else { return };
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let mut drained = 0usize;
            let drain = async {
                while let Some(Ok(frame)) = rest.next().await {
                    drained += frame.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}
