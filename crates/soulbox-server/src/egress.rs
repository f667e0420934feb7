//! Checks of a sandbox's egress lists before any node sees them: every entry an IPv4 address or CIDR or a host
//! name (split into the node policy's address lists and host lists), and which `allowOut` entries need the server setting `allow_private_egress`
//! (issue 11); and which E2B network options SoulBox refuses because it does not carry them out yet.
//!
//! A sandbox's firewall drops private, link-local and metadata destinations (the runtime's `PRIVATE_RANGES` in
//! `soulbox-runtime/src/firewall.rs`) before its `allowOut` accepts unless the node runs with
//! `allow_private_egress`. So that a create asking to open such a range is told why instead of silently getting
//! a sandbox that cannot reach it, the API refuses it with 400 naming the setting. Internet-wide entries
//! (`0.0.0.0/0`, `0.0.0.0/1`, `128.0.0.0/1`) stay allowed: they open the internet, and the firewall's earlier
//! drop keeps the private ranges closed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use soulbox_protocol::api::{EgressProxy, NetworkRule};

use crate::node::NetworkPolicy;
use soulbox_protocol::{HeaderRule, SocksProxy};

/// The runtime firewall's private/link-local/metadata/multicast/reserved set: one definition for both.
pub use soulbox_runtime::firewall::PRIVATE_RANGES;

/// Entries this short are internet-wide: allowed without the setting.
const INTERNET_WIDE_MAX_PREFIX: u8 = 1;

/// `a.b.c.d[/len]` → the first and last address, as integers; `None` when it is not an IPv4 CIDR (the runtime
/// refuses those with its own message).
fn range(cidr: &str) -> Option<(u32, u32, u8)> {
    let (addr, len) = match cidr.trim().split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()?),
        None => (cidr.trim(), 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    let first = u32::from(addr) & mask;
    Some((first, first | !mask, len))
}

/// The private range `cidr` overlaps, when it needs `allow_private_egress` to be opened.
pub fn private_range_opened_by(cidr: &str) -> Option<String> {
    let (first, last, len) = range(cidr)?;
    if len <= INTERNET_WIDE_MAX_PREFIX {
        return None;
    }
    PRIVATE_RANGES.iter().find_map(|(net, plen)| {
        let (p_first, p_last, _) = range(&format!("{net}/{plen}"))?;
        (first <= p_last && p_first <= last).then(|| format!("{net}/{plen}"))
    })
}

/// E2B network options SoulBox does not carry out yet, refused with a message that says so instead of a sandbox
/// that silently ignores them (a proxy meant to be reached over TLS would be spoken to in the clear).
pub fn unsupported(proxy: Option<&EgressProxy>) -> Option<String> {
    if proxy.is_some_and(|p| p.tls.is_some()) {
        return Some("egressProxy.tls (TLS to the SOCKS5 proxy) is not supported by SoulBox yet".into());
    }
    None
}

/// Most hosts with rules, and most headers a sandbox's rules set in all.
const MAX_RULE_HOSTS: usize = 100;
const MAX_RULE_HEADERS: usize = 200;
/// Longest header value in a rule (before secrets are filled in).
const MAX_RULE_VALUE: usize = 8 * 1024;

/// E2B's `rules` (`{host: [{transform: {headers}}]}`) as the node's policy takes them, in order, or why they are
/// refused: each host a host name, `*.` wildcard or IPv4 address/CIDR; each header a valid name with a value
/// whose only `${e2b.…}` placeholders are `${e2b.secrets.NAME}`. (Whether the named secrets exist is checked when a
/// request leaves: a secret may be created after the sandbox.)
pub fn header_rules(rules: Option<&BTreeMap<String, Vec<NetworkRule>>>) -> Result<Vec<HeaderRule>, String> {
    let Some(rules) = rules else { return Ok(vec![]) };
    if rules.len() > MAX_RULE_HOSTS {
        return Err(format!("rules: at most {MAX_RULE_HOSTS} hosts"));
    }
    let mut out = Vec::new();
    let mut headers_in_all = 0;
    for (host, list) in rules {
        let key = host.trim().to_ascii_lowercase();
        if range(&key).is_none() && !soulbox_protocol::hosts::is_pattern(&key) {
            return Err(format!(
                "rules host {host:?} is neither a host name (`api.example.com`, `*.example.com`) nor an IPv4 address or CIDR"
            ));
        }
        for rule in list {
            let headers = rule.transform.as_ref().and_then(|t| t.headers.clone()).unwrap_or_default();
            headers_in_all += headers.len();
            for (name, value) in &headers {
                if !soulbox_protocol::network::is_header_name(name) {
                    return Err(format!("rules for {host}: {name:?} is not an HTTP header name"));
                }
                if value.len() > MAX_RULE_VALUE || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    return Err(format!(
                        "rules for {host}: the value of {name} must be at most {MAX_RULE_VALUE} bytes without control characters"
                    ));
                }
                soulbox_protocol::network::header_value_parts(value)
                    .map_err(|e| format!("rules for {host}: the value of {name}: {e}"))?;
            }
            out.push(HeaderRule { host: key.clone(), headers });
        }
    }
    if headers_in_all > MAX_RULE_HEADERS {
        return Err(format!("rules: at most {MAX_RULE_HEADERS} headers in all"));
    }
    Ok(out)
}

