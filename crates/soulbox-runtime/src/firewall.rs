//! Host firewall: one nftables table per runtime instance (`inet soulbox` by default).
//!
//! - `forward`: sandbox→sandbox dropped; inbound to sandboxes only for established flows; each
//!   sandbox's outbound traffic jumps (via a verdict map keyed by its host veth) to its own chain.
//! - `input`: sandboxes reach no host service except `host_allowed_tcp_ports`.
//! - `postrouting`: masquerade pool → outside.
//! - per-sandbox chain `sb_<id>`: allowOut accept, denyOut drop, internet off → drop, DNS servers
//!   accept, private/link-local/multicast ranges drop, IPv6 drop, else accept.
//!
//! The table is rebuilt atomically (one `nft -f` transaction) on `Runtime::open` from the
//! sandboxes that exist, which is also the GC of leaked rules.
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::spec::NetworkPolicy;
use crate::util;
use std::net::Ipv4Addr;

const PRIVATE: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 240.0.0.0/4";

/// Parse and normalise an IPv4 CIDR or address.
pub fn parse_cidr(s: &str) -> Result<String> {
    let (a, l) = match s.trim().split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| Error::Invalid(format!("bad CIDR {s:?}")))?),
        None => (s.trim(), 32),
    };
    let ip: Ipv4Addr = a.parse().map_err(|_| Error::Invalid(format!("bad CIDR {s:?} (only IPv4 is supported)")))?;
    if l > 32 {
        return Err(Error::Invalid(format!("bad CIDR {s:?}")));
    }
    let mask = if l == 0 { 0 } else { u32::MAX << (32 - l as u32) };
    Ok(format!("{}/{}", Ipv4Addr::from(u32::from(ip) & mask), l))
}

pub fn validate_policy(p: &NetworkPolicy) -> Result<()> {
    for c in p.allow_out.iter().chain(p.deny_out.iter()) {
        parse_cidr(c)?;
    }
    if p.allow_out.len() + p.deny_out.len() > 1000 {
        return Err(Error::Invalid("too many allowOut/denyOut entries".into()));
    }
    Ok(())
}

fn set_expr(cidrs: &[String]) -> Result<Option<String>> {
    if cidrs.is_empty() {
        return Ok(None);
    }
    let v: Result<Vec<String>> = cidrs.iter().map(|c| parse_cidr(c)).collect();
    Ok(Some(format!("{{ {} }}", v?.join(", "))))
}

pub struct Firewall {
    table: String,
    prefix: String,
    pool: String,
    dns: Vec<Ipv4Addr>,
    host_ports: Vec<u16>,
}

impl Firewall {
    pub fn new(cfg: &RuntimeConfig) -> Self {
        Firewall {
            table: cfg.nft_table(),
            prefix: cfg.prefix.clone(),
            pool: cfg.pool_cidr(),
            dns: cfg.dns.clone(),
            host_ports: cfg.host_allowed_tcp_ports.clone(),
        }
    }

    /// Script that adds (or replaces) one sandbox's chain and map element.
    fn sandbox_script(&self, id: &str, veth: &str, p: &NetworkPolicy) -> Result<String> {
        let t = &self.table;
        let c = format!("sb_{id}");
        let mut s = format!("add chain inet {t} {c}\nflush chain inet {t} {c}\n");
        if let Some(set) = set_expr(&p.allow_out)? {
            s += &format!("add rule inet {t} {c} ip daddr {set} accept\n");
        }
        if let Some(set) = set_expr(&p.deny_out)? {
            s += &format!("add rule inet {t} {c} ip daddr {set} drop\n");
        }
        if !p.allow_internet {
            s += &format!("add rule inet {t} {c} drop\n");
        }
        if !self.dns.is_empty() {
            let d: Vec<String> = self.dns.iter().map(|a| a.to_string()).collect();
            s += &format!("add rule inet {t} {c} ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n", d.join(", "));
        }
        s += &format!("add rule inet {t} {c} ip daddr {{ {PRIVATE} }} drop\n");
        s += &format!("add rule inet {t} {c} meta nfproto ipv6 drop\n");
        s += &format!("add rule inet {t} {c} accept\n");
        s += &format!("add element inet {t} sb_out {{ \"{veth}\" : jump {c} }}\n");
        Ok(s)
    }

    fn base_script(&self) -> String {
        let t = &self.table;
        let p = &self.prefix;
        let ports = if self.host_ports.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = self.host_ports.iter().map(|p| p.to_string()).collect();
            format!("    iifname \"{p}*\" tcp dport {{ {} }} accept\n", v.join(", "))
        };
        format!(
            "table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{
  map sb_out {{ type ifname : verdict; }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname \"{p}*\" oifname \"{p}*\" drop
    oifname \"{p}*\" ct state established,related accept
    oifname \"{p}*\" drop
    iifname \"{p}*\" iifname vmap @sb_out
    iifname \"{p}*\" drop
  }}
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname \"{p}*\" ct state established,related accept
{ports}    iifname \"{p}*\" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {pool} oifname != \"{p}*\" masquerade
  }}
}}\n",
            pool = self.pool
        )
    }

    /// Atomically (re)build the table with the given live sandboxes.
    pub async fn rebuild(&self, live: &[(String, String, NetworkPolicy)]) -> Result<()> {
        let mut s = self.base_script();
        for (id, veth, p) in live {
            s += &self.sandbox_script(id, veth, p)?;
        }
        util::run_stdin("nft", &["-f", "-"], Some(&s)).await.map(|_| ())
    }

    pub async fn add_sandbox(&self, id: &str, veth: &str, p: &NetworkPolicy) -> Result<()> {
        let s = self.sandbox_script(id, veth, p)?;
        util::run_stdin("nft", &["-f", "-"], Some(&s)).await.map(|_| ())
    }

    /// Remove one sandbox's chain and map element (idempotent).
    pub async fn remove_sandbox(&self, id: &str, veth: &str) -> Result<()> {
        let t = &self.table;
        let c = format!("sb_{id}");
        let s = format!(
            "add chain inet {t} {c}\nadd element inet {t} sb_out {{ \"{veth}\" : jump {c} }}\ndelete element inet {t} sb_out {{ \"{veth}\" }}\nflush chain inet {t} {c}\ndelete chain inet {t} {c}\n"
        );
        util::run_stdin("nft", &["-f", "-"], Some(&s)).await.map(|_| ())
    }

    /// Remove the whole table (used by tests / uninstall).
    pub async fn destroy(&self) -> Result<()> {
        let t = &self.table;
        util::run_stdin("nft", &["-f", "-"], Some(&format!("table inet {t} {{}}\ndelete table inet {t}\n"))).await.map(|_| ())
    }
}
