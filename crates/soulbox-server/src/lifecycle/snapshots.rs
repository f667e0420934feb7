//! Snapshots and forks (issue 13): a sandbox captured into a template its team owns, sandboxes started from
//! one, and forks (a snapshot taken once, `count` sandboxes from it, the snapshot dropped again).
//!
//! The source sandbox keeps its state: the node pauses it for the copy only. What a snapshot holds depends on
//! the node's runtime (`SnapshotTaken::memory`); the record says which.

use super::create::{Source, recorded_template};
use super::{CreateRequest, Lifecycle, LifecycleError, Result};
use crate::store::{SandboxRecord, SnapshotRecord, StoreError, now_ms};

/// Most forks one request may ask for (E2B's `MAX_FORK_COUNT`).
pub const MAX_FORKS: i32 = 20;
/// Seconds a fork lives when the request names no timeout (E2B's default).
pub const DEFAULT_FORK_TIMEOUT_S: i32 = 15;

/// `GET /snapshots` filters.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub sandbox_id: Option<String>,
    /// The snapshot's name, with or without `:default`.
    pub name: Option<String>,
}

/// One requested fork: its sandbox or why it did not start.
pub type ForkOutcome = Result<SandboxRecord>;

impl Lifecycle {
    /// Captures the team's sandbox `id` into the snapshot `name` (a generated one when `None`); a snapshot of
    /// that name the team has is replaced. Nothing is recorded unless the node took it.
    pub async fn snapshot(&self, team_id: &str, id: &str, name: Option<&str>) -> Result<SnapshotRecord> {
        let record = self.team_sandbox(team_id, id).await?;
        let named = name.is_some();
        let name = match name {
            Some(n) => self.check_snapshot_name(n).await?,
            None => format!("snap-{}", &crate::ids::access_token()[..20]),
        };
        let is_new = self.store.claim_snapshot_name(team_id, &name).await?;
        let taken = async {
            let node = self.node_of(&record).await?;
            Ok::<_, LifecycleError>(node.snapshot(&record.id, &name).await?)
        }
        .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                if is_new && let Err(undo) = self.store.delete_template_record(&name).await {
                    tracing::warn!(snapshot = %name, error = %undo, "could not give back a failed snapshot's name");
                }
                return Err(e);
            }
        };
        let snapshot = SnapshotRecord {
            template_id: name.clone(),
            team_id: team_id.to_owned(),
            sandbox_id: record.id.clone(),
            node_id: record.node_id.clone(),
            named,
            memory: taken.memory,
            cpu_count: record.cpu_count,
            memory_mb: record.memory_mb,
            disk_size_mb: record.disk_size_mb,
            created_at_ms: now_ms(),
        };
        self.store.put_snapshot(&snapshot).await?;
        tracing::info!(sandbox = %record.id, snapshot = %name, memory = taken.memory, "snapshot taken");
        Ok(snapshot)
    }

    /// A name a caller may give a snapshot: a valid template name, not a server template (`base`, ...).
    async fn check_snapshot_name(&self, wanted: &str) -> Result<String> {
        let (name, tag) = crate::names::split_tag(wanted);
        if tag != crate::names::DEFAULT_TAG || !crate::names::is_valid_template_name(name) {
            return Err(LifecycleError::BadRequest(format!(
                "invalid snapshot name {wanted:?}: letters, digits, '-', '_' and '.', at most 64, no tag"
            )));
        }
        let server_template = self.store.get_template_record(name).await?.is_none()
            && self.template_node.templates().await?.iter().any(|t| t.template_id == name);
        if server_template || soulbox_templates::is_shipped_template(name) {
            return Err(LifecycleError::Conflict(format!("the template name '{name}' is taken: choose another name")));
        }
        Ok(name.to_owned())
    }

    /// The team's snapshots that pass `filter`, oldest first.
    pub async fn snapshots(&self, team_id: &str, filter: &SnapshotFilter) -> Result<Vec<SnapshotRecord>> {
        let name = filter.name.as_deref().map(|n| crate::names::split_tag(n).0);
        let mut all = self.store.list_team_snapshots(team_id).await?;
        all.retain(|s| {
            filter.sandbox_id.as_deref().is_none_or(|id| s.sandbox_id == id) && name.is_none_or(|n| s.template_id == n)
        });
        Ok(all)
    }

    /// The team's snapshot `name` (`name` or `name:default`), if it is one.
    pub async fn team_snapshot(&self, team_id: &str, name: &str) -> Result<Option<SnapshotRecord>> {
        let (name, tag) = crate::names::split_tag(name);
        if tag != crate::names::DEFAULT_TAG {
            return Ok(None);
        }
        Ok(self.store.get_snapshot(name).await?.filter(|s| s.team_id == team_id))
    }

    /// Deletes a snapshot on its node and in the store. Sandboxes started from it keep running and can stop and
    /// start: they hold its layers, which the node keeps (layers are shared, never copied per sandbox).
    pub async fn delete_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        match self.nodes.get(&snapshot.node_id).await {
            Ok(node) => {
                node.delete_template(&snapshot.template_id).await?;
            }
            // A removed node took its templates with it.
            Err(crate::node::NodeError::NodeNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match self.store.delete_template_record(&snapshot.template_id).await {
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Forks the team's sandbox `id` `count` times: one snapshot, then each fork starts from it on the same
    /// node with the source's settings (env, metadata, network, lifecycle, an access token of its own when the
    /// source has one) and `timeout_s`. Each fork succeeds or fails on its own; the source keeps running.
    pub async fn fork(&self, team_id: &str, id: &str, timeout_s: Option<i32>, count: i32) -> Result<Vec<ForkOutcome>> {
        if !(1..=MAX_FORKS).contains(&count) {
            return Err(LifecycleError::BadRequest(format!("count must be between 1 and {MAX_FORKS}")));
        }
        let timeout_s = timeout_s.unwrap_or(DEFAULT_FORK_TIMEOUT_S);
        self.check_timeout(timeout_s)?;
        let record = self.team_sandbox(team_id, id).await?;
        let node = self.node_of(&record).await?;
        let internal = soulbox_templates::fork_template_name(&crate::ids::access_token()[..20]);
        node.snapshot(&record.id, &internal).await?;
        let sizes = (record.cpu_count, record.memory_mb, record.disk_size_mb);
        // Forks mount what their source mounts (the volumes are shared, as they are between any two sandboxes).
        let mounts = super::volumes::as_requested(&self.store.volume_mounts(&record.id).await?);
        let source = || Source {
            template: recorded_template(&record.template_id, record.alias.iter().cloned().collect(), sizes),
            runtime_template: internal.clone(),
            node_id: Some(record.node_id.clone()),
        };
        let request = || CreateRequest {
            team_id: team_id.to_owned(),
            template: record.template_id.clone(),
            timeout_s: Some(timeout_s),
            metadata: record.metadata.clone(),
            env_vars: record.env_vars.clone(),
            auto_pause: record.auto_pause,
            auto_pause_memory: record.auto_pause_memory,
            auto_pause_grace_s: record.auto_pause_grace_s.max(0) as u32,
            auto_resume: record.auto_resume,
            allow_internet: record.network.allow_internet,
            allow_out: crate::egress::entries(&record.network).0,
            deny_out: crate::egress::entries(&record.network).1,
            egress_proxy: record.network.egress_proxy.clone(),
            rules: record.network.rules.clone(),
            dns_servers: record.network.dns_servers.clone(),
            // Private like its source, with a token of its own.
            private_ports: record.ingress.traffic_access_token.is_some(),
            mask_request_host: record.ingress.mask_request_host.clone(),
            secure: record.envd_access_token.is_some(),
            volume_mounts: mounts.clone(),
        };
        let forks = (0..count).map(|_| self.create_from(source(), timeout_s, request()));
        let outcomes = futures::future::join_all(forks).await;
        // The forks hold its layers; the template itself is not needed any more.
        if let Err(e) = node.delete_template(&internal).await {
            tracing::warn!(sandbox = %id, template = %internal, error = %e, "could not remove a fork's template");
        }
        tracing::info!(
            sandbox = %id,
            forks = outcomes.iter().filter(|o| o.is_ok()).count(),
            failed = outcomes.iter().filter(|o| o.is_err()).count(),
            "sandbox forked"
        );
        Ok(outcomes)
    }
}
