//! Connect RPC over axum: turns typed async handlers into routes speaking the Connect protocol with the JSON
//! and binary codecs, for unary, server-streaming and client-streaming methods.
//!
//! Error shapes follow connect-go: unary errors are an HTTP status plus `{"code","message"}`; streaming errors
//! are HTTP 200 with the error in the end-stream envelope, even when raised before the first message.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use soulbox_protocol::connect::{
    self, Code, ContentType, DEFAULT_MAX_MESSAGE_BYTES, EnvelopeDecoder, RpcError, encode_envelope, end_stream_envelope,
};

use crate::state::AppState;

/// A stream of messages produced or consumed by an RPC. An `Err` item ends the stream with that error.
pub type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, RpcError>> + Send>>;

/// Default keepalive interval when the client sends no `Keepalive-Ping-Interval` (E2B envd: 90 s).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// What a handler may want from the request besides its message.
#[derive(Debug, Clone)]
pub struct RpcContext {
    pub headers: HeaderMap,
    /// `Connect-Timeout-Ms`: the whole call's deadline (for `Start`, the process lifetime).
    pub timeout: Option<Duration>,
    /// `Keepalive-Ping-Interval` (seconds): idle time after which streams send a keepalive event.
    pub keepalive: Duration,
}

impl RpcContext {
    fn from_headers(headers: HeaderMap) -> RpcContext {
        let timeout = connect::parse_timeout_ms(headers.get(connect::HEADER_TIMEOUT_MS).and_then(|v| v.to_str().ok()));
        let keepalive = headers
            .get("keepalive-ping-interval")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_KEEPALIVE);
        RpcContext { headers, timeout, keepalive }
    }
}

/// A unary method.
pub fn unary<Req, Resp, F, Fut>(handler: F) -> MethodRouter<AppState>
where
    Req: Message + Default + DeserializeOwned + Send + 'static,
    Resp: Message + Serialize + Send + 'static,
    F: Fn(AppState, RpcContext, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
{
    post(move |State(state): State<AppState>, request: Request| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let content_type = match request_content_type(&parts.headers, false) {
                Ok(ct) => ct,
                Err(response) => return response,
            };
            let bytes = match read_bounded(body).await {
                Ok(b) => b,
                Err(e) => return unary_error(&e),
            };
            let message: Req = match content_type.codec.decode(&bytes) {
                Ok(m) => m,
                Err(e) => return unary_error(&e),
            };
            let ctx = RpcContext::from_headers(parts.headers);
            let call = handler(state, ctx.clone(), message);
            let result = match ctx.timeout {
                Some(limit) => tokio::time::timeout(limit, call)
                    .await
                    .unwrap_or_else(|_| Err(RpcError::new(Code::DeadlineExceeded, "the operation timed out"))),
                None => call.await,
            };
            match result {
                Ok(resp) => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, content_type.as_str())
                    .body(Body::from(content_type.codec.encode(&resp)))
                    .unwrap_or_default(),
                Err(e) => unary_error(&e),
            }
        }
    })
}

/// A server-streaming method: one request message, a stream of responses.
pub fn server_stream<Req, Resp, F, Fut>(handler: F) -> MethodRouter<AppState>
where
    Req: Message + Default + DeserializeOwned + Send + 'static,
    Resp: Message + Serialize + Send + 'static,
    F: Fn(AppState, RpcContext, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<RpcStream<Resp>, RpcError>> + Send + 'static,
{
    post(move |State(state): State<AppState>, request: Request| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let content_type = match request_content_type(&parts.headers, true) {
                Ok(ct) => ct,
                Err(response) => return response,
            };
            let ctx = RpcContext::from_headers(parts.headers);
            let mut requests = decode_request_stream::<Req>(body, content_type);
            let first = match requests.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    return stream_response::<Resp>(
                        content_type,
                        futures::stream::once(async move { Err(e) }).boxed(),
                        None,
                    );
                }
                None => {
                    let e = RpcError::invalid_argument("request stream ended without a message");
                    return stream_response::<Resp>(
                        content_type,
                        futures::stream::once(async move { Err(e) }).boxed(),
                        None,
                    );
                }
            };
            // Read the body to its end (it must hold exactly one message) before answering: clients may send the
            // chunked terminator after the envelope, and hyper cannot reuse — and the kernel resets — a connection
            // whose request was not fully read, which cuts the tail of the response.
            match requests.next().await {
                None => {}
                Some(Ok(_)) => {
                    let e = RpcError::invalid_argument("a server-streaming request carries exactly one message");
                    return stream_response::<Resp>(
                        content_type,
                        futures::stream::once(async move { Err(e) }).boxed(),
                        None,
                    );
                }
                Some(Err(e)) => {
                    return stream_response::<Resp>(
                        content_type,
                        futures::stream::once(async move { Err(e) }).boxed(),
                        None,
                    );
                }
            }
            let deadline = ctx.timeout;
            let responses = match handler(state, ctx, first).await {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            };
            stream_response(content_type, responses, deadline)
        }
    })
}

