//! `GET /files`: streams a file like Go's `http.ServeContent` (Range, If-Modified-Since, Last-Modified), with
//! optional gzip when the client accepts it.

use std::fs::{File, Metadata};
use std::io::{self, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use async_compression::Level;
use async_compression::tokio::bufread::GzipEncoder;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use soulbox_protocol::signature::Operation;
use tokio::io::{AsyncReadExt, AsyncSeekExt, BufReader};
use tokio_util::io::ReaderStream;

use super::access::{authorize, io_failure};
use super::as_user::run_as;
use crate::errors::json_error;
use crate::state::AppState;
use soulbox_protocol::signature::SignedQuery as FilesQuery;

/// Read size per chunk: large enough for throughput, small enough that a transfer's memory stays bounded.
const CHUNK: usize = 256 * 1024;

pub async fn download(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let query = match FilesQuery::parse(uri.query()) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let access = match authorize(&state, &headers, &query, Operation::Read) {
        Ok(a) => a,
        Err(response) => return response,
    };
    let path = access.path.clone();
    let (file, meta) = match run_as(&access.user, move || open_for_read(&path)).await {
        Ok(opened) => opened,
        Err(e) => return io_failure(&e, &access.path, &access.user),
    };
    if meta.is_dir() {
        return json_error(StatusCode::BAD_REQUEST, &format!("path '{}' is a directory", access.path.display()));
    }
    if !meta.is_file() {
        return json_error(StatusCode::BAD_REQUEST, &format!("path '{}' is not a regular file", access.path.display()));
    }
    match serve(file, &meta, &access.path, &headers).await {
        Ok(response) => response,
        Err(e) => io_failure(&e, &access.path, &access.user),
    }
}

/// Opens without blocking on FIFOs (`O_NONBLOCK` has no effect on regular files; other types are refused).
fn open_for_read(path: &Path) -> io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32 | rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

async fn serve(file: File, meta: &Metadata, path: &Path, headers: &HeaderMap) -> io::Result<Response> {
    let size = meta.len();
    let modified = meta.modified().ok();
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::VARY, "Accept-Encoding")
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(name) = path.file_name().and_then(|n| n.to_str())
        && let Ok(value) = HeaderValue::from_str(&content_disposition(name))
    {
        builder = builder.header(header::CONTENT_DISPOSITION, value);
    }
    if let Some(m) = modified {
        builder = builder.header(header::LAST_MODIFIED, httpdate::fmt_http_date(m));
        if not_modified_since(headers, m) {
            return Ok(builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).unwrap_or_default());
        }
    }

    let range = if range_applies(headers, modified) {
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|r| parse_range(r, size))
    } else {
        None
    };
    let mut file = tokio::fs::File::from_std(file);
    match range {
        Some(RangeRequest::Unsatisfiable) => {
            let mut response = json_error(StatusCode::RANGE_NOT_SATISFIABLE, "requested range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Ok(response)
        }
        Some(RangeRequest::Bytes { start, end }) => {
            // Ranges are served as identity: a gzip of a byte range would confuse every client.
            file.seek(SeekFrom::Start(start)).await?;
            let len = end - start + 1;
            let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), CHUNK));
            Ok(builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
                .header(header::CONTENT_LENGTH, len)
                .body(body)
                .unwrap_or_default())
        }
        Some(RangeRequest::Ignore) | None => match negotiate_encoding(headers) {
            Some(Encoding::Gzip) => {
                // Fastest level: the point is fewer bytes on a slow link without making the agent the
                // bottleneck on a fast one.
                let reader = BufReader::with_capacity(CHUNK, file);
                let gz = GzipEncoder::with_quality(reader, Level::Fastest);
                let body = Body::from_stream(ReaderStream::with_capacity(gz, CHUNK));
                Ok(builder
                    .status(StatusCode::OK)
                    .header(header::CONTENT_ENCODING, "gzip")
                    .body(body)
                    .unwrap_or_default())
            }
            Some(Encoding::Identity) => {
                let body = Body::from_stream(ReaderStream::with_capacity(file.take(size), CHUNK));
                Ok(builder.status(StatusCode::OK).header(header::CONTENT_LENGTH, size).body(body).unwrap_or_default())
            }
            None => {
                Ok(json_error(StatusCode::NOT_ACCEPTABLE, "no acceptable content encoding (supported: gzip, identity)"))
            }
        },
    }
}

