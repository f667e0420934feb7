//! Booting a sandbox whose network and firewall are ready: its rootfs, its OCI bundle, the container, envd.
use super::Inner;
use crate::error::{Error, Result};
use crate::network::NetLease;
use crate::oci_spec::{self, BundleParams};
use crate::record::Record;
use crate::rootfs;
use soulbox_protocol::envd_init;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// What a boot works from once the rootfs is mounted: the sandbox's record and network, its volumes (host source,
/// path inside), its user namespace range and its OCI runtime.
#[derive(Clone, Copy)]
pub(super) struct BootInputs<'a> {
    pub rec: &'a Record,
    pub lease: &'a NetLease,
    pub volumes: &'a [(PathBuf, String)],
    pub id_range: Option<crate::userns::IdRange>,
    pub driver: &'a crate::driver::Driver,
}

impl Inner {
    /// Mount the rootfs, write the bundle, start the container, wait for envd.
    pub(super) async fn boot(&self, rec: &Record, lease: &NetLease) -> Result<()> {
        let id = &rec.id;
        let dir = self.dir(id);
        let t0 = std::time::Instant::now();
        let (Some(meta), Some(spec)) = (&rec.template, &rec.spec) else {
            return Err(Error::Invalid("record without template/spec".into()));
        };
        // /etc/hosts, hostname and resolv.conf are written by envd inside the sandbox (`network` in its start
        // configuration); host files of sandboxes from before that are not used any more.
        let _ = std::fs::remove_dir_all(dir.join("etc"));

        // The sandbox's range (given with its network) owns the sandbox dir, so the sandbox's
        // mapped root (runc's init) can walk to the rootfs and no host user can.
        let driver = self.drivers.for_record(rec)?;
        let userns = self.userns_for(driver);
        crate::userns::check_files(userns, &dir)?;
        let id_range = userns.map(|_| crate::userns::IdRange::of_sandbox(&dir)).transpose()?;
        crate::perms::secure_sandbox_dir(&dir, id_range.map_or(0, |r| r.host_base))?;

        // Writable layer: its disk limit (project quota, or its own image mounted) before
        // anything is written into it.
        let disk_mb = self.disk_limit_mb(spec, meta);
        let tq = std::time::Instant::now();
        self.disk.apply(id, &dir, disk_mb).await?;
        tracing::debug!(sandbox = %id, us = tq.elapsed().as_micros() as u64, disk_mb, "disk limit applied");
        match id_range {
            Some(range) if !range.shared => crate::idmap::mount_sandbox_rootfs(&dir, &self.store, &meta.layers, range)?,
            // Shared range: the files are stored shifted, the overlay shows them as they are.
            Some(range) => {
                crate::userns::own_upper_root(&rootfs::paths(&dir).upper, range)?;
                rootfs::mount(&dir, &self.store.layer_dirs(meta))?
            }
            None => rootfs::mount(&dir, &self.store.layer_dirs(meta))?,
        }

        let sources = crate::volumes::prepare(self.volumes(), &dir, &spec.volumes, id_range.is_some())?;
        let volumes: Vec<(PathBuf, String)> =
            sources.into_iter().zip(spec.volumes.iter().map(|m| m.path.clone())).collect();
        // A sandbox paused to disk continues from its saved memory (`checkpoint.rs`); if that fails it boots cold
        // from its files, as after a filesystem-only pause.
        let inputs = BootInputs { rec, lease, volumes: &volumes, id_range, driver };
        if self.restore_saved_memory(&inputs).await {
            return crate::volumes::detach_helpers(&dir);
        }
        // A cold boot: its own uptime and boot id from now on (a resume from pause keeps both).
        crate::procview::BootRecord::new().write(&dir)?;
        let booted = self.boot_container(&inputs, t0).await;
        // The container holds its own binds of the volumes' idmapped clones (or never started).
        let detached = crate::volumes::detach_helpers(&dir);
        booted.and(detached)
    }

