//! A sandbox's egress policy after create: E2B's live update (`PUT /sandboxes/{id}/network`).

use super::{Lifecycle, LifecycleError, Result};
use crate::node::NetworkPolicy;

impl Lifecycle {
    /// The checks every egress policy passes before a node sees it (create and update alike).
    pub(super) fn check_policy(&self, allow_out: &[String], deny_out: &[String]) -> Result<()> {
        crate::egress::check_entries(allow_out, deny_out).map_err(LifecycleError::BadRequest)?;
        if !self.config.allow_private_egress {
            crate::egress::check_allow_out(allow_out).map_err(LifecycleError::BadRequest)?;
        }
        Ok(())
    }

    /// Replaces a sandbox's egress policy. Running: its node applies it at once (connections it forbids are cut).
    /// Paused: its node keeps it for the resume (a frozen sandbox's firewall changes now too). The record follows
    /// the node, so a sandbox that moves or restarts keeps the new policy.
    pub async fn update_network(&self, team_id: &str, id: &str, policy: NetworkPolicy) -> Result<()> {
        let (allow_out, deny_out) = crate::egress::entries(&policy);
        self.check_policy(&allow_out, &deny_out)?;
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