/// A node policy's rules in E2B's shape (what `GET /sandboxes/{id}` shows; the values as given, placeholders and
/// all, never a secret's value).
pub fn rules_view(rules: &[HeaderRule]) -> Option<BTreeMap<String, Vec<NetworkRule>>> {
    if rules.is_empty() {
        return None;
    }
    let mut view: BTreeMap<String, Vec<NetworkRule>> = BTreeMap::new();
    for rule in rules {
        view.entry(rule.host.clone()).or_default().push(NetworkRule {
            transform: Some(soulbox_protocol::api::NetworkTransform { headers: Some(rule.headers.clone()) }),
        });
    }
    Some(view)
}

/// Most DNS servers a sandbox may name (E2B's limit).
const MAX_DNS_SERVERS: usize = 10;

/// E2B's `dnsServers`: IPv4 addresses, at most ten; private, link-local and metadata ones only with
/// `allow_private_egress` (the node's gateway asks them from the node).
pub fn dns_servers(servers: &[String], allow_private: bool) -> Result<Vec<Ipv4Addr>, String> {
    if servers.len() > MAX_DNS_SERVERS {
        return Err(format!("at most {MAX_DNS_SERVERS} dnsServers"));
    }
    servers
        .iter()
        .map(|s| {
            let ip: Ipv4Addr =
                s.trim().parse().map_err(|_| format!("dnsServers entry {s:?} is not an IPv4 address"))?;
            if !allow_private && private_range_opened_by(&ip.to_string()).is_some() {
                return Err(format!(
                    "dnsServers entry {ip} is a private, link-local or metadata address (that needs the server \
                     setting allow_private_egress)"
                ));
            }
            Ok(ip)
        })
        .collect()
}

/// Longest SOCKS5 user name or password (RFC 1929: one length byte).
const MAX_SOCKS_CREDENTIAL: usize = 255;

/// E2B's `egressProxy` as the node takes it, before its host is resolved: `address` is `host:port`.
pub fn socks_proxy(proxy: &EgressProxy) -> Result<SocksProxy, String> {
    let Some((host, port)) = proxy.address.rsplit_once(':') else {
        return Err(format!("egressProxy.address {:?} must be host:port", proxy.address));
    };
    if port.parse::<u16>().map_or(true, |p| p == 0)
        || !(host.parse::<Ipv4Addr>().is_ok() || soulbox_protocol::hosts::is_name(host))
    {
        return Err(format!(
            "egressProxy.address {:?} must be host:port (an IPv4 address or a host name)",
            proxy.address
        ));
    }
    let too_long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.len() > MAX_SOCKS_CREDENTIAL);
    if too_long(&proxy.username) || too_long(&proxy.password) {
        return Err(format!("egressProxy username and password are at most {MAX_SOCKS_CREDENTIAL} bytes"));
    }
    if proxy.password.is_some() && proxy.username.is_none() {
        return Err("egressProxy.password needs a username".into());
    }
    Ok(SocksProxy {
        address: proxy.address.clone(),
        username: proxy.username.clone(),
        password: proxy.password.clone(),
    })
}

/// Most entries in `allowOut` and `denyOut` together (the runtime's limit).
const MAX_ENTRIES: usize = 1000;

