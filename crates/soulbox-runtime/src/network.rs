//! Per-sandbox network: a named netns, a veth pair (host side `<prefix><id…>`, sandbox side `eth0`)
//! and an address from the pool. Addressing is point-to-point: every host-side veth carries the
//! pool's gateway address (`/32 peer <sandbox ip>`), the sandbox has `<ip>/32 peer <gateway>` and a
//! default route via it — no bridge, so sandboxes share no L2 segment.
//!
//! The lease (`net.json` in the sandbox dir) is written *before* anything is created, so a crash at
//! any point leaves a record that reconcile can release.
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::util;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetLease {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub netns: String,
    pub veth: String,
}

impl NetLease {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
    pub fn file(sandbox_dir: &Path) -> PathBuf {
        sandbox_dir.join("net.json")
    }
    pub fn load(sandbox_dir: &Path) -> Option<NetLease> {
        util::read_json(&Self::file(sandbox_dir)).ok()
    }
}

/// IPv4 allocator over the pool (in memory; rebuilt from lease files on open). Every address has
/// an owner: the sandbox (or pooled slot) id whose `net.json` names it, or a reservation
/// ([`reservation_owner`]) for an address the control plane's records still name. An address is
/// only ever freed by its owner, so a stale or repeated release cannot free another sandbox's.
pub struct IpPool {
    first: u32,
    last: u32,
    used: Mutex<BTreeMap<u32, String>>,
}

/// The owner of a reservation made for the control plane's record of sandbox `id`.
pub fn reservation_owner(id: &str) -> String {
    format!("record:{id}")
}

impl IpPool {
    pub fn new(cfg: &RuntimeConfig) -> Self {
        let net = u32::from(cfg.pool_net) & cfg.pool_mask();
        let bcast = net | !cfg.pool_mask();
        IpPool { first: net + 2, last: bcast - 1, used: Mutex::new(BTreeMap::new()) }
    }
    fn used(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, String>> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }
    /// Record that `owner` holds `ip` (reconcile: its lease file says so). Returns false, and
    /// changes nothing, when another owner already holds it.
    pub fn mark_used(&self, ip: Ipv4Addr, owner: &str) -> bool {
        let mut used = self.used();
        match used.get(&u32::from(ip)) {
            Some(o) if o != owner && *o != reservation_owner(owner) => false,
            _ => {
                used.insert(u32::from(ip), owner.to_string());
                true
            }
        }
    }
    /// Take `ip` for `owner` again (start of a stopped sandbox that kept its address): only if it
    /// is in the pool and free, or already `owner`'s (or its record's reservation).
    pub fn claim(&self, ip: Ipv4Addr, owner: &str) -> bool {
        self.in_range(ip) && self.mark_used(ip, owner)
    }
    /// The lowest free address, now owned by `owner`.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr> {
        let mut used = self.used();
        // lowest free address: walk gaps in the sorted set
        let mut cand = self.first;
        for &u in used.range(self.first..=self.last).map(|(k, _)| k) {
            if u != cand {
                break;
            }
            cand += 1;
        }
        if cand > self.last {
            return Err(Error::PoolExhausted);
        }
        used.insert(cand, owner.to_string());
        Ok(Ipv4Addr::from(cand))
    }
    /// Free `ip` if `owner` holds it.
    pub fn release(&self, ip: Ipv4Addr, owner: &str) {
        let mut used = self.used();
        if used.get(&u32::from(ip)).is_some_and(|o| o == owner) {
            used.remove(&u32::from(ip));
        }
    }
    /// Replace all reservations with `reserved` (record id, address). An address a sandbox holds
    /// is not reserved again; one held by a different sandbox is reported back (a conflict the
    /// caller must resolve: two owners name the same address).
    pub fn set_reservations(&self, reserved: &[(String, Ipv4Addr)]) -> Vec<(String, Ipv4Addr)> {
        let mut used = self.used();
        used.retain(|_, o| !o.starts_with("record:"));
        let mut conflicts = Vec::new();
        for (id, ip) in reserved {
            match used.get(&u32::from(*ip)) {
                None => {
                    used.insert(u32::from(*ip), reservation_owner(id));
                }
                Some(o) if o == id => {}
                Some(_) => conflicts.push((id.clone(), *ip)),
            }
        }
        conflicts
    }
}

pub fn lease_for(cfg: &RuntimeConfig, id: &str, ip: Ipv4Addr) -> NetLease {
    NetLease { ip, gateway: cfg.gateway(), netns: cfg.netns_name(id), veth: cfg.veth_name(id) }
}

