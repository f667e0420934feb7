//! The sandbox lifecycle: create → (pause ⇄ resume) → stop-to-disk ⇄ start-from-disk → delete,
//! plus snapshot and stats. Every resource has one idempotent release path: [`Inner::release`].
use crate::config::{ENVD_PORT, RuntimeConfig, check_id};
use crate::disk::{DiskLimits, Mechanism};
use crate::driver::Driver;
use crate::envd_secret::EnvdSecret;
use crate::error::{Error, Result};
use crate::firewall::{self, Firewall};
use crate::network::{self, IpPool, NetLease};
use crate::quota::DiskQuota;
use crate::record::Record;
use crate::rootfs;
use crate::spec::{NetworkPolicy, SandboxInfo, SandboxSpec, Stats, Status};
use crate::template::{Store, TemplateMeta};
use crate::{cgroup, util};
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

mod addresses;
mod death;
pub use addresses::Endpoint;
mod boot;
mod booted;
mod checkpoint;
mod close;
mod drivers;
mod envd_call;
mod open;
mod pool;
mod proc_view;
mod reconcile;
mod settle;

use pool::RefillOnDrop;

type Handle = Arc<AsyncMutex<Record>>;

#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: RuntimeConfig,
    pub store: Store,
    pub drivers: drivers::Drivers,
    pub ips: IpPool,
    pub fw: Arc<Firewall>,
    /// Repairs the firewall table when it is deleted or changed from outside; stopped on close.
    pub fw_watch: std::sync::Mutex<Option<firewall::watch::WatchHandle>>,
    /// The egress gateway for sandboxes with host rules (`gateway.rs`); `None` until open finishes, or when it
    /// could not listen.
    pub gateway: std::sync::Mutex<Option<crate::gateway::Gateway>>,
    /// Where the egress gateway gets header rules' secrets (`Runtime::set_egress_secrets`).
    pub egress_secrets: crate::gateway::Secrets,
    /// Address and boot of every running sandbox, for callers that route traffic by sandbox id (the
    /// proxy): a sandbox that is not running here has no entry, so traffic for it can go nowhere else.
    /// Written only through [`Inner::serve`].
    pub serving: Arc<std::sync::Mutex<HashMap<String, Endpoint>>>,
    /// Endpoints of paused sandboxes, given back on resume: a thaw is the same boot (its connections are
    /// still good, and on runsc the same process is already watched).
    pub frozen: std::sync::Mutex<HashMap<String, Endpoint>>,
    /// The next [`Endpoint::boot`].
    pub boots: std::sync::atomic::AtomicU64,
    pub disk: DiskLimits,
    /// Some: every sandbox runs in a user namespace, of its own range or of the shared one (`userns.rs`).
    pub userns: Option<crate::userns::Userns>,
    /// Drainers of the sandboxes' logs (`sandbox_log.rs`).
    pub logs: crate::sandbox_log::Logs,
    /// The sandboxes' own `/proc` files (`procview.rs`); None when off or when FUSE could not be mounted.
    pub procview: Option<crate::procview::ProcView>,
    /// Volumes' own ext4 images (`volume_images.rs`); None without a volumes directory or loop devices.
    pub volume_images: Option<Arc<crate::volume_images::VolumeImages>>,
    pub sandboxes: std::sync::Mutex<HashMap<String, Handle>>,
    /// Every known sandbox's envd secret (as in its record), read on the proxy's hot path without touching the
    /// record's lock or the disk. Kept in step with `sandboxes` by [`Inner::remember`] and `delete`.
    pub secrets: std::sync::RwLock<HashMap<String, EnvdSecret>>,
    pub pool: std::sync::Mutex<VecDeque<(String, NetLease)>>,
    pub refilling: std::sync::atomic::AtomicBool,
    /// Sandboxes booted ahead per template (`lifecycle/booted.rs`).
    pub booted: booted::BootedPool,
    pub _lock: std::fs::File,
}

