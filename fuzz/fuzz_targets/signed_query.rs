//! The query of a signed `/files` URL, as envd and the proxy read it: any bytes give a query or a clear error,
//! never a panic; a parsed query's claims, checked against a signature, never panic either; and what was parsed
//! survives being written out and read again (the proxy and envd see the same values).
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use soulbox_protocol::signature::{self, Operation, SignedQuery};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Ok(query) = SignedQuery::parse(Some(&raw)) else { return };
    for operation in [Operation::Read, Operation::Write] {
        if let Ok(claims) = query.claims(operation) {
            let sig = query.signature.as_deref().unwrap_or_default();
            let _ = signature::verify(sig, &claims, "fuzz-token", 1_700_000_000);
        }
    }
    let fields = [
        ("path", &query.path),
        ("username", &query.username),
        ("signature", &query.signature),
        ("signature_expiration", &query.signature_expiration),
        (signature::SANDBOX_ID_PARAM, &query.sandbox_id),
    ];
    let written: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC))))
        .collect();
    let again = SignedQuery::parse(Some(&written.join("&"))).expect("a written-out query parses");
    assert_eq!(again, query);
});
