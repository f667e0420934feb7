//! The table as text: a sandbox's policy as nft rules, the base chains, the scripts that add a sandbox's chains or
//! rebuild the whole table, and what the table should hold ([`Expected`], which [`super::check`] compares with the
//! kernel's).
use super::sets::{Const, SetStyle};
use super::{ChainRules, Direction, Expected, Firewall, MAP_IN, MAP_NAT, MAP_OUT, is_private, parse_cidr};
use crate::error::Result;
use crate::spec::NetworkPolicy;
use std::collections::BTreeMap;

/// Removes chain `c` and the element of `map` for `veth` that jumps there; idempotent (each is added first, so the
/// delete always finds it).
pub(super) fn remove_chain_script(t: &str, map: &str, c: &str, veth: &str) -> String {
    format!(
        "add chain inet {t} {c}\nadd element inet {t} {map} {{ \"{veth}\" : jump {c} }}\ndelete element inet {t} {map} {{ \"{veth}\" }}\nflush chain inet {t} {c}\ndelete chain inet {t} {c}\n"
    )
}

fn set_expr(cidrs: &[String]) -> Result<Option<String>> {
    if cidrs.is_empty() {
        return Ok(None);
    }
    let v: Result<Vec<String>> = cidrs.iter().map(|c| parse_cidr(c)).collect();
    Ok(Some(format!("{{ {} }}", v?.join(", "))))
}

impl Firewall {
    /// One sandbox's outbound chain: the policy as rules, in order.
    fn sandbox_chain(&self, id: &str, p: &NetworkPolicy) -> Result<ChainRules> {
        let rules = self.policy_rules(p, Direction::Out, "goto refuse", self.host_sets)?;
        Ok(ChainRules { name: format!("sb_{id}"), hook: None, rules })
    }

    /// The same policy for what reaches the sandbox on established flows, judged by their source: a
    /// flow opened while the policy allowed its destination stops when an update forbids it.
    fn inbound_chain(&self, id: &str, p: &NetworkPolicy) -> Result<ChainRules> {
        let rules = self.policy_rules(p, Direction::In, "drop", self.host_sets)?;
        Ok(ChainRules { name: format!("sbi_{id}"), hook: None, rules })
    }

    /// The redirect to the gateway of a sandbox that uses it: with a SOCKS5 proxy all of its TCP, else (host
    /// rules) its HTTP and TLS; with host rules its DNS too. Never traffic to the pool.
    fn nat_chain(&self, id: &str, p: &NetworkPolicy) -> ChainRules {
        let (pool, to) = (&self.pool, format!("{}:{}", self.gateway, self.gateway_port));
        let ports = self.set(self.host_sets, Const::GatewayPorts);
        let mut rules = vec![match p.egress_proxy {
            Some(_) => format!("ip daddr != {pool} meta l4proto tcp dnat ip to {to}"),
            None => format!("ip daddr != {pool} tcp dport {ports} dnat ip to {to}"),
        }];
        if p.has_host_rules() {
            // The names it asks for are the ones the gateway judges (`gateway/dns.rs`).
            rules.push(format!("ip daddr != {pool} udp dport 53 dnat ip to {to}"));
        }
        ChainRules { name: format!("sbn_{id}"), hook: None, rules }
    }

    /// The policy as rules on the remote end of the traffic (`direction`), `deny` being the verdict
    /// for what it forbids; the constant sets named (host table) or written out (`sets`).
    pub(crate) fn policy_rules(
        &self,
        p: &NetworkPolicy,
        direction: Direction,
        deny: &str,
        sets: SetStyle,
    ) -> Result<Vec<String>> {
        let (remote, remote_port) = match direction {
            Direction::Out => ("ip daddr", "th dport"),
            Direction::In => ("ip saddr", "th sport"),
        };
        let mut rules = Vec::new();
        let private = self.set(sets, Const::Private);
        let (dns, tcp_udp) = (self.set(sets, Const::Dns), self.set(sets, Const::TcpUdp));
        if !self.allow_private_egress {
            // Before allowOut: no allow rule can open private ranges or the metadata service.
            // The runtime's own DNS servers may be private (a LAN or cloud resolver): they are
            // exempt on port 53 only, and the rest of the chain decides about them as before.
            if !self.dns.iter().any(|a| is_private(*a)) {
                rules.push(format!("{remote} {private} {deny}"));
            } else {
                let dns = self.set(sets, Const::PrivateDns);
                rules.push(format!("{remote} {private} {remote} != {dns} {deny}"));
                rules.push(format!("{remote} {dns} meta l4proto != {tcp_udp} {deny}"));
                rules.push(format!("{remote} {dns} {remote_port} != 53 {deny}"));
            }
        }
        if p.has_host_rules() && !self.dns.is_empty() {
            // Names are what host rules match: the node's DNS servers answer even under a deny-all.
            rules.push(format!("{remote} {dns} meta l4proto {tcp_udp} {remote_port} 53 accept"));
        }
        if let Some(set) = set_expr(&p.allow_out)? {
            rules.push(format!("{remote} {set} accept"));
        }
        if let Some(set) = set_expr(&p.deny_out)? {
            rules.push(format!("{remote} {set} {deny}"));
        }
        if !p.allow_internet {
            rules.push(deny.to_string());
        }
        if !self.dns.is_empty() {
            rules.push(format!("{remote} {dns} meta l4proto {tcp_udp} {remote_port} 53 accept"));
        }
        rules.push(format!("{remote} {private} {deny}"));
        rules.push(format!("meta nfproto ipv6 {deny}"));
        rules.push("accept".into());
        Ok(rules)
    }

