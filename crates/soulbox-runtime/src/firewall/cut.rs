//! Cutting the open TCP connections a new policy forbids (a live network update).
//!
//! The firewall alone stops a forbidden flow: its inbound packets are dropped and the sandbox's next
//! outbound packet is answered with a reset. A sandbox that only waits to read would still hang on
//! such a connection until its own timeouts, so when the sandbox's sockets live in the host kernel
//! (runc: its network namespace), the ones whose remote end the policy now forbids are destroyed
//! (`ss -K`, SOCK_DESTROY): the process sees the connection aborted at once. gVisor keeps its sockets
//! in its own network stack, where `ss` finds none; there the firewall's reset is the cut.
use super::{Firewall, cidr_contains, in_netns, is_private};
use crate::error::Result;
use crate::spec::NetworkPolicy;
use std::net::{Ipv4Addr, SocketAddr};

impl Firewall {
    /// Whether policy `p` lets a sandbox talk to `ip:port`: the same decision, in the same order, as
    /// the rules [`Firewall::policy_rules`] writes.
    pub(crate) fn allows(&self, p: &NetworkPolicy, ip: Ipv4Addr, port: u16) -> bool {
        let in_any = |cidrs: &[String]| cidrs.iter().any(|c| cidr_contains(c, ip));
        let dns = self.dns.contains(&ip) && port == 53;
        if !self.allow_private_egress && is_private(ip) && !dns {
            return false;
        }
        if p.egress_proxy.is_some() && !dns {
            // All of its TCP belongs to the egress gateway (and the proxy behind it): a direct flow is cut.
            return false;
        }
        if p.has_host_rules() {
            if port == 80 || port == 443 {
                // These belong to the egress gateway now: a direct flow from before the host rules is cut.
                return false;
            }
            if dns {
                return true;
            }
        }
        if in_any(&p.allow_out) {
            return true;
        }
        if in_any(&p.deny_out) || !p.allow_internet {
            return false;
        }
        dns || !is_private(ip)
    }

    /// Destroys the TCP connections in network namespace `netns` whose remote end `p` forbids; returns
    /// how many there were.
    pub async fn cut_forbidden(&self, netns: &str, p: &NetworkPolicy) -> Result<usize> {
        let listing = in_netns::run(netns, "ss", &["-H", "-t", "-n", "state", "established"], None).await?;
        let forbidden: Vec<SocketAddr> = String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(peer_of)
            .filter(|peer| match peer {
                SocketAddr::V4(v4) => !self.allows(p, *v4.ip(), v4.port()),
                // The firewall drops IPv6 for every sandbox.
                SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                    Some(v4) => !self.allows(p, v4, v6.port()),
                    None => !v6.ip().is_loopback(),
                },
            })
            .collect();
        if forbidden.is_empty() {
            return Ok(0);
        }
        let filter: Vec<String> = forbidden.iter().map(|a| format!("dst {a}")).collect();
        let filter = format!("( {} )", filter.join(" or "));
        in_netns::run(netns, "ss", &["-K", "-t", "-n", "state", "established", &filter], None).await?;
        tracing::info!(netns, connections = forbidden.len(), "network update: cut connections the new policy forbids");
        Ok(forbidden.len())
    }
}

/// The peer address of one `ss -H -t -n state established` line (`Recv-Q Send-Q Local Peer [Process]`).
fn peer_of(line: &str) -> Option<SocketAddr> {
    let peer = line.split_whitespace().nth(3)?;
    // Scoped IPv6 (`[fe80::1%eth0]:80`) does not parse and cannot be a remote the policy opened.
    peer.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::test_firewall;

    #[test]
    fn decisions_follow_the_rule_order() {
        let f = test_firewall(vec![Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(8, 8, 8, 8)], false);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let p = NetworkPolicy {
            allow_internet: true,
            allow_out: vec!["203.0.113.7".into()],
            deny_out: vec!["203.0.113.0/24".into()],
            ..Default::default()
        };
        assert!(f.allows(&p, ip("203.0.113.7"), 80), "allow wins over deny");
        assert!(!f.allows(&p, ip("203.0.113.8"), 80));
        assert!(f.allows(&p, ip("198.51.100.1"), 443), "internet on");
        assert!(!f.allows(&p, ip("169.254.169.254"), 80), "metadata service");
        assert!(
            f.allows(&p, ip("10.255.255.53"), 53) && !f.allows(&p, ip("10.255.255.53"), 80),
            "private DNS on 53 only"
        );
        let closed = NetworkPolicy { allow_internet: false, allow_out: vec![], deny_out: vec![], ..Default::default() };
        assert!(!f.allows(&closed, ip("198.51.100.1"), 443), "internet off");
        assert!(
            !f.allows(&closed, ip("8.8.8.8"), 53),
            "internet off closes the DNS servers too (the deny comes first)"
        );
        let named = NetworkPolicy { allow_hosts: vec!["good.test".into()], ..closed.clone() };
        assert!(!f.allows(&named, ip("203.0.113.7"), 443), "direct TLS is the gateway's once host rules exist");
        assert!(f.allows(&named, ip("8.8.8.8"), 53), "host rules keep the DNS servers reachable");
        let all = NetworkPolicy {
            allow_internet: false,
            allow_out: vec!["0.0.0.0/0".into()],
            deny_out: vec![],
            ..Default::default()
        };
        assert!(!f.allows(&all, ip("10.1.2.3"), 80), "allowOut cannot open private ranges");
    }

    #[test]
    fn ss_lines_give_their_peer() {
        assert_eq!(peer_of("0 0 10.77.0.2:40000 203.0.113.2:8081"), Some("203.0.113.2:8081".parse().unwrap()));
        assert_eq!(
            peer_of("0 0 [::ffff:10.77.0.2]:40000 [::ffff:203.0.113.2]:80 users:((\"nc\",pid=1,fd=3))"),
            Some("[::ffff:203.0.113.2]:80".parse().unwrap())
        );
        assert_eq!(peer_of("garbage"), None);
    }
}
