//! How services inside a sandbox check the caller's `X-Access-Token` without knowing the token: envd publishes
//! the SHA-512 of the sandbox's access token (lowercase hex, no newline) in [`PATH`] whenever it is set or
//! changed, and an empty file when the sandbox has none (every caller is let in, as envd does). Sandbox ports
//! are reachable by anyone who knows the sandbox id (E2B's rule), so a service that runs code for its caller —
//! the code interpreter's `/execute` — must check the token the SDK sends, as E2B's own does.
//!
//! The file is world-readable: the digest does not give the token back, and code inside the sandbox is past the
//! boundary the token guards anyway.

use sha2::{Digest, Sha512};

/// Where envd writes the digest inside the sandbox (`/run/soulbox` is the runtime's own: no volume mounts there).
pub const PATH: &str = "/run/soulbox/access-token.sha512";

/// The file's content for `token`: the hex SHA-512, or empty without a token.
pub fn contents(token: Option<&str>) -> String {
    match token {
        Some(token) => Sha512::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha512_hex_and_empty_without_a_token() {
        assert_eq!(contents(None), "");
        // sha512("abc"), FIPS 180-2's test vector
        assert!(contents(Some("abc")).starts_with("ddaf35a193617aba"));
        assert_eq!(contents(Some("abc")).len(), 128);
    }
}
