//! Identifiers and secrets the control plane mints.

use rand::Rng;

/// envd access tokens: 32 random bytes as hex.
pub fn access_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn is_valid_sandbox_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_route_by_host() {
        assert!(is_valid_sandbox_id("i0abc9"));
        assert!(!is_valid_sandbox_id("has-dash") && !is_valid_sandbox_id("UPPER"));
        assert_eq!(access_token().len(), 64);
    }
}
