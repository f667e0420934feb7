//! Disk size limit of a sandbox's writable layer: picks the mechanism at open and routes every
//! lifecycle step to it.
//!
//! - [`Mechanism::ProjectQuota`] (`quota.rs`): one node-level filesystem with project quotas, a
//!   project id + limit per sandbox. Cheapest per create (syscalls only), needs kernel quota
//!   support (`CONFIG_XFS_QUOTA`, or `CONFIG_QUOTA` + `CONFIG_QFMT_V2` for ext4).
//! - [`Mechanism::SandboxImage`] (`disk_image.rs`): an ext4 image per sandbox, loop-mounted under
//!   the sandbox dir. Works on any kernel with loop devices and ext4; costs an mkfs + mount per
//!   sandbox, which the warm pool does ahead of time.
//!
//! `RuntimeConfig::disk_backend`: `auto` (project quotas when the filesystem enforces them, else
//! per-sandbox images), `project-quota`, `image`. `RuntimeConfig::disk_quota`: `auto` (no usable
//! mechanism → one warning, no limit), `required` (no usable mechanism → `Runtime::open` fails),
//! `off`.
//!
//! Per sandbox the files decide, not the configuration: a sandbox with `disk.img` keeps using its
//! image (and one with `disk.json` its project) even after the node's mechanism changed, so stop/
//! start and reconcile stay correct across a configuration change.
use crate::config::RuntimeConfig;
use crate::disk_image::{self, Tools};
use crate::error::{Error, IoCtx, Result};
use crate::quota::{DiskQuota, DiskQuotaMode};
use serde::{Deserialize, Serialize};
use std::path::Path;

// `RuntimeConfig::disk_backend`'s type is the config's; here under its old path.
pub use crate::config::DiskBackend;

/// The mechanism in use for new sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// No disk limit (off, or nothing usable in `auto` mode).
    None,
    ProjectQuota,
    SandboxImage,
}

pub struct DiskLimits {
    mechanism: Mechanism,
    quota: DiskQuota,
    tools: Option<Tools>,
    /// Size of the images the warm pool prepares (MiB; 0 = none).
    pool_image_mb: u64,
}

impl DiskLimits {
    pub async fn open(cfg: &RuntimeConfig) -> Result<DiskLimits> {
        let sandboxes = cfg.sandboxes_dir();
        let disabled = |tools: Option<Tools>| DiskLimits {
            mechanism: Mechanism::None,
            quota: DiskQuota::disabled(sandboxes.clone()),
            tools,
            pool_image_mb: 0,
        };
        // Sandboxes that already have an image need the tools whatever the mechanism is now.
        let tools = Tools::find();
        if cfg.disk_quota == DiskQuotaMode::Off {
            return Ok(disabled(tools.ok()));
        }
        let mut errors = Vec::new();
        // In auto mode a kernel that could not enforce project quotas before is not asked again (the probe
        // formats and tries to mount a node image: slow, and it cannot succeed until the kernel changes).
        let memo = ProbeMemo::path(&cfg.data_dir);
        let known_unusable = cfg.disk_backend == DiskBackend::Auto && ProbeMemo::says_unusable(&memo);
        if known_unusable {
            errors.push(format!("project quotas: unusable on this kernel (cached in {})", memo.display()));
        } else if matches!(cfg.disk_backend, DiskBackend::Auto | DiskBackend::ProjectQuota) {
            match DiskQuota::open(&cfg.data_dir, &sandboxes, DiskQuotaMode::Required, cfg.disk_image_gb).await {
                Ok(quota) => {
                    return Ok(DiskLimits {
                        mechanism: Mechanism::ProjectQuota,
                        quota,
                        tools: tools.ok(),
                        pool_image_mb: 0,
                    });
                }
                Err(e) => {
                    ProbeMemo::record_unusable(&memo, &e.to_string());
                    errors.push(format!("project quotas: {e}"));
                }
            }
        }
        if matches!(cfg.disk_backend, DiskBackend::Auto | DiskBackend::Image) {
            match &tools {
                Ok(_) => {
                    tracing::info!(dir = %sandboxes.display(), "disk limits: one ext4 image per sandbox");
                    return Ok(DiskLimits {
                        mechanism: Mechanism::SandboxImage,
                        quota: DiskQuota::disabled(sandboxes.clone()),
                        tools: tools.ok(),
                        pool_image_mb: cfg.default_disk_mb,
                    });
                }
                Err(e) => errors.push(format!("per-sandbox images: {e}")),
            }
        }
        let msg = errors.join("; ");
        if cfg.disk_quota == DiskQuotaMode::Required {
            return Err(Error::Invalid(format!("no disk limit mechanism available: {msg}")));
        }
        tracing::warn!(errors = %msg, "disk limits unavailable; sandboxes run WITHOUT a disk size limit");
        Ok(disabled(tools.ok()))
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }
    /// The project-quota backend (disabled unless it is the mechanism).
    pub fn quota(&self) -> &DiskQuota {
        &self.quota
    }

