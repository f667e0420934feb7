//! The Connect protocol as the E2B SDKs use it: codes, error bodies, envelopes and the JSON / binary codecs.
//!
//! This module is transport-free: it turns messages into bytes and back. The HTTP glue lives with the server
//! (envd) and the client (SDK).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

/// Envelope flag: the payload is compressed (never produced; refused when received).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: this envelope ends the stream and carries the trailer / error.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Largest envelope or unary body accepted by default (same order as connect-go's defaults for envd traffic).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_PROTO: &str = "application/proto";
/// Streaming responses must carry this exact string: the Python client compares it without parameters.
pub const CONTENT_TYPE_STREAM_JSON: &str = "application/connect+json";
pub const CONTENT_TYPE_STREAM_PROTO: &str = "application/connect+proto";

pub const HEADER_TIMEOUT_MS: &str = "connect-timeout-ms";
pub const HEADER_PROTOCOL_VERSION: &str = "connect-protocol-version";

/// Connect error codes, serialised as their snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Some(match s {
            "canceled" => Code::Canceled,
            "unknown" => Code::Unknown,
            "invalid_argument" => Code::InvalidArgument,
            "deadline_exceeded" => Code::DeadlineExceeded,
            "not_found" => Code::NotFound,
            "already_exists" => Code::AlreadyExists,
            "permission_denied" => Code::PermissionDenied,
            "resource_exhausted" => Code::ResourceExhausted,
            "failed_precondition" => Code::FailedPrecondition,
            "aborted" => Code::Aborted,
            "out_of_range" => Code::OutOfRange,
            "unimplemented" => Code::Unimplemented,
            "internal" => Code::Internal,
            "unavailable" => Code::Unavailable,
            "data_loss" => Code::DataLoss,
            "unauthenticated" => Code::Unauthenticated,
            _ => return None,
        })
    }

    /// HTTP status of a unary error with this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    /// Code a client infers from a plain (non-Connect) HTTP status.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            413 | 429 => Code::ResourceExhausted,
            499 => Code::Canceled,
            500 => Code::Internal,
            501 | 505 => Code::Unimplemented,
            502 | 503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Unknown,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RPC failure: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into() }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }

    /// The JSON object `{"code":"...","message":"..."}` used as a unary error body and inside end-stream.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }

    /// Body of a unary error response.
    pub fn unary_body(&self) -> Bytes {
        Bytes::from(self.to_json_value().to_string())
    }

    /// Parses a unary error body (or the `error` member of an end-stream message).
    pub fn from_json_value(value: &serde_json::Value, http_status: Option<u16>) -> RpcError {
        let message = value.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        let code = match value.get("code") {
            Some(serde_json::Value::String(s)) => Code::parse(s).unwrap_or(Code::Unknown),
            Some(serde_json::Value::Number(n)) => Code::from_http_status(n.as_u64().unwrap_or(0) as u16),
            _ => http_status.map(Code::from_http_status).unwrap_or(Code::Unknown),
        };
        RpcError { code, message }
    }
}

/// The message codec negotiated from the request's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

/// Whether a request is a unary call or a streaming one, and with which codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType {
    pub codec: Codec,
    pub streaming: bool,
}