    async fn boot_container(&self, inputs: &BootInputs<'_>, t0: std::time::Instant) -> Result<()> {
        let (id, driver) = (&inputs.rec.id, inputs.driver);
        let dir = self.dir(id);
        let cpu_count = self.write_bundle(inputs)?;

        // stdout/stderr of the container (and of the runtime CLI): the log's FIFO, drained on the host.
        let stdio = self.logs.attach(id, &dir)?;
        if self.cfg.init_override.is_some() {
            let started = async {
                driver.create(id, &dir, stdio, None).await?;
                driver.start(id).await
            };
            return self.with_log(id, started.await).await;
        }
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)
            .map_err(|e| Error::Io { path: "pipe".into(), source: e.into() })?;
        // The write end is blocking for envd's sake; only our read end is non-blocking.
        let _ = rustix::fs::fcntl_setfl(&w, rustix::fs::OFlags::empty());
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r)
            .map_err(|e| Error::Io { path: "pipe".into(), source: e })?;
        tracing::debug!(sandbox = %id, us = t0.elapsed().as_micros() as u64, "rootfs mounted, bundle written");
        let started = async {
            if self.cfg.run_detached {
                driver.run_detached(id, &dir, stdio, Some(w)).await
            } else {
                driver.create(id, &dir, stdio, Some(w)).await?;
                tracing::debug!(sandbox = %id, us = t0.elapsed().as_micros() as u64, "runtime create done");
                driver.start(id).await
            }
        };
        self.with_log(id, started.await).await?;
        tracing::debug!(sandbox = %id, us = t0.elapsed().as_micros() as u64, "runtime start done");
        let attaching = self.attach_proc_view(id, driver);
        let mut b = [0u8; 1];
        let res = tokio::time::timeout(Duration::from_millis(self.cfg.ready_timeout_ms), rx.read(&mut b)).await;
        self.attached(id, attaching).await;
        tracing::debug!(sandbox = %id, us = t0.elapsed().as_micros() as u64, "envd ready or not, proc view attached");
        let reason = match res {
            Ok(Ok(1)) => {
                tracing::debug!(sandbox = %id, us = t0.elapsed().as_micros() as u64, "envd ready");
                self.pin_cpus(id, driver, cpu_count);
                return Ok(());
            }
            Ok(Ok(_)) => {
                format!("envd exited (or closed fd {}) before it was ready", driver.kind().ready_fd())
            }
            Ok(Err(e)) => format!("reading the ready pipe: {e}"),
            Err(_) => format!("timed out after {} ms", self.cfg.ready_timeout_ms),
        };
        tracing::debug!(sandbox = %id, reason = %reason, "envd not ready");
        self.logs.flush(id).await;
        Err(Error::NotReady { id: id.clone(), reason, log_tail: crate::sandbox_log::tail(&dir, 4000) })
    }

    /// The sandbox's OCI bundle (`config.json`); returns its CPU count.
    pub(super) fn write_bundle(&self, inputs: &BootInputs<'_>) -> Result<u32> {
        let BootInputs { rec, lease, volumes, id_range, driver } = *inputs;
        let id = &rec.id;
        let dir = self.dir(id);
        let (Some(meta), Some(spec)) = (&rec.template, &rec.spec) else {
            return Err(Error::Invalid("record without template/spec".into()));
        };
        let mut init = crate::envd_start::with_egress_ca(
            crate::envd_start::start_configuration(id, meta, spec, rec.envd_secret.as_ref(), lease.ip, &self.cfg.dns),
            self.cfg.egress_ca.as_ref().map(|ca| ca.cert_pem.as_str()),
        );
        // A booted pool's sandbox waits for its identity (`booted.rs`).
        if rec.status == crate::spec::Status::Pooled {
            init.pooled = Some(true);
        }
        let proc_view = self.proc_view_binds(id, driver);
        let cpu_count = spec.cpu_count.unwrap_or(meta.cpu_count);
        let params = BundleParams {
            id,
            sandbox_dir: &dir,
            netns_path: lease.netns_path(),
            cpu_count,
            memory_mb: spec.memory_mb.unwrap_or(meta.memory_mb),
            pids_limit: spec.pids_limit.unwrap_or(4096),
            envd_init: serde_json::to_string(&init)
                .map_err(|source| Error::Json { path: PathBuf::from(envd_init::INIT_ENV), source })?,
            id_range,
            runtime: driver.kind(),
            volumes,
            proc_view: &proc_view,
        };
        let oci = oci_spec::build(&self.cfg, &params)?;
        oci_spec::write(&dir, &oci)?;
        Ok(cpu_count)
    }

    /// A failed runtime CLI call's message went to the sandbox log: add its tail to the error.
    pub(super) async fn with_log(&self, id: &str, res: Result<()>) -> Result<()> {
        match res {
            Err(Error::Command { cmd, status, stderr }) if stderr.is_empty() => {
                self.logs.flush(id).await;
                Err(Error::Command { cmd, status, stderr: crate::sandbox_log::tail(&self.dir(id), 2000) })
            }
            other => other,
        }
    }
}
