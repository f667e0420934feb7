//! File metadata of uploads: `X-Metadata-<key>: <value>` request headers, stored as `user.e2b.<key>` xattrs.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;

use http::HeaderMap;
use rustix::fs::XattrFlags;
use rustix::io::Errno;

pub const HEADER_PREFIX: &str = "x-metadata-";
pub const XATTR_PREFIX: &str = "user.e2b.";
/// Linux caps xattr names at 255 bytes; `user.e2b.` takes 9 of them.
pub const MAX_KEY_LEN: usize = 255 - XATTR_PREFIX.len();
/// Keys plus values of one upload.
pub const MAX_TOTAL_LEN: usize = 4096;

pub type Metadata = BTreeMap<String, String>;

/// The metadata an upload carries, validated before anything is written. Header names arrive lowercased
/// (HTTP/2 requires it, `http` normalises HTTP/1 names), which is E2B's `lower(key)`.
pub fn from_headers(headers: &HeaderMap) -> Result<Metadata, String> {
    let mut metadata = Metadata::new();
    let mut total = 0usize;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) else { continue };
        if key.is_empty() {
            return Err("metadata key must not be empty".to_owned());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(format!("metadata key '{key}' is longer than {MAX_KEY_LEN} bytes"));
        }
        if !printable(key.as_bytes()) {
            return Err(format!("metadata key '{key}' must be printable ASCII"));
        }
        if !printable(value.as_bytes()) {
            return Err(format!("metadata value of '{key}' must be printable ASCII"));
        }
        // Bytes are printable ASCII, so this is valid UTF-8.
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        total += key.len() + value.len();
        if total > MAX_TOTAL_LEN {
            return Err(format!("metadata is larger than {MAX_TOTAL_LEN} bytes"));
        }
        // A repeated header: the last one wins (and is counted, so repetition cannot dodge the limit).
        metadata.insert(key.to_owned(), value);
    }
    Ok(metadata)
}

fn printable(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// Makes `metadata` the file's complete `user.e2b.*` set: stale keys are removed, the new ones written.
/// A filesystem without user xattrs is fine as long as there is nothing to store.
pub fn replace_on(file: impl AsFd, metadata: &Metadata) -> io::Result<()> {
    let fd = file.as_fd();
    match existing_names(fd) {
        Ok(names) => {
            for name in names.iter().filter(|n| n.starts_with(XATTR_PREFIX.as_bytes())) {
                match rustix::fs::fremovexattr(fd, name.as_slice()) {
                    Ok(()) | Err(Errno::NODATA) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(Errno::NOTSUP) if metadata.is_empty() => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    for (key, value) in metadata {
        rustix::fs::fsetxattr(fd, format!("{XATTR_PREFIX}{key}"), value.as_bytes(), XattrFlags::empty())?;
    }
    Ok(())
}

fn existing_names(fd: std::os::fd::BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    // The list can grow between the size query and the read; retry a few times on ERANGE.
    for _ in 0..4 {
        let size = rustix::fs::flistxattr_query(fd)?;
        let mut buf = vec![0u8; size];
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(len) => {
                return Ok(buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect());
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn validates_keys_and_sizes() {
        let m = from_headers(&headers(&[("X-Metadata-Owner", "Alice B"), ("x-other", "1")])).unwrap();
        assert_eq!(m.get("owner").map(String::as_str), Some("Alice B"));
        assert_eq!(m.len(), 1);
        assert!(from_headers(&headers(&[("x-metadata-k", "tab\there")])).is_err());
        let long_key = format!("x-metadata-{}", "k".repeat(MAX_KEY_LEN + 1));
        assert!(from_headers(&headers(&[(&long_key, "v")])).is_err());
        let ok_key = format!("x-metadata-{}", "k".repeat(MAX_KEY_LEN));
        assert!(from_headers(&headers(&[(&ok_key, "v")])).is_ok());
        let big = "v".repeat(3000);
        assert!(from_headers(&headers(&[("x-metadata-a", &big), ("x-metadata-b", &big)])).is_err());
    }
}
