//! Identifiers and secrets the control plane mints.

use rand::Rng;
use rand::distr::Alphanumeric;

/// Sandbox ids: `i` + 20 lowercase alphanumerics, like E2B's (host routing needs `^[a-z0-9]+$`).
pub fn sandbox_id() -> String {
    let mut rng = rand::rng();
    let tail: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .map(|c| (c as char).to_ascii_lowercase())
        .take(20)
        .collect();
    format!("i{tail}")
}

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
        let id = sandbox_id();
        assert_eq!(id.len(), 21);
        assert!(is_valid_sandbox_id(&id));
        assert!(!is_valid_sandbox_id("has-dash") && !is_valid_sandbox_id("UPPER"));
        assert_eq!(access_token().len(), 64);
    }
}
