//! Sandbox lifecycle: create, connect, timeouts, refresh, pause/resume (auto-pause, seed feature 4), kill.
//!
//! The store is the source of truth; the node does the work; the deadline timer fires timeouts. Every operation
//! is ordered so that a failure leaves no partial state: a sandbox is recorded only after its node started it,
//! and a node-side sandbox whose record could not be written is killed again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use soulbox_protocol::api::SandboxState;

use crate::cluster::{NodeSet, SingleNode};
use crate::deadlines::Deadlines;
use crate::ids;
use crate::node::{LogLine, LogQuery, Node, NodeError};
use crate::store::{ClaimCondition, Holds, SandboxRecord, Store, StoreError, TeamLimits, now_ms};
use crate::stream_cut::StreamCuts;

mod builtin_templates;
mod create;
mod moves;
mod network;
mod snapshots;
mod teams;
mod timeouts;
mod volumes;
pub use volumes::{VolumeSite, volume_error};

pub use builtin_templates::{ShippedLogLine, Skip as ShippedSkip};
pub use snapshots::{ForkOutcome, SnapshotFilter};

#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub default_timeout_s: i32,
    /// Largest timeout a create/connect/set-timeout may ask for.
    pub max_timeout_s: i32,
    /// Seed feature 7: refresh never extends a sandbox past `started_at + max_lifetime_s`.
    pub max_lifetime_s: i64,
    /// How long a paused sandbox is kept: its record's end is then the pause plus this, and the deadline
    /// that fires there deletes it.
    pub paused_retention: Duration,
    pub node_id: String,
    /// How often every replica looks in the store for deadlines due soon (the in-memory wheel then fires them
    /// precisely): a sandbox whose timeout was set through a replica that has gone still times out.
    pub deadline_sweep: Duration,
    /// How long a claim on a sandbox (timeout, auto-pause, resume) blocks other replicas when its holder dies
    /// mid-operation; longer than any pause or resume takes.
    pub claim_lease: Duration,
    /// Every team's limits unless the team overrides them (`[teams]` in the server config).
    pub team_limits: TeamLimits,
    /// Whether `allowOut` may name private, link-local and metadata ranges (`allow_private_egress`).
    pub allow_private_egress: bool,
    /// Where persistent volumes live (`soulbox-volumes`); `None`: the volume routes answer 501.
    pub volumes_dir: Option<std::path::PathBuf>,
    /// Each new volume's size in bytes; `None`: none. With `volume_backing` it bounds every write (the volume
    /// is an image of that size), without it only content-API uploads.
    pub volume_size_bytes: Option<u64>,
    /// Storage of their own for volumes made in `volumes_dir` (the in-process runtime's images); `None` in a
    /// shared volumes directory, where volumes stay plain directories.
    pub volume_backing: Option<Arc<dyn soulbox_volumes::VolumeBacking>>,
    /// Cluster mode: `volumes_dir` is one filesystem every node mounts at the same path (NFS, CephFS). When
    /// false, each new volume lives on one node and sandboxes mounting it are placed there.
    pub volumes_shared: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            default_timeout_s: 300,
            max_timeout_s: 24 * 3600,
            max_lifetime_s: 24 * 3600,
            paused_retention: Duration::from_secs(30 * 24 * 3600),
            node_id: "local".into(),
            deadline_sweep: Duration::from_secs(5),
            claim_lease: Duration::from_secs(120),
            team_limits: TeamLimits::default(),
            allow_private_egress: false,
            volumes_dir: None,
            volume_size_bytes: None,
            volume_backing: None,
            volumes_shared: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    /// Over one of the team's limits (E2B's 429).
    #[error("{0}")]
    LimitExceeded(String),
    /// A write that would take a volume past its size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A feature this server was not set up for (501).
    #[error("{0}")]
    NotImplemented(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for LifecycleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => LifecycleError::NotFound(format!("{what} not found")),
            StoreError::Conflict(m) => LifecycleError::Conflict(m),
            StoreError::Invalid(m) => LifecycleError::BadRequest(m),
            StoreError::LimitExceeded(e) => LifecycleError::LimitExceeded(e.to_string()),
            other => LifecycleError::Internal(other.to_string()),
        }
    }
}

impl From<NodeError> for LifecycleError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::SandboxNotFound(id) => LifecycleError::NotFound(format!("sandbox \"{id}\" not found")),
            NodeError::TemplateNotFound(t) => LifecycleError::NotFound(format!("template '{t}' not found")),
            NodeError::Invalid(m) => LifecycleError::BadRequest(m),
            NodeError::NoCapacity(m) => LifecycleError::Unavailable(m),
            NodeError::Failed(m) => LifecycleError::Internal(m),
            NodeError::Unreachable(m) => LifecycleError::Unavailable(m),
            NodeError::NodeNotFound(id) => LifecycleError::NotFound(format!("node {id} not found")),
        }
    }
}

