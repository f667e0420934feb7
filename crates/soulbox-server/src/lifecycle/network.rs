//! A sandbox's egress policy after create: E2B's live update (`PUT /sandboxes/{id}/network`).

use super::{Lifecycle, LifecycleError, Result};
use crate::node::NetworkPolicy;
use soulbox_protocol::SocksProxy;

/// How long a proxy's host may take to resolve.
const PROXY_LOOKUP: std::time::Duration = std::time::Duration::from_secs(5);

impl Lifecycle {
    /// The checks every egress policy passes before a node sees it (create and update alike).
    pub(super) fn check_policy(&self, allow_out: &[String], deny_out: &[String]) -> Result<()> {
        crate::egress::check_entries(allow_out, deny_out).map_err(LifecycleError::BadRequest)?;
        if !self.config.allow_private_egress {
            crate::egress::check_allow_out(allow_out).map_err(LifecycleError::BadRequest)?;
        }
        Ok(())
    }

    /// A SOCKS5 proxy as nodes dial it: its host resolved here, once, to an IPv4 address (pinned: a DNS change
    /// cannot move the sandbox's traffic), which must not be private, link-local, loopback or metadata unless the
    /// server allows private egress.
    pub(super) async fn resolve_proxy(&self, proxy: Option<SocksProxy>) -> Result<Option<SocksProxy>> {
        let Some(mut proxy) = proxy else { return Ok(None) };
        let bad = |why: String| LifecycleError::BadRequest(format!("egressProxy.address {:?}: {why}", proxy.address));
        let found = tokio::time::timeout(PROXY_LOOKUP, tokio::net::lookup_host(proxy.address.as_str()))
            .await
            .map_err(|_| bad("its host did not resolve in time".into()))?
            .map_err(|e| bad(format!("its host does not resolve ({e})")))?;
        let Some(at) = found
            .filter_map(|a| match a {
                std::net::SocketAddr::V4(v4) => Some(v4),
                std::net::SocketAddr::V6(_) => None,
            })
            .next()
        else {
            return Err(bad("it has no IPv4 address".into()));
        };
        if !self.config.allow_private_egress && crate::egress::private_range_opened_by(&at.ip().to_string()).is_some() {
            return Err(bad(format!(
                "{} is a private, link-local or metadata address (that needs the server setting allow_private_egress)",
                at.ip()
            )));
        }
        proxy.address = at.to_string();
        Ok(Some(proxy))
    }

    /// Replaces a sandbox's egress policy. Running: its node applies it at once (connections it forbids are cut).
    /// Paused: its node keeps it for the resume (a frozen sandbox's firewall changes now too). The record follows
    /// the node, so a sandbox that moves or restarts keeps the new policy.
    pub async fn update_network(&self, team_id: &str, id: &str, mut policy: NetworkPolicy) -> Result<()> {
        let (allow_out, deny_out) = crate::egress::entries(&policy);
        self.check_policy(&allow_out, &deny_out)?;
        policy.egress_proxy = self.resolve_proxy(policy.egress_proxy.take()).await?;
        let record = self.team_sandbox(team_id, id).await?;
        self.node_of(&record).await?.update_network(id, &policy).await?;
        self.store.set_sandbox_network(id, &policy, &record.ingress).await?;
        tracing::info!(
            sandbox = %id,
            allow_internet = policy.allow_internet,
            allow_out = policy.allow_out.len(),
            deny_out = policy.deny_out.len(),
            "sandbox network updated"
        );
        Ok(())
    }
}
