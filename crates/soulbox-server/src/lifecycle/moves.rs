//! Moving what a drained node holds on disk to a node that can run it (cluster mode, issue 13 part 5): a sandbox
//! paused to disk resumes elsewhere, a snapshot's sandboxes start elsewhere. Both are a template copied between
//! nodes — its description from the node that has it, the layers the other node lacks as OCI layer tars streamed
//! through this control plane (each checked against its digest where it lands), then the description again —
//! so a drained node can be emptied and removed without losing a paused sandbox or a snapshot.
//!
//! Moves happen when the thing is next used (a resume, a create from the snapshot), not at the drain: nothing
//! moves that no one asks for again, and the move needs the room a create needs. A sandbox paused with its memory
//! stays frozen on its node (its memory cannot move on this runtime) and resumes there while the node lives.

use soulbox_protocol::api::{EvacuationFailure, NodeEvacuation, SandboxState};

use super::{Lifecycle, LifecycleError, Result};
use crate::cluster::{Placement, Requirements};
use crate::node::{Node, SandboxSpec};
use crate::store::{ClaimCondition, SandboxRecord};

impl Lifecycle {
    /// Copies template `name` from `from` to `to`: the layers `to` lacks, then its description.
    pub(super) async fn copy_template(&self, from: &dyn Node, to: &dyn Node, name: &str) -> Result<()> {
        let template = from.export_template(name).await?;
        let missing = to.missing_layers(&template.layers).await?;
        let started = std::time::Instant::now();
        for digest in &missing {
            let tar = from.export_layer(digest).await?;
            to.import_layer(digest, tar).await?;
        }
        to.import_template(template).await?;
        tracing::info!(
            template = name,
            layers = missing.len(),
            ms = started.elapsed().as_millis() as u64,
            "template copied to another node"
        );
        Ok(())
    }

    /// A node for a snapshot's (or fork's) new sandbox when the node holding its layers is drained, or is not
    /// `to` (the node its volumes live on): another one (`to` when given), with the template copied there; the
    /// snapshot's record then names the new node.
    pub(super) async fn place_copy(
        &self,
        holder: &str,
        template: &str,
        need: Requirements,
        to: Option<&str>,
    ) -> Result<Placement> {
        let from = self.nodes.get(holder).await?;
        let placement = match to {
            Some(node_id) => self.nodes.place_on(node_id, need).await?,
            None => self.nodes.place(need).await?,
        };
        if let Err(e) = self.copy_template(from.as_ref(), placement.node.as_ref(), template).await {
            self.nodes.release(&placement).await;
            return Err(e);
        }
        // A snapshot now lives on the new node alone (its sandboxes on the drained node keep its layers). A fork's
        // template stays: the fork's other sandboxes copy it too, and the fork deletes it when they have started.
        if self.store.set_snapshot_node(template, &placement.node_id).await?
            && let Err(e) = from.delete_template(template).await
        {
            tracing::warn!(template, node = holder, error = %e, "could not delete a moved snapshot from the drained node");
        }
        tracing::info!(template, from = holder, to = %placement.node_id, "snapshot moved off a drained node");
        Ok(placement)
    }

    /// Moves a sandbox paused to disk off its drained node and starts it on another, keeping its id, files, env
    /// vars, metadata and access token; returns the node it now runs on and its address there. On any failure
    /// the sandbox stays where it was, paused (the caller then resumes it there).
    pub(super) async fn move_paused(&self, record: &SandboxRecord) -> Result<(String, String)> {
        let id = record.id.as_str();
        // Node-local volumes do not move: a sandbox mounting one runs on the volume's node or nowhere.
        let mounts = self.store.volume_mounts(id).await?;
        if let Some(pinned) = mounts.iter().find(|m| m.home_node.is_some()) {
            return Err(LifecycleError::Conflict(format!(
                "sandbox {id} mounts volume '{}', whose files live on node {}: it can only run there",
                pinned.name, record.node_id
            )));
        }
        let from = self.nodes.get(&record.node_id).await?;
        let need =
            Requirements { cpu_count: record.cpu_count.max(1) as u32, memory_mb: record.memory_mb.max(0) as u64 };
        let placement = self.nodes.place(need).await?;
        let moved = soulbox_templates::move_template_name(id);
        let result = self.start_moved(record, from.as_ref(), &placement, &moved).await;
        self.nodes.release(&placement).await;
        // The started sandbox holds its template's layers; the description goes from both nodes either way.
        for node in [from.as_ref(), placement.node.as_ref()] {
            if let Err(e) = node.delete_template(&moved).await {
                tracing::warn!(sandbox = id, error = %e, "could not delete a moved sandbox's template");
            }
        }
        let address = result?;
        if let Err(e) = from.kill(id).await {
            // The control plane's record names the new node: the old copy is reconciled away when its node reports it.
            tracing::warn!(sandbox = id, node = %record.node_id, error = %e, "could not delete the moved sandbox's old copy");
        }
        tracing::info!(sandbox = id, from = %record.node_id, to = %placement.node_id, "paused sandbox moved off a drained node");
        Ok((placement.node_id.clone(), address))
    }

