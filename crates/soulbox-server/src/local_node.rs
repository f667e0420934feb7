//! The node of a one-machine SoulBox: `soulbox-runtime` in-process.

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use soulbox_protocol::version::{ENVD_PROTOCOL_VERSION, SOULBOX_VERSION};
use soulbox_runtime::{Error as RuntimeError, Runtime, SandboxSpec as RuntimeSpec, Status};

use crate::node::{
    CreatedSandbox, LogLine, LogQuery, NetworkPolicy, Node, NodeError, NodeInfo, NodeStatus, SandboxSpec, SandboxStats,
    SnapshotTaken, TemplateInfo, TrafficAddress,
};
use crate::store::now_ms;

pub struct LocalNode {
    runtime: Runtime,
    node_id: String,
    templates_dir: PathBuf,
    engine: soulbox_templates::engine::Engine,
    /// The runtime's volumes directory, for volumes homed on this node (`None`: it has none, or it cannot open).
    volume_files: Option<std::sync::Arc<soulbox_volumes::VolumeStore>>,
}

impl LocalNode {
    pub fn new(runtime: Runtime, node_id: impl Into<String>) -> LocalNode {
        LocalNode::with_engine_config(runtime, node_id, Default::default())
    }

    /// With the template build engine's configuration (image rewrites, registries) from the server config.
    pub fn with_engine_config(
        runtime: Runtime,
        node_id: impl Into<String>,
        engine: soulbox_templates::engine::EngineConfig,
    ) -> LocalNode {
        // (the runtime's store: a shifted one of its own in the shared user namespace mode)
        let templates_dir = runtime.store().root().join("templates");
        let engine = soulbox_templates::engine::Engine::new(runtime.clone(), engine);
        let volume_files = runtime.config().volumes_dir.clone().and_then(|dir| {
            soulbox_volumes::VolumeStore::open(dir.clone())
                .map(|files| files.with_backing(runtime.volume_backing()))
                .inspect_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "cannot open the volumes directory"))
                .ok()
                .map(std::sync::Arc::new)
        });
        LocalNode { runtime, node_id: node_id.into(), templates_dir, engine, volume_files }
    }

    /// Builds the `base` template through the engine (cached after the first start), its log on stderr.
    /// Node agents sharing one template store take turns (the store's `base` lock); the later ones find every
    /// layer in the engine's caches.
    pub async fn ensure_base_template(&self) -> Result<std::time::Duration, soulbox_templates::BuildFailure> {
        let store = self.runtime.store().clone();
        let _turn = tokio::task::spawn_blocking(move || store.lock(soulbox_templates::base::BASE_TEMPLATE))
            .await
            .map_err(|e| {
                soulbox_templates::BuildFailure::new(format!("waiting for the base template lock: {e}"), None)
            })?
            .map_err(|e| {
                soulbox_templates::BuildFailure::new(format!("waiting for the base template lock: {e}"), None)
            })?;
        let files_dir = self.runtime.config().store_dir().join("uploads");
        soulbox_templates::base::ensure_base(&self.engine, files_dir, soulbox_templates::base::stderr_log()).await
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn volumes(&self) -> Result<std::sync::Arc<soulbox_volumes::VolumeStore>, NodeError> {
        self.volume_files.clone().ok_or_else(|| NodeError::Invalid("this node has no volumes directory".into()))
    }
}

/// A volume store call on a blocking thread (filesystem work).
async fn volume_call(
    f: impl FnOnce() -> Result<(), soulbox_volumes::VolumeError> + Send + 'static,
) -> Result<(), NodeError> {
    use soulbox_volumes::VolumeError;
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ VolumeError::VolumeExists(_))) => Err(NodeError::Invalid(e.to_string())),
        Ok(Err(e)) => Err(NodeError::Failed(e.to_string())),
        Err(e) => Err(NodeError::Failed(format!("a volume operation failed: {e}"))),
    }
}

fn node_error(e: RuntimeError) -> NodeError {
    match e {
        RuntimeError::TemplateNotFound(t) => NodeError::TemplateNotFound(t),
        RuntimeError::NotFound(id) => NodeError::SandboxNotFound(id),
        RuntimeError::Invalid(m) => NodeError::Invalid(m),
        other => NodeError::Failed(other.to_string()),
    }
}

fn address(info: &soulbox_runtime::SandboxInfo) -> Result<IpAddr, NodeError> {
    info.ip.map(IpAddr::V4).ok_or_else(|| NodeError::Failed(format!("sandbox {} has no address", info.id)))
}

