//! The per-sandbox secret only the node knows: envd inside answers nothing without it (issue 11).
//!
//! Generated at create, passed to envd at every boot inside its init configuration (never written into the
//! sandbox's filesystem, so no snapshot or template carries it), kept in the sandbox's record (0600) so that it
//! survives pause/resume, stop-to-disk/start, a runtime restart and re-adoption. The runtime keeps every
//! sandbox's secret in memory as well, for the proxy's hot path ([`crate::Runtime::envd_secret`]).

use rand::Rng;
use serde::{Deserialize, Serialize};

/// 32 random bytes as hex. Its `Debug` never shows the value, so it cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvdSecret(String);

impl EnvdSecret {
    pub fn generate() -> EnvdSecret {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        EnvdSecret(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The value, for the one place that needs it: the header of a request to this sandbox's envd.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for EnvdSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvdSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_hex_and_never_printed() {
        let (a, b) = (EnvdSecret::generate(), EnvdSecret::generate());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", a.expose()));
    }
}
