//! A sandbox's egress policy as the control plane hands it to a node and the node's firewall applies it.
//! (E2B's REST shape for the same settings, with its optional fields, is [`crate::api::SandboxNetworkConfig`].)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    /// E2B `allowInternetAccess` (default true at the API).
    pub allow_internet: bool,
    /// CIDRs always allowed (take precedence over deny and over internet off).
    #[serde(default)]
    pub allow_out: Vec<String>,
    /// CIDRs always denied.
    #[serde(default)]
    pub deny_out: Vec<String>,
    /// Host names (`api.example.com`, `*.example.com`) always allowed over HTTP and TLS: the node's egress
    /// gateway matches them against the request's `Host` / the TLS SNI (allow wins over every deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// Host names denied over HTTP and TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_hosts: Vec<String>,
    /// A SOCKS5 proxy all of the sandbox's outbound TCP is tunnelled through (after the lists are applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<SocksProxy>,
    /// Header rules (E2B's `rules`), in order: the egress gateway intercepts HTTP and TLS to matching hosts and
    /// sets these headers on every request, `${e2b.secrets.NAME}` replaced as the request leaves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HeaderRule>,
    /// E2B's `dnsServers`: where the egress gateway sends the DNS of a sandbox with host rules, and asks whether
    /// a name goes where a connection goes (empty: the node's DNS servers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<std::net::Ipv4Addr>,
}

/// One transform of E2B's `rules: {host: [{transform: {headers}}]}`: for requests to `host` (a host name, a
/// `*.` wildcard, or an IPv4 address or CIDR matched against the destination), set `headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    pub host: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// E2B's `egressProxy` as a node applies it: a SOCKS5 proxy by address, with optional RFC 1929 credentials.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocksProxy {
    /// `ip:port` (the control plane resolved a host name and checked the address).
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for SocksProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksProxy")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl NetworkPolicy {
    /// Internet on, no lists.
    pub fn open() -> Self {
        NetworkPolicy { allow_internet: true, ..Default::default() }
    }

    /// Whether host-name rules are in force: the sandbox's HTTP, TLS and DNS go through the node's egress gateway.
    pub fn has_host_rules(&self) -> bool {
        !self.allow_hosts.is_empty() || !self.deny_hosts.is_empty() || !self.rules.is_empty()
    }

    /// Whether any of the sandbox's traffic goes through the node's egress gateway (host rules, or a SOCKS5
    /// proxy, which takes all of its TCP).
    pub fn uses_gateway(&self) -> bool {
        self.has_host_rules() || self.egress_proxy.is_some()
    }
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How a header value names a secret: `${e2b.secrets.NAME}`.
const SECRET_OPEN: &str = "${e2b.secrets.";

/// A header value split at its secret placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuePart<'a> {
    Text(&'a str),
    Secret(&'a str),
}

/// `value` split into text and `${e2b.secrets.NAME}` placeholders, or why it is malformed (an unclosed or empty
/// placeholder, or another `${e2b.…}` placeholder, such as E2B's workload identity tokens, which SoulBox does not
/// mint).
pub fn header_value_parts(value: &str) -> Result<Vec<ValuePart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("${e2b.") {
        if at > 0 {
            parts.push(ValuePart::Text(&rest[..at]));
        }
        let placeholder = &rest[at..];
        let Some(name) = placeholder.strip_prefix(SECRET_OPEN) else {
            return Err(format!("{placeholder:?}: only ${{e2b.secrets.NAME}} placeholders are supported"));
        };
        let Some(end) = name.find('}') else { return Err(format!("{placeholder:?} is not closed")) };
        if end == 0 {
            return Err("an empty ${e2b.secrets.} placeholder".into());
        }
        parts.push(ValuePart::Secret(&name[..end]));
        rest = &name[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(ValuePart::Text(rest));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let p = NetworkPolicy { allow_internet: false, allow_out: vec!["1.1.1.1/32".into()], ..Default::default() };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"allowInternet":false,"allowOut":["1.1.1.1/32"],"denyOut":[]}"#);
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&json).unwrap(), p);
        // The lists may be left out; the switch may not.
        assert_eq!(serde_json::from_str::<NetworkPolicy>(r#"{"allowInternet":true}"#).unwrap(), NetworkPolicy::open());
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"allowOut":[]}"#).is_err());
        // Host rules only appear when there are some (older nodes read the same JSON as before).
        let hosts = NetworkPolicy { allow_hosts: vec!["*.example.com".into()], ..NetworkPolicy::open() };
        let json = serde_json::to_string(&hosts).unwrap();
        assert_eq!(json, r#"{"allowInternet":true,"allowOut":[],"denyOut":[],"allowHosts":["*.example.com"]}"#);
        assert!(hosts.has_host_rules() && !NetworkPolicy::open().has_host_rules());
        let proxy =
            SocksProxy { address: "203.0.113.9:1080".into(), password: Some("p4ss".into()), ..Default::default() };
        assert!(!format!("{proxy:?}").contains("p4ss"), "the password never reaches a log");
        let ruled = NetworkPolicy {
            rules: vec![HeaderRule { host: "api.test".into(), headers: [("a".into(), "b".into())].into() }],
            ..NetworkPolicy::open()
        };
        assert!(ruled.has_host_rules(), "header rules send HTTP and TLS through the gateway");
    }

    #[test]
    fn secret_placeholders() {
        use ValuePart::*;
        assert_eq!(header_value_parts("plain").unwrap(), [Text("plain")]);
        assert_eq!(
            header_value_parts("Bearer ${e2b.secrets.OPENAI}!").unwrap(),
            [Text("Bearer "), Secret("OPENAI"), Text("!")]
        );
        assert_eq!(header_value_parts("${e2b.secrets.a}${e2b.secrets.b}").unwrap(), [Secret("a"), Secret("b")]);
        assert_eq!(header_value_parts("").unwrap(), []);
        for bad in ["${e2b.secrets.x", "${e2b.secrets.}", "${e2b.identity.tokens.aws}"] {
            assert!(header_value_parts(bad).is_err(), "{bad}");
        }
        assert!(is_header_name("X-Api-Key") && !is_header_name("a b") && !is_header_name("") && !is_header_name("a:"));
        // Other `${…}` text is the user's own.
        assert_eq!(header_value_parts("${HOME}").unwrap(), [Text("${HOME}")]);
    }
}