    fn base_chains(&self) -> Vec<ChainRules> {
        let p = &self.prefix;
        let mut input = vec![format!("iifname \"{p}*\" ct state established,related accept")];
        if !self.host_ports.is_empty() {
            let v: Vec<String> = self.host_ports.iter().map(|p| p.to_string()).collect();
            input.push(format!("iifname \"{p}*\" tcp dport {{ {} }} accept", v.join(", ")));
        }
        // The egress gateway, reached only through the redirect (a sandbox connecting to it directly is dropped).
        input.push(format!(
            "iifname \"{p}*\" ct status dnat meta l4proto {{ tcp, udp }} th dport {} accept",
            self.gateway_port
        ));
        input.push(format!("iifname \"{p}*\" drop"));
        vec![
            ChainRules {
                name: "forward".into(),
                hook: Some("type filter hook forward priority -10; policy accept;".into()),
                rules: vec![
                    format!("iifname \"{p}*\" oifname \"{p}*\" drop"),
                    format!("oifname \"{p}*\" ct state established oifname vmap @{MAP_IN}"),
                    // ICMP errors about a flow (path MTU, unreachable) carry no data: they pass.
                    format!("oifname \"{p}*\" ct state related accept"),
                    format!("oifname \"{p}*\" drop"),
                    format!("iifname \"{p}*\" iifname vmap @{MAP_OUT}"),
                    format!("iifname \"{p}*\" drop"),
                ],
            },
            ChainRules {
                name: "refuse".into(),
                hook: None,
                rules: vec!["meta l4proto tcp ct state established reject with tcp reset".into(), "drop".into()],
            },
            ChainRules {
                name: "input".into(),
                hook: Some("type filter hook input priority -10; policy accept;".into()),
                rules: input,
            },
            ChainRules {
                name: "prerouting".into(),
                hook: Some("type nat hook prerouting priority dstnat; policy accept;".into()),
                rules: vec![format!("iifname \"{p}*\" iifname vmap @{MAP_NAT}")],
            },
            ChainRules {
                name: "postrouting".into(),
                hook: Some("type nat hook postrouting priority srcnat; policy accept;".into()),
                rules: vec![format!("ip saddr {} oifname != \"{p}*\" masquerade", self.pool)],
            },
        ]
    }

    /// A sandbox's chains, each with the map whose element for its veth jumps there (the redirect only with
    /// host rules).
    fn sandbox_chains(&self, id: &str, p: &NetworkPolicy) -> Result<Vec<(&'static str, ChainRules)>> {
        let mut chains = vec![(MAP_OUT, self.sandbox_chain(id, p)?), (MAP_IN, self.inbound_chain(id, p)?)];
        if p.uses_gateway() {
            chains.push((MAP_NAT, self.nat_chain(id, p)));
        }
        Ok(chains)
    }

    /// Script that adds (or replaces, in the same transaction) one sandbox's chains and map elements; a redirect
    /// the new policy does not need goes in the same transaction.
    pub(super) fn sandbox_script(&self, id: &str, veth: &str, p: &NetworkPolicy) -> Result<String> {
        let t = &self.table;
        let mut s = String::new();
        if !p.uses_gateway() {
            s += &remove_chain_script(t, MAP_NAT, &format!("sbn_{id}"), veth);
        }
        for (map, chain) in self.sandbox_chains(id, p)? {
            let c = &chain.name;
            s += &format!("add chain inet {t} {c}\nflush chain inet {t} {c}\n");
            for r in &chain.rules {
                s += &format!("add rule inet {t} {c} {r}\n");
            }
            s += &format!("add element inet {t} {map} {{ \"{veth}\" : jump {c} }}\n");
        }
        Ok(s)
    }

