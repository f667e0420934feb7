//! Host firewall: one nftables table per runtime instance (`inet soulbox` by default).
//!
//! - `forward`: sandbox→sandbox dropped; inbound to sandboxes only for established flows, and those
//!   only while the sandbox's policy still allows the remote end; each sandbox's outbound traffic
//!   jumps (via a verdict map keyed by its host veth) to its own chain, its inbound established
//!   traffic (via a second map) to the same policy mirrored onto the source address.
//! - `refuse`: where the outbound policy sends what it denies: established TCP gets a reset (a
//!   connection the policy forbids since a live update fails at once instead of hanging), the
//!   rest is dropped.
//! - `input`: sandboxes reach no host service except `host_allowed_tcp_ports`.
//! - `postrouting`: masquerade pool → outside.
//! - per-sandbox chain `sb_<id>` (outbound; `sbi_<id>` mirrors it for inbound):
//!   private/link-local/multicast/metadata ranges dropped first
//!   (unless `allow_private_egress`; the DNS servers the runtime configured stay reachable on port
//!   53), then allowOut accept, denyOut drop, internet off → drop, DNS servers accept,
//!   private ranges drop, IPv6 drop, else accept.
//!
//! Every sandbox's network namespace carries a copy of its policy too ([`guard`]): deleting or
//! flushing the host's table, or `nft flush ruleset` on the host, does not reach it.
//!
//! The table is rebuilt atomically (one `nft -f` transaction) on `Runtime::open` from the
//! sandboxes that exist, which is also the GC of leaked rules. The firewall remembers what the
//! table should hold (every sandbox's veth and policy), so [`watch`] can check the kernel's table
//! against it and rebuild it when someone deleted or flushed it.
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::spec::NetworkPolicy;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

pub mod check;
mod cut;
pub mod guard;
mod in_netns;
mod rules;
mod sets;
pub mod watch;

use rules::remove_chain_script;
use sets::SetStyle;

/// Destinations a sandbox never reaches unless the node allows private egress: "this network",
/// RFC 1918, CGNAT, loopback, link-local (incl. the cloud metadata service 169.254.169.254),
/// multicast and reserved.
pub const PRIVATE_RANGES: [(Ipv4Addr, u8); 9] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// Whether `ip` lies in one of [`PRIVATE_RANGES`].
pub fn is_private(ip: Ipv4Addr) -> bool {
    PRIVATE_RANGES.iter().any(|(net, len)| {
        let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
        u32::from(ip) & mask == u32::from(*net)
    })
}

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

/// Whether the IPv4 CIDR (or address) `cidr` holds `ip`; an entry that does not parse holds nothing
/// (the policy was validated before it was applied).
pub(crate) fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    cidr_contains_checked(cidr, ip).unwrap_or(false)
}

/// Whether `cidr` holds `ip`; `None` when `cidr` is not an IPv4 address or CIDR.
pub(crate) fn cidr_contains_checked(cidr: &str, ip: Ipv4Addr) -> Option<bool> {
    let normal = parse_cidr(cidr).ok()?;
    let (net, len) = normal.split_once('/')?;
    let (net, len) = (net.parse::<Ipv4Addr>().ok()?, len.parse::<u32>().ok()?);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(u32::from(ip) & mask == u32::from(net))
}

pub fn validate_policy(p: &NetworkPolicy) -> Result<()> {
    for c in p.allow_out.iter().chain(p.deny_out.iter()) {
        parse_cidr(c)?;
    }
    if let Some(proxy) = &p.egress_proxy
        && proxy.address.parse::<std::net::SocketAddrV4>().is_err()
    {
        return Err(Error::Invalid(format!("egress proxy address {:?} is not IPv4 address:port", proxy.address)));
    }
    if let Some(bad) = p.allow_hosts.iter().chain(&p.deny_hosts).find(|h| !soulbox_protocol::hosts::is_pattern(h)) {
        return Err(Error::Invalid(format!("bad host name {bad:?}")));
    }
    for rule in &p.rules {
        if cidr_contains_checked(&rule.host, Ipv4Addr::UNSPECIFIED).is_none()
            && !soulbox_protocol::hosts::is_pattern(&rule.host)
        {
            return Err(Error::Invalid(format!("bad header rule host {:?}", rule.host)));
        }
        for (name, value) in &rule.headers {
            if !soulbox_protocol::network::is_header_name(name) {
                return Err(Error::Invalid(format!("bad header name {name:?} in the rules for {}", rule.host)));
            }
            soulbox_protocol::network::header_value_parts(value).map_err(Error::Invalid)?;
        }
    }
    if p.allow_out.len() + p.deny_out.len() + p.allow_hosts.len() + p.deny_hosts.len() + p.rules.len() > 1000 {
        return Err(Error::Invalid("too many allowOut/denyOut entries".into()));
    }
    Ok(())
}