/// Every `allowOut`/`denyOut` entry must be an IPv4 address or CIDR, or a host name (`api.example.com`) or a
/// wildcard for its subdomains (`*.example.com`), which the node's egress gateway matches on HTTP and TLS.
pub fn check_entries(allow_out: &[String], deny_out: &[String]) -> Result<(), String> {
    if allow_out.len() + deny_out.len() > MAX_ENTRIES {
        return Err(format!("at most {MAX_ENTRIES} allowOut and denyOut entries in all"));
    }
    for (list, entry) in allow_out.iter().map(|e| ("allowOut", e)).chain(deny_out.iter().map(|e| ("denyOut", e))) {
        if range(entry).is_some() || soulbox_protocol::hosts::is_pattern(entry) {
            continue;
        }
        return Err(format!(
            "{list} entry {entry:?} is neither an IPv4 address or CIDR nor a host name (`api.example.com`, \
             `*.example.com`); IPv6 is always blocked"
        ));
    }
    Ok(())
}

/// The node's policy for E2B's lists (already checked): addresses and CIDRs for the firewall, host names for the
/// egress gateway (lower-cased).
pub fn policy(allow_internet: bool, allow_out: &[String], deny_out: &[String]) -> NetworkPolicy {
    let (allow_out, allow_hosts) = split(allow_out);
    let (deny_out, deny_hosts) = split(deny_out);
    NetworkPolicy { allow_internet, allow_out, deny_out, allow_hosts, deny_hosts, ..Default::default() }
}

/// E2B's lists for a node's policy: addresses first, then host names (what `GET /sandboxes/{id}` shows).
pub fn entries(p: &NetworkPolicy) -> (Vec<String>, Vec<String>) {
    let allow = p.allow_out.iter().chain(&p.allow_hosts).cloned().collect();
    let deny = p.deny_out.iter().chain(&p.deny_hosts).cloned().collect();
    (allow, deny)
}

fn split(entries: &[String]) -> (Vec<String>, Vec<String>) {
    let (cidrs, hosts): (Vec<&String>, Vec<&String>) = entries.iter().partition(|e| range(e).is_some());
    (cidrs.into_iter().cloned().collect(), hosts.into_iter().map(|h| h.trim().to_ascii_lowercase()).collect())
}

