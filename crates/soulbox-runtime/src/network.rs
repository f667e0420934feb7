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

mod netlink;

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
/// The links and addresses are made by netlink messages from this process (`netlink.rs`); only a netns not made
/// already costs an `ip netns add` process.
pub async fn setup(lease: &NetLease, on_link: bool) -> Result<()> {
    if !lease.netns_path().exists() {
        util::run("ip", &["netns", "add", &lease.netns]).await?;
    }
    let links = netlink::Links {
        netns_path: lease.netns_path(),
        veth: lease.veth.clone(),
        gateway: lease.gateway,
        ip: lease.ip,
        on_link,
    };
    blocking(move || netlink::setup(&links)).await
}

async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(Error::Invalid(format!("network task: {e}"))))
}

/// Makes the sandbox's links anew in its namespace, which stays. A runtime with its own network stack takes the
/// addresses and routes off the interface when it starts (see [`setup`]), so a second start in the same namespace
/// (a cold boot after a failed restore) would find none and give the sandbox no network.
pub async fn renew_links(lease: &NetLease, on_link: bool) -> Result<()> {
    teardown("", &lease.veth).await?;
    setup(lease, on_link).await
}

/// Remove veth and netns (idempotent). An empty `veth` removes only the netns (`Path::join("")` would name
/// `/sys/class/net/` itself, which always exists).
pub async fn teardown(netns: &str, veth: &str) -> Result<()> {
    let veth_path = Path::new("/sys/class/net").join(veth);
    if !veth.is_empty() && veth_path.exists() {
        let v = veth.to_string();
        gone_or(&veth_path, blocking(move || netlink::delete_link(&v)).await)?;
    }
    let ns_path = Path::new("/run/netns").join(netns);
    if !netns.is_empty() && ns_path.exists() {
        gone_or(&ns_path, netlink::delete_netns(&ns_path))?;
    }
    Ok(())
}

/// A failed delete is fine when the thing is gone anyway (someone else removed it meanwhile).
fn gone_or(path: &Path, deleted: Result<()>) -> Result<()> {
    match deleted {
        Err(e) if path.exists() => Err(e),
        _ => Ok(()),
    }
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

    /// What `ip` shows of a sandbox's network, host side and inside the netns, with what differs between two
    /// identical setups left out: link indexes, MAC addresses, IPv6 link-local addresses (made from the MAC).
    fn shown(lease: &NetLease) -> String {
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().expect("ip");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let (v, ns) = (lease.veth.as_str(), lease.netns.as_str());
        let all = [
            ip(&["-d", "link", "show", "dev", v]),
            ip(&["addr", "show", "dev", v]),
            ip(&["route", "show", "table", "all", "dev", v]),
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{v}/disable_ipv6")).unwrap_or_default(),
            ip(&["-n", ns, "-d", "link", "show"]),
            ip(&["-n", ns, "addr", "show"]),
            ip(&["-n", ns, "route", "show", "table", "all"]),
            ip(&["-n", ns, "-6", "route", "show", "table", "all"]),
        ]
        .join("\n");
        all.lines()
            .filter(|l| !l.contains("fe80:") && !l.contains("valid_lft"))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !(w.ends_with(':') && w[..w.len() - 1].parse::<u32>().is_ok()))
                    .filter(|w| !(w.len() == 17 && w.matches(':').count() == 5))
                    .map(|w| w.split("@if").next().unwrap_or(w))
                    .filter(|w| !w.starts_with("link-netns"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The reference `netlink_makes_what_ip_made` compares with: the network made by two `ip -batch` processes
    /// (host side, then inside the netns), as the runtime did before netlink.
    async fn setup_by_ip(lease: &NetLease, on_link: bool) -> Result<()> {
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

    /// The netlink path makes exactly what the `ip` processes made, in both address forms, and tears it down
    /// (twice: idempotent). Root only: it makes a netns and a veth pair (names and addresses of this process).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn netlink_makes_what_ip_made() {
        if !util::is_root() {
            eprintln!("skipped: netlink_makes_what_ip_made needs root");
            return;
        }
        let pid = std::process::id();
        let lease = NetLease {
            ip: Ipv4Addr::new(10, 236, 200 + (pid % 50) as u8, 2 + (pid % 250) as u8),
            gateway: Ipv4Addr::new(10, 236, 0, 1),
            netns: format!("qjt-{pid}"),
            veth: format!("qjt{pid}"),
        };
        for on_link in [false, true] {
            let mut seen = Vec::new();
            for by_ip in [true, false] {
                let made = if by_ip { setup_by_ip(&lease, on_link).await } else { setup(&lease, on_link).await };
                let view = shown(&lease);
                teardown(&lease.netns, &lease.veth).await.expect("teardown");
                teardown(&lease.netns, &lease.veth).await.expect("teardown again");
                made.unwrap_or_else(|e| panic!("setup (by ip: {by_ip}, on link: {on_link}): {e}"));
                assert!(!lease.netns_path().exists() && host_links(&lease.veth).is_empty(), "left behind");
                seen.push(view);
            }
            assert!(seen[0].contains(&format!("inet {}", lease.ip)), "nothing seen: {}", seen[0]);
            assert_eq!(seen[0], seen[1], "on link: {on_link}");
        }
        let bad = NetLease { netns: "qjt-absent-never-made".into(), ..lease.clone() };
        let _ = std::fs::File::create("/run/netns/qjt-absent-never-made"); // a plain file, no namespace
        let e = netlink::setup(&netlink::Links {
            netns_path: bad.netns_path(),
            veth: bad.veth.clone(),
            gateway: bad.gateway,
            ip: bad.ip,
            on_link: false,
        });
        let _ = std::fs::remove_file("/run/netns/qjt-absent-never-made");
        assert!(e.is_err(), "a file that is no netns is refused");
        assert!(host_links(&lease.veth).is_empty(), "a refused setup leaves no link");
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
