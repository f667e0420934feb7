//! API keys: shaped like E2B's (`e2b_` + 40 hex) so every SDK version's client-side format check accepts them;
//! only their SHA-256 is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "e2b_";

/// A freshly minted key: `secret` is shown once, `hash` is what the store keeps.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub secret: String,
    pub hash: String,
    /// First characters, safe to list so people can tell keys apart.
    pub display_prefix: String,
}

pub fn generate() -> NewKey {
    generate_with_prefix(KEY_PREFIX)
}

/// Access tokens: shaped like E2B's (`sk_e2b_` + 40 hex), stored the same way as keys.
pub const ACCESS_TOKEN_PREFIX: &str = "sk_e2b_";

/// A secret `prefix` + 40 hex.
pub fn generate_with_prefix(prefix: &str) -> NewKey {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{prefix}{}", hex(&bytes));
    NewKey { hash: hash(&secret), display_prefix: secret[..prefix.len() + 6].to_owned(), secret }
}

/// Cheap shape check of an access token before touching the store.
pub fn looks_like_access_token(candidate: &str) -> bool {
    candidate
        .strip_prefix(ACCESS_TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 40 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Cheap shape check before touching the store (E2B: `^e2b_[0-9a-f]+$`).
pub fn looks_like_key(candidate: &str) -> bool {
    candidate
        .strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_e2b_shape() {
        let k = generate();
        assert_eq!(k.secret.len(), 4 + 40);
        assert!(looks_like_key(&k.secret));
        assert_eq!(k.hash, hash(&k.secret));
        assert_ne!(generate().secret, k.secret);
        assert!(!looks_like_key("e2b_XYZ") && !looks_like_key("sk_123"));
        let token = generate_with_prefix(ACCESS_TOKEN_PREFIX);
        assert!(looks_like_access_token(&token.secret) && !looks_like_access_token(&k.secret));
        assert!(!looks_like_key(&token.secret), "a token is never taken for a key");
    }
}