    fn tools(&self) -> Result<&Tools> {
        self.tools
            .as_ref()
            .ok_or_else(|| Error::Invalid("sandbox disk image, but no mkfs.ext4/e2fsck/loop devices".into()))
    }

    /// Warm pool: format and mount an image of the default size ahead of a create.
    pub async fn prepare_pooled(&self, sandbox_dir: &Path) -> Result<()> {
        if self.mechanism != Mechanism::SandboxImage || self.pool_image_mb == 0 {
            return Ok(());
        }
        let tools = self.tools()?;
        disk_image::create(tools, sandbox_dir, self.pool_image_mb).await?;
        disk_image::mount(tools, sandbox_dir).await
    }

    /// A claimed pool slot: drop its prepared image when the sandbox needs another size (or none).
    pub fn fit_pooled(&self, sandbox_dir: &Path, limit_mb: u64) -> Result<()> {
        if !disk_image::has_image(sandbox_dir) {
            return Ok(());
        }
        let fits = self.mechanism == Mechanism::SandboxImage
            && limit_mb > 0
            && std::fs::metadata(disk_image::image_path(sandbox_dir)).map(|m| m.len()).ok()
                == Some(disk_image::size_for(limit_mb));
        if fits { Ok(()) } else { disk_image::discard(sandbox_dir) }
    }

    /// Before the overlay is mounted (create and start): give the writable layer its limit.
    /// Afterwards `rootfs::paths` points at the right `upper/` and `work/`, which exist.
    pub async fn apply(&self, id: &str, sandbox_dir: &Path, limit_mb: u64) -> Result<()> {
        if disk_image::has_image(sandbox_dir) {
            return disk_image::mount(self.tools()?, sandbox_dir).await;
        }
        // A writable layer from before (stopped without an image): keep it where it is.
        let fresh = !sandbox_dir.join("upper").exists();
        match self.mechanism {
            Mechanism::SandboxImage if limit_mb > 0 && fresh => {
                let tools = self.tools()?;
                disk_image::create(tools, sandbox_dir, limit_mb).await?;
                disk_image::mount(tools, sandbox_dir).await
            }
            _ => {
                let rp = crate::rootfs::paths(sandbox_dir);
                for d in [&rp.upper, &rp.work] {
                    std::fs::create_dir_all(d).ctx(d)?;
                }
                self.quota.apply(id, sandbox_dir, limit_mb)
            }
        }
    }

    /// After the overlay is unmounted (stop, delete, collect): unmount the image. Stop keeps it.
    pub fn unmount(&self, sandbox_dir: &Path) -> Result<()> {
        if disk_image::has_image(sandbox_dir) || disk_image::mount_dir(sandbox_dir).exists() {
            disk_image::unmount(sandbox_dir)?;
        }
        Ok(())
    }

    /// The sandbox goes away: clear its project quota (its image goes with the directory).
    pub fn forget(&self, sandbox_dir: &Path) -> Result<()> {
        self.quota.release(sandbox_dir)
    }

    /// (used, limit) bytes of the writable layer, None without a limit.
    pub fn usage(&self, sandbox_dir: &Path) -> Option<(u64, u64)> {
        if disk_image::has_image(sandbox_dir) {
            return disk_image::usage(sandbox_dir);
        }
        let rec = crate::quota::DiskRecord::load(sandbox_dir)?;
        self.quota.usage(rec.project_id).map(|u| (u.used_bytes, u.limit_bytes))
    }

    /// Boot time, after leftovers were collected.
    pub fn reconcile(&self, sandboxes_dir: &Path) {
        self.quota.reconcile();
        disk_image::detach_unmounted(sandboxes_dir);
    }

    /// Node teardown (`destroy_all`): the project-quota image, if we mounted one.
    pub fn teardown(&self) -> Result<()> {
        self.quota.teardown()
    }
}

/// `<data_dir>/disk-probe.json`: the kernel release on which project quotas were found unusable.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbeMemo {
    kernel: String,
    project_quota_error: String,
}

impl ProbeMemo {
    fn path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("disk-probe.json")
    }

    fn kernel_release() -> String {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
    }

    fn says_unusable(path: &Path) -> bool {
        let memo: Option<ProbeMemo> = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        memo.is_some_and(|m| !m.kernel.is_empty() && m.kernel == Self::kernel_release())
    }

    fn record_unusable(path: &Path, error: &str) {
        let memo = ProbeMemo { kernel: Self::kernel_release(), project_quota_error: error.to_string() };
        if let Ok(json) = serde_json::to_vec_pretty(&memo)
            && let Err(e) = std::fs::write(path, json)
        {
            tracing::debug!(path = %path.display(), error = %e, "could not remember the project quota probe");
        }
    }
}