impl Inner {
    /// The node's volumes: their directory and their images.
    pub(crate) fn volumes(&self) -> crate::volumes::NodeVolumes<'_> {
        crate::volumes::NodeVolumes { dir: self.cfg.volumes_dir.as_deref(), images: self.volume_images.as_deref() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.cfg.sandboxes_dir().join(id)
    }

    /// Makes a sandbox's envd secret available to [`Runtime::envd_secret`].
    pub fn remember(&self, rec: &Record) {
        if let Some(secret) = &rec.envd_secret {
            self.secrets.write().unwrap_or_else(|e| e.into_inner()).insert(rec.id.clone(), secret.clone());
        }
    }

    /// Cuts the gateway connections of sandbox `id` that its current policy (if any) no longer allows.
    pub fn recheck_gateway(&self, id: &str) {
        if let Some(gateway) = self.gateway.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            gateway.recheck(id);
        }
    }

    fn handle(&self, id: &str) -> Result<Handle> {
        check_id(id)?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.into()))
    }

    /// What `rec` looks like from outside (`Runtime::info`).
    fn info(&self, rec: &Record) -> SandboxInfo {
        let dir = self.dir(&rec.id);
        let saved_memory = rec.status == Status::Stopped && checkpoint::has_saved_memory(&dir);
        info_with_memory(rec, NetLease::load(&dir).as_ref(), saved_memory)
    }

    /// Release everything a sandbox holds on the host. Idempotent and safe after a crash at any
    /// point: names are derived from the id, so nothing needs to have been recorded.
    /// `keep_dir`: keep the directory (upper layer + record) for stop-to-disk.
    pub async fn release(&self, id: &str, keep_dir: bool) -> Result<()> {
        let dir = self.dir(id);
        self.serving.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.frozen.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let mut first_err: Option<Error> = None;
        fn note(first_err: &mut Option<Error>, id: &str, r: Result<()>, what: &str) {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, what, error = %e, "release step failed");
                if first_err.is_none() {
                    *first_err = Some(e);
                }
            }
        }
        // 1. processes and the runtime's state; then the rest of their log
        for driver in self.drivers.candidates(&dir) {
            note(&mut first_err, id, driver.delete_force(id).await, "runtime delete");
        }
        tracing::debug!(sandbox = id, "release: runtime state deleted");
        self.logs.detach(id).await;
        tracing::debug!(sandbox = id, "release: log drained");
        for root in self.drivers.roots(&self.cfg) {
            let _ = std::fs::remove_dir_all(root.join(id));
        }
        // 2. cgroups (kills stragglers)
        let parent = self.cfg.cgroup_parent();
        let id2 = id.to_string();
        let _ = tokio::task::spawn_blocking(move || cgroup::remove(&parent, &id2)).await;
        tracing::debug!(sandbox = id, "release: cgroups removed");
        // 3. rootfs mount, then the disk image below it (if the sandbox has one; stop keeps the file)
        note(&mut first_err, id, rootfs::unmount(&dir), "unmount");
        note(&mut first_err, id, crate::idmap::unmount_all(&dir), "unmount idmapped layers, unpin the user namespace");
        if keep_dir {
            let _ = std::fs::remove_dir_all(rootfs::paths(&dir).work);
        }
        note(&mut first_err, id, self.disk.unmount(&dir), "unmount disk image");
        // 4. firewall, network, address
        let lease = NetLease::load(&dir);
        let veth = lease.as_ref().map(|l| l.veth.clone()).unwrap_or_else(|| self.cfg.veth_name(id));
        note(&mut first_err, id, self.fw.remove_sandbox(id, &veth).await, "firewall");
        self.recheck_gateway(id);
        note(&mut first_err, id, network::teardown(&self.cfg.netns_name(id), &veth).await, "network");
        tracing::debug!(sandbox = id, "release: firewall and network gone");
        // The address stays the sandbox's until it is deleted (stop keeps the lease file; start
        // takes the same address again): a record anywhere that still names it can only ever
        // reach this sandbox, never a new one.
        if first_err.is_none() && !keep_dir {
            if let Some(l) = &lease {
                self.ips.release(l.ip, id);
            }
            note(&mut first_err, id, util::remove_file_idem(&NetLease::file(&dir)), "lease");
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // 5. the directory itself, never while anything is mounted below it; its disk quota
        //    (stop keeps both: the writable layer stays accounted and limited)
        if !keep_dir {
            if !rootfs::mounts_under(&dir).is_empty() {
                return Err(Error::Invalid(format!("{} still has mounts", dir.display())));
            }
            if let Err(e) = self.disk.forget(&dir) {
                // Not fatal: the files go with the directory; reconcile clears leaked limits.
                tracing::warn!(sandbox = id, error = %e, "clearing the disk quota failed");
            }
            let range = crate::userns::IdRange::load(&dir);
            util::remove_dir_all_idem(&dir)?;
            if let Some(view) = &self.procview {
                view.forget(id);
            }
            // Only now that no directory names it can the id range go to another sandbox.
            if let (Some(userns), Some(range)) = (&self.userns, range) {
                userns.release(&dir, range)?;
            }
        } else {
            let _ = std::fs::remove_file(dir.join("config.json"));
        }
        Ok(())
    }

    /// Route traffic for `id` to its leased address again (it runs).
    fn mark_serving(&self, id: &str) {
        let dir = self.dir(id);
        if let Some(l) = NetLease::load(&dir) {
            let rec = Record::load(&dir).ok();
            let driver = rec.as_ref().and_then(|r| self.drivers.for_record(r).ok()).unwrap_or(self.drivers.default());
            self.serve(id, l.ip, driver);
        }
    }

    /// Stops routing to `id` while it is paused, keeping its endpoint for [`Inner::resume_serving`].
    fn hold_serving(&self, id: &str) {
        if let Some(endpoint) = self.serving.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            self.frozen.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), endpoint);
        }
    }

    /// Routes to `id` again after a pause: the same boot; a new one when none was held (paused before this
    /// runtime instance opened).
    fn resume_serving(&self, id: &str) {
        match self.frozen.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            Some(endpoint) => {
                self.serving.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), endpoint);
            }
            None => self.mark_serving(id),
        }
    }

    /// `id` serves at `ip` from now on, as a new boot (see [`Endpoint::boot`]); `driver` runs it.
    pub fn serve(&self, id: &str, ip: Ipv4Addr, driver: &Driver) {
        let boot = self.boots.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.serving.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), Endpoint { ip, boot });
        if driver.kind().own_network_stack() {
            death::watch(self.serving.clone(), id, boot, &self.dir(id));
        }
    }

    /// Disk limit of a sandbox (MiB, 0 = none): spec, else template, else the node default.
    pub(crate) fn disk_limit_mb(&self, spec: &SandboxSpec, meta: &TemplateMeta) -> u64 {
        spec.disk_mb.or(meta.disk_mb).unwrap_or(self.cfg.default_disk_mb)
    }

    /// Pause (freeze) or resume the sandbox `rec`, via the cgroup freezer directly or its runtime's CLI.
    pub async fn freeze(&self, rec: &Record, frozen: bool) -> Result<()> {
        let (id, driver) = (&rec.id, self.drivers.for_record(rec)?);
        if self.cfg.cgroup_freezer && driver.kind().pause_is_cgroup_freezer() {
            return cgroup::set_frozen(&self.cfg.cgroup_parent(), id, frozen)
                .await
                .map_err(|e| Error::Io { path: PathBuf::from(format!("freezer of {id}")), source: e });
        }
        if frozen { driver.pause(id).await } else { driver.resume(id).await }
    }

    /// A sandbox without our user namespaces (gVisor) needs its layers as they are: a shifted store (the shared
    /// range without idmapped mounts, `template.rs`) holds them shifted, which only a mapped sandbox sees right.
    fn check_layers_fit(&self, driver: &Driver) -> Result<()> {
        if self.store.id_shift().is_some() && self.userns_for(driver).is_none() {
            return Err(Error::Invalid(format!(
                "this node stores template layers shifted for its shared user namespace (no idmapped mounts), \
                 which a {} sandbox cannot use: run {} on a node with idmapped mounts or user namespaces off",
                driver.kind().name(driver.bin()),
                driver.kind().name(driver.bin())
            )));
        }
        Ok(())
    }

    /// The user namespaces a sandbox on `driver` gets: none where the runtime brings its own (gVisor).
    pub fn userns_for(&self, driver: &Driver) -> Option<&crate::userns::Userns> {
        self.userns.as_ref().filter(|_| driver.kind().supports_user_namespaces())
    }

    /// Allocate an address (the one a stopped sandbox kept, if it still can), record the lease,
    /// create netns + veth.
    async fn acquire_network(&self, id: &str, driver: &Driver) -> Result<NetLease> {
        let kept = NetLease::load(&self.dir(id)).map(|l| l.ip).filter(|ip| self.ips.claim(*ip, id));
        let ip = match kept {
            Some(ip) => ip,
            None => self.ips.allocate(id)?,
        };
        let lease = network::lease_for(&self.cfg, id, ip);
        let dir = self.dir(id);
        util::write_json(&NetLease::file(&dir), &lease)?;
        if let Some(userns) = self.userns_for(driver) {
            // The sandbox's user namespace (its range, kept across stop/start) and the netns it
            // owns; `network::setup` then finds the netns made.
            let range = userns.acquire(&dir)?;
            crate::userns::create_namespaces(range, &crate::userns::userns_path(&dir), &lease.netns_path())?;
        }
        let t0 = std::time::Instant::now();
        network::setup(&lease, driver.kind().own_network_stack()).await?;
        tracing::debug!(sandbox = id, us = t0.elapsed().as_micros() as u64, "network: namespace and links set up");
        Ok(lease)
    }
}