    /// Script that replaces the whole table with the base chains and the given sandboxes.
    pub(super) fn table_script(&self, live: &BTreeMap<String, (String, NetworkPolicy)>) -> Result<String> {
        let t = &self.table;
        let mut s = format!("table inet {t} {{}}\ndelete table inet {t}\nadd table inet {t}\n");
        for map in [MAP_OUT, MAP_IN, MAP_NAT] {
            s += &format!("add map inet {t} {map} {{ type ifname : verdict; }}\n");
        }
        s += &self.sets_script(t);
        for chain in self.base_chains() {
            let hook = chain.hook.as_deref().unwrap_or_default();
            s += &format!("add chain inet {t} {} {{ {hook} }}\n", chain.name);
            for r in &chain.rules {
                s += &format!("add rule inet {t} {} {r}\n", chain.name);
            }
        }
        for (id, (veth, p)) in live {
            s += &self.sandbox_script(id, veth, p)?;
        }
        Ok(s)
    }

    /// What the table should hold for `live`.
    pub(super) fn expected(&self, live: &BTreeMap<String, (String, NetworkPolicy)>) -> Result<Expected> {
        let mut chains = self.base_chains();
        let mut maps: BTreeMap<String, BTreeMap<String, String>> =
            [MAP_OUT, MAP_IN, MAP_NAT].into_iter().map(|m| (m.to_string(), BTreeMap::new())).collect();
        for (id, (veth, p)) in live {
            for (map, chain) in self.sandbox_chains(id, p)? {
                maps.entry(map.to_string()).or_default().insert(veth.clone(), chain.name.clone());
                chains.push(chain);
            }
        }
        Ok(Expected { chains, maps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::test_firewall;
    use std::net::Ipv4Addr;

    fn rules(f: &Firewall, p: &NetworkPolicy) -> Vec<String> {
        f.policy_rules(p, Direction::Out, "drop", SetStyle::Literal).unwrap()
    }

    #[test]
    fn inbound_chain_mirrors_the_outbound_one_on_the_source() {
        let f = test_firewall(vec![Ipv4Addr::new(10, 255, 255, 53)], false);
        let p = NetworkPolicy {
            allow_internet: false,
            allow_out: vec!["203.0.113.7".into()],
            deny_out: vec!["203.0.113.0/24".into()],
            ..Default::default()
        };
        let out = f.sandbox_chain("x", &p).unwrap().rules;
        let inbound = f.inbound_chain("x", &p).unwrap().rules;
        assert_eq!(out.len(), inbound.len());
        for (o, i) in out.iter().zip(&inbound) {
            let mirrored =
                o.replace("ip daddr", "ip saddr").replace("th dport", "th sport").replace("goto refuse", "drop");
            assert_eq!(&mirrored, i);
        }
        // What the outbound chain denies is refused (established TCP reset), not silently dropped.
        assert!(out.iter().any(|r| r == "ip daddr { 203.0.113.0/24 } goto refuse"), "{out:#?}");
        assert!(out.iter().all(|r| !r.ends_with(" drop") && r != "drop"), "{out:#?}");
    }

    #[test]
    fn a_sandbox_script_writes_both_chains_and_both_map_elements() {
        let s = test_firewall(vec![], false).sandbox_script("x", "sbv1", &NetworkPolicy::open()).unwrap();
        for needle in [
            "add element inet soulbox sb_out { \"sbv1\" : jump sb_x }",
            "add element inet soulbox sb_in { \"sbv1\" : jump sbi_x }",
        ] {
            assert!(s.contains(needle), "{needle} in {s}");
        }
    }

    #[test]
    fn private_drop_comes_before_allow_out() {
        let p = NetworkPolicy {
            allow_internet: true,
            allow_out: vec!["169.254.169.254/32".into(), "0.0.0.0/0".into()],
            deny_out: vec![],
            ..Default::default()
        };
        let r = rules(&test_firewall(vec![], false), &p);
        let drop = r.iter().position(|r| r.contains("169.254.0.0/16") && r.ends_with("drop")).unwrap();
        let allow = r.iter().position(|r| r.contains("169.254.169.254/32") && r.ends_with("accept")).unwrap();
        assert!(drop < allow, "{r:#?}");
        // Node allows private egress: today's order, allowOut first.
        let r = rules(&test_firewall(vec![], true), &p);
        assert!(r[0].contains("169.254.169.254/32") && r[0].ends_with("accept"), "{r:#?}");
    }

    #[test]
    fn private_dns_servers_stay_reachable_on_port_53_only() {
        let dns = Ipv4Addr::new(10, 255, 255, 53);
        let r = rules(&test_firewall(vec![dns, Ipv4Addr::new(8, 8, 8, 8)], false), &NetworkPolicy::open());
        assert!(r[0].contains("ip daddr != { 10.255.255.53 } drop"), "{r:#?}");
        assert!(r[1].contains("{ 10.255.255.53 } meta l4proto != { tcp, udp } drop"), "{r:#?}");
        assert!(r[2].contains("{ 10.255.255.53 } th dport != 53 drop"), "{r:#?}");
        assert!(!r[..3].iter().any(|r| r.contains("8.8.8.8")), "public resolvers need no exemption: {r:#?}");
    }
}
