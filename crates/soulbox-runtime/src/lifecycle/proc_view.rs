//! The proc view's part of the lifecycle (`procview.rs`): which sandboxes get it, attaching what runc does not
//! bind, and re-attaching running sandboxes to the filesystem of a runtime that opened after the one that booted
//! them.
use super::Inner;
use crate::driver::Driver;
use crate::spec::Status;
use std::path::PathBuf;

/// Mounting the view into a container, on a blocking thread.
pub(super) type Attaching = tokio::task::JoinHandle<crate::Result<()>>;

impl Inner {
    /// The view for sandboxes of `driver`: none for gVisor, whose own kernel shows its limits.
    pub(super) fn proc_view_for(&self, driver: &Driver) -> Option<&crate::procview::ProcView> {
        self.procview.as_ref().filter(|_| !driver.kind().is_runsc())
    }

    /// After the container started (or, re-attaching, while it runs): the view's files mounted into it, on a
    /// blocking thread (the caller waits for envd meanwhile); [`Inner::attached`] takes the outcome.
    pub(super) fn attach_proc_view(&self, id: &str, driver: &Driver) -> Option<Attaching> {
        let view = self.proc_view_for(driver)?;
        let pid_file = self.dir(id).join("init.pid");
        let pid = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).unwrap_or(0);
        let files = view.files(id);
        let cgroup = self.cfg.cgroups_path(id);
        let sandbox = id.to_string();
        Some(tokio::task::spawn_blocking(move || {
            if pid <= 0 {
                return Err(crate::Error::Invalid(format!("no container pid in {}", pid_file.display())));
            }
            let t0 = std::time::Instant::now();
            let res = crate::procview::attach(pid, &cgroup, &files);
            tracing::debug!(sandbox, us = t0.elapsed().as_micros() as u64, "proc view attached");
            res
        }))
    }

    /// The outcome of [`Inner::attach_proc_view`]: a failure leaves the sandbox running with the host's files, and
    /// says so.
    pub(super) async fn attached(&self, id: &str, attaching: Option<Attaching>) {
        let Some(attaching) = attaching else { return };
        let res = attaching.await.unwrap_or_else(|e| Err(crate::Error::Invalid(format!("attach task: {e}"))));
        if let Err(e) = res {
            tracing::warn!(sandbox = id, error = %e, "could not attach the proc view; the sandbox sees the host's");
        }
    }

    /// With the view, a sandbox of fewer CPUs than the node is pinned to that many (`procview::cpuset`), once envd
    /// is ready: its start runs on any CPU (pinned from the bundle, a create took ~10 ms longer on a busy 2-core
    /// host), and nothing of the user's runs before. gVisor counts its CPUs itself (and its cgroup setup refuses a
    /// cpuset). A failure leaves it unpinned (`nproc` shows the node's CPUs), and says so.
    pub(super) fn pin_cpus(&self, id: &str, driver: &Driver, cpu_count: u32) {
        if self.proc_view_for(driver).is_none() {
            return;
        }
        if let Some(cpus) = crate::procview::cpuset::pick(cpu_count)
            && let Err(e) = crate::procview::cpuset::apply(&self.cfg.cgroup_parent(), id, &cpus)
        {
            tracing::warn!(sandbox = id, cpus, error = %e, "could not pin the sandbox's CPUs; nproc shows the node's");
        }
    }

    /// Every running or paused sandbox booted by an earlier runtime gets this runtime's view (its binds of the
    /// earlier one's went dead with it).
    pub(super) async fn reattach_proc_views(&self) {
        if self.procview.is_none() {
            return;
        }
        let handles: Vec<_> = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for h in handles {
            let rec = h.lock().await;
            if !matches!(rec.status, Status::Running | Status::Paused) {
                continue;
            }
            if let Ok(driver) = self.drivers.for_record(&rec) {
                let attaching = self.attach_proc_view(&rec.id, driver);
                self.attached(&rec.id, attaching).await;
            }
        }
    }

    /// (host file, `/proc` file) pairs the OCI runtime binds in sandbox `id`'s bundle: on gVisor, whose `/proc` has
    /// no boot id, the boot record's id file; nothing on runc (the view is attached).
    pub(super) fn proc_view_binds(&self, id: &str, driver: &Driver) -> Vec<(PathBuf, &'static str)> {
        if driver.kind().is_runsc() && self.procview.is_some() {
            return vec![(self.dir(id).join(crate::procview::BOOT_ID_FILE), crate::procview::BOOT_ID_PATH)];
        }
        Vec::new()
    }
}