pub type Result<T> = std::result::Result<T, LifecycleError>;

/// What a create asks for, from either API version.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The team of the key that asks: it owns the sandbox and pays for it from its limits.
    pub team_id: String,
    pub template: String,
    pub timeout_s: Option<i32>,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub auto_pause: bool,
    pub auto_pause_memory: bool,
    pub auto_pause_grace_s: u32,
    pub auto_resume: bool,
    pub allow_internet: bool,
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
    /// E2B's `egressProxy` (its host not resolved yet: `create` does that).
    pub egress_proxy: Option<soulbox_protocol::SocksProxy>,
    /// E2B's `rules` (checked by `egress::header_rules`).
    pub rules: Vec<soulbox_protocol::HeaderRule>,
    /// E2B's `dnsServers` (checked by `egress::dns_servers`).
    pub dns_servers: Vec<std::net::Ipv4Addr>,
    /// E2B's `allowPublicTraffic: false`: the sandbox's ports need its traffic access token.
    pub private_ports: bool,
    /// E2B's `maskRequestHost`: the `Host` requests to its ports arrive with.
    pub mask_request_host: Option<String>,
    /// v1 issues an access token only when `secure`; v2 always does.
    pub secure: bool,
    /// E2B's `volumeMounts`: the team's volumes by name (resolved by `create_from`).
    pub volume_mounts: Vec<soulbox_protocol::api::SandboxVolumeMount>,
}

pub struct Lifecycle {
    store: Store,
    /// Where sandboxes live: the in-process node (one machine) or the cluster's node agents.
    nodes: Arc<dyn NodeSet>,
    /// The node asked about templates (`nodes.template_node()`).
    template_node: Arc<dyn Node>,
    deadlines: Deadlines,
    config: LifecycleConfig,
    /// Cut when a sandbox stops serving (kill, pause): the proxy ends its open streams on it, and answers "not
    /// found" for it while it is being stopped.
    streams: StreamCuts,
    /// Names this process in sandbox claims (random per start: a restarted replica is a new claimer).
    replica_id: String,
    /// The volumes' files (`LifecycleConfig::volumes_dir`).
    volume_files: Option<Arc<soulbox_volumes::VolumeStore>>,
}

/// How often a replica that lost a resume claim looks whether the winner has finished. Only concurrent resumes
/// of one sandbox wait here, and the winner may be another process: there is no notification to wait on.
const RESUME_WAIT_POLL: Duration = Duration::from_millis(50);

impl Lifecycle {
    /// Builds the lifecycle, re-arms deadlines from the store, and starts handling timeouts.
    pub async fn start(store: Store, node: Arc<dyn Node>, config: LifecycleConfig) -> Result<Arc<Lifecycle>> {
        let nodes = Arc::new(SingleNode::new(config.node_id.clone(), node));
        Lifecycle::start_with_nodes(store, nodes, config).await
    }