    async fn start_moved(
        &self,
        record: &SandboxRecord,
        from: &dyn Node,
        placement: &Placement,
        moved: &str,
    ) -> Result<String> {
        let id = record.id.as_str();
        from.snapshot(id, moved).await?;
        self.copy_template(from, placement.node.as_ref(), moved).await?;
        let volumes = super::volumes::node_mounts(&self.store.volume_mounts(id).await?);
        let spec = SandboxSpec {
            template_id: moved.to_owned(),
            cpu_count: record.cpu_count.max(1) as u32,
            memory_mb: record.memory_mb.max(0) as u32,
            disk_size_mb: record.disk_size_mb.max(0) as u32,
            env_vars: record.env_vars.clone(),
            envd_access_token: record.envd_access_token.clone(),
            network: record.network.clone(),
            metadata: record.metadata.clone(),
            sandbox_id: Some(id.to_owned()),
            volumes,
        };
        let created = placement.node.create(spec).await?;
        if !self.store.move_sandbox_node(id, &record.node_id, &placement.node_id).await? {
            let _ = placement.node.kill(id).await;
            return Err(LifecycleError::Conflict(format!("sandbox {id} changed while it was being moved")));
        }
        Ok(created.address.to_string())
    }
}

impl Lifecycle {
    /// Moves everything a drained node holds on disk to other nodes now (`POST /nodes/{id}/evacuate`), instead of
    /// when each is next used: sandboxes paused to disk stay paused on their new node, snapshots are held there.
    /// One at a time, each logged; a failure is reported and the rest go on.
    pub async fn evacuate(&self, node_id: &str) -> Result<NodeEvacuation> {
        if !self.nodes.is_draining(node_id).await {
            return Err(LifecycleError::Conflict(format!("node {node_id} is not draining: drain it first")));
        }
        let mut out = NodeEvacuation::default();
        let failed = |id: String, e: LifecycleError| {
            tracing::warn!(node = node_id, id = %id, error = %e, "evacuation: could not move");
            EvacuationFailure { id, message: e.to_string() }
        };
        for (id, _) in self.store.sandboxes_on_node(node_id).await? {
            let record = match self.store.get_sandbox(&id).await {
                Ok(record) => record,
                Err(crate::store::StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if record.state != SandboxState::Paused || record.address.is_some() {
                out.remaining.push(id);
                continue;
            }
            match self.evacuate_paused(&record).await {
                Ok(()) => out.moved_sandboxes.push(id),
                Err(e) => out.failed.push(failed(id, e)),
            }
        }
        for snapshot in self.store.snapshots_on_node(node_id).await? {
            let need = Requirements {
                cpu_count: snapshot.cpu_count.max(1) as u32,
                memory_mb: snapshot.memory_mb.max(0) as u64,
            };
            match self.place_copy(node_id, &snapshot.template_id, need, None).await {
                Ok(placement) => {
                    self.nodes.release(&placement).await;
                    out.moved_snapshots.push(format!("{}:default", snapshot.template_id));
                }
                Err(e) => out.failed.push(failed(snapshot.template_id, e)),
            }
        }
        tracing::info!(
            node = node_id,
            sandboxes = out.moved_sandboxes.len(),
            snapshots = out.moved_snapshots.len(),
            failed = out.failed.len(),
            remaining = out.remaining.len(),
            "node evacuated"
        );
        Ok(out)
    }

    /// A sandbox paused to disk moves and is paused to disk again on its new node, under the resume claim (a
    /// resume meanwhile waits for it). Should the new node fail to pause it, it stays running there, recorded so.
    async fn evacuate_paused(&self, record: &SandboxRecord) -> Result<()> {
        let id = record.id.as_str();
        let paused = ClaimCondition { state: SandboxState::Paused, end_at_ms: None };
        if !self.store.claim_sandbox(id, paused, &self.replica_id, self.lease_ms()).await? {
            return Err(LifecycleError::Conflict(format!("sandbox {id} is being resumed")));
        }
        let moved = self.move_paused(record).await;
        let result = match moved {
            Ok((to, address)) => match self.nodes.get(&to).await?.pause(id, false).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let end = crate::store::now_ms() + i64::from(self.config.default_timeout_s) * 1000;
                    let running = (SandboxState::Paused, SandboxState::Running);
                    self.store.transition_sandbox(id, running.0, running.1, Some(&address), end).await?;
                    self.arm(&SandboxRecord {
                        state: SandboxState::Running,
                        address: Some(address),
                        end_at_ms: end,
                        node_id: to,
                        ..record.clone()
                    });
                    Err(e.into())
                }
            },
            Err(e) => Err(e),
        };
        self.release_claim(id).await;
        result
    }
}

/// A node error while moving, for the log: the move failed, the sandbox resumes where it is.
pub(super) fn move_failed(id: &str, e: &LifecycleError) {
    tracing::warn!(sandbox = id, error = %e, "could not move a paused sandbox off its drained node; resuming it there");
}