/// A client-streaming method: a stream of requests, one response (sent as a stream of one plus end-stream).
pub fn client_stream<Req, Resp, F, Fut>(handler: F) -> MethodRouter<AppState>
where
    Req: Message + Default + DeserializeOwned + Send + 'static,
    Resp: Message + Serialize + Send + 'static,
    F: Fn(AppState, RpcContext, RpcStream<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
{
    post(move |State(state): State<AppState>, request: Request| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let content_type = match request_content_type(&parts.headers, true) {
                Ok(ct) => ct,
                Err(response) => return response,
            };
            let ctx = RpcContext::from_headers(parts.headers);
            let deadline = ctx.timeout;
            let requests = decode_request_stream::<Req>(body, content_type);
            let result = handler(state, ctx, requests).await;
            stream_response(content_type, futures::stream::once(async move { result }).boxed(), deadline)
        }
    })
}

/// Interleaves a keepalive message into `inner` whenever it has been idle for `every`.
pub fn with_keepalive<T, P>(inner: RpcStream<T>, every: Duration, ping: P) -> RpcStream<T>
where
    T: Send + 'static,
    P: Fn() -> T + Send + 'static,
{
    futures::stream::unfold((inner, ping), move |(mut inner, ping)| async move {
        tokio::select! {
            item = inner.next() => item.map(|i| (i, (inner, ping))),
            _ = tokio::time::sleep(every) => {
                let keepalive = ping();
                Some((Ok(keepalive), (inner, ping)))
            }
        }
    })
    .boxed()
}

#[allow(clippy::result_large_err)] // the error is the ready response, built only on the error path
fn request_content_type(headers: &HeaderMap, streaming: bool) -> Result<ContentType, Response> {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    match ContentType::parse(raw) {
        Some(ct) if ct.streaming == streaming => Ok(ct),
        _ => Err(Response::builder()
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .header(
                "accept-post",
                if streaming {
                    "application/connect+json, application/connect+proto"
                } else {
                    "application/json, application/proto"
                },
            )
            .body(Body::empty())
            .unwrap_or_default()),
    }
}

async fn read_bounded(body: Body) -> Result<Bytes, RpcError> {
    let limited = http_body_util::Limited::new(body, DEFAULT_MAX_MESSAGE_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(RpcError::new(
            Code::ResourceExhausted,
            format!("request body is larger than {DEFAULT_MAX_MESSAGE_BYTES} bytes"),
        )),
        Err(e) => Err(RpcError::new(Code::Canceled, format!("reading request body: {e}"))),
    }
}

/// Decodes the envelopes of a streaming request body into messages as they arrive.
fn decode_request_stream<Req>(body: Body, content_type: ContentType) -> RpcStream<Req>
where
    Req: Message + Default + DeserializeOwned + Send + 'static,
{
    let codec = content_type.codec;
    let state = (body.into_data_stream(), EnvelopeDecoder::new(DEFAULT_MAX_MESSAGE_BYTES), false);
    futures::stream::unfold(state, move |(mut data, mut decoder, mut done)| async move {
        loop {
            if done {
                return None;
            }
            match decoder.next_envelope() {
                Err(e) => {
                    done = true;
                    return Some((Err(e), (data, decoder, done)));
                }
                Ok(Some(envelope)) if envelope.is_end_stream() => return None,
                Ok(Some(envelope)) => {
                    let message = codec.decode::<Req>(&envelope.payload);
                    done = message.is_err();
                    return Some((message, (data, decoder, done)));
                }
                Ok(None) => {}
            }
            match data.next().await {
                Some(Ok(chunk)) => decoder.push(&chunk),
                Some(Err(e)) => {
                    done = true;
                    return Some((
                        Err(RpcError::new(Code::Canceled, format!("reading request: {e}"))),
                        (data, decoder, done),
                    ));
                }
                None if decoder.pending_bytes() > 0 => {
                    done = true;
                    let e = RpcError::invalid_argument("request body ended inside an envelope");
                    return Some((Err(e), (data, decoder, done)));
                }
                None => return None,
            }
        }
    })
    .boxed()
}

