//! The sandbox's own copy of its policy, inside its network namespace (table `inet soulbox_guard`).
//!
//! The host table is the primary fence, but it lives in the host's ruleset, where anyone with root
//! — a firewall service reloading with `nft flush ruleset`, an operator deleting "unknown" tables —
//! can remove it, and while it is gone (before the watcher repairs it, or for as long as no
//! runtime runs) nothing on the host stops a sandbox: forwarding is on and this host's own
//! policies may accept. The guard fails closed for what matters most: it sits in a namespace the
//! host's ruleset operations do not touch and the sandbox cannot change (it has no CAP_NET_ADMIN),
//! and it holds the same per-sandbox policy plus "no other sandbox, no host service except the
//! allowed ports, nothing unsolicited in". What stays open while the host table is gone: traffic
//! to the host's addresses other than the gateway (the host's `input` chain is what drops it), and
//! NAT (without it, outbound traffic leaves with the sandbox's private source address).
//!
//! It is written once per network namespace (warm-pool slot, create with a non-default policy,
//! start from disk, live network update) and disappears with the namespace.
use super::{Direction, Firewall, SetStyle};
use crate::error::Result;
use crate::spec::NetworkPolicy;

/// Name of the table inside each sandbox's network namespace.
pub const GUARD_TABLE: &str = "soulbox_guard";

impl Firewall {
    /// The guard table for a sandbox with policy `p` (replaces any previous one atomically).
    pub(crate) fn guard_script(&self, p: &NetworkPolicy) -> Result<String> {
        let t = GUARD_TABLE;
        let gw = self.gateway;
        let mut out = vec!["oifname \"lo\" accept".to_string(), "ct state established,related accept".to_string()];
        if !self.host_ports.is_empty() {
            let v: Vec<String> = self.host_ports.iter().map(|p| p.to_string()).collect();
            out.push(format!("ip daddr {gw} tcp dport {{ {} }} accept", v.join(", ")));
        }
        // The host (at the gateway) and every other sandbox: the host's forward and input chains
        // drop these before any allowOut, and so does the guard.
        out.push(format!("ip daddr {} drop", self.pool));
        if p.egress_proxy.is_some() {
            // The host redirects all of its TCP to the egress gateway, which judges it (`gateway.rs`).
            out.push("meta l4proto tcp accept".to_string());
        } else if p.has_host_rules() {
            // The host redirects these to the egress gateway, which judges them by name (`gateway.rs`).
            out.push(format!("tcp dport {} accept", super::GATEWAY_PORTS));
        }
        // Written out: the guard's table is one per namespace and small (see `sets`).
        out.extend(self.policy_rules(p, Direction::Out, "drop", SetStyle::Literal)?);
        let input = [
            "iifname \"lo\" accept".to_string(),
            "ct state established,related accept".to_string(),
            // The node (proxy, health checks) connects from the gateway address.
            format!("ip saddr {gw} accept"),
            "drop".to_string(),
        ];
        let mut s = format!("table inet {t} {{}}\ndelete table inet {t}\nadd table inet {t}\n");
        s += &format!("add chain inet {t} output {{ type filter hook output priority 0; policy accept; }}\n");
        for r in &out {
            s += &format!("add rule inet {t} output {r}\n");
        }
        s += &format!("add chain inet {t} input {{ type filter hook input priority 0; policy accept; }}\n");
        for r in &input {
            s += &format!("add rule inet {t} input {r}\n");
        }
        Ok(s)
    }

    /// A sandbox's policy in both places: its chain in the host table and its guard, written
    /// concurrently (two `nft` runs; each is tens of milliseconds on a busy host).
    pub async fn apply_policy(&self, id: &str, lease: &crate::network::NetLease, p: &NetworkPolicy) -> Result<()> {
        tokio::try_join!(self.add_sandbox(id, &lease.veth, p), self.guard_sandbox(&lease.netns, p)).map(|_| ())
    }

    /// Write the guard into the network namespace `netns` (one `nft` run inside it).
    pub async fn guard_sandbox(&self, netns: &str, p: &NetworkPolicy) -> Result<()> {
        let script = self.guard_script(p)?;
        super::in_netns::run(netns, "nft", &["-f", "-"], Some(script.as_bytes())).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RuntimeConfig;
    use crate::firewall::Firewall;
    use crate::spec::NetworkPolicy;

    #[test]
    fn guard_drops_neighbours_and_the_host_before_the_policy() {
        let mut cfg = RuntimeConfig::new("/nonexistent");
        cfg.dns = vec![];
        cfg.host_allowed_tcp_ports = vec![8125];
        let fw = Firewall::new(&cfg);
        let p = NetworkPolicy {
            allow_internet: false,
            allow_out: vec!["10.77.0.9/32".into()],
            deny_out: vec![],
            ..Default::default()
        };
        let s = fw.guard_script(&p).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        let at =
            |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {s}"));
        assert!(at("ip daddr 10.77.0.1 tcp dport { 8125 } accept") < at("ip daddr 10.77.0.0/16 drop"));
        assert!(
            at("ip daddr 10.77.0.0/16 drop") < at("ip daddr { 10.77.0.9/32 } accept"),
            "allowOut cannot open a neighbour"
        );
        assert!(at("output drop") > at("ip daddr { 10.77.0.9/32 } accept"), "internet off");
        assert!(at("input ip saddr 10.77.0.1 accept") < at("input drop"));
    }
}