/// Checks a create's `allowOut` when the server does not allow private egress: the error names the entry, the
/// range it opens and the setting.
pub fn check_allow_out(allow_out: &[String]) -> Result<(), String> {
    for entry in allow_out {
        if let Some(private) = private_range_opened_by(entry) {
            return Err(format!(
                "allowOut {entry} opens the private, link-local or metadata range {private}: that needs the server setting \
                 allow_private_egress = true"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_link_local_and_metadata_entries_need_the_setting() {
        for (entry, opens) in [
            ("169.254.169.254/32", "169.254.0.0/16"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/32", "10.0.0.0/8"),
            ("172.20.0.0/16", "172.16.0.0/12"),
            ("172.0.0.0/8", "172.16.0.0/12"),
            ("192.168.1.0/24", "192.168.0.0/16"),
            ("100.100.100.200", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("224.0.0.251", "224.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("8.0.0.0/4", "0.0.0.0/8"),
            ("64.0.0.0/2", "100.64.0.0/10"),
        ] {
            assert_eq!(private_range_opened_by(entry).as_deref(), Some(opens), "{entry}");
        }
        let err = check_allow_out(&["1.1.1.1/32".into(), "169.254.169.254/32".into()]).unwrap_err();
        assert!(err.contains("169.254.169.254/32") && err.contains("allow_private_egress"), "{err}");
    }

    #[test]
    fn unsupported_options_are_named() {
        let tls = EgressProxy { tls: Some(Default::default()), ..Default::default() };
        assert!(unsupported(Some(&tls)).unwrap().contains("egressProxy.tls"));
        assert_eq!(unsupported(Some(&EgressProxy::default())), None);
        assert_eq!(unsupported(None), None);
    }

    #[test]
    fn header_rules_are_checked_and_shown_back() {
        let rule = |headers: &[(&str, &str)]| NetworkRule {
            transform: Some(soulbox_protocol::api::NetworkTransform {
                headers: Some(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
        };
        let rules: BTreeMap<String, Vec<NetworkRule>> = [
            ("API.example.com".to_string(), vec![rule(&[("Authorization", "Bearer ${e2b.secrets.OPENAI}")])]),
            ("203.0.113.0/24".to_string(), vec![rule(&[("x-a", "1")]), rule(&[("x-b", "2")])]),
        ]
        .into();
        let got = header_rules(Some(&rules)).unwrap();
        assert_eq!(
            got.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
            ["203.0.113.0/24", "203.0.113.0/24", "api.example.com"]
        );
        let view = rules_view(&got).unwrap();
        assert_eq!(view["203.0.113.0/24"].len(), 2);
        assert_eq!(view["api.example.com"][0], rules["API.example.com"][0]);
        assert_eq!(header_rules(None).unwrap(), vec![]);
        assert_eq!(rules_view(&[]), None);
        for (host, headers) in [
            ("not a host", vec![("a", "b")]),
            ("api.example.com", vec![("bad header", "b")]),
            ("api.example.com", vec![("a", "line\nbreak")]),
            ("api.example.com", vec![("a", "${e2b.identity.tokens.aws}")]),
            ("api.example.com", vec![("a", "${e2b.secrets.open")]),
        ] {
            let bad: BTreeMap<String, Vec<NetworkRule>> = [(host.to_string(), vec![rule(&headers)])].into();
            assert!(header_rules(Some(&bad)).is_err(), "{host} {headers:?}");
        }
    }

    #[test]
    fn dns_servers_are_few_public_ipv4_addresses() {
        assert_eq!(dns_servers(&["8.8.8.8".into()], false), Ok(vec![Ipv4Addr::new(8, 8, 8, 8)]));
        assert!(dns_servers(&["dns.google".into()], false).is_err());
        assert!(dns_servers(&vec!["1.1.1.1".into(); 11], false).is_err());
        let err = dns_servers(&["10.0.0.2".into()], false).unwrap_err();
        assert!(err.contains("allow_private_egress"), "{err}");
        assert!(dns_servers(&["10.0.0.2".into()], true).is_ok());
    }

    #[test]
    fn socks_proxies_are_host_port_with_sane_credentials() {
        let p = |address: &str, user: Option<&str>, password: Option<&str>| EgressProxy {
            address: address.into(),
            username: user.map(Into::into),
            password: password.map(Into::into),
            tls: None,
        };
        assert!(socks_proxy(&p("203.0.113.9:1080", Some("u"), Some("p"))).is_ok());
        assert!(socks_proxy(&p("proxy.example.com:1080", None, None)).is_ok());
        for bad in [
            p("203.0.113.9", None, None),
            p("203.0.113.9:0", None, None),
            p("a b:1", None, None),
            p("x.com:1080", None, Some("p")),
            p("x.com:1080", Some(&"u".repeat(256)), None),
        ] {
            assert!(socks_proxy(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_are_addresses_or_host_names() {
        let ok = ["1.1.1.1".to_string(), "0.0.0.0/0".into(), "api.example.com".into(), "*.Example.COM".into()];
        assert!(check_entries(&ok, &["203.0.113.0/24".into()]).is_ok());
        for bad in ["::/0", "10.0.0.0/33", "", "a b", "*", "*.com.", "api.*.com", "http://x.com", "x.com:443"] {
            let err = check_entries(&[bad.into()], &[]).unwrap_err();
            assert!(err.contains("neither"), "{bad}: {err}");
        }
        assert!(check_entries(&vec!["1.1.1.1".into(); 1001], &[]).is_err());
        let p = policy(true, &ok, &["0.0.0.0/0".into(), "bad.example.com".into()]);
        assert_eq!(p.allow_out, ["1.1.1.1", "0.0.0.0/0"]);
        assert_eq!(p.allow_hosts, ["api.example.com", "*.example.com"]);
        assert_eq!(
            (p.deny_out.as_slice(), p.deny_hosts.as_slice()),
            (&["0.0.0.0/0".to_string()][..], &["bad.example.com".to_string()][..])
        );
        assert_eq!(entries(&p).0, ["1.1.1.1", "0.0.0.0/0", "api.example.com", "*.example.com"]);
    }

    #[test]
    fn public_and_internet_wide_entries_do_not() {
        for entry in [
            "1.1.1.1/32",
            "8.8.8.0/24",
            "203.0.113.0/24",
            "11.0.0.0/8",
            "172.32.0.0/11",
            "0.0.0.0/0",
            "0.0.0.0/1",
            "128.0.0.0/1",
        ] {
            assert_eq!(private_range_opened_by(entry), None, "{entry}");
        }
        // Not IPv4 CIDRs: left to the runtime's validation.
        for entry in ["::/0", "10.0.0.0/33", "example.com"] {
            assert_eq!(private_range_opened_by(entry), None, "{entry}");
        }
        assert!(check_allow_out(&["0.0.0.0/0".into(), "1.1.1.1".into()]).is_ok());
    }
}
