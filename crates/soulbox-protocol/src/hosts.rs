//! Host-name rules in a sandbox's egress lists (`allowOut: ["api.example.com", "*.example.com"]`): which entries
//! are host patterns, and which names they match. The control plane checks entries with [`is_pattern`]; the node's
//! egress gateway matches a request's `Host` or TLS SNI with [`matches`].

/// Longest DNS name.
const MAX_NAME: usize = 253;

/// Whether `entry` is a host name (`api.example.com`) or a wildcard for its subdomains (`*.example.com`): labels of
/// letters, digits and inner hyphens, at least two of them, case-insensitive; a wildcard only as the whole first
/// label. Addresses (all-numeric last label) are not host names.
pub fn is_pattern(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    is_name(name) && name.contains('.')
}

/// Whether `name` is a DNS host name (no wildcard, no trailing dot; a single label is allowed).
pub fn is_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let last_is_numeric = name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    !name.is_empty() && name.len() <= MAX_NAME && name.split('.').all(label_ok) && !last_is_numeric
}

/// `name` as the gateway compares it: lower case, without a trailing dot or a `:port`.
pub fn normalize(name: &str) -> String {
    let name = match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the (normalized) host `name` matches `pattern`: exactly, or for `*.example.com` any name ending in
/// `.example.com` (not `example.com` itself).
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            name.len() > domain.len() + 1 && name.ends_with(domain) && name[..name.len() - domain.len()].ends_with('.')
        }
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for ok in ["api.example.com", "*.example.com", "API.Example.Com", "a-b.c0.io", "xn--bcher-kva.example"] {
            assert!(is_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "com",
            "*.com.",
            "api.*.com",
            "-a.com",
            "a-.com",
            "a..com",
            "1.2.3.4",
            "10.0.0.0/8",
            "http://a.com",
            "a.com:443",
            "a b.com",
            "a_b.com",
            "**.a.com",
        ] {
            assert!(!is_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("api.example.com", "api.example.com"));
        assert!(matches("API.example.com", "api.example.com"));
        assert!(!matches("api.example.com", "xapi.example.com"));
        assert!(matches("*.example.com", "a.example.com") && matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"), "a wildcard is for subdomains");
        assert!(!matches("*.example.com", "badexample.com"), "label boundary");
        assert_eq!(normalize("API.Example.com.:8443"), "api.example.com");
        assert_eq!(normalize("example.com"), "example.com");
    }
}
