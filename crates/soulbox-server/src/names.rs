//! Naming rules of the control plane, in one place: template names and tags (`name:tag`), the runtime templates
//! builds are registered as, COPY files hashes, sandbox ids and the headers that route traffic to a sandbox.
//! Pure functions: the API checks input with them, the lifecycle resolves names with them, the proxy and the
//! node agent route with them.

use http::HeaderMap;
use soulbox_protocol::ENVD_PORT;

/// The tag a plain template name means.
pub const DEFAULT_TAG: &str = "default";

/// `name` or `name:tag` → (name, tag), the tag `default` when absent.
pub fn split_tag(full: &str) -> (&str, &str) {
    match full.split_once(':') {
        Some((n, t)) => (n, t),
        None => (full, DEFAULT_TAG),
    }
}

/// The runtime template a build is registered as, and which runtime templates are internal (builds and build
/// steps): the build engine's rules.
pub use soulbox_templates::{build_template_name, is_internal_template, is_valid_files_hash};

/// A name a team may give a template: the runtime's template name rules, and not an internal one.
pub fn is_valid_template_name(name: &str) -> bool {
    soulbox_runtime::template::check_name(name).is_ok() && !is_internal_template(name)
}

/// Tags: the characters of template names, at most 64.
pub fn is_valid_tag(tag: &str) -> bool {
    soulbox_runtime::template::check_name(tag).is_ok()
}

/// Sandbox ids as they appear in hosts (`<port>-<id>.<domain>`): lowercase letters and digits.
pub fn is_valid_sandbox_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `E2b-Sandbox-Id` (+ `E2b-Sandbox-Port`, envd's port when absent or not a port): where a request with
/// E2B's routing headers goes. The id is taken as sent; the lookup decides whether it exists.
pub fn sandbox_route(headers: &HeaderMap) -> Option<(String, u16)> {
    let id = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok())?;
    let port =
        headers.get("e2b-sandbox-port").and_then(|v| v.to_str().ok()).and_then(|p| p.parse().ok()).unwrap_or(ENVD_PORT);
    Some((id.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_internal_names() {
        assert_eq!(split_tag("app"), ("app", "default"));
        assert_eq!(split_tag("app:v1"), ("app", "v1"));
        assert_eq!(build_template_name("b1"), "sbb-b1");
        assert!(
            is_internal_template("sbb-b1")
                && is_internal_template("sbbuild-x")
                && is_internal_template("sbfork-1")
                && !is_internal_template("sb-x")
        );
        assert!(
            is_valid_template_name("my-app.1") && !is_valid_template_name("sbb-x") && !is_valid_template_name("a b")
        );
        assert!(is_valid_tag("v1") && !is_valid_tag("bad tag"));
    }

    #[test]
    fn hashes_and_ids() {
        assert!(is_valid_files_hash("abcDEF09") && !is_valid_files_hash("") && !is_valid_files_hash("../x"));
        assert!(!is_valid_files_hash(&"a".repeat(129)));
        assert!(is_valid_sandbox_id("i0abc9"));
        assert!(!is_valid_sandbox_id("has-dash") && !is_valid_sandbox_id("UPPER"));
    }

    #[test]
    fn routing_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(sandbox_route(&h), None);
        h.insert("e2b-sandbox-id", "iabc".parse().unwrap());
        assert_eq!(sandbox_route(&h), Some(("iabc".into(), ENVD_PORT)));
        h.insert("e2b-sandbox-port", "8080".parse().unwrap());
        assert_eq!(sandbox_route(&h), Some(("iabc".into(), 8080)));
        h.insert("e2b-sandbox-port", "nope".parse().unwrap());
        assert_eq!(sandbox_route(&h), Some(("iabc".into(), ENVD_PORT)));
    }
}
