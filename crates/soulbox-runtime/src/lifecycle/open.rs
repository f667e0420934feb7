//! Opening a runtime on its data dir: checks, instance lock, reconcile, warm pool, firewall watcher.
use super::{Inner, Runtime, reconcile};
use crate::config::RuntimeConfig;
use crate::disk::DiskLimits;
use crate::error::{Error, IoCtx, Result};
use crate::firewall::{self, Firewall};
use crate::network::{self, IpPool};
use crate::template::Store;
use crate::util;
use std::net::Ipv4Addr;
use std::sync::Arc;

impl Runtime {
    /// Open the runtime on its data dir: take the instance lock, reconcile what a previous
    /// instance left (re-adopt live sandboxes, collect everything leaked), fill the warm pool.
    pub async fn open(cfg: RuntimeConfig) -> Result<Runtime> {
        Runtime::open_reserving(cfg, &[]).await
    }

    /// [`Runtime::open`], keeping `reserved` (sandbox id, address) out of the pool: addresses the
    /// caller's records still name (see [`Runtime::set_reserved_addresses`]). They are reserved
    /// before the warm pool takes any address.
    pub async fn open_reserving(mut cfg: RuntimeConfig, reserved: &[(String, Ipv4Addr)]) -> Result<Runtime> {
        cfg.validate()?;
        if let Some(adj) = cfg.envd_oom_score_adj {
            // Lowering oom_score_adj below our own needs CAP_SYS_RESOURCE; without it the OCI
            // runtime would fail every create.
            let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if adj < own && !util::has_cap(24 /* CAP_SYS_RESOURCE */) {
                tracing::warn!(adj, own, "no CAP_SYS_RESOURCE: envd keeps the inherited oom_score_adj");
                cfg.envd_oom_score_adj = None;
            }
        }
        if !util::is_root() {
            return Err(Error::NotRoot("the runtime needs root (mounts, netns, cgroups, nftables)".into()));
        }
        for d in [cfg.data_dir.clone(), cfg.sandboxes_dir(), cfg.runtime_root()] {
            std::fs::create_dir_all(&d).ctx(&d)?;
        }
        // Absolute: sandbox dirs are named in host-wide user namespace claims.
        cfg.data_dir = std::fs::canonicalize(&cfg.data_dir).ctx(&cfg.data_dir)?;
        let lock_path = cfg.data_dir.join("runtime.lock");
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).ctx(&lock_path)?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(Error::Locked(cfg.data_dir.clone()));
        }
        if cfg.init_override.is_none() && !cfg.envd_path.is_file() {
            return Err(Error::Invalid(format!(
                "envd binary {} not found (run scripts/build-envd.sh)",
                cfg.envd_path.display()
            )));
        }
        if cfg.init_override.is_none() {
            cfg.envd_path = crate::perms::install_envd(&cfg)?;
        }
        let drivers = super::drivers::Drivers::open(&cfg).await?;
        network::enable_forwarding()?;
        let mut store = Store::new(cfg.store_dir())?;
        let disk = DiskLimits::open(&cfg).await?;
        // User namespaces as the default runtime has them; an extra runtime without them (gVisor) runs its
        // sandboxes without (`Inner::userns_for`). An extra runtime that needs them beside a default that has none
        // is refused in `Drivers::open`.
        let userns = if drivers.default().kind().supports_user_namespaces() {
            crate::userns::open(&cfg, &store)?
        } else {
            crate::userns::not_with_runtime(&cfg, drivers.default().kind())?
        };
        if let Some(range) = userns.as_ref().and_then(crate::userns::Userns::shifted) {
            // Its layers are stored shifted: a store of their own (`template.rs`).
            store = Store::shifted(&cfg.store_dir(), range.host_base)?;
        }
        crate::perms::secure_data_dir(&cfg, userns.is_some())?;
        let procview = if cfg.proc_view {
            crate::procview::ProcView::mount(&cfg.proc_view_dir(), &cfg.sandboxes_dir(), &cfg.cgroup_parent())
                .inspect_err(|e| tracing::warn!(error = %e, "no proc view: sandboxes see the host's memory and CPUs"))
                .ok()
        } else {
            None
        };
        let volume_images =
            cfg.volumes_dir.as_ref().and_then(|_| crate::volume_images::VolumeImages::open()).map(Arc::new);
        let inner = Arc::new(Inner {
            drivers,
            ips: IpPool::new(&cfg),
            fw: Arc::new(Firewall::new(&cfg)),
            fw_watch: Default::default(),
            gateway: Default::default(),
            egress_secrets: Default::default(),
            serving: Default::default(),
            frozen: Default::default(),
            boots: Default::default(),
            disk,
            userns,
            procview,
            volume_images,
            logs: crate::sandbox_log::Logs::new(cfg.sandbox_log_limits()),
            store,
            sandboxes: Default::default(),
            secrets: Default::default(),
            pool: Default::default(),
            refilling: Default::default(),
            booted: Default::default(),
            _lock: lock,
            cfg,
        });
        let runtime = Runtime { inner };
        // From here on the runtime has made things on the host (table, pool slots, maybe the
        // node's disk image): a failure gives back what it can.
        if let Err(e) = runtime.finish_open(reserved).await {
            if let Err(e2) = runtime.close().await {
                tracing::warn!(error = %e2, "cleaning up after a failed open");
            }
            return Err(e);
        }
        Ok(runtime)
    }

    async fn finish_open(&self, reserved: &[(String, Ipv4Addr)]) -> Result<()> {
        let inner = &self.inner;
        reconcile::reconcile(inner).await?;
        inner.reattach_proc_views().await;
        self.set_reserved_addresses(reserved);
        if inner.cfg.pool_size > 0 {
            inner.fill_pool().await?;
        }
        // In the background: an open does not wait for boots (and a template may not be built yet).
        inner.spawn_booted_refill();
        *inner.fw_watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(firewall::watch::spawn(inner.fw.clone()));
        let serving = inner.serving.clone();
        let sandbox_of: crate::gateway::SandboxOf = Box::new(move |ip| {
            let serving = serving.lock().unwrap_or_else(|e| e.into_inner());
            serving.iter().find(|(_, e)| e.ip == ip).map(|(id, _)| id.clone())
        });
        let at = std::net::SocketAddrV4::new(inner.cfg.gateway(), inner.cfg.egress_gateway_port);
        *inner.gateway.lock().unwrap_or_else(|e| e.into_inner()) = crate::gateway::Gateway::start(
            at,
            inner.fw.clone(),
            &inner.cfg.dns,
            sandbox_of,
            crate::gateway::Options {
                ca: inner.cfg.egress_ca.as_ref(),
                trusted_ca: inner.cfg.egress_trusted_ca.as_deref(),
                secrets: inner.egress_secrets.clone(),
            },
        );
        Ok(())
    }
}
