//! Timeouts: the deadline wheel is armed per running sandbox and by a periodic sweep of the store (deadlines
//! another replica set); a fired deadline kills the sandbox, or pauses it with auto-pause, on exactly one
//! replica (a claim in the store).

use std::time::Duration;

use soulbox_protocol::api::SandboxState;

use super::{Lifecycle, LifecycleError, Result};
use crate::store::{ClaimCondition, SandboxRecord, StoreError, now_ms};

impl Lifecycle {
    /// Every `deadline_sweep`, arms the wheel with the deadlines the store says are due before the next sweep,
    /// whichever replica set them. All replicas then fire; the claim in `on_deadline` lets one act.
    pub(super) async fn sweep_deadlines(lifecycle: std::sync::Weak<Lifecycle>) {
        let Some(interval) = lifecycle.upgrade().map(|l| l.config.deadline_sweep) else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(lifecycle) = lifecycle.upgrade() else {
                return;
            };
            let horizon = now_ms() + interval.as_millis() as i64;
            match lifecycle.store.sandboxes_due(horizon).await {
                Ok(due) => due.iter().for_each(|record| lifecycle.arm(record)),
                Err(e) => tracing::warn!(error = %e, "deadline sweep: cannot read the store"),
            }
        }
    }

    /// Schedules the timeout of a running sandbox: at `end` (kill) or `end + grace` (auto-pause); of a paused
    /// one: at `end`, the end of its retention (delete).
    pub(super) fn arm(&self, record: &SandboxRecord) {
        let running = record.state == SandboxState::Running;
        let grace_ms = if running && record.auto_pause { i64::from(record.auto_pause_grace_s) * 1000 } else { 0 };
        let fire_at = record.end_at_ms + grace_ms;
        let delay = Duration::from_millis((fire_at - now_ms()).max(0) as u64);
        self.deadlines.set(&record.id, tokio::time::Instant::now() + delay);
    }

    pub(super) async fn on_deadline(&self, id: &str) -> Result<()> {
        let record = match self.store.get_sandbox(id).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if record.state == SandboxState::Paused {
            return self.on_retention_end(record).await;
        }
        let grace_ms = if record.auto_pause { i64::from(record.auto_pause_grace_s) * 1000 } else { 0 };
        if record.end_at_ms + grace_ms > now_ms() {
            self.arm(&record); // extended meanwhile
            return Ok(());
        }
        // Every replica that knows this deadline fires it; the one whose claim changes the row acts. A claim
        // that fails because the end moved is fine too: the sweep re-arms the new deadline.
        let running_at_end = ClaimCondition { state: SandboxState::Running, end_at_ms: Some(record.end_at_ms) };
        if !self.store.claim_sandbox(id, running_at_end, &self.replica_id, self.lease_ms()).await? {
            tracing::debug!(sandbox = %id, "timeout claimed elsewhere or the end moved");
            return Ok(());
        }
        let result = if record.auto_pause {
            tracing::info!(sandbox = %id, "timeout reached: pausing");
            self.streams.stop(id);
            let paused = self.pause_running(&record, record.auto_pause_memory).await;
            self.streams.done_stopping(id);
            paused
        } else {
            tracing::info!(sandbox = %id, "timeout reached: killing");
            self.expire(id).await
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.release_claim(id).await; // another replica (or our sweep) tries again
                match e {
                    LifecycleError::Conflict(_) => Ok(()), // paused through the API meanwhile
                    other => Err(other),
                }
            }
        }
    }

    /// A paused sandbox kept for the whole retention is deleted (on one replica: the claim).
    async fn on_retention_end(&self, record: SandboxRecord) -> Result<()> {
        if record.end_at_ms > now_ms() {
            self.arm(&record); // resumed and paused again meanwhile
            return Ok(());
        }
        let paused_until = ClaimCondition { state: SandboxState::Paused, end_at_ms: Some(record.end_at_ms) };
        if !self.store.claim_sandbox(&record.id, paused_until, &self.replica_id, self.lease_ms()).await? {
            return Ok(());
        }
        tracing::info!(sandbox = %record.id, "paused past its retention: deleting");
        let result = self.remove(&record, true, "paused sandbox deleted after its retention").await;
        if result.is_err() {
            self.release_claim(&record.id).await;
        }
        result
    }

    /// The timeout's kill: like `kill`, but a sandbox the node no longer has is only forgotten (a replica that
    /// died between the node's kill and the delete left exactly that behind).
    async fn expire(&self, id: &str) -> Result<()> {
        match self.store.get_sandbox(id).await {
            Ok(record) => self.remove(&record, true, "sandbox killed at its timeout").await,
            // Gone already (killed through another replica): only what this process holds for it goes.
            Err(StoreError::NotFound(_)) => {
                self.streams.stop(id);
                self.deadlines.cancel(id);
                self.streams.done_stopping(id);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
