//! Closing a runtime: what it made for itself goes, what belongs to sandboxes stays.
use super::Runtime;
use crate::cgroup;
use crate::error::{Error, Result};
use crate::spec::Status;

impl Runtime {
    /// Stop the firewall watcher and give back what this instance made for itself: the warm
    /// pool's slots (netns, veth, address, chain, disk image) and — when no sandbox is running or
    /// paused, so nothing needs them — the nft table and the cgroup parent; with no sandboxes at
    /// all, the node's disk image too. Sandboxes themselves keep running (the next `open`
    /// re-adopts them). For a server that stops, or fails to start after the runtime opened.
    pub async fn close(&self) -> Result<()> {
        self.stop_watching();
        // Its port goes back (a runtime opened again in this process listens there); redirected connections of
        // sandboxes left running are refused until a runtime runs again.
        self.inner.gateway.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Sandboxes left running keep their binds of it, dead (ENOTCONN) until the next `open` re-attaches them.
        if let Some(view) = &self.inner.procview {
            view.close();
        }
        // The host's view of the volumes; sandboxes left running keep their binds, and the next use mounts the
        // same filesystem again (`volume_images.rs`).
        if let (Some(images), Some(dir)) = (&self.inner.volume_images, &self.inner.cfg.volumes_dir) {
            images.unmount_all(dir);
        }
        let mut first: Option<Error> = None;
        if let Err(e) = self.drain_pool().await {
            first.get_or_insert(e);
        }
        let statuses: Vec<Status> = self.list().await.into_iter().map(|s| s.status).collect();
        if !statuses.iter().any(|s| matches!(s, Status::Running | Status::Paused | Status::Creating)) {
            if let Err(e) = self.inner.fw.destroy().await {
                first.get_or_insert(e);
            }
            cgroup::remove_parent(&self.inner.cfg.cgroup_parent());
        }
        if statuses.is_empty()
            && let Err(e) = self.inner.disk.teardown()
        {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// Stop repairing the firewall table (before it is removed on purpose).
    pub(crate) fn stop_watching(&self) {
        self.inner.fw_watch.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// How many times the firewall table was found changed from outside and rebuilt; the receiver
    /// sees every repair.
    pub fn firewall_repairs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.fw.repairs()
    }
}