/// The streaming response: HTTP 200, the exact content type, one envelope per message, then end-stream.
fn stream_response<Resp>(content_type: ContentType, responses: RpcStream<Resp>, deadline: Option<Duration>) -> Response
where
    Resp: Message + Serialize + Send + 'static,
{
    let codec = content_type.codec;
    let deadline = deadline.map(|d| Box::pin(tokio::time::sleep(d)));
    let frames = futures::stream::unfold(
        (responses, deadline, false),
        move |(mut responses, mut deadline, finished)| async move {
            if finished {
                return None;
            }
            let next = match deadline.as_mut() {
                Some(timer) => tokio::select! {
                    item = responses.next() => item,
                    _ = timer.as_mut() => Some(Err(RpcError::new(Code::DeadlineExceeded, "the operation timed out"))),
                },
                None => responses.next().await,
            };
            let frame = match next {
                Some(Ok(message)) => {
                    return Some((
                        Ok::<_, std::convert::Infallible>(encode_envelope(0, &codec.encode(&message))),
                        (responses, deadline, false),
                    ));
                }
                Some(Err(e)) => end_stream_envelope(Some(&e)),
                None => end_stream_envelope(None),
            };
            Some((Ok(frame), (responses, deadline, true)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, HeaderValue::from_static(content_type.as_str()))
        .body(Body::from_stream(frames))
        .unwrap_or_default()
}

/// A unary error response: the code's HTTP status and `{"code","message"}` (always JSON, per the Connect spec).
pub fn unary_error(error: &RpcError) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(error.unary_body()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SandboxConfig;
    use soulbox_protocol::connect::{Envelope, FLAG_END_STREAM};
    use soulbox_protocol::process as pb;
    use tower::ServiceExt;

    fn app() -> axum::Router {
        async fn echo_list(_: AppState, ctx: RpcContext, _: pb::ListRequest) -> Result<pb::ListResponse, RpcError> {
            if ctx.headers.contains_key("x-fail") {
                return Err(RpcError::not_found("nothing here"));
            }
            Ok(pb::ListResponse { processes: vec![pb::ProcessInfo { pid: 7, ..Default::default() }] })
        }
        async fn slow_unary(_: AppState, _: RpcContext, _: pb::ListRequest) -> Result<pb::ListResponse, RpcError> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(pb::ListResponse::default())
        }
        async fn counter(
            _: AppState,
            ctx: RpcContext,
            req: pb::ConnectRequest,
        ) -> Result<RpcStream<pb::ConnectResponse>, RpcError> {
            let Some(pb::process_selector::Selector::Pid(n)) = req.process.and_then(|p| p.selector) else {
                return Err(RpcError::invalid_argument("pid required"));
            };
            let items = futures::stream::iter((0..n).map(|pid| {
                Ok(pb::ConnectResponse {
                    event: Some(pb::ProcessEvent {
                        event: Some(pb::process_event::Event::Start(pb::process_event::StartEvent { pid })),
                    }),
                })
            }));
            // After the items, stay silent so keepalives (and the deadline) become visible.
            let stream = items.chain(futures::stream::pending()).boxed();
            Ok(with_keepalive(stream, ctx.keepalive.min(Duration::from_millis(50)), || pb::ConnectResponse {
                event: Some(pb::ProcessEvent {
                    event: Some(pb::process_event::Event::Keepalive(pb::process_event::KeepAlive {})),
                }),
            }))
        }
        async fn sum_input(
            _: AppState,
            _: RpcContext,
            mut input: RpcStream<pb::SendInputRequest>,
        ) -> Result<pb::ListResponse, RpcError> {
            let mut total = 0u32;
            while let Some(msg) = input.next().await {
                if let Some(pb::process_input::Input::Stdin(b)) = msg?.input.and_then(|i| i.input) {
                    total += b.len() as u32;
                }
            }
            Ok(pb::ListResponse { processes: vec![pb::ProcessInfo { pid: total, ..Default::default() }] })
        }
        axum::Router::new()
            .route("/t/List", unary(echo_list))
            .route("/t/Slow", unary(slow_unary))
            .route("/t/Count", server_stream(counter))
            .route("/t/Sum", client_stream(sum_input))
            .with_state(AppState::new(SandboxConfig::default()))
    }

    async fn call(
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = http::Request::post(path).header(header::CONTENT_TYPE, content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.into_body().collect().await.unwrap().to_bytes())
    }

    fn envelopes(bytes: &[u8]) -> Vec<Envelope> {
        let mut dec = EnvelopeDecoder::new(1 << 20);
        dec.push(bytes);
        std::iter::from_fn(|| dec.next_envelope().unwrap()).collect()
    }

    #[tokio::test]
    async fn unary_json_success_and_error_shapes() {
        let (status, headers, body) = call("/t/List", "application/json", &[], b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(&body[..], br#"{"processes":[{"pid":7}]}"#);

        let (status, _, body) = call("/t/List", "application/json", &[("x-fail", "1")], b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(&body[..], br#"{"code":"not_found","message":"nothing here"}"#);

        let (status, _, body) = call("/t/List", "application/json", &[], b"{not json".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(std::str::from_utf8(&body).unwrap().contains("invalid_argument"));

        let (status, _, _) = call("/t/List", "text/plain", &[], b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn unary_binary_codec() {
        let (status, headers, body) = call("/t/List", "application/proto", &[], vec![]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/proto");
        assert_eq!(pb::ListResponse::decode(body).unwrap().processes[0].pid, 7);
    }

    #[tokio::test]
    async fn unary_deadline_from_timeout_header() {
        let (status, _, body) =
            call("/t/Slow", "application/json", &[("connect-timeout-ms", "20")], b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(std::str::from_utf8(&body).unwrap().contains("deadline_exceeded"));
    }

    #[tokio::test]
    async fn server_stream_messages_keepalive_and_deadline() {
        let req = encode_envelope(0, br#"{"process":{"pid":2}}"#).to_vec();
        let (status, headers, body) = call(
            "/t/Count",
            "application/connect+json",
            &[("connect-timeout-ms", "300"), ("keepalive-ping-interval", "1")],
            req,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/connect+json");
        let envs = envelopes(&body);
        assert_eq!(&envs[0].payload[..], br#"{"event":{"start":{}}}"#); // pid 0 is the zero value, omitted
        assert_eq!(&envs[1].payload[..], br#"{"event":{"start":{"pid":1}}}"#);
        assert_eq!(&envs[2].payload[..], br#"{"event":{"keepalive":{}}}"#);
        let last = envs.last().unwrap();
        assert_eq!(last.flags, FLAG_END_STREAM);
        assert_eq!(last.end_stream_error().unwrap().code, Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn server_stream_errors_are_http_200_end_stream() {
        let req = encode_envelope(0, b"{}").to_vec();
        let (status, _, body) = call("/t/Count", "application/connect+json", &[], req).await;
        assert_eq!(status, StatusCode::OK);
        let envs = envelopes(&body);
        assert_eq!(envs.len(), 1);
        assert_eq!(envs[0].end_stream_error().unwrap(), RpcError::invalid_argument("pid required"));

        // A truncated envelope is a protocol error reported the same way.
        let (status, _, body) = call("/t/Count", "application/connect+json", &[], vec![0, 0, 0, 0, 9, b'{']).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(envelopes(&body)[0].end_stream_error().unwrap().code, Code::InvalidArgument);
    }

    #[tokio::test]
    async fn client_stream_collects_all_messages() {
        let mut body = Vec::new();
        for chunk in ["aGVsbG8=", "d29ybGQh"] {
            body.extend_from_slice(&encode_envelope(0, format!(r#"{{"input":{{"stdin":"{chunk}"}}}}"#).as_bytes()));
        }
        body.extend_from_slice(&end_stream_envelope(None));
        let (status, _, resp) = call("/t/Sum", "application/connect+json", &[], body).await;
        assert_eq!(status, StatusCode::OK);
        let envs = envelopes(&resp);
        assert_eq!(&envs[0].payload[..], br#"{"processes":[{"pid":11}]}"#);
        assert!(envs[1].is_end_stream() && envs[1].end_stream_error().is_none());
    }
}
