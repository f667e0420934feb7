//! Identifiers and secrets the control plane mints.

use rand::Rng;

/// envd access tokens: 32 random bytes as hex.
pub fn access_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random UUID-shaped id (lowercase hex), as E2B's build ids.
pub fn uuid_like() -> String {
    let t = access_token();
    format!("{}-{}-{}-{}-{}", &t[0..8], &t[8..12], &t[12..16], &t[16..20], &t[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_have_their_shapes() {
        assert_eq!(access_token().len(), 64);
        let u = uuid_like();
        assert_eq!(u.len(), 36);
        assert_eq!(u.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    }
}
