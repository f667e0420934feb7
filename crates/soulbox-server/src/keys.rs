//! Hashed bearer secrets: API keys (`e2b_` + 40 hex) and access tokens (`sk_e2b_` + 40 hex), shaped like E2B's
//! so every SDK version's client-side format check accepts them. Only their SHA-256 is stored; what may be shown
//! of one is its first characters ([`SecretKind::mask`]). The store's lookup by hash is `store/hashed_secret.rs`.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "e2b_";

/// Access tokens: shaped like E2B's (`sk_e2b_` + 40 hex), stored the same way as keys.
pub const ACCESS_TOKEN_PREFIX: &str = "sk_e2b_";

/// Hex digits after the prefix of every secret minted here.
const SECRET_HEX: usize = 40;

/// Characters after the prefix that listings may show.
const SHOWN_HEX: usize = 6;

/// One kind of hashed bearer secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretKind {
    /// What the secret starts with.
    pub prefix: &'static str,
    /// What its record's id starts with (then 12 hex of the hash).
    id_prefix: &'static str,
    /// Accept only `prefix` + exactly 40 hex; otherwise any non-empty hex (E2B's key check: `^e2b_[0-9a-f]+$`).
    exact_length: bool,
}

pub const API_KEY: SecretKind = SecretKind { prefix: KEY_PREFIX, id_prefix: "key_", exact_length: false };
pub const ACCESS_TOKEN: SecretKind = SecretKind { prefix: ACCESS_TOKEN_PREFIX, id_prefix: "tok_", exact_length: true };

/// A freshly minted secret: `secret` is shown once, `hash` is what the store keeps.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub secret: String,
    pub hash: String,
    /// First characters, safe to list so people can tell keys apart.
    pub display_prefix: String,
}

/// What may be shown of a secret (E2B's `IdentifierMaskingDetails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub prefix: &'static str,
    pub value_length: u32,
    /// The shown characters after the prefix.
    pub masked_value_prefix: String,
}

impl SecretKind {
    /// A new secret: `prefix` + 40 random hex.
    pub fn generate(&self) -> NewKey {
        let mut bytes = [0u8; SECRET_HEX / 2];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{}{}", self.prefix, hex(&bytes));
        NewKey { hash: hash(&secret), display_prefix: secret[..self.prefix.len() + SHOWN_HEX].to_owned(), secret }
    }

    /// The id of the record that stores `key` (derived from the hash, never from the secret).
    pub fn record_id(&self, key: &NewKey) -> String {
        format!("{}{}", self.id_prefix, &key.hash[..12])
    }

    /// Cheap shape check before touching the store.
    pub fn looks_like(&self, candidate: &str) -> bool {
        candidate.strip_prefix(self.prefix).is_some_and(|rest| {
            let length_ok = if self.exact_length { rest.len() == SECRET_HEX } else { !rest.is_empty() };
            length_ok && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }

    /// What a listing shows of the secret whose stored display prefix is `display_prefix`.
    pub fn mask(&self, display_prefix: &str) -> Mask {
        Mask {
            prefix: self.prefix,
            value_length: (self.prefix.len() + SECRET_HEX) as u32,
            masked_value_prefix: display_prefix.strip_prefix(self.prefix).unwrap_or(display_prefix).to_owned(),
        }
    }
}

pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_e2b_shape() {
        let k = API_KEY.generate();
        assert_eq!(k.secret.len(), 4 + 40);
        assert!(API_KEY.looks_like(&k.secret));
        assert_eq!(k.hash, hash(&k.secret));
        assert_ne!(API_KEY.generate().secret, k.secret);
        assert!(!API_KEY.looks_like("e2b_XYZ") && !API_KEY.looks_like("sk_123"));
        let token = ACCESS_TOKEN.generate();
        assert!(ACCESS_TOKEN.looks_like(&token.secret) && !ACCESS_TOKEN.looks_like(&k.secret));
        assert!(!API_KEY.looks_like(&token.secret), "a token is never taken for a key");
        assert!(
            API_KEY.looks_like("e2b_0a") && !ACCESS_TOKEN.looks_like("sk_e2b_0a"),
            "only tokens are 40 hex exactly"
        );
    }

    #[test]
    fn ids_and_masks_show_only_the_prefix() {
        let token = ACCESS_TOKEN.generate();
        let id = ACCESS_TOKEN.record_id(&token);
        assert!(id.starts_with("tok_") && id.len() == 16 && !token.secret.contains(&id[4..]));
        assert!(API_KEY.record_id(&API_KEY.generate()).starts_with("key_"));
        let mask = ACCESS_TOKEN.mask(&token.display_prefix);
        assert_eq!((mask.prefix, mask.value_length), ("sk_e2b_", 47));
        assert_eq!(mask.masked_value_prefix, token.secret[7..13]);
    }
}
