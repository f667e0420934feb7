//! Signed file URLs (seed feature 2).
//!
//! Two schemes are accepted by envd, both keyed by the sandbox's access token and bound to
//! `path:operation:user[:expiration]`:
//! - E2B's: `"v1_" + base64std_nopad(sha256("{path}:{op}:{user}:{token}[:{exp}]"))` — what the official SDKs make.
//! - SoulBox's: `"sb1_" + base64url_nopad(hmac_sha256(token, "{path}:{op}:{user}[:{exp}]"))` — a real MAC, so the
//!   token is never hashed in the clear next to attacker-chosen input.
//!
//! The signature is checked (in constant time) before the expiry, as E2B's envd does. [`SignedQuery`] reads
//! what a URL carries.

mod query;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use query::{QueryError, SANDBOX_ID_PARAM, SignedQuery};

pub const E2B_PREFIX: &str = "v1_";
pub const SOULBOX_PREFIX: &str = "sb1_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    E2b,
    SoulBox,
}

/// What a signature covers. `user` is `""` for the default user; `expiration` is unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    pub path: &'a str,
    pub operation: Operation,
    pub user: &'a str,
    pub expiration: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// Body text matches E2B envd's.
    #[error("invalid signature")]
    Invalid,
    #[error("signature is already expired")]
    Expired,
}

pub fn sign(scheme: Scheme, claims: &Claims<'_>, token: &str) -> String {
    match scheme {
        Scheme::E2b => {
            let mut raw = format!("{}:{}:{}:{}", claims.path, claims.operation.as_str(), claims.user, token);
            if let Some(exp) = claims.expiration {
                raw.push_str(&format!(":{exp}"));
            }
            format!("{E2B_PREFIX}{}", STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes())))
        }
        Scheme::SoulBox => {
            let mut mac = hmac_for(token);
            mac.update(soulbox_message(claims).as_bytes());
            format!("{SOULBOX_PREFIX}{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
        }
    }
}

/// Checks `signature` for `claims`, then that it has not expired at `now_unix`.
pub fn verify(signature: &str, claims: &Claims<'_>, token: &str, now_unix: i64) -> Result<Scheme, SignatureError> {
    let scheme = if signature.starts_with(SOULBOX_PREFIX) {
        Scheme::SoulBox
    } else if signature.starts_with(E2B_PREFIX) {
        Scheme::E2b
    } else {
        return Err(SignatureError::Invalid);
    };
    let expected = sign(scheme, claims, token);
    if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        return Err(SignatureError::Invalid);
    }
    if let Some(exp) = claims.expiration
        && exp < now_unix
    {
        return Err(SignatureError::Expired);
    }
    Ok(scheme)
}

fn soulbox_message(claims: &Claims<'_>) -> String {
    let mut msg = format!("{}:{}:{}", claims.path, claims.operation.as_str(), claims.user);
    if let Some(exp) = claims.expiration {
        msg.push_str(&format!(":{exp}"));
    }
    msg
}

fn hmac_for(token: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<i64>) -> Claims<'static> {
        Claims { path: "/home/user/a.txt", operation: Operation::Read, user: "user", expiration: exp }
    }

    #[test]
    fn e2b_scheme_matches_reference_formula() {
        // sha256("/home/user/a.txt:read:user:tok"), standard base64 without padding.
        let raw = "/home/user/a.txt:read:user:tok";
        let want = format!("v1_{}", STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes())));
        assert_eq!(sign(Scheme::E2b, &claims(None), "tok"), want);
        let with_exp = sign(Scheme::E2b, &claims(Some(1700000000)), "tok");
        let raw = "/home/user/a.txt:read:user:tok:1700000000";
        assert_eq!(with_exp, format!("v1_{}", STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))));
    }

    #[test]
    fn both_schemes_verify_and_bind_every_claim() {
        for scheme in [Scheme::E2b, Scheme::SoulBox] {
            let sig = sign(scheme, &claims(Some(200)), "tok");
            assert_eq!(verify(&sig, &claims(Some(200)), "tok", 100), Ok(scheme));
            assert_eq!(verify(&sig, &claims(Some(201)), "tok", 100), Err(SignatureError::Invalid));
            assert_eq!(verify(&sig, &claims(Some(200)), "other", 100), Err(SignatureError::Invalid));
            let mut write = claims(Some(200));
            write.operation = Operation::Write;
            assert_eq!(verify(&sig, &write, "tok", 100), Err(SignatureError::Invalid));
            assert_eq!(verify(&sig, &claims(Some(200)), "tok", 300), Err(SignatureError::Expired));
        }
    }

    #[test]
    fn soulbox_scheme_is_url_safe_hmac() {
        let sig = sign(Scheme::SoulBox, &claims(None), "tok");
        let body = sig.strip_prefix(SOULBOX_PREFIX).unwrap();
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
    }

    #[test]
    fn signature_checked_before_expiry() {
        assert_eq!(verify("v1_garbage", &claims(Some(1)), "tok", 100), Err(SignatureError::Invalid));
        assert_eq!(verify("nope", &claims(None), "tok", 100), Err(SignatureError::Invalid));
    }
}