impl Runtime {
    /// Storage of their own for the node's volumes, for the volume stores of this process (a size limit that
    /// bounds sandboxes' writes too); `None`: plain directories.
    pub fn volume_backing(&self) -> Option<Arc<dyn soulbox_volumes::VolumeBacking>> {
        self.inner.volume_images.clone().map(|v| v as Arc<dyn soulbox_volumes::VolumeBacking>)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    /// The default OCI runtime's driver (templates may ask for others: `RuntimeConfig::extra_runtimes`).
    pub fn driver(&self) -> &Driver {
        self.inner.drivers.default()
    }
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.dir(id)
    }

    /// Create a sandbox and wait until envd is ready.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let inner = &self.inner;
        firewall::validate_policy(&spec.network)?;
        for (k, v) in spec.env.iter().chain(spec.metadata.iter()) {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') || k.len() + v.len() > 65536 {
                return Err(Error::Invalid(format!("bad env/metadata entry {k:?}")));
            }
        }
        crate::volumes::check(inner.cfg.volumes_dir.as_deref(), &spec.volumes)?;
        let meta: TemplateMeta = inner.store.get(&spec.template)?;
        let driver = inner.drivers.named(spec.runtime.as_deref().or(meta.runtime.as_deref()))?;
        inner.check_layers_fit(driver)?;
        if let Some(info) = inner.create_from_booted(&spec, &meta, driver).await {
            let _refill = RefillOnDrop(inner);
            return Ok(info);
        }
        let claimed = inner.claim_slot(driver, spec.sandbox_id.as_deref()).await;
        // Refill after this create, not during it: on a busy node the refill's work (netns, mkfs
        // and mount of a disk image) would otherwise compete with the create it was triggered by.
        let _refill = RefillOnDrop(inner);
        let (id, lease, open_fw) = claimed?;
        let dir = inner.dir(&id);
        let disk_mb = inner.disk_limit_mb(&spec, &meta);
        let envd_secret = Some(EnvdSecret::generate());
        let rec =
            Record { id: id.clone(), status: Status::Creating, template: Some(meta), spec: Some(spec), envd_secret };
        let res: Result<()> = async {
            rec.save(&dir)?;
            inner.disk.fit_pooled(&dir, disk_mb)?;
            let policy = rec.spec.as_ref().map(|s| s.network.clone()).unwrap_or_default();
            if !(open_fw && policy == NetworkPolicy::open()) {
                inner.fw.apply_policy(&id, &lease, &policy).await?;
            }
            inner.boot(&rec, &lease).await
        }
        .await;
        if let Err(e) = res {
            if let Err(e2) = inner.release(&id, false).await {
                tracing::error!(sandbox = %id, error = %e2, "release after failed create");
            }
            return Err(e);
        }
        let mut rec = rec;
        rec.status = Status::Running;
        if let Err(e) = rec.save(&dir) {
            // Unrecorded, it would be collected as a half-made sandbox at the next open: do it now.
            if let Err(e2) = inner.release(&id, false).await {
                tracing::error!(sandbox = %id, error = %e2, "release after failed create");
            }
            return Err(e);
        }
        let info = info_of(&rec, Some(&lease));
        inner.remember(&rec);
        inner.serve(&id, lease.ip, driver);
        inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(AsyncMutex::new(rec)));
        Ok(info)
    }

    pub async fn info(&self, id: &str) -> Result<SandboxInfo> {
        let h = self.inner.handle(id)?;
        let rec = h.lock().await;
        Ok(self.inner.info(&rec))
    }

    pub async fn list(&self) -> Vec<SandboxInfo> {
        let hs: Vec<Handle> =
            self.inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut v = Vec::new();
        for h in hs {
            let rec = h.lock().await;
            v.push(self.inner.info(&rec));
        }
        v
    }

    /// Pause with memory: runc freezes all processes (cgroup freezer); runsc saves the sandbox to disk
    /// (`checkpoint.rs`: the record is then `Stopped` with saved memory, and `start` continues from it), or
    /// pauses it in memory where it cannot be saved. envd stops answering either way. A save answers once the
    /// image is whole; what the sandbox held on the host is released after (`settle.rs`).
    pub async fn pause(&self, id: &str) -> Result<()> {
        let h = self.inner.handle(id)?;
        let mut rec = h.lock_owned().await;
        want(&rec, &[Status::Running])?;
        self.inner.hold_serving(id);
        let driver = self.inner.drivers.for_record(&rec)?;
        if driver.kind().is_runsc() && self.inner.cfg.pause_to_disk {
            use checkpoint::PauseToDisk;
            match self.inner.pause_to_disk(&rec, driver).await {
                PauseToDisk::Saved => {
                    // Paused from here on: its processes are in the image, and none of them runs any more.
                    rec.status = Status::Stopped;
                    let saved = rec.save(&self.inner.dir(id));
                    settle::release_in_background(self.inner.clone(), rec);
                    return saved;
                }
                PauseToDisk::NotSaved(reason) => {
                    tracing::info!(sandbox = id, %reason, "memory not saved to disk; pausing in memory");
                    return self.freeze_paused(id, &mut rec).await;
                }
                PauseToDisk::Lost(e) => {
                    tracing::warn!(sandbox = id, error = %e, "saving memory failed and ended the sandbox; its files are kept and it boots from them");
                }
            }
            self.inner.release(id, true).await?;
            rec.status = Status::Stopped;
            return rec.save(&self.inner.dir(id));
        }
        self.freeze_paused(id, &mut rec).await
    }

    async fn freeze_paused(&self, id: &str, rec: &mut Record) -> Result<()> {
        if let Err(e) = self.inner.freeze(rec, true).await {
            self.inner.resume_serving(id);
            return Err(e);
        }
        rec.status = Status::Paused;
        rec.save(&self.inner.dir(id))
    }

    /// Resume a paused sandbox: thaw it, or continue it from the memory its pause saved to disk.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let h = self.inner.handle(id)?;
        let mut rec = h.lock().await;
        if rec.status == Status::Stopped && checkpoint::has_saved_memory(&self.inner.dir(id)) {
            drop(rec);
            return self.start(id).await.map(|_| ());
        }
        want(&rec, &[Status::Paused])?;
        self.inner.freeze(&rec, false).await?;
        rec.status = Status::Running;
        self.inner.resume_serving(id);
        rec.save(&self.inner.dir(id))
    }

    /// Where the egress gateway gets the values of `${e2b.secrets.NAME}` in header rules. Until this is set,
    /// requests whose rules name a secret fail with a message saying secrets are unavailable.
    pub fn set_egress_secrets(&self, secrets: std::sync::Arc<dyn crate::egress_secrets::EgressSecrets>) {
        *self.inner.egress_secrets.write().unwrap_or_else(|e| e.into_inner()) = Some(secrets);
    }

    /// Replaces a sandbox's egress policy. Running or paused: its firewall (both chains, one
    /// transaction, and its guard) changes now, so established flows the new policy forbids stop at
    /// once (their sockets destroyed where the host kernel holds them, outbound TCP reset, inbound
    /// dropped) and new ones follow it. Stopped: it applies at
    /// the next start. The record keeps it for restarts.
    pub async fn update_network(&self, id: &str, policy: NetworkPolicy) -> Result<()> {
        firewall::validate_policy(&policy)?;
        let h = self.inner.handle(id)?;
        let mut rec = h.lock().await;
        want(&rec, &[Status::Running, Status::Paused, Status::Stopped])?;
        let dir = self.inner.dir(id);
        let Some(spec) = rec.spec.as_mut() else {
            return Err(Error::Invalid(format!("sandbox {id} has no spec (a pool slot)")));
        };
        let previous = std::mem::replace(&mut spec.network, policy.clone());
        if rec.status != Status::Stopped {
            let lease = NetLease::load(&dir).ok_or_else(|| Error::Invalid(format!("sandbox {id} has no network")))?;
            if let Err(e) = self.inner.fw.apply_policy(id, &lease, &policy).await {
                if let Some(spec) = rec.spec.as_mut() {
                    spec.network = previous.clone();
                }
                // Whatever part was applied goes back; the error is the update's.
                let _ = self.inner.fw.apply_policy(id, &lease, &previous).await;
                return Err(e);
            }
            self.inner.recheck_gateway(id);
            // The firewall already stops those flows; this tells the processes now rather than at their
            // next send (a frozen sandbox's sockets are destroyed the same way).
            if let Err(e) = self.inner.fw.cut_forbidden(&lease.netns, &policy).await {
                tracing::warn!(sandbox = id, error = %e, "network update: could not destroy forbidden connections");
            }
        }
        rec.save(&dir)
    }

    /// Stop to disk: processes, network and mount go away, the writable layer stays.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let h = self.inner.handle(id)?;
        let mut rec = h.lock_owned().await;
        want(&rec, &[Status::Running, Status::Paused])?;
        let driver = self.inner.drivers.for_record(&rec)?;
        if rec.status == Status::Running && driver.kind().is_runsc() {
            // The sandbox's processes end now; the release waits for its Sentry in the background (`settle.rs`).
            self.inner.hold_serving(id);
            if let Err(e) = driver.kill(id, "KILL").await {
                tracing::warn!(sandbox = id, error = %e, "could not kill the sandbox's processes; the release forces it");
            }
            rec.status = Status::Stopped;
            let saved = rec.save(&self.inner.dir(id));
            settle::release_in_background(self.inner.clone(), rec);
            return saved;
        }
        self.inner.release(id, true).await?;
        rec.status = Status::Stopped;
        rec.save(&self.inner.dir(id))
    }

    /// Start a stopped sandbox from its kept writable layer (new address, same id and files).
    pub async fn start(&self, id: &str) -> Result<SandboxInfo> {
        let h = self.inner.handle(id)?;
        let mut rec = h.lock().await;
        want(&rec, &[Status::Stopped])?;
        let inner = &self.inner;
        let driver = inner.drivers.for_record(&rec)?;
        inner.check_layers_fit(driver)?;
        // Before the range is acquired (which records this runtime's range in the dir).
        crate::userns::check_files(inner.userns_for(driver), &inner.dir(id))?;
        if rec.envd_secret.is_none() {
            // Stopped before envd had secrets: it gets one now, like every sandbox.
            rec.envd_secret = Some(EnvdSecret::generate());
            rec.save(&inner.dir(id))?;
            inner.remember(&rec);
        }
        let res: Result<NetLease> = async {
            let lease = inner.acquire_network(id, driver).await?;
            let policy = rec.spec.as_ref().map(|s| s.network.clone()).unwrap_or_default();
            inner.fw.apply_policy(id, &lease, &policy).await?;
            inner.boot(&rec, &lease).await?;
            Ok(lease)
        }
        .await;
        match res {
            Ok(lease) => {
                rec.status = Status::Running;
                rec.save(&inner.dir(id))?;
                inner.serve(id, lease.ip, driver);
                Ok(info_of(&rec, Some(&lease)))
            }
            Err(e) => {
                let _ = inner.release(id, true).await;
                Err(e)
            }
        }
    }

    /// Copy the sandbox's writable layer into a new layer and register template `name`
    /// = the sandbox's template layers + that layer. A running sandbox is paused while copying.
    pub async fn snapshot(&self, id: &str, name: &str) -> Result<TemplateMeta> {
        crate::template::check_name(name)?;
        let h = self.inner.handle(id)?;
        let rec = h.lock().await;
        want(&rec, &[Status::Running, Status::Paused, Status::Stopped])?;
        let Some(mut meta) = rec.template.clone() else { return Err(Error::Invalid("no template".into())) };
        // Its writable layer goes into this runtime's store as it is stored.
        crate::userns::check_files(self.inner.userns_for(self.inner.drivers.for_record(&rec)?), &self.inner.dir(id))?;
        let was_running = rec.status == Status::Running;
        if was_running {
            self.inner.freeze(&rec, true).await?;
        }
        let dir = self.inner.dir(id);
        // A stopped sandbox's image is not mounted: mount it for the copy only.
        let mount_stopped = rec.status == Status::Stopped && crate::disk_image::has_image(&dir);
        let copy = async {
            let tmp = self.inner.store.temp_layer()?;
            if mount_stopped {
                self.inner.disk.apply(id, &dir, 0).await?;
            }
            let upper = rootfs::paths(&dir).upper;
            let res =
                util::run("cp", &["-a", "--reflink=auto", &format!("{}/.", upper.display()), &tmp.to_string_lossy()])
                    .await;
            Ok::<_, Error>((tmp, res))
        }
        .await;
        if mount_stopped && let Err(e) = self.inner.disk.unmount(&dir) {
            tracing::warn!(sandbox = id, error = %e, "unmounting the disk image after the snapshot copy");
        }
        if was_running {
            self.inner.freeze(&rec, false).await?;
        }
        let (tmp, copy) = copy?;
        if let Err(e) = copy {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let store = self.inner.store.clone();
        let digest = tokio::task::spawn_blocking(move || {
            let r = store.commit_layer(&tmp);
            if r.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            r
        })
        .await
        .map_err(|e| Error::Invalid(e.to_string()))??;
        meta.parent = Some(meta.name.clone());
        meta.name = name.to_string();
        meta.layers.push(digest);
        meta.recipe_hash = format!("snapshot:{id}");
        self.inner.store.put(&meta)?;
        Ok(meta)
    }

    /// Kill and delete a sandbox; releases everything it holds, including its directory.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let h = self.inner.handle(id)?;
        let mut rec = h.lock().await;
        rec.status = Status::Deleting;
        let _ = rec.save(&self.inner.dir(id));
        self.inner.release(id, false).await?;
        self.inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.inner.secrets.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        Ok(())
    }

    /// cgroup + veth counters.
    pub async fn stats(&self, id: &str) -> Result<Stats> {
        let h = self.inner.handle(id)?;
        let _rec = h.lock().await;
        let mut s = cgroup::stats(&self.inner.cfg.cgroup_parent(), id);
        if let Some(l) = NetLease::load(&self.inner.dir(id)) {
            (s.net_rx_bytes, s.net_tx_bytes) = network::veth_counters(&l.veth);
        }
        if let Some((used, limit)) = self.inner.disk.usage(&self.inner.dir(id)) {
            (s.disk_used_bytes, s.disk_limit_bytes) = (used, limit);
        }
        Ok(s)
    }

    /// Delete every sandbox and pooled slot, remove the firewall table and cgroup parent.
    /// For tests and node decommissioning.
    pub async fn destroy_all(&self) -> Result<()> {
        let ids: Vec<String> = self.inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        self.stop_watching();
        let mut first: Option<Error> = None;
        for id in ids {
            if let Err(e) = self.delete(&id).await {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.drain_pool().await {
            first.get_or_insert(e);
        }
        if let Err(e) = self.inner.fw.destroy().await {
            first.get_or_insert(e);
        }
        cgroup::remove_parent(&self.inner.cfg.cgroup_parent());
        if let (Some(images), Some(dir)) = (&self.inner.volume_images, &self.inner.cfg.volumes_dir) {
            images.unmount_all(dir);
        }
        // The node's disk image goes last (nothing may be mounted below it any more).
        if let Err(e) = self.inner.disk.teardown() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// The project-quota backend (disabled unless it is the mechanism in use).
    pub fn disk_quota(&self) -> &DiskQuota {
        self.inner.disk.quota()
    }

    /// The disk-limit mechanism new sandboxes get.
    pub fn disk_mechanism(&self) -> Mechanism {
        self.inner.disk.mechanism()
    }

    /// The secret envd inside `id` requires from this node, from memory (cheap enough for every proxied
    /// request). `None` for an unknown sandbox, or one made before envd had secrets (whose envd checks none).
    pub fn envd_secret(&self, id: &str) -> Option<EnvdSecret> {
        self.inner.secrets.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Whether sandboxes get their own user namespace (configured and supported by the kernel).
    pub fn user_namespaces(&self) -> bool {
        self.inner.userns.is_some()
    }

    /// How sandboxes get their user namespaces (`per-sandbox` or `shared`, never `auto`); None when
    /// they get none.
    pub fn userns_mode(&self) -> Option<crate::userns::UsernsMode> {
        self.inner.userns.as_ref().map(crate::userns::Userns::mode)
    }
}

fn want(rec: &Record, ok: &[Status]) -> Result<()> {
    if ok.contains(&rec.status) {
        return Ok(());
    }
    Err(Error::WrongState {
        id: rec.id.clone(),
        state: rec.status.to_string(),
        wanted: ok.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("|"),
    })
}

fn info_of(rec: &Record, lease: Option<&NetLease>) -> SandboxInfo {
    info_with_memory(rec, lease, false)
}

/// `saved_memory`: a stopped sandbox with memory saved to disk (`checkpoint.rs`) is reported paused, at the
/// address it will continue on.
fn info_with_memory(rec: &Record, lease: Option<&NetLease>, saved_memory: bool) -> SandboxInfo {
    let status = if saved_memory && rec.status == Status::Stopped { Status::Paused } else { rec.status };
    let has_net = matches!(status, Status::Running | Status::Paused);
    let ip = if has_net { lease.map(|l| l.ip) } else { None };
    SandboxInfo {
        id: rec.id.clone(),
        template: rec.template.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
        status,
        ip,
        envd_addr: ip.map(|i| format!("{i}:{ENVD_PORT}")),
        spec: rec.spec.clone().unwrap_or_else(|| SandboxSpec::new("")),
        envd_secret: rec.envd_secret.clone(),
    }
}