/// Create netns + veth + addresses + routes. Not idempotent by itself: callers tear down first on retry.
/// A netns already at `/run/netns/<name>` (made in the sandbox's user namespace, `userns.rs`) is used.
/// `on_link`: the sandbox side gets `ip/32` and an on-link route to the gateway instead of a point-to-point
/// `peer` address — for a runtime with its own network stack (gVisor), which copies the interface's addresses
/// and routes and then removes them from the host kernel, and cannot remove a `peer` address.
pub async fn setup(lease: &NetLease, on_link: bool) -> Result<()> {
    let add = if lease.netns_path().exists() { String::new() } else { format!("netns add {}\n", lease.netns) };
    let host = format!(
        "{add}link add {veth} type veth peer name eth0 netns {ns}\naddr add {gw}/32 peer {ip}/32 dev {veth}\nlink set {veth} up\n",
        ns = lease.netns,
        veth = lease.veth,
        gw = lease.gateway,
        ip = lease.ip
    );
    util::run_stdin("ip", &["-batch", "-"], Some(&host)).await?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", lease.veth), "1");
    let (gw, ip) = (lease.gateway, lease.ip);
    let inner = if on_link {
        format!(
            "link set lo up\naddr add {ip}/32 dev eth0\nlink set eth0 up\nroute add {gw}/32 dev eth0 scope link\nroute add default via {gw} dev eth0\n"
        )
    } else {
        format!(
            "link set lo up\naddr add {ip}/32 peer {gw}/32 dev eth0\nlink set eth0 up\nroute add default via {gw} dev eth0\n"
        )
    };
    util::run_stdin("ip", &["-n", &lease.netns, "-batch", "-"], Some(&inner)).await?;
    Ok(())
}

/// Remove veth and netns (idempotent). An empty `veth` removes only the netns (`Path::join("")` would name
/// `/sys/class/net/` itself, which always exists).
pub async fn teardown(netns: &str, veth: &str) -> Result<()> {
    if !veth.is_empty()
        && Path::new("/sys/class/net").join(veth).exists()
        && let Err(e) = util::run("ip", &["link", "del", veth]).await
        && Path::new("/sys/class/net").join(veth).exists()
    {
        return Err(e);
    }
    if !netns.is_empty()
        && Path::new("/run/netns").join(netns).exists()
        && let Err(e) = util::run("ip", &["netns", "del", netns]).await
        && Path::new("/run/netns").join(netns).exists()
    {
        return Err(e);
    }
    Ok(())
}

/// Host links whose name starts with `prefix`.
pub fn host_links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Named netns starting with `<prefix>-`.
pub fn netns_list(prefix: &str) -> Vec<String> {
    let pre = format!("{prefix}-");
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(&pre)).collect()
        })
        .unwrap_or_default()
}

pub fn veth_counters(veth: &str) -> (u64, u64) {
    let rd = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{veth}/statistics/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // host side tx = sandbox rx
    (rd("tx_bytes"), rd("rx_bytes"))
}

/// NAT needs IPv4 forwarding on the host.
pub fn enable_forwarding() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p).map(|s| s.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(|e| Error::Io { path: p.into(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> IpPool {
        let mut cfg = RuntimeConfig::new("/nonexistent");
        cfg.pool_net = Ipv4Addr::new(10, 9, 0, 0);
        cfg.pool_prefix_len = 29; // .2 ..= .6
        IpPool::new(&cfg)
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 9, 0, last)
    }

    #[test]
    fn only_the_owner_frees_an_address() {
        let p = pool();
        assert_eq!(p.allocate("a").unwrap(), ip(2));
        p.release(ip(2), "b");
        assert_eq!(p.allocate("b").unwrap(), ip(3), "b's stale release freed a's address");
        p.release(ip(2), "a");
        assert_eq!(p.allocate("c").unwrap(), ip(2));
        assert!(!p.mark_used(ip(3), "a"), "two owners for one address");
        assert!(p.claim(ip(3), "b"), "its owner claims it again");
        assert!(!p.claim(ip(9), "b"), "outside the pool");
    }

    #[test]
    fn reservations_keep_addresses_from_the_pool() {
        let p = pool();
        let b = p.allocate("b").unwrap();
        let conflicts = p.set_reservations(&[("x".into(), ip(3)), ("b".into(), b), ("y".into(), b)]);
        assert_eq!(conflicts, vec![("y".to_string(), b)], "b's own record needs no reservation; y's is a conflict");
        assert_eq!(p.allocate("c").unwrap(), ip(4));
        assert!(p.claim(ip(3), "x"), "the reserved record's sandbox may take it");
        p.set_reservations(&[]);
        assert_eq!(p.allocate("d").unwrap(), ip(5));
        p.release(ip(3), "x");
        p.set_reservations(&[("z".into(), ip(6))]);
        assert_eq!(p.allocate("e").unwrap(), ip(3), "lifting a reservation frees it");
        assert!(matches!(p.allocate("f"), Err(Error::PoolExhausted)));
    }
}