/// A chain as rule texts (without the `add rule inet <table> <chain>` prefix), so the script and
/// the structural check ([`check`]) come from one source.
pub(crate) struct ChainRules {
    pub name: String,
    /// `type filter hook forward priority -10; policy accept;` for base chains.
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

/// What the kernel's table should hold: base chains, two chains per sandbox, the veth → chain maps.
pub(crate) struct Expected {
    pub chains: Vec<ChainRules>,
    /// Map name (`sb_out`, `sb_in`) → veth → sandbox chain.
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// The verdict maps: outbound traffic by the veth it comes in on, inbound by the one it leaves on.
pub(crate) const MAP_OUT: &str = "sb_out";
pub(crate) const MAP_IN: &str = "sb_in";
/// Sandboxes with host-name rules: their HTTP and TLS are redirected to the egress gateway (`gateway.rs`).
pub(crate) const MAP_NAT: &str = "sb_nat";
/// The ports the egress gateway judges by name (HTTP `Host`, TLS SNI).
pub const GATEWAY_PORTS: &str = "{ 80, 443 }";

/// Which end of a packet a sandbox's policy judges: the destination of what the sandbox sends, the
/// source of what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Out,
    In,
}

/// What the firewall has applied (the live sandboxes' veths and policies). Guarded by one async
/// mutex with every `nft` transaction, so a check never sees a half-applied change.
#[derive(Default)]
struct State {
    live: BTreeMap<String, (String, NetworkPolicy)>,
    /// Set by `destroy`: the table is meant to be gone and must not be repaired.
    closed: bool,
}

pub struct Firewall {
    table: String,
    prefix: String,
    pool: String,
    gateway: Ipv4Addr,
    /// Where the egress gateway listens on the gateway address.
    gateway_port: u16,
    dns: Vec<Ipv4Addr>,
    host_ports: Vec<u16>,
    allow_private_egress: bool,
    /// How the host table's chains write the constant sets (`sets`): named, unless a benchmark asks for the
    /// old inline sets to compare (`SOULBOX_BENCH_INLINE_NFT_SETS=1`, bench/throughput.sh).
    host_sets: SetStyle,
    state: tokio::sync::Mutex<State>,
    /// The policies with host rules, by sandbox: read by the egress gateway per connection, without waiting for
    /// an `nft` run under `state`. Written together with `state.live`.
    gateway_policies: std::sync::RwLock<std::collections::HashMap<String, NetworkPolicy>>,
    /// Pids of our own recent `nft` processes: the watcher ignores the transactions they commit.
    own_pids: std::sync::Mutex<VecDeque<(u32, Instant)>>,
    /// Counts repairs; tests and callers wait on it.
    repairs: tokio::sync::watch::Sender<u64>,
}

/// How long one sandbox's firewall change waited for the state lock and how long its `nft` run took.
struct Took {
    wait: Duration,
    nft: Duration,
}

impl Took {
    /// The per-stage timing line of a create or a kill (bench/throughput.sh reads its message, `wait_us`, `nft_us`).
    fn log(&self, id: &str, sandboxes: usize, stage: &str) {
        tracing::debug!(
            sandbox = id,
            wait_us = self.wait.as_micros() as u64,
            nft_us = self.nft.as_micros() as u64,
            sandboxes,
            "{stage}"
        );
    }
}

/// How long an own `nft` pid is remembered (its transaction's event arrives right after it commits).
const OWN_PID_TTL: Duration = Duration::from_secs(60);

impl Firewall {
    pub fn new(cfg: &RuntimeConfig) -> Self {
        Firewall {
            table: cfg.nft_table(),
            prefix: cfg.prefix.clone(),
            pool: cfg.pool_cidr(),
            gateway: cfg.gateway(),
            gateway_port: cfg.egress_gateway_port,
            dns: cfg.dns.clone(),
            host_ports: cfg.host_allowed_tcp_ports.clone(),
            allow_private_egress: cfg.allow_private_egress,
            host_sets: match std::env::var("SOULBOX_BENCH_INLINE_NFT_SETS").as_deref() {
                Ok("1") => SetStyle::Literal,
                _ => SetStyle::Named,
            },
            state: Default::default(),
            gateway_policies: Default::default(),
            own_pids: Default::default(),
            repairs: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Sandbox `id`'s policy when it has host rules (what the egress gateway applies).
    pub(crate) fn gateway_policy(&self, id: &str) -> Option<NetworkPolicy> {
        self.gateway_policies.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn remember_gateway_policies(&self, live: &BTreeMap<String, (String, NetworkPolicy)>) {
        let with_hosts = live.iter().filter(|(_, (_, p))| p.uses_gateway()).map(|(id, (_, p))| (id.clone(), p.clone()));
        *self.gateway_policies.write().unwrap_or_else(|e| e.into_inner()) = with_hosts.collect();
    }

    pub(crate) fn allow_private_egress(&self) -> bool {
        self.allow_private_egress
    }

    /// Whether `ip` is in the sandboxes' pool (another sandbox, or the node at the gateway address).
    pub(crate) fn in_pool(&self, ip: Ipv4Addr) -> bool {
        cidr_contains(&self.pool, ip)
    }

    /// The number of repairs so far; changes every time the watcher rebuilt the table.
    pub fn repairs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.repairs.subscribe()
    }

    /// Run one `nft -f -` transaction, remembering its pid so the watcher knows it is ours.
    async fn apply(&self, script: &str) -> Result<()> {
        let cmd = || "nft -f -".to_string();
        let mut child = tokio::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn { cmd: cmd(), source })?;
        if let Some(pid) = child.id() {
            let mut own = self.own_pids.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while own.front().is_some_and(|(_, at)| now.duration_since(*at) > OWN_PID_TTL) || own.len() > 1024 {
                own.pop_front();
            }
            own.push_back((pid, now));
        }
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(|source| Error::Spawn { cmd: cmd(), source })?;
        }
        let out = child.wait_with_output().await.map_err(|source| Error::Spawn { cmd: cmd(), source })?;
        in_netns::succeeded(cmd, out).map(drop)
    }