impl ContentType {
    /// Parses a request `Content-Type` (parameters such as `charset` are ignored).
    pub fn parse(raw: &str) -> Option<ContentType> {
        let essence = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        Some(match essence.as_str() {
            "application/json" => ContentType { codec: Codec::Json, streaming: false },
            "application/proto" => ContentType { codec: Codec::Proto, streaming: false },
            "application/connect+json" => ContentType { codec: Codec::Json, streaming: true },
            "application/connect+proto" => ContentType { codec: Codec::Proto, streaming: true },
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match (self.codec, self.streaming) {
            (Codec::Json, false) => CONTENT_TYPE_JSON,
            (Codec::Proto, false) => CONTENT_TYPE_PROTO,
            (Codec::Json, true) => CONTENT_TYPE_STREAM_JSON,
            (Codec::Proto, true) => CONTENT_TYPE_STREAM_PROTO,
        }
    }
}

impl Codec {
    pub fn encode<M: Message + Serialize>(self, message: &M) -> Bytes {
        match self {
            Codec::Proto => Bytes::from(message.encode_to_vec()),
            // Serialising generated pbjson types into a Vec cannot fail (no maps with non-string keys, no I/O).
            Codec::Json => Bytes::from(serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec())),
        }
    }

    pub fn decode<M: Message + Default + DeserializeOwned>(self, bytes: &[u8]) -> Result<M, RpcError> {
        match self {
            Codec::Proto => M::decode(bytes).map_err(|e| RpcError::invalid_argument(format!("unmarshal message: {e}"))),
            Codec::Json => {
                // An empty unary body is the empty message (connect-go accepts it too).
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(M::default());
                }
                serde_json::from_slice(bytes).map_err(|e| RpcError::invalid_argument(format!("unmarshal message: {e}")))
            }
        }
    }
}

/// Frames one envelope: flags, big-endian u32 length, payload.
pub fn encode_envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// The end-stream envelope: `{}` on success, `{"error":{...}}` on failure.
pub fn end_stream_envelope(error: Option<&RpcError>) -> Bytes {
    let payload = match error {
        None => Bytes::from_static(b"{}"),
        Some(e) => Bytes::from(serde_json::json!({ "error": e.to_json_value() }).to_string()),
    };
    encode_envelope(FLAG_END_STREAM, &payload)
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Bytes,
}

impl Envelope {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// For an end-stream envelope: the error it carries, if any.
    pub fn end_stream_error(&self) -> Option<RpcError> {
        let value: serde_json::Value = serde_json::from_slice(&self.payload).ok()?;
        value.get("error").map(|e| RpcError::from_json_value(e, None))
    }
}

/// Incremental envelope decoder: feed it bytes as they arrive, take envelopes out as they complete.
#[derive(Debug)]
pub struct EnvelopeDecoder {
    buffer: BytesMut,
    max_message_bytes: usize,
}