#[async_trait]
impl Node for LocalNode {
    async fn info(&self) -> NodeInfo {
        let sandboxes = self.runtime.list().await;
        let cpu_count = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let (total_mb, available_mb) = meminfo_mb();
        NodeInfo {
            node_id: self.node_id.clone(),
            status: NodeStatus::Healthy,
            region: "local".into(),
            version: SOULBOX_VERSION.into(),
            cpu_count,
            memory_mb: total_mb,
            cpu_available: f64::from(cpu_count) * (1.0 - load_fraction(cpu_count)),
            memory_available_mb: available_mb,
            sandbox_count: sandboxes.iter().filter(|s| s.status != Status::Pooled).count() as u32,
            last_health_check_unix_ms: now_ms(),
            trouble: memory_pressure(total_mb, available_mb),
        }
    }

    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.templates_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(NodeError::Failed(format!("reading templates: {e}"))),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(meta) = self.runtime.store().get(&name) {
                let mut info = template_info(&meta, self.runtime.config().default_disk_mb);
                info.created_at_ms = written_at_ms(&entry.path().join("template.json"));
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.template_id.cmp(&b.template_id));
        Ok(out)
    }

    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        let runtime_spec = RuntimeSpec {
            template: spec.template_id,
            env: spec.env_vars,
            metadata: spec.metadata,
            cpu_count: Some(spec.cpu_count),
            memory_mb: Some(u64::from(spec.memory_mb)),
            pids_limit: None,
            disk_mb: (spec.disk_size_mb > 0).then_some(u64::from(spec.disk_size_mb)),
            access_token: spec.envd_access_token,
            network: spec.network,
            // The template's own (`TemplateMeta::runtime`), else the node's default.
            runtime: None,
            sandbox_id: spec.sandbox_id,
            volumes: spec
                .volumes
                .into_iter()
                .map(|v| soulbox_runtime::VolumeMount { volume_id: v.volume_id, path: v.path })
                .collect(),
        };
        let info = self.runtime.create(runtime_spec).await.map_err(node_error)?;
        // A built template's start command runs now; create returns once its ready command succeeds.
        if let Err(e) = soulbox_templates::start::start_and_wait_ready(&self.runtime, &info).await {
            let _ = self.runtime.delete(&info.id).await;
            return Err(NodeError::Failed(e));
        }
        Ok(CreatedSandbox { address: address(&info)?, sandbox_id: info.id })
    }

    async fn pause(&self, sandbox_id: &str, keep_memory: bool) -> Result<(), NodeError> {
        let result =
            if keep_memory { self.runtime.pause(sandbox_id).await } else { self.runtime.stop(sandbox_id).await };
        result.map_err(node_error)
    }

    async fn resume(&self, sandbox_id: &str) -> Result<IpAddr, NodeError> {
        let info = self.runtime.info(sandbox_id).await.map_err(node_error)?;
        let info = match info.status {
            Status::Paused => {
                self.runtime.resume(sandbox_id).await.map_err(node_error)?;
                info
            }
            Status::Stopped => self.runtime.start(sandbox_id).await.map_err(node_error)?,
            Status::Running => info,
            other => return Err(NodeError::Failed(format!("sandbox {sandbox_id} cannot resume from {other}"))),
        };
        address(&info)
    }

    async fn update_network(&self, sandbox_id: &str, policy: &NetworkPolicy) -> Result<(), NodeError> {
        self.runtime.update_network(sandbox_id, policy.clone()).await.map_err(node_error)
    }

    async fn kill(&self, sandbox_id: &str) -> Result<(), NodeError> {
        match self.runtime.delete(sandbox_id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(node_error(e)),
        }
    }

    async fn traffic_address(&self, sandbox_id: &str, _recorded: Option<IpAddr>) -> Option<TrafficAddress> {
        self.runtime.endpoint(sandbox_id).map(|e| TrafficAddress { ip: IpAddr::V4(e.ip), boot: e.boot })
    }

    async fn stats(&self, sandbox_id: &str) -> Result<SandboxStats, NodeError> {
        let info = self.runtime.info(sandbox_id).await.map_err(node_error)?;
        let s = self.runtime.stats(sandbox_id).await.map_err(node_error)?;
        // A sandbox with its own disk image (or a project quota) has its usage from one statfs; walking the
        // writable layer is the fallback, O(files) per sandbox per sampler round.
        let (disk, disk_total) = if s.disk_limit_bytes > 0 {
            (s.disk_used_bytes, s.disk_limit_bytes)
        } else {
            (disk_usage(&self.runtime.sandbox_dir(sandbox_id)), 0)
        };
        Ok(SandboxStats {
            cpu_usage_ns: s.cpu_usage_ns,
            cpu_count: info.spec.cpu_count.unwrap_or(1),
            mem_used_bytes: s.memory_bytes,
            mem_total_bytes: s.memory_limit_bytes,
            mem_cache_bytes: 0,
            disk_used_bytes: disk,
            disk_total_bytes: disk_total,
            disk_read_bytes: s.io_read_bytes,
            disk_write_bytes: s.io_write_bytes,
            net_rx_bytes: s.net_rx_bytes,
            net_tx_bytes: s.net_tx_bytes,
            process_count: s.pids,
        })
    }

    async fn build_template(
        &self,
        job: soulbox_templates::BuildJob,
        log: soulbox_templates::LogSink,
    ) -> Result<(), soulbox_templates::BuildFailure> {
        self.engine.build(job, log).await.map(|_| ())
    }

    async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
        self.runtime.store().delete(name).map_err(node_error)
    }

    async fn snapshot(&self, sandbox_id: &str, name: &str) -> Result<SnapshotTaken, NodeError> {
        // runc cannot checkpoint on this kernel (CRIU): a snapshot here holds the files, and sandboxes started
        // from it boot cold from them.
        let meta = self.runtime.snapshot(sandbox_id, name).await.map_err(node_error)?;
        Ok(SnapshotTaken { template: template_info(&meta, self.runtime.config().default_disk_mb), memory: false })
    }

    async fn copy_template(&self, from: &str, to: &str) -> Result<(), NodeError> {
        let mut meta = self.runtime.store().get(from).map_err(node_error)?;
        meta.name = to.to_string();
        self.runtime.store().put(&meta).map_err(node_error)
    }

    fn envd_secret(&self, sandbox_id: &str) -> Option<soulbox_runtime::EnvdSecret> {
        self.runtime.envd_secret(sandbox_id)
    }

    fn check_recipe(&self, recipe: &soulbox_templates::Recipe) -> Result<(), String> {
        self.engine.check_recipe(recipe)
    }

    async fn create_volume(&self, volume_id: &str, size_bytes: Option<u64>) -> Result<(), NodeError> {
        let files = self.volumes()?;
        let id = volume_id.to_owned();
        volume_call(move || files.create_sized(&id, size_bytes).map(|_| ())).await
    }

    async fn delete_volume(&self, volume_id: &str) -> Result<(), NodeError> {
        let files = self.volumes()?;
        let id = volume_id.to_owned();
        volume_call(move || match files.delete(&id) {
            Err(soulbox_volumes::VolumeError::VolumeNotFound(_)) => Ok(()),
            other => other,
        })
        .await
    }

    fn volume_files(&self) -> Option<std::sync::Arc<soulbox_volumes::VolumeStore>> {
        self.volume_files.clone()
    }

    fn template_files_dir(&self) -> Option<PathBuf> {
        Some(self.runtime.config().store_dir().join("uploads"))
    }

    async fn logs(&self, sandbox_id: &str, query: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        // The runtime keeps the log capped on the host (sandbox_log.rs) and stamps each line when it reads it.
        let lines = self.runtime.logs(sandbox_id, query.start_ms, query.limit).await.map_err(node_error)?;
        Ok(lines
            .into_iter()
            .map(|l| {
                let line = strip_ansi(&l.line);
                // Lines of a sandbox started before the log was stamped (0): envd's own RFC 3339 timestamp.
                let unix_ms = match l.unix_ms {
                    0 => line.split_whitespace().next().and_then(crate::time::parse_rfc3339_ms).unwrap_or(0),
                    ms => ms,
                };
                LogLine { unix_ms, line }
            })
            .collect())
    }

    async fn export_template(&self, name: &str) -> Result<crate::node::TemplateMeta, NodeError> {
        self.template_for_export(name)
    }

    async fn missing_layers(&self, layers: &[String]) -> Result<Vec<String>, NodeError> {
        self.layers_missing(layers)
    }

    async fn export_layer(&self, digest: &str) -> Result<crate::node::ByteStream, NodeError> {
        self.layer_stream(digest)
    }

    async fn import_layer(&self, digest: &str, tar: crate::node::ByteStream) -> Result<(), NodeError> {
        self.layer_import(digest, tar).await
    }

    async fn import_template(&self, template: crate::node::TemplateMeta) -> Result<(), NodeError> {
        self.template_import(template)
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes in the sandbox's writable layer (what it has added to its template).
fn disk_usage(sandbox_dir: &std::path::Path) -> u64 {
    fn walk(dir: &std::path::Path, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&entry.path(), total),
                Ok(_) => *total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    let mut total = 0;
    // `upper/`, or `disk/upper/` when the sandbox has its own disk image
    walk(&soulbox_runtime::rootfs::paths(sandbox_dir).upper, &mut total);
    total
}

fn meminfo_mb() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Less than 5 % of the host's memory left is pressure: new sandboxes would push it into the OOM killer.
fn memory_pressure(total_mb: u64, available_mb: u64) -> Option<String> {
    (total_mb > 0 && available_mb * 20 < total_mb)
        .then(|| format!("memory pressure: {available_mb} MiB of {total_mb} MiB available"))
}

fn load_fraction(cpus: u32) -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: f64 = text.split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(0.0);
    (load / f64::from(cpus.max(1))).clamp(0.0, 1.0)
}

/// A runtime template as the control plane sees it; `default_disk_mb` is the disk limit its sandboxes get when
/// the template sets none (what E2B's `diskSizeMB` reports).
fn template_info(meta: &soulbox_runtime::TemplateMeta, default_disk_mb: u64) -> TemplateInfo {
    TemplateInfo {
        template_id: meta.name.clone(),
        aliases: vec![meta.name.clone()],
        cpu_count: meta.cpu_count,
        memory_mb: meta.memory_mb as u32,
        disk_size_mb: meta.disk_mb.unwrap_or(default_disk_mb) as u32,
        envd_version: ENVD_PROTOCOL_VERSION.into(),
        created_at_ms: 0,
    }
}

/// A file's modification time (unix ms), 0 when unknown.
fn written_at_ms(path: &std::path::Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}
