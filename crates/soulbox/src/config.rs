//! Connection settings (seed feature 6): one place for the API URL, sandbox URL/domain, API key, request
//! timeout, redirects, retries and the signature scheme.

use std::time::Duration;

pub use soulbox_protocol::signature::Scheme as SignatureScheme;

/// Default E2B domain (sandboxes are then `https://49983-<id>.e2b.app`).
pub const DEFAULT_DOMAIN: &str = "e2b.app";
/// Default request timeout for every non-streaming call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of redirects followed.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

/// How HTTP redirects are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Follow up to this many (307/308 keep the method and body; the `X-API-Key` and `X-Access-Token` headers
    /// are sent again to the new location).
    Follow(usize),
    /// Return the 3xx answer as an error.
    Off,
}

/// Everything needed to reach a server. Build with [`ConnectionConfig::from_env`] and adjust with the
/// `with_*` methods.
///
/// Environment (the `SOULBOX_*` name wins over the `E2B_*` one): `SOULBOX_API_KEY`/`E2B_API_KEY`,
/// `SOULBOX_API_URL`/`E2B_API_URL`, `SOULBOX_SANDBOX_URL`/`E2B_SANDBOX_URL`, `SOULBOX_DOMAIN`/`E2B_DOMAIN`,
/// `SOULBOX_REQUEST_TIMEOUT_MS`, `SOULBOX_MAX_REDIRECTS` (`0` = off), `SOULBOX_SIGNATURE_SCHEME` (`v1` | `sb1`).
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Control-plane base URL, e.g. `http://127.0.0.1:3000` (default `https://api.<domain>`).
    pub api_url: String,
    /// One URL for every sandbox's agent (requests are then routed by the `E2b-Sandbox-Id` header). When unset,
    /// `https://49983-<sandboxID>.<domain>` is used.
    pub sandbox_url: Option<String>,
    /// Base domain; the create/connect response's `domain` wins when the server sends one.
    pub domain: String,
    /// `X-API-Key` for the control plane.
    pub api_key: Option<String>,
    /// Whole-request deadline for non-streaming calls (`None` = no limit). Streams use their own deadlines.
    pub request_timeout: Option<Duration>,
    pub redirects: Redirects,
    /// Retries of safe requests (GETs, and any request that never reached the server) on connection failures
    /// and 429/502/503/504, honouring `Retry-After`. `0` disables.
    pub retries: u32,
    /// Scheme of signed file URLs. `E2b` (`v1_`) is accepted by E2B and SoulBox agents alike; `SoulBox`
    /// (`sb1_`, an HMAC) only by SoulBox's.
    pub signature_scheme: SignatureScheme,
    /// Send the sandbox's `X-Access-Token` on every agent request (default on).
    pub send_access_token: bool,
    pub user_agent: String,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            api_url: format!("https://api.{DEFAULT_DOMAIN}"),
            sandbox_url: None,
            domain: DEFAULT_DOMAIN.to_owned(),
            api_key: None,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            redirects: Redirects::Follow(DEFAULT_MAX_REDIRECTS),
            retries: 3,
            signature_scheme: SignatureScheme::E2b,
            send_access_token: true,
            user_agent: format!("soulbox-rust-sdk/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

impl ConnectionConfig {
    /// Defaults overridden by the environment.
    pub fn from_env() -> Self {
        let mut c = ConnectionConfig::default();
        if let Some(d) = env(&["SOULBOX_DOMAIN", "E2B_DOMAIN"]) {
            c.domain = d;
        }
        c.api_url = env(&["SOULBOX_API_URL", "E2B_API_URL"]).unwrap_or_else(|| format!("https://api.{}", c.domain));
        c.sandbox_url = env(&["SOULBOX_SANDBOX_URL", "E2B_SANDBOX_URL"]);
        c.api_key = env(&["SOULBOX_API_KEY", "E2B_API_KEY"]);
        if let Some(ms) = env(&["SOULBOX_REQUEST_TIMEOUT_MS"]).and_then(|v| v.parse::<u64>().ok()) {
            c.request_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(n) = env(&["SOULBOX_MAX_REDIRECTS"]).and_then(|v| v.parse::<usize>().ok()) {
            c.redirects = if n == 0 { Redirects::Off } else { Redirects::Follow(n) };
        }
        if let Some(s) = env(&["SOULBOX_SIGNATURE_SCHEME"]) {
            c.signature_scheme = if s.starts_with("sb1") { SignatureScheme::SoulBox } else { SignatureScheme::E2b };
        }
        c
    }

    pub fn with_api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }
    pub fn with_sandbox_url(mut self, url: impl Into<String>) -> Self {
        self.sandbox_url = Some(url.into());
        self
    }
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }
    pub fn with_redirects(mut self, redirects: Redirects) -> Self {
        self.redirects = redirects;
        self
    }
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    pub fn with_signature_scheme(mut self, scheme: SignatureScheme) -> Self {
        self.signature_scheme = scheme;
        self
    }
    pub fn with_access_token_header(mut self, send: bool) -> Self {
        self.send_access_token = send;
        self
    }

    /// Agent base URL of a sandbox: the configured sandbox URL, else `https://49983-<id>.<domain>`.
    pub fn envd_url(&self, sandbox_id: &str, domain: Option<&str>) -> String {
        match &self.sandbox_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!(
                "https://{}-{sandbox_id}.{}",
                soulbox_protocol::ENVD_PORT,
                domain.filter(|d| !d.is_empty()).unwrap_or(&self.domain)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envd_url_rules() {
        let c = ConnectionConfig::default();
        assert_eq!(c.envd_url("abc", None), "https://49983-abc.e2b.app");
        assert_eq!(c.envd_url("abc", Some("x.test")), "https://49983-abc.x.test");
        let c = c.with_sandbox_url("http://127.0.0.1:3000/");
        assert_eq!(c.envd_url("abc", Some("x.test")), "http://127.0.0.1:3000");
    }
}