    /// Whether `pid` committed one of our own transactions (forgets it: one transaction per run).
    pub(crate) fn take_own_pid(&self, pid: u32) -> bool {
        let mut own = self.own_pids.lock().unwrap_or_else(|e| e.into_inner());
        match own.iter().position(|(p, _)| *p == pid) {
            Some(i) => {
                own.remove(i);
                true
            }
            None => false,
        }
    }

    /// Atomically (re)build the table with the given live sandboxes (id, veth, policy).
    pub async fn rebuild(&self, live: &[(String, String, NetworkPolicy)]) -> Result<()> {
        let live: BTreeMap<_, _> = live.iter().map(|(id, veth, p)| (id.clone(), (veth.clone(), p.clone()))).collect();
        let mut state = self.state.lock().await;
        self.apply(&self.table_script(&live)?).await?;
        self.remember_gateway_policies(&live);
        state.live = live;
        state.closed = false;
        Ok(())
    }

    /// One sandbox's transaction under the state lock, the wait for the lock and the `nft` run timed. Returns the
    /// guard, so the caller records the change in the same hold, and the run's result.
    async fn apply_timed(&self, script: &str) -> (tokio::sync::MutexGuard<'_, State>, Result<()>, Took) {
        let t0 = Instant::now();
        let state = self.state.lock().await;
        let t1 = Instant::now();
        let applied = self.apply(script).await;
        (state, applied, Took { wait: t1 - t0, nft: t1.elapsed() })
    }

