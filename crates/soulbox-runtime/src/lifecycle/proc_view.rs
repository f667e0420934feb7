//! The proc view's part of the lifecycle (`procview.rs`): which sandboxes get it, attaching what runc does not
//! bind, and re-attaching running sandboxes to the filesystem of a runtime that opened after the one that booted
//! them.
use super::Inner;
use crate::driver::Driver;
use crate::spec::Status;
use std::path::PathBuf;

impl Inner {
    /// The view for sandboxes of `driver`: none for gVisor, whose own kernel shows its limits.
    pub(super) fn proc_view_for(&self, driver: &Driver) -> Option<&crate::procview::ProcView> {
        self.procview.as_ref().filter(|_| !driver.kind().is_runsc())
    }

    /// After the container started: its boot id (and with `all` every file of the view) mounted into it. A
    /// failure leaves the sandbox running with the host's file, and says so.
    pub(super) fn attach_proc_view(&self, id: &str, driver: &Driver, all: bool) {
        let Some(view) = self.proc_view_for(driver) else { return };
        let pid_file = self.dir(id).join("init.pid");
        let pid = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
        let res = match pid {
            Some(pid) if pid > 0 => view.attach_to(id, pid, all),
            _ => Err(crate::Error::Invalid(format!("no container pid in {}", pid_file.display()))),
        };
        if let Err(e) = res {
            tracing::warn!(sandbox = id, error = %e, "could not attach the proc view; the sandbox sees the host's");
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
                self.attach_proc_view(&rec.id, driver, true);
            }
        }
    }

    /// (host file, `/proc` file) pairs the OCI runtime binds in sandbox `id`'s bundle: the view's files on runc;
    /// on gVisor, whose `/proc` has no boot id, the boot record's id file.
    pub(super) fn proc_view_binds(&self, id: &str, driver: &Driver) -> Vec<(PathBuf, &'static str)> {
        if driver.kind().is_runsc() {
            if self.procview.is_none() {
                return Vec::new();
            }
            return vec![(self.dir(id).join(crate::procview::BOOT_ID_FILE), crate::procview::BOOT_ID_PATH)];
        }
        self.proc_view_for(driver).map(|v| v.binds(id)).unwrap_or_default()
    }
}
