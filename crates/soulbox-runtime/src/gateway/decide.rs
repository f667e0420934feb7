//! What the egress gateway does with a connection: the sandbox's policy applied to the name it asks for (TLS SNI,
//! HTTP `Host`) and the address it connects to.
use crate::firewall::{Firewall, is_private};
use crate::spec::NetworkPolicy;
use soulbox_protocol::hosts;
use std::net::Ipv4Addr;

/// Why a connection was refused (logged; the sandbox just sees its connection closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A private, link-local, loopback or metadata address (without `allow_private_egress`), the pool, or an
    /// address of the node itself (the gateway connects from the node: it must not hand a sandbox the node's own
    /// services, which the firewall's `input` chain keeps from it).
    Private,
    /// The policy denies the name or the address.
    Denied,
    /// The name does not resolve to the address the connection goes to (a forged SNI or Host).
    Mismatch,
}

/// The verdict before DNS: `Ok(true)` when the name must be checked against the address, `Ok(false)` when the
/// address alone decided (no name).
pub(crate) fn verdict(
    fw: &Firewall,
    p: &NetworkPolicy,
    name: Option<&str>,
    dst: Ipv4Addr,
    port: u16,
) -> Result<bool, Refusal> {
    if !fw.allow_private_egress() && is_private(dst) || fw.in_pool(dst) || is_own_address(dst) {
        return Err(Refusal::Private);
    }
    let address_allowed = fw.allows(&without_hosts(p), dst, port);
    let Some(name) = name.map(hosts::normalize).filter(|n| hosts::is_name(n)) else {
        // No name to judge: the address alone, as the firewall would.
        return if address_allowed { Ok(false) } else { Err(Refusal::Denied) };
    };
    let named = |list: &[String]| list.iter().any(|pattern| hosts::matches(pattern, &name));
    let in_allow_out = p.allow_out.iter().any(|c| crate::firewall::cidr_contains(c, dst));
    // Allow wins over deny (E2B): an allowed name or address passes whatever is denied.
    if named(&p.allow_hosts) || in_allow_out {
        return Ok(true);
    }
    if named(&p.deny_hosts) || !address_allowed {
        return Err(Refusal::Denied);
    }
    Ok(true)
}

/// The DNS servers the gateway asks for a sandbox: its own (`Some`, those it may use: never a private address
/// without `allow_private_egress`, the pool, or the node itself, since the gateway asks from the node), the
/// runtime's (`Some(empty)`), or none at all (`None`: it named only servers it may not use; falling back to the
/// node's would answer what the sandbox did not ask for).
pub(crate) fn dns_servers(fw: &Firewall, p: &NetworkPolicy) -> Option<Vec<Ipv4Addr>> {
    let usable =
        |ip: &&Ipv4Addr| (fw.allow_private_egress() || !is_private(**ip)) && !fw.in_pool(**ip) && !is_own_address(**ip);
    let servers: Vec<Ipv4Addr> = p.dns_servers.iter().filter(usable).copied().collect();
    (servers.len() == p.dns_servers.len() || !servers.is_empty()).then_some(servers)
}

/// Whether `ip` is one of this machine's addresses (binding to it succeeds only then).
pub(crate) fn is_own_address(ip: Ipv4Addr) -> bool {
    ip.is_unspecified() || ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

fn without_hosts(p: &NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy { allow_hosts: vec![], deny_hosts: vec![], egress_proxy: None, rules: vec![], ..p.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeConfig;

    fn fw() -> Firewall {
        let mut cfg = RuntimeConfig::new("/nonexistent");
        cfg.dns = vec![];
        Firewall::new(&cfg)
    }

    #[test]
    fn names_and_addresses_in_e2b_order() {
        let f = fw();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let only_good = NetworkPolicy {
            allow_internet: true,
            allow_hosts: vec!["good.test".into(), "*.wild.test".into()],
            deny_out: vec!["0.0.0.0/0".into()],
            ..Default::default()
        };
        let out = ip("203.0.113.78");
        assert_eq!(verdict(&f, &only_good, Some("good.test"), out, 443), Ok(true));
        assert_eq!(verdict(&f, &only_good, Some("GOOD.test.:443"), out, 443), Ok(true));
        assert_eq!(verdict(&f, &only_good, Some("a.wild.test"), out, 80), Ok(true));
        assert_eq!(verdict(&f, &only_good, Some("wild.test"), out, 80), Err(Refusal::Denied));
        assert_eq!(verdict(&f, &only_good, Some("bad.test"), out, 443), Err(Refusal::Denied));
        assert_eq!(verdict(&f, &only_good, None, out, 443), Err(Refusal::Denied), "no name, denied address");
        // Private and metadata addresses never, whatever the name.
        assert_eq!(verdict(&f, &only_good, Some("good.test"), ip("169.254.169.254"), 80), Err(Refusal::Private));
        assert_eq!(verdict(&f, &only_good, Some("good.test"), ip("10.77.0.5"), 80), Err(Refusal::Private));
        // The machine's own addresses, even public ones an allowOut names.
        let own = NetworkPolicy { allow_out: vec!["0.0.0.0/0".into()], ..Default::default() };
        assert_eq!(verdict(&f, &own, None, ip("127.0.0.1"), 80), Err(Refusal::Private));
        assert!(is_own_address(ip("127.0.0.1")) && !is_own_address(ip("203.0.113.250")));
        // Deny by name, internet on: other names pass (DNS still checked), the denied one does not.
        let deny_bad =
            NetworkPolicy { allow_internet: true, deny_hosts: vec!["bad.test".into()], ..Default::default() };
        assert_eq!(verdict(&f, &deny_bad, Some("other.test"), out, 443), Ok(true));
        assert_eq!(verdict(&f, &deny_bad, Some("bad.test"), out, 443), Err(Refusal::Denied));
        assert_eq!(verdict(&f, &deny_bad, None, out, 443), Ok(false));
        // The sandbox's own DNS servers: public ones are asked, a private one never (nor the node's instead).
        let own = |servers: &[&str]| NetworkPolicy {
            dns_servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        };
        assert_eq!(dns_servers(&f, &own(&[])), Some(vec![]), "none named: the runtime's");
        assert_eq!(dns_servers(&f, &own(&["203.0.113.53"])), Some(vec![ip("203.0.113.53")]));
        assert_eq!(dns_servers(&f, &own(&["10.0.0.2", "203.0.113.53"])), Some(vec![ip("203.0.113.53")]));
        assert_eq!(dns_servers(&f, &own(&["10.0.0.2"])), None, "only a private one: no DNS at all");
        assert_eq!(dns_servers(&f, &own(&["127.0.0.1"])), None, "the node itself");
        // An allowed address wins over a denied name.
        let both = NetworkPolicy { allow_out: vec!["203.0.113.78/32".into()], ..deny_bad };
        assert_eq!(verdict(&f, &both, Some("bad.test"), out, 443), Ok(true));
    }
}
