//! The node's secret for envd (issue 11): only the node that started a sandbox may talk to its envd.
//!
//! The node runtime generates a random secret per sandbox and passes it at boot inside the init configuration
//! (`SOULBOX_ENVD_INIT`, field [`INIT_FIELD`]). envd then refuses every request, `/health` included, that does
//! not carry it in [`HEADER`]. The proxies strip any client copy of the header and add the real one only on
//! requests to envd's port; envd marks its refusal with [`REFUSED_HEADER`] so a proxy can tell "this envd is
//! not the one the secret belongs to" (answered as E2B's 502 "sandbox not found") from an ordinary 401/403.
//! An envd started without a secret (standalone, as the compatibility suite runs it) checks nothing.

/// Request header carrying the sandbox's secret from its node to envd.
pub const HEADER: &str = "x-soulbox-envd-secret";

/// Field of envd's init JSON (SoulBox's extension of E2B's `/init` body) that carries the secret at boot.
/// Only the boot configuration may set it: envd ignores the field in `POST /init`.
pub const INIT_FIELD: &str = "envdSecret";

/// Response header envd sets (value [`REFUSED_VALUE`]) when it refuses a request for a missing or wrong secret.
pub const REFUSED_HEADER: &str = "x-soulbox-envd-refused";
pub const REFUSED_VALUE: &str = "secret";
