//! Signed file URLs: the signature, path, user and expiration all come from a URL anyone can craft. Checking
//! arbitrary values must never panic or accept a signature made with another token; a signature made for the
//! claims with the right token is always accepted (both schemes), and rejected once expired.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soulbox_protocol::signature::{self, Claims, Operation, Scheme, SignatureError};

const TOKEN: &str = "fuzz-access-token";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // signature \n path \n user \n expiration \n operation
    let mut fields = text.split('\n');
    let sig = fields.next().unwrap_or_default();
    let path = fields.next().unwrap_or_default();
    let user = fields.next().unwrap_or_default();
    let expiration = fields.next().and_then(|e| e.trim().parse::<i64>().ok());
    let operation = if fields.next().is_some_and(|o| o.starts_with('w')) { Operation::Write } else { Operation::Read };
    let claims = Claims { path, operation, user, expiration };
    let now = 1_700_000_000;

    let _ = signature::verify(sig, &claims, TOKEN, now);
    for scheme in [Scheme::E2b, Scheme::SoulBox] {
        let good = signature::sign(scheme, &claims, TOKEN);
        match signature::verify(&good, &claims, TOKEN, now) {
            Ok(s) => assert_eq!(s, scheme),
            Err(SignatureError::Expired) => assert!(expiration.is_some_and(|e| e < now)),
            Err(e) => panic!("a genuine signature was refused: {e}"),
        }
        assert!(signature::verify(&good, &claims, "another-token", now).is_err());
    }
});
