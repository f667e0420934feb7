//! The constant sets every sandbox chain uses (private ranges, the DNS servers, `{ tcp, udp }`, the gateway's
//! ports), declared once as named sets of the host table.
//!
//! Why: written inline, each `{ … }` in a rule is an anonymous set of its own in the kernel — 8–12 per sandbox.
//! Before any transaction that adds or deletes a map element (every create and kill), nft 1.0.x fetches the
//! elements of every set in the table, one netlink dump per set, and the kernel looks each set up by name in a
//! list: O(sets²) per create. Measured in a netns with 1,000 sandboxes' chains: one `add element` took 740 ms
//! with inline sets and 10 ms with named ones. With named sets a sandbox with the default policy adds no set at
//! all; a user's allowOut/denyOut lists stay inline (they differ per sandbox).
//!
//! The sets are `flags constant`: while a rule uses them the kernel refuses to add, delete or flush their
//! elements (EBUSY), so they are as fixed as the inline sets they replace.
//!
//! The in-netns guard ([`super::guard`]) keeps the sets inline: its table is one per namespace and small.
use super::{Firewall, PRIVATE_RANGES, is_private};
use std::net::Ipv4Addr;

/// How a rule names a constant set: by its name in the host table, or written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetStyle {
    Named,
    Literal,
}

/// The constant sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Const {
    /// [`PRIVATE_RANGES`].
    Private,
    /// The runtime's DNS servers.
    Dns,
    /// Those of the DNS servers that lie in a private range (exempt from its drop on port 53).
    PrivateDns,
    TcpUdp,
    /// [`super::GATEWAY_PORTS`]: what the egress gateway judges by name.
    GatewayPorts,
}

const ALL: [Const; 5] = [Const::Private, Const::Dns, Const::PrivateDns, Const::TcpUdp, Const::GatewayPorts];

impl Const {
    fn name(self) -> &'static str {
        match self {
            Const::Private => "private",
            Const::Dns => "dns",
            Const::PrivateDns => "dns_private",
            Const::TcpUdp => "tcp_udp",
            Const::GatewayPorts => "gateway_ports",
        }
    }

    /// The set's `type …; flags …;`.
    fn decl(self) -> &'static str {
        match self {
            Const::Private => "type ipv4_addr; flags constant, interval;",
            Const::Dns | Const::PrivateDns => "type ipv4_addr; flags constant;",
            Const::TcpUdp => "type inet_proto; flags constant;",
            Const::GatewayPorts => "type inet_service; flags constant;",
        }
    }
}

fn private_set() -> String {
    let v: Vec<String> = PRIVATE_RANGES.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    format!("{{ {} }}", v.join(", "))
}

fn addr_set(addrs: &[Ipv4Addr]) -> String {
    let v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

impl Firewall {
    fn private_dns(&self) -> Vec<Ipv4Addr> {
        self.dns.iter().copied().filter(|a| is_private(*a)).collect()
    }

    /// The set written out (`{ a, b }`); `None` when it is empty (no rule refers to it then).
    fn literal(&self, c: Const) -> Option<String> {
        match c {
            Const::Private => Some(private_set()),
            Const::Dns => (!self.dns.is_empty()).then(|| addr_set(&self.dns)),
            Const::PrivateDns => {
                let v = self.private_dns();
                (!v.is_empty()).then(|| addr_set(&v))
            }
            Const::TcpUdp => Some("{ tcp, udp }".into()),
            Const::GatewayPorts => Some(super::GATEWAY_PORTS.into()),
        }
    }

    /// What a rule writes for set `c`: `@name`, or the set written out (empty when the set is).
    pub(crate) fn set(&self, style: SetStyle, c: Const) -> String {
        match style {
            SetStyle::Named => format!("@{}", c.name()),
            SetStyle::Literal => self.literal(c).unwrap_or_default(),
        }
    }

    /// `add set` lines for the host table `t` (each set that is not empty).
    pub(crate) fn sets_script(&self, t: &str) -> String {
        debug_assert!(!PRIVATE_RANGES.is_empty());
        let mut s = String::new();
        for c in ALL {
            if let Some(elements) = self.literal(c) {
                s += &format!("add set inet {t} {} {{ {} elements = {elements}; }}\n", c.name(), c.decl());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::Direction;
    use crate::firewall::test_firewall;
    use crate::spec::NetworkPolicy;

    /// Named and written-out rules are the same rules once each `@name` is replaced by the set's elements: the
    /// host table and the guard decide alike.
    #[test]
    fn named_sets_say_what_the_written_out_ones_say() {
        let policies = [
            NetworkPolicy::open(),
            NetworkPolicy { allow_internet: false, allow_out: vec!["8.8.8.8".into()], ..Default::default() },
            NetworkPolicy { allow_hosts: vec!["example.com".into()], ..NetworkPolicy::open() },
        ];
        for dns in
            [vec![], vec![Ipv4Addr::new(8, 8, 8, 8)], vec![Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(1, 1, 1, 1)]]
        {
            let f = test_firewall(dns.clone(), false);
            for p in &policies {
                for dir in [Direction::Out, Direction::In] {
                    let named = f.policy_rules(p, dir, "drop", SetStyle::Named).unwrap();
                    let literal = f.policy_rules(p, dir, "drop", SetStyle::Literal).unwrap();
                    let mut expanded = named.clone();
                    // Longest name first: `@dns` is a prefix of `@dns_private`.
                    let mut by_length = ALL;
                    by_length.sort_by_key(|c| std::cmp::Reverse(c.name().len()));
                    for c in by_length {
                        for r in &mut expanded {
                            *r = r.replace(&format!("@{}", c.name()), &f.literal(c).unwrap_or_default());
                        }
                    }
                    assert_eq!(expanded, literal, "dns {dns:?}, {p:?}");
                    // Every set a rule names is declared.
                    let script = f.sets_script("t");
                    for r in &named {
                        for c in ALL.into_iter().filter(|c| r.contains(&format!("@{} ", c.name()))) {
                            assert!(script.contains(&format!("add set inet t {} ", c.name())), "{c:?} in {script}");
                        }
                    }
                }
            }
        }
    }

    /// A sandbox with the default policy adds no set to the host table: its script has no `{ … }` but the map
    /// elements' (what made creates slow down with the number of sandboxes).
    #[test]
    fn a_default_sandbox_adds_no_anonymous_set() {
        let f = test_firewall(vec![Ipv4Addr::new(10, 255, 255, 53)], false);
        let script = f.sandbox_script("x", "sbv1", &NetworkPolicy::open()).unwrap();
        for line in script.lines().filter(|l| l.contains('{')) {
            assert!(line.contains(" element inet "), "an inline set: {line}");
        }
        let gw = NetworkPolicy { allow_hosts: vec!["example.com".into()], ..NetworkPolicy::open() };
        let script = f.sandbox_script("x", "sbv1", &gw).unwrap();
        for line in script.lines().filter(|l| l.contains('{')) {
            assert!(line.contains(" element inet "), "an inline set: {line}");
        }
    }
}
