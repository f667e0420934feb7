//! Sandbox create: from a template, a tag's build or a snapshot (which pins the node that holds its layers).

use soulbox_protocol::api::SandboxState;
use soulbox_protocol::version::ENVD_PROTOCOL_VERSION;

use super::{CreateRequest, Lifecycle, LifecycleError, Result};
use crate::cluster::Requirements;
use crate::ids;
use crate::node::{NetworkPolicy, SandboxSpec, TemplateInfo};
use crate::store::{Holds, Ingress, SandboxRecord, SnapshotRecord, now_ms};
use std::time::Instant;

/// What a new sandbox starts from.
pub(super) struct Source {
    /// As the record names it (`templateID`, alias, size).
    pub template: TemplateInfo,
    /// The node's runtime template.
    pub runtime_template: String,
    /// The node that must run it (a snapshot's layers live there); any node when `None`.
    pub node_id: Option<String>,
}

impl Source {
    pub(super) fn of_snapshot(snapshot: &SnapshotRecord) -> Source {
        let id = &snapshot.template_id;
        let sizes = (snapshot.cpu_count, snapshot.memory_mb, snapshot.disk_size_mb);
        Source {
            template: recorded_template(id, vec![id.clone()], sizes),
            runtime_template: id.clone(),
            node_id: Some(snapshot.node_id.clone()),
        }
    }
}

/// Where one create's time went, stage by stage (µs since the stage before), logged as one debug line when the
/// create ends: the budget of a booted pool hit (issue 18 goal 1, BENCHMARKS "Where a pool hit's time goes").
struct Stages {
    started: Instant,
    last: Instant,
    parts: Vec<(&'static str, u64)>,
}

impl Stages {
    fn new() -> Stages {
        let now = Instant::now();
        Stages { started: now, last: now, parts: Vec::with_capacity(8) }
    }

    /// Ends stage `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.parts.push((name, (now - self.last).as_micros() as u64));
        self.last = now;
    }

    fn log(&self, id: Option<&str>) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let stages: Vec<String> = self.parts.iter().map(|(name, us)| format!("{name}={us}")).collect();
        tracing::debug!(
            sandbox = id.unwrap_or_default(),
            request_id = crate::access_log::current().unwrap_or_default(),
            us = self.started.elapsed().as_micros() as u64,
            stages = stages.join(" "),
            "create stages"
        );
    }
}

/// A template as a record names it (a snapshot's, or a fork's source's): its id and aliases, its (vCPUs, memory
/// MiB, disk MiB) as stored, this envd's protocol version.
pub(super) fn recorded_template(
    id: &str,
    aliases: Vec<String>,
    (cpu, memory_mb, disk_mb): (i32, i32, i32),
) -> TemplateInfo {
    TemplateInfo {
        template_id: id.to_owned(),
        aliases,
        cpu_count: cpu.max(1) as u32,
        memory_mb: memory_mb.max(0) as u32,
        disk_size_mb: disk_mb.max(0) as u32,
        envd_version: ENVD_PROTOCOL_VERSION.into(),
        created_at_ms: 0,
    }
}

impl Lifecycle {
    pub async fn create(&self, mut req: CreateRequest) -> Result<SandboxRecord> {
        let mut stages = Stages::new();
        let timeout_s = req.timeout_s.unwrap_or(self.config.default_timeout_s);
        self.check_timeout(timeout_s)?;
        self.check_policy(&req.allow_out, &req.deny_out)?;
        if let Some(mask) = &req.mask_request_host {
            crate::ingress::check_mask(mask).map_err(LifecycleError::BadRequest)?;
        }
        req.egress_proxy = self.resolve_proxy(req.egress_proxy.take()).await?;
        let source = self.resolve_source(&req.team_id, &req.template).await?;
        stages.mark("resolve");
        self.create_from_timed(source, timeout_s, req, &mut stages).await
    }

    /// A snapshot of the team's (`name` or `name:default`), else a template.
    async fn resolve_source(&self, team_id: &str, wanted: &str) -> Result<Source> {
        let (name, tag) = crate::names::split_tag(wanted);
        if tag == crate::names::DEFAULT_TAG
            && let Some(snapshot) = self.store.get_snapshot(name).await?
        {
            if snapshot.team_id != team_id {
                return Err(LifecycleError::NotFound(format!("template '{wanted}' not found")));
            }
            return Ok(Source::of_snapshot(&snapshot));
        }
        let template = self.resolve_template(team_id, wanted).await?;
        let runtime_template = template.template_id.clone();
        Ok(Source { template, runtime_template, node_id: None })
    }

    /// Starts a sandbox from `source` for `req` (its `template` is not read again): team limits, placement,
    /// the node's create, the record.
    pub(super) async fn create_from(
        &self,
        source: Source,
        timeout_s: i32,
        req: CreateRequest,
    ) -> Result<SandboxRecord> {
        self.create_from_timed(source, timeout_s, req, &mut Stages::new()).await
    }