    /// Like [`Lifecycle::start`], with sandboxes placed on and routed to `nodes` (cluster mode).
    pub async fn start_with_nodes(
        store: Store,
        nodes: Arc<dyn NodeSet>,
        config: LifecycleConfig,
    ) -> Result<Arc<Lifecycle>> {
        let (deadlines, mut fired) = Deadlines::start();
        let template_node = nodes.template_node();
        let replica_id = format!("replica-{}", &ids::access_token()[..16]);
        tracing::info!(replica = %replica_id, "lifecycle starting");
        let volume_files = match &config.volumes_dir {
            Some(dir) => Some(Arc::new(
                soulbox_volumes::VolumeStore::open(dir.clone())
                    .map_err(|e| LifecycleError::Internal(format!("the volumes directory {}: {e}", dir.display())))?
                    .with_size_limit(config.volume_size_bytes)
                    .with_backing(config.volume_backing.clone()),
            )),
            None => None,
        };
        let lifecycle = Arc::new(Lifecycle {
            store,
            nodes,
            template_node,
            deadlines,
            config,
            streams: StreamCuts::default(),
            replica_id,
            volume_files,
        });
        for record in lifecycle.store.list_sandboxes().await? {
            if record.state == SandboxState::Running {
                lifecycle.arm(&record);
            }
        }
        let weak = Arc::downgrade(&lifecycle);
        tokio::spawn(async move {
            while let Some(id) = fired.recv().await {
                let Some(lifecycle) = weak.upgrade() else { return };
                tokio::spawn(async move {
                    if let Err(e) = lifecycle.on_deadline(&id).await {
                        tracing::warn!(sandbox = %id, error = %e, "timeout handling failed");
                    }
                });
            }
        });
        tokio::spawn(Self::sweep_deadlines(Arc::downgrade(&lifecycle)));
        Ok(lifecycle)
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    fn lease_ms(&self) -> i64 {
        self.config.claim_lease.as_millis() as i64
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node for template questions (on one machine: the only node).
    pub fn node(&self) -> &Arc<dyn Node> {
        &self.template_node
    }

    pub fn nodes(&self) -> &Arc<dyn NodeSet> {
        &self.nodes
    }

    /// The node a sandbox lives on.
    pub async fn node_of(&self, record: &SandboxRecord) -> Result<Arc<dyn Node>> {
        Ok(self.nodes.get(&record.node_id).await?)
    }

    pub async fn sandbox_logs(&self, team_id: &str, id: &str, query: LogQuery) -> Result<Vec<LogLine>> {
        let record = self.team_sandbox(team_id, id).await?;
        Ok(self.node_of(&record).await?.logs(id, query).await?)
    }

    /// Drops a sandbox the control plane can no longer reach (its node was lost or removed, or it reported
    /// the sandbox gone): no node call, streams cut, timer cancelled, record deleted — it answers 404 from now on.
    pub async fn forget(&self, id: &str, reason: &str) -> Result<()> {
        self.streams.stop(id);
        self.deadlines.cancel(id);
        let deleted = self.store.delete_sandbox(id).await;
        self.streams.done_stopping(id);
        if deleted? {
            tracing::warn!(sandbox = %id, reason, "sandbox lost");
        }
        Ok(())
    }

    /// Makes a record agree with its node after a crash (the server's reconcile): its state and address
    /// become what the node has; a sandbox that no longer runs has no deadline.
    pub async fn correct_record(
        &self,
        record: &SandboxRecord,
        state: SandboxState,
        address: Option<&str>,
    ) -> Result<()> {
        let id = record.id.as_str();
        if !self.store.transition_sandbox(id, record.state, state, address, record.end_at_ms).await? {
            return Err(LifecycleError::Conflict(format!("sandbox {id} changed while it was reconciled")));
        }
        if state != SandboxState::Running {
            self.deadlines.cancel(id);
        }
        tracing::info!(sandbox = %id, from = ?record.state, to = ?state, address, "record corrected to match the node");
        Ok(())
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// The sandboxes' live streams: the proxy takes its tokens here (`serving`: `None` while a sandbox is
    /// being killed or paused, so it answers "not found" instead of trying an envd that is going away).
    pub fn streams(&self) -> &StreamCuts {
        &self.streams
    }

    pub(super) fn check_timeout(&self, timeout_s: i32) -> Result<()> {
        if timeout_s <= 0 {
            return Err(LifecycleError::BadRequest("Timeout must be greater than 0 seconds".into()));
        }
        if timeout_s > self.config.max_timeout_s {
            return Err(LifecycleError::BadRequest(format!(
                "Timeout cannot be greater than {} hours",
                self.config.max_timeout_s / 3600
            )));
        }
        Ok(())
    }

    /// Connect: a running sandbox's end is only ever extended (200); a paused one is resumed (201).
    pub async fn connect(&self, team_id: &str, id: &str, timeout_s: Option<i32>) -> Result<(SandboxRecord, bool)> {
        let timeout_s = timeout_s.unwrap_or(self.config.default_timeout_s);
        self.check_timeout(timeout_s)?;
        let record = self.team_sandbox(team_id, id).await?;
        let wanted_end = now_ms() + i64::from(timeout_s) * 1000;
        match record.state {
            SandboxState::Running => {
                if wanted_end > record.end_at_ms {
                    self.store.set_sandbox_end(id, wanted_end).await?;
                    self.arm(&SandboxRecord { end_at_ms: wanted_end, ..record.clone() });
                }
                Ok((record, false))
            }
            SandboxState::Paused => {
                let resumed = self.resume_paused(record, wanted_end).await?;
                Ok((resumed, true))
            }
        }
    }

    /// Resumes a paused sandbox once, however many requests on however many replicas ask at the same time: the
    /// one whose claim succeeds resumes it; the others wait for it to be running and answer with that.
    async fn resume_paused(&self, record: SandboxRecord, end_at_ms: i64) -> Result<SandboxRecord> {
        // The node holding its files, before the claim: a lost node fails here without leaving a claim behind.
        let node = self.node_of(&record).await?;
        let paused = ClaimCondition { state: SandboxState::Paused, end_at_ms: None };
        let give_up = tokio::time::Instant::now() + self.config.claim_lease + self.config.claim_lease;
        while !self.store.claim_sandbox(&record.id, paused, &self.replica_id, self.lease_ms()).await? {
            let current = self.store.get_sandbox(&record.id).await?;
            if current.state == SandboxState::Running {
                return Ok(current);
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(LifecycleError::Unavailable(format!("sandbox {} is being resumed elsewhere", record.id)));
            }
            tokio::time::sleep(RESUME_WAIT_POLL).await;
        }
        // A sandbox paused to disk holds nothing of its team's limits (one paused with its memory still does):
        // running it again needs the room.
        let team_hold = match record.address {
            Some(_) => None,
            None => match self
                .hold_team_capacity(&record.team_id, record.cpu_count.max(0) as u32, record.memory_mb.max(0) as u32)
                .await
            {
                Ok(hold) => Some(hold),
                Err(e) => {
                    self.release_claim(&record.id).await;
                    return Err(e);
                }
            },
        };
        // Paused to disk on a drained node: it starts on another one (`lifecycle/moves.rs`), else here.
        let mut node_id = record.node_id.clone();
        let moved = match record.address.is_none() && self.nodes.is_draining(&record.node_id).await {
            true => match self.move_paused(&record).await {
                Ok(moved) => Some(moved),
                Err(e) => {
                    moves::move_failed(&record.id, &e);
                    None
                }
            },
            false => None,
        };
        let resumed = match moved {
            Some((to, address)) => {
                node_id = to;
                Ok(address)
            }
            None => node.resume(&record.id).await.map(|a| a.to_string()).map_err(LifecycleError::from),
        };
        let address = match resumed {
            Ok(address) => address,
            Err(e) => {
                self.release_claim(&record.id).await;
                if let Some(hold) = &team_hold {
                    self.release_team_hold(hold).await;
                }
                return Err(e);
            }
        };
        let holds = Holds { placement: None, team: team_hold.as_deref() };
        let (paused, running) = (SandboxState::Paused, SandboxState::Running);
        if !self
            .store
            .transition_sandbox_for_holds(&record.id, paused, running, Some(&address), end_at_ms, holds)
            .await?
        {
            return Err(LifecycleError::Conflict(format!("sandbox {} changed state while resuming", record.id)));
        }
        let resumed =
            SandboxRecord { state: SandboxState::Running, address: Some(address), end_at_ms, node_id, ..record };
        self.arm(&resumed);
        tracing::info!(sandbox = %resumed.id, "sandbox resumed");
        Ok(resumed)
    }

    /// Deprecated v1 resume: only paused sandboxes (409 otherwise).
    pub async fn resume(&self, team_id: &str, id: &str, timeout_s: Option<i32>) -> Result<SandboxRecord> {
        let timeout_s = timeout_s.unwrap_or(self.config.default_timeout_s);
        self.check_timeout(timeout_s)?;
        let record = self.team_sandbox(team_id, id).await?;
        if record.state == SandboxState::Running {
            return Err(LifecycleError::Conflict(format!("sandbox {id} is already running")));
        }
        self.resume_paused(record, now_ms() + i64::from(timeout_s) * 1000).await
    }

    /// Wakes a paused sandbox with auto-resume (for proxied traffic). Returns the running record.
    pub async fn auto_resume(&self, id: &str) -> Result<SandboxRecord> {
        let record = self.store.get_sandbox(id).await?;
        match record.state {
            SandboxState::Running => Ok(record),
            SandboxState::Paused if record.auto_resume => {
                let end = now_ms() + i64::from(self.config.default_timeout_s) * 1000;
                self.resume_paused(record, end).await
            }
            SandboxState::Paused => Err(LifecycleError::NotFound(format!("sandbox {id} is paused"))),
        }
    }

    pub async fn pause(&self, team_id: &str, id: &str, keep_memory: bool) -> Result<()> {
        let record = self.team_sandbox(team_id, id).await?;
        if record.state == SandboxState::Paused {
            return Err(LifecycleError::Conflict(format!("sandbox {id} is already paused")));
        }
        self.streams.stop(id);
        let result = self.pause_running(&record, keep_memory).await;
        self.streams.done_stopping(id);
        result
    }

    async fn pause_running(&self, record: &SandboxRecord, keep_memory: bool) -> Result<()> {
        let id = record.id.as_str();
        self.node_of(record).await?.pause(id, keep_memory).await?;
        let address = if keep_memory { record.address.as_deref() } else { None };
        let kept_until = now_ms() + self.config.paused_retention.as_millis() as i64;
        if !self.store.transition_sandbox(id, SandboxState::Running, SandboxState::Paused, address, kept_until).await? {
            return Err(LifecycleError::Conflict(format!("sandbox {id} is already paused")));
        }
        self.arm(&SandboxRecord {
            state: SandboxState::Paused,
            end_at_ms: kept_until,
            address: address.map(str::to_owned),
            ..record.clone()
        });
        tracing::info!(sandbox = %id, keep_memory, "sandbox paused");
        Ok(())
    }

    pub async fn kill(&self, team_id: &str, id: &str) -> Result<()> {
        // Existence first, so an unknown id is a 404 and not a silent success.
        let record = self.team_sandbox(team_id, id).await?;
        self.remove(&record, false, "sandbox killed").await
    }

    /// Cuts the sandbox's streams, cancels its timer, kills it on its node and deletes its record. With
    /// `gone_is_done`, a sandbox its node no longer has only needs the record deleted.
    async fn remove(&self, record: &SandboxRecord, gone_is_done: bool, what: &str) -> Result<()> {
        let id = record.id.as_str();
        self.streams.stop(id);
        self.deadlines.cancel(id);
        let result = async {
            match self.kill_on_node(record).await {
                Err(NodeError::SandboxNotFound(_)) if gone_is_done => {}
                other => other?,
            }
            self.store.delete_sandbox(id).await?;
            Ok(())
        }
        .await;
        self.streams.done_stopping(id);
        if result.is_ok() {
            tracing::info!(sandbox = %id, "{what}");
        }
        result
    }

    /// `POST /sandboxes/{id}/timeout`: end = now + timeout (may shorten). A paused sandbox's end is its retention,
    /// which a timeout does not change (connect or resume sets its timeout when it runs again).
    pub async fn set_timeout(&self, team_id: &str, id: &str, timeout_s: i32) -> Result<()> {
        self.check_timeout(timeout_s)?;
        let record = self.team_sandbox(team_id, id).await?;
        if record.state == SandboxState::Paused {
            return Ok(());
        }
        let end = now_ms() + i64::from(timeout_s) * 1000;
        self.store.set_sandbox_end(id, end).await?;
        self.arm(&SandboxRecord { end_at_ms: end, ..record });
        Ok(())
    }

    /// Seed feature 7: extend the lifetime by `duration_s` from now, never shortening and never past the maximum
    /// total lifetime. Returns the new end (unix ms).
    pub async fn refresh(&self, team_id: &str, id: &str, duration_s: Option<i32>) -> Result<i64> {
        let duration_s = duration_s.unwrap_or(self.config.default_timeout_s);
        if duration_s <= 0 {
            return Err(LifecycleError::BadRequest("duration must be greater than 0 seconds".into()));
        }
        let record = self.team_sandbox(team_id, id).await?;
        if record.state == SandboxState::Paused {
            return Ok(record.end_at_ms); // its retention, as for set_timeout
        }
        let limit = record.started_at_ms + self.config.max_lifetime_s * 1000;
        let wanted = now_ms() + i64::from(duration_s) * 1000;
        if wanted > limit {
            return Err(LifecycleError::BadRequest(format!(
                "refresh would extend sandbox {id} past its maximum lifetime of {} seconds",
                self.config.max_lifetime_s
            )));
        }
        let end = wanted.max(record.end_at_ms);
        self.store.set_sandbox_end(id, end).await?;
        self.arm(&SandboxRecord { end_at_ms: end, ..record });
        Ok(end)
    }

    /// Kills the sandbox on its node. A node that cannot be reached kills it when it reconciles (the record is
    /// gone by then), so that counts as done.
    async fn kill_on_node(&self, record: &SandboxRecord) -> std::result::Result<(), NodeError> {
        let killed = match self.nodes.get(&record.node_id).await {
            Ok(node) => node.kill(&record.id).await,
            Err(e) => Err(e),
        };
        match killed {
            Err(NodeError::Unreachable(why)) => {
                tracing::warn!(sandbox = %record.id, why, "killing on an unreachable node");
                Ok(())
            }
            other => other,
        }
    }

    async fn release_claim(&self, id: &str) {
        if let Err(e) = self.store.release_sandbox_claim(id, &self.replica_id).await {
            tracing::warn!(sandbox = %id, error = %e, "could not release a sandbox claim; it expires with its lease");
        }
    }
}
