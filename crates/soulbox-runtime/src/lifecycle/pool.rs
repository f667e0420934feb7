//! The warm pool: sandbox slots (id, network, default firewall chain, disk image) prepared ahead of
//! `create`, so a create only boots.
use super::{Inner, Runtime};
use crate::config::new_sandbox_id;
use crate::driver::Driver;
use crate::error::{Error, IoCtx, Result};
use crate::network::{self, NetLease};
use crate::record::Record;
use crate::spec::{NetworkPolicy, Status};
use std::sync::Arc;

impl Inner {
    /// Take a prepared slot (network, default firewall chain, disk image) from the pool, or make
    /// one now. Returns (id, lease, whether the firewall already holds the default open policy).
    /// The caller refills the pool once its create is done. The pool's slots are made for the default runtime;
    /// a sandbox on another one (its network, its user namespace differ) gets a slot made now.
    /// `wanted`: the id the sandbox must have (one moved from another node keeps its id), made now.
    pub(super) async fn claim_slot(
        self: &Arc<Self>,
        driver: &Driver,
        wanted: Option<&str>,
    ) -> Result<(String, NetLease, bool)> {
        let pooled = std::ptr::eq(driver, self.drivers.default()) && wanted.is_none();
        let slot = if pooled { self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop_front() } else { None };
        if let Some((id, l)) = slot {
            return Ok((id, l, true));
        }
        let id = match wanted {
            Some(id) => self.claim_id(id)?,
            None => self.fresh_id()?,
        };
        Record { id: id.clone(), status: Status::Creating, template: None, spec: None, envd_secret: None }
            .save(&self.dir(&id))?;
        match self.acquire_network(&id, driver).await {
            Ok(l) => Ok((id, l, false)),
            Err(e) => {
                let _ = self.release(&id, false).await;
                Err(e)
            }
        }
    }

    /// Makes the directory of sandbox `id`, which must be new on this node.
    fn claim_id(&self, id: &str) -> Result<String> {
        crate::config::check_id(id)?;
        let dir = self.dir(id);
        let taken = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
            || !network::host_links(&self.cfg.veth_name(id)).is_empty();
        if taken {
            return Err(Error::Invalid(format!("sandbox {id} already exists on this node")));
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Invalid(format!("sandbox {id} already exists on this node")));
            }
            Err(e) => return Err(Error::Io { path: dir, source: e }),
        }
        crate::perms::set_mode(&dir, 0o700)?;
        Ok(id.to_string())
    }

    pub(super) fn fresh_id(&self) -> Result<String> {
        loop {
            let id = new_sandbox_id();
            let dir = self.dir(&id);
            let veth_taken = !network::host_links(&self.cfg.veth_name(&id)).is_empty();
            if !dir.exists() && !veth_taken {
                std::fs::create_dir_all(&dir).ctx(&dir)?;
                crate::perms::set_mode(&dir, 0o700)?;
                return Ok(id);
            }
        }
    }

    pub fn spawn_refill(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.fill_pool().await;
            me.refilling.store(false, Ordering::SeqCst);
        });
    }

    pub async fn fill_pool(&self) -> Result<()> {
        loop {
            if self.pool.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.cfg.pool_size {
                return Ok(());
            }
            let id = self.fresh_id()?;
            Record { id: id.clone(), status: Status::Pooled, template: None, spec: None, envd_secret: None }
                .save(&self.dir(&id))?;
            let res = async {
                let l = self.acquire_network(&id, self.drivers.default()).await?;
                self.fw.apply_policy(&id, &l, &NetworkPolicy::open()).await?;
                self.disk.prepare_pooled(&self.dir(&id)).await?;
                Ok::<_, Error>(l)
            }
            .await;
            match res {
                Ok(l) => self.pool.lock().unwrap_or_else(|e| e.into_inner()).push_back((id, l)),
                Err(e) => {
                    let _ = self.release(&id, false).await;
                    return Err(e);
                }
            }
        }
    }
}

impl Runtime {
    /// Release all prepared pool slots and booted pooled sandboxes.
    pub async fn drain_pool(&self) -> Result<()> {
        let booted = self.drain_booted().await;
        loop {
            let slot = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some((id, _)) = slot else { return booted };
            self.inner.release(&id, false).await?;
        }
    }

    pub fn pool_len(&self) -> usize {
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Starts a pool refill when dropped (every exit of `create`).
pub(super) struct RefillOnDrop<'a>(pub(super) &'a Arc<Inner>);

impl Drop for RefillOnDrop<'_> {
    fn drop(&mut self) {
        // (a create future dropped outside the tokio runtime cannot spawn; the next create refills)
        if self.0.cfg.pool_size > 0 && tokio::runtime::Handle::try_current().is_ok() {
            self.0.spawn_refill();
        }
        self.0.spawn_booted_refill();
    }
}