/// `inline; filename=...` per RFC 6266, formatted like Go's `mime.FormatMediaType`: a bare token when
/// possible, a quoted string for other printable ASCII, and `filename*=UTF-8''...` for anything else.
pub fn content_disposition(name: &str) -> String {
    const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";
    let bytes = name.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_graphic() && !TSPECIALS.contains(b)) {
        format!("inline; filename={name}")
    } else if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("inline; filename=\"{escaped}\"")
    } else {
        const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'!')
            .remove(b'#')
            .remove(b'$')
            .remove(b'&')
            .remove(b'+')
            .remove(b'-')
            .remove(b'.')
            .remove(b'^')
            .remove(b'_')
            .remove(b'`')
            .remove(b'|')
            .remove(b'~');
        format!("inline; filename*=utf-8''{}", percent_encoding::utf8_percent_encode(name, ATTR_CHAR))
    }
}

fn not_modified_since(headers: &HeaderMap, modified: SystemTime) -> bool {
    let Some(since) = headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()) else { return false };
    let Ok(since) = httpdate::parse_http_date(since) else { return false };
    // HTTP dates have whole seconds; compare at that resolution.
    httpdate::HttpDate::from(modified) <= httpdate::HttpDate::from(since)
}

/// `If-Range` with a date equal to Last-Modified keeps the Range; any other validator means "send it all".
fn range_applies(headers: &HeaderMap, modified: Option<SystemTime>) -> bool {
    let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else { return true };
    match (httpdate::parse_http_date(if_range), modified) {
        (Ok(date), Some(m)) => httpdate::HttpDate::from(date) == httpdate::HttpDate::from(m),
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// One satisfiable range, `end` inclusive.
    Bytes {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
    /// Not a single byte range we serve (other units, several ranges): the whole file is sent (RFC 9110
    /// lets a server ignore Range).
    Ignore,
}

pub fn parse_range(raw: &str, size: u64) -> RangeRequest {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else { return RangeRequest::Ignore };
    if spec.contains(',') {
        return RangeRequest::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Unsatisfiable };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    if first.is_empty() {
        // Suffix: the last n bytes.
        return match number(last) {
            Some(n) if n > 0 && size > 0 => RangeRequest::Bytes { start: size.saturating_sub(n), end: size - 1 },
            _ => RangeRequest::Unsatisfiable,
        };
    }
    let Some(start) = number(first) else { return RangeRequest::Unsatisfiable };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = if last.is_empty() {
        size - 1
    } else {
        match number(last) {
            Some(end) if end >= start => end.min(size - 1),
            _ => return RangeRequest::Unsatisfiable,
        }
    };
    RangeRequest::Bytes { start, end }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Encoding {
    Gzip,
    Identity,
}

/// Picks gzip when acceptable, else identity when acceptable (it is unless refused with `q=0`), else nothing.
pub fn negotiate_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let mut gzip = None::<bool>;
    let mut identity = None::<bool>;
    let mut star = None::<bool>;
    let mut any_header = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        any_header = true;
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let accepted = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next_back()
                .is_none_or(|q| q > 0.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(accepted),
                "identity" => identity = Some(accepted),
                "*" => star = Some(accepted),
                _ => {}
            }
        }
    }
    if !any_header {
        return Some(Encoding::Identity);
    }
    if gzip.or(star).unwrap_or(false) {
        return Some(Encoding::Gzip);
    }
    if identity.or(star.filter(|s| !s)).unwrap_or(true) {
        return Some(Encoding::Identity);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Bytes { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=90-500", 100), Bytes { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Bytes { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Bytes { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
    }

    fn accept(v: &str) -> Option<Encoding> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        negotiate_encoding(&h)
    }

    #[test]
    fn encodings() {
        assert_eq!(negotiate_encoding(&HeaderMap::new()), Some(Encoding::Identity));
        assert_eq!(accept("gzip, deflate"), Some(Encoding::Gzip));
        assert_eq!(accept("identity"), Some(Encoding::Identity));
        assert_eq!(accept("br"), Some(Encoding::Identity));
        assert_eq!(accept("gzip;q=0, identity"), Some(Encoding::Identity));
        assert_eq!(accept("br, identity;q=0"), None);
        assert_eq!(accept("br, *;q=0"), None);
        assert_eq!(accept("*"), Some(Encoding::Gzip));
    }

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition("a.txt"), "inline; filename=a.txt");
        assert_eq!(content_disposition("a b\".txt"), "inline; filename=\"a b\\\".txt\"");
        assert_eq!(content_disposition("ü.txt"), "inline; filename*=utf-8''%C3%BC.txt");
    }
}