impl EnvelopeDecoder {
    pub fn new(max_message_bytes: usize) -> Self {
        EnvelopeDecoder { buffer: BytesMut::new(), max_message_bytes }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete envelope, `Ok(None)` when more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, RpcError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let flags = self.buffer[0];
        let len = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
        if len > self.max_message_bytes {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("message size {len} is larger than configured max {}", self.max_message_bytes),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(RpcError::new(Code::Unimplemented, "compressed envelopes are not supported"));
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        let payload = self.buffer.split_to(len).freeze();
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes received that do not yet form a whole envelope.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }
}

/// Parses `Connect-Timeout-Ms` (at most 10 digits per the Connect spec); `None` for absent, zero or invalid.
pub fn parse_timeout_ms(raw: Option<&str>) -> Option<std::time::Duration> {
    let raw = raw?.trim();
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = raw.parse().ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filesystem::{EntryInfo, FileType};
    use crate::process::{self, ProcessEvent, StartRequest, process_event};

    #[test]
    fn envelope_round_trip_across_split_chunks() {
        let a = encode_envelope(0, b"{\"a\":1}");
        let b = end_stream_envelope(None);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut dec = EnvelopeDecoder::new(1024);
        let mut got = Vec::new();
        for byte in all {
            dec.push(&[byte]);
            while let Some(env) = dec.next_envelope().unwrap() {
                got.push(env);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].payload[..], b"{\"a\":1}");
        assert!(got[1].is_end_stream());
        assert_eq!(&b[..], &[2, 0, 0, 0, 2, b'{', b'}']);
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut dec = EnvelopeDecoder::new(4);
        dec.push(&encode_envelope(0, b"12345"));
        assert_eq!(dec.next_envelope().unwrap_err().code, Code::ResourceExhausted);
        let mut dec = EnvelopeDecoder::new(64);
        dec.push(&encode_envelope(FLAG_COMPRESSED, b"x"));
        assert_eq!(dec.next_envelope().unwrap_err().code, Code::Unimplemented);
    }

    #[test]
    fn end_stream_error_shape() {
        let env = end_stream_envelope(Some(&RpcError::not_found("process with pid 9 not found")));
        assert_eq!(&env[5..], br#"{"error":{"code":"not_found","message":"process with pid 9 not found"}}"#);
        let mut dec = EnvelopeDecoder::new(1024);
        dec.push(&env);
        let parsed = dec.next_envelope().unwrap().unwrap();
        assert_eq!(parsed.end_stream_error().unwrap().code, Code::NotFound);
    }

    #[test]
    fn protojson_matches_the_sdk_mapping() {
        let event = process::StartResponse {
            event: Some(ProcessEvent {
                event: Some(process_event::Event::Data(process_event::DataEvent {
                    output: Some(process_event::data_event::Output::Stdout(Bytes::from_static(b"hi\n"))),
                })),
            }),
        };
        assert_eq!(
            String::from_utf8(Codec::Json.encode(&event).to_vec()).unwrap(),
            r#"{"event":{"data":{"stdout":"aGkK"}}}"#
        );

        let end = process::StartResponse {
            event: Some(ProcessEvent {
                event: Some(process_event::Event::End(process_event::EndEvent {
                    exit_code: 0,
                    exited: true,
                    status: "exit status 0".into(),
                    error: None,
                })),
            }),
        };
        assert_eq!(
            String::from_utf8(Codec::Json.encode(&end).to_vec()).unwrap(),
            r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#
        );

        let entry =
            EntryInfo { name: "a".into(), r#type: FileType::File as i32, size: 4, mode: 0o644, ..Default::default() };
        let json = String::from_utf8(Codec::Json.encode(&entry).to_vec()).unwrap();
        assert!(json.contains(r#""type":"FILE_TYPE_FILE""#), "{json}");
        assert!(json.contains(r#""size":"4""#), "{json}");
        assert!(json.contains(r#""mode":420"#), "{json}");
    }

    #[test]
    fn protojson_parsing_is_lenient_like_the_sdks_need() {
        let req: StartRequest = Codec::Json
            .decode(br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"}},"stdin":false,"unknownField":1}"#)
            .unwrap();
        let p = req.process.unwrap();
        assert_eq!(p.cmd, "/bin/bash");
        assert_eq!(p.envs.get("A").map(String::as_str), Some("1"));
        assert_eq!(req.stdin, Some(false));
        // snake_case names and numeric enums are accepted too.
        let w: crate::filesystem::WatchDirRequest =
            Codec::Json.decode(br#"{"path":"/x","include_entry":true}"#).unwrap();
        assert!(w.include_entry);
        let s: crate::process::SendSignalRequest = Codec::Json.decode(br#"{"signal":9}"#).unwrap();
        assert_eq!(s.signal, crate::process::Signal::Sigkill as i32);
        let empty: crate::process::ListRequest = Codec::Json.decode(b"").unwrap();
        assert_eq!(empty, crate::process::ListRequest {});
        assert_eq!(Codec::Json.decode::<StartRequest>(b"{nope").unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn binary_codec_round_trip() {
        let req = StartRequest { tag: Some("t".into()), stdin: Some(true), ..Default::default() };
        let bytes = Codec::Proto.encode(&req);
        assert_eq!(Codec::Proto.decode::<StartRequest>(&bytes).unwrap(), req);
    }

    #[test]
    fn content_types_and_timeouts() {
        assert_eq!(
            ContentType::parse("application/json; charset=utf-8"),
            Some(ContentType { codec: Codec::Json, streaming: false })
        );
        assert_eq!(ContentType::parse("application/connect+proto").unwrap().codec, Codec::Proto);
        assert_eq!(ContentType::parse("text/plain"), None);
        assert_eq!(parse_timeout_ms(Some("60000")), Some(std::time::Duration::from_secs(60)));
        assert_eq!(parse_timeout_ms(Some("0")), None);
        assert_eq!(parse_timeout_ms(Some("-5")), None);
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::from_http_status(502), Code::Unavailable);
    }
}