    async fn create_from_timed(
        &self,
        source: Source,
        timeout_s: i32,
        req: CreateRequest,
        stages: &mut Stages,
    ) -> Result<SandboxRecord> {
        let template = &source.template;
        let mounts = self.resolve_mounts(&req.team_id, &req.volume_mounts).await?;
        let home = super::volumes::volume_home(&mounts)?;
        let token = req.secure.then(ids::access_token);
        let spec = SandboxSpec {
            template_id: source.runtime_template.clone(),
            cpu_count: template.cpu_count,
            memory_mb: template.memory_mb,
            disk_size_mb: template.disk_size_mb,
            env_vars: req.env_vars.clone(),
            envd_access_token: token.clone(),
            network: NetworkPolicy {
                egress_proxy: req.egress_proxy.clone(),
                rules: req.rules.clone(),
                dns_servers: req.dns_servers.clone(),
                ..crate::egress::policy(req.allow_internet, &req.allow_out, &req.deny_out)
            },
            metadata: req.metadata.clone(),
            sandbox_id: None,
            volumes: super::volumes::node_mounts(&mounts),
        };
        // The team's limits first (a refused create touches no node), then a node with room.
        stages.mark("mounts");
        let team_hold = self.hold_team_capacity(&req.team_id, template.cpu_count, template.memory_mb).await?;
        stages.mark("team_hold");
        let need = Requirements { cpu_count: template.cpu_count, memory_mb: u64::from(template.memory_mb) };
        let placed = match (&source.node_id, &home) {
            // The sandbox must run where its volumes live: the snapshot moves there.
            (Some(holder), Some(home)) if holder != home => {
                self.place_copy(holder, &source.runtime_template, need, Some(home)).await
            }
            // The node holding the snapshot was drained: the snapshot moves to where the sandbox goes.
            (Some(holder), None) if self.nodes.is_draining(holder).await => {
                self.place_copy(holder, &source.runtime_template, need, None).await
            }
            (Some(node_id), None) => self.nodes.place_on(node_id, need).await.map_err(Into::into),
            (_, Some(home)) => self.nodes.place_on(home, need).await.map_err(|e| {
                LifecycleError::Unavailable(format!(
                    "the sandbox's volumes live on node {home}, which cannot take it now: {e}"
                ))
            }),
            (None, None) => self.nodes.place(need).await.map_err(Into::into),
        };
        let result = match placed {
            Ok(placement) => {
                stages.mark("place");
                let created =
                    self.create_on(&placement, spec, template, timeout_s, req, &team_hold, &mounts, stages).await;
                self.nodes.release(&placement).await;
                stages.mark("release");
                created
            }
            Err(e) => Err(e),
        };
        // On success the hold went with the record's insert; a failed create gives the room back.
        if result.is_err() {
            self.release_team_hold(&team_hold).await;
        }
        stages.log(result.as_ref().ok().map(|r| r.id.as_str()));
        result
    }

    #[allow(clippy::too_many_arguments)] // the create's parts as `create_from` holds them; a struct would only rename them
    async fn create_on(
        &self,
        placement: &crate::cluster::Placement,
        spec: SandboxSpec,
        template: &TemplateInfo,
        timeout_s: i32,
        req: CreateRequest,
        team_hold: &str,
        mounts: &[crate::store::VolumeMountRecord],
        stages: &mut Stages,
    ) -> Result<SandboxRecord> {
        let (node_id, node) = (placement.node_id.clone(), &placement.node);
        let token = spec.envd_access_token.clone();
        let created = node.create(spec).await?;
        stages.mark("node_create");
        let (id, address) = (created.sandbox_id, created.address);
        let now = now_ms();
        let record = SandboxRecord {
            id: id.clone(),
            template_id: template.template_id.clone(),
            alias: template.aliases.first().cloned(),
            node_id,
            state: SandboxState::Running,
            started_at_ms: now,
            end_at_ms: now + i64::from(timeout_s) * 1000,
            cpu_count: template.cpu_count as i32,
            memory_mb: template.memory_mb as i32,
            disk_size_mb: template.disk_size_mb as i32,
            envd_version: template.envd_version.clone(),
            envd_access_token: token,
            metadata: req.metadata,
            env_vars: req.env_vars,
            auto_pause: req.auto_pause,
            auto_pause_memory: req.auto_pause_memory,
            auto_pause_grace_s: req.auto_pause_grace_s as i32,
            auto_resume: req.auto_resume,
            network: NetworkPolicy {
                egress_proxy: req.egress_proxy,
                rules: req.rules,
                dns_servers: req.dns_servers,
                ..crate::egress::policy(req.allow_internet, &req.allow_out, &req.deny_out)
            },
            ingress: Ingress {
                traffic_access_token: req.private_ports.then(ids::access_token),
                mask_request_host: req.mask_request_host,
            },
            address: Some(address.to_string()),
            team_id: req.team_id,
        };
        let holds = Holds { placement: placement.hold.as_deref(), team: Some(team_hold) };
        let inserted = match self.store.insert_sandbox_for_holds(&record, holds).await {
            Ok(()) if mounts.is_empty() => Ok(()),
            Ok(()) => match self.store.add_volume_mounts(&id, mounts).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = self.store.delete_sandbox(&id).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        stages.mark("insert");
        if let Err(e) = inserted {
            // Leave nothing behind: the node's sandbox goes too.
            if let Err(kill) = node.kill(&id).await {
                tracing::error!(sandbox = %id, error = %kill, "could not remove sandbox after a failed insert");
            }
            return Err(e.into());
        }
        self.arm(&record);
        tracing::info!(sandbox = %id, template = %record.template_id, "sandbox created");
        stages.mark("arm_log");
        Ok(record)
    }
}
