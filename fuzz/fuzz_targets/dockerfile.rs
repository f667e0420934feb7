//! The Dockerfile front end reads what any API caller or CLI user sends. Any text (and build arguments taken
//! from the input) must give a recipe or a line-numbered error, never a panic; a recipe it gives is one the
//! server can take as JSON.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use soulbox_protocol::template::dockerfile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line, when it looks like `#args k=v k2=v2`, supplies --build-arg values.
    let mut args = BTreeMap::new();
    if let Some(rest) = text.lines().next().and_then(|l| l.strip_prefix("#args ")) {
        for pair in rest.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                args.insert(k.to_string(), v.to_string());
            }
        }
    }
    match dockerfile::parse(&text, &args) {
        Ok(recipe) => {
            let json = serde_json::to_vec(&recipe).expect("a parsed recipe serializes");
            let back: soulbox_protocol::template::Recipe = serde_json::from_slice(&json).expect("and parses back");
            assert_eq!(back, recipe);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
