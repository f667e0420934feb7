//! Addresses as the rest of the node sees them: where traffic for a sandbox id goes, and the
//! addresses the control plane's records still name, which the pool must not hand out.
use super::Runtime;
use std::net::Ipv4Addr;

/// Where a running sandbox answers, and which boot of it: `boot` is new whenever the sandbox starts anew
/// (create, start, re-adoption; a pause and resume keeps it), unique within this runtime instance. A client that keys its idle
/// connections by it never reuses one across two boots at one address (a sandbox that was stopped and started,
/// or the next sandbox to get a freed address): a killed gVisor sandbox never closes its end of them, and a
/// reused one would reach the new boot's network stack, which resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub boot: u64,
}

impl Runtime {
    /// The address of `id` while it runs here, else `None`. Cheap (one map lookup): meant for
    /// routing every proxied request by sandbox id instead of by a recorded address, so traffic
    /// for a sandbox that is gone can reach nothing else.
    pub fn address(&self, id: &str) -> Option<Ipv4Addr> {
        self.endpoint(id).map(|e| e.ip)
    }

    /// [`Runtime::address`] with the boot it belongs to.
    pub fn endpoint(&self, id: &str) -> Option<Endpoint> {
        self.inner.serving.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }

    /// Keep the addresses `reserved` (record's sandbox id, address) out of the pool until the
    /// next call replaces the set (an empty set lifts every reservation). For a control plane
    /// whose records may name an address its sandbox no longer holds (after a crash): until those
    /// records are corrected the address goes to nobody. An address that a sandbox of the same id
    /// holds needs no reservation; one that another sandbox holds is returned (and logged) as a
    /// conflict — the records are wrong about it, and routing by id ([`Runtime::address`]) is what
    /// keeps its traffic away from that sandbox.
    pub fn set_reserved_addresses(&self, reserved: &[(String, Ipv4Addr)]) -> Vec<(String, Ipv4Addr)> {
        let conflicts = self.inner.ips.set_reservations(reserved);
        for (id, ip) in &conflicts {
            tracing::warn!(sandbox = %id, %ip, "a record names an address another sandbox holds");
        }
        conflicts
    }
}