    pub async fn add_sandbox(&self, id: &str, veth: &str, p: &NetworkPolicy) -> Result<()> {
        let s = self.sandbox_script(id, veth, p)?;
        let (mut state, applied, took) = self.apply_timed(&s).await;
        applied?;
        took.log(id, state.live.len(), "firewall: sandbox added");
        state.live.insert(id.to_string(), (veth.to_string(), p.clone()));
        self.remember_gateway_policies(&state.live);
        Ok(())
    }

    /// Remove one sandbox's chains and map elements (idempotent).
    pub async fn remove_sandbox(&self, id: &str, veth: &str) -> Result<()> {
        let t = &self.table;
        let mut s = String::new();
        for (map, c) in [(MAP_OUT, format!("sb_{id}")), (MAP_IN, format!("sbi_{id}")), (MAP_NAT, format!("sbn_{id}"))] {
            s += &remove_chain_script(t, map, &c, veth);
        }
        let (mut state, applied, took) = self.apply_timed(&s).await;
        if let Err(e) = applied {
            // Without the table there is no chain to remove (the watcher rebuilds the table
            // without this sandbox); anything else is a real failure.
            if self.table_exists().await {
                return Err(e);
            }
        }
        took.log(id, state.live.len(), "firewall: sandbox removed");
        state.live.remove(id);
        self.remember_gateway_policies(&state.live);
        Ok(())
    }

    async fn table_exists(&self) -> bool {
        tokio::process::Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            // Cannot tell: assume it exists, so the caller sees the original error.
            .unwrap_or(true)
    }

    /// Remove the whole table (node decommissioning, tests, a runtime closing with no sandboxes).
    /// The watcher leaves it gone.
    pub async fn destroy(&self) -> Result<()> {
        let t = &self.table;
        let mut state = self.state.lock().await;
        state.closed = true;
        state.live.clear();
        self.remember_gateway_policies(&state.live);
        self.apply(&format!("table inet {t} {{}}\ndelete table inet {t}\n")).await
    }

    /// Compare the kernel's table with what was applied; rebuild it when they differ. Returns
    /// whether it repaired something.
    pub async fn check_and_repair(&self) -> Result<bool> {
        let state = self.state.lock().await;
        if state.closed {
            return Ok(false);
        }
        let expected = self.expected(&state.live)?;
        let listing = tokio::process::Command::new("nft")
            .args(["-j", "list", "table", "inet", &self.table])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| Error::Spawn { cmd: format!("nft -j list table inet {}", self.table), source })?;
        let found = if listing.status.success() {
            check::differences(&self.table, &expected, &listing.stdout)
        } else {
            vec![format!("table inet {} is gone", self.table)]
        };
        if found.is_empty() {
            return Ok(false);
        }
        tracing::warn!(table = %self.table, problems = %found.join("; "), "firewall table was changed from outside; rebuilding it");
        self.apply(&self.table_script(&state.live)?).await?;
        tracing::warn!(table = %self.table, sandboxes = state.live.len(), "firewall table restored");
        self.repairs.send_modify(|n| *n += 1);
        Ok(true)
    }
}

/// A firewall on the default configuration with these DNS servers, for the unit tests of what it writes and
/// decides (never applied: no `nft` runs).
#[cfg(test)]
pub(crate) fn test_firewall(dns: Vec<Ipv4Addr>, allow_private_egress: bool) -> Firewall {
    let mut cfg = RuntimeConfig::new("/nonexistent");
    cfg.dns = dns;
    cfg.allow_private_egress = allow_private_egress;
    Firewall::new(&cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for a in ["169.254.169.254", "10.1.2.3", "172.31.0.1", "192.168.1.1", "100.64.0.1", "127.0.0.1", "224.0.0.1"] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "203.0.113.2", "172.32.0.1", "100.128.0.1"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
