//! Pause to disk on gVisor: a paused runsc sandbox's memory and state go to `<sandbox dir>/memory/` (gVisor's
//! own image, which it compresses), everything else it held on the host is released as by a stop, and its next
//! start continues from the image — after a restart of the runtime or of the host too.
//!
//! This gVisor (Debian 12's) cannot save a TCP endpoint that something waits on through epoll, and a save that
//! fails ends the sandbox. So before saving, envd is asked to close its connections (`envd_init::QUIESCE_PATH`; its
//! listener is never in an epoll set) and checks that no process of the sandbox holds internet sockets beside an
//! epoll set. If it finds one, the sandbox stays paused in memory as before (`runsc pause`). If the save fails
//! anyway, the sandbox keeps its files and boots cold at its next start, as after a filesystem-only pause.
//!
//! A restored network stack keeps the address it was saved with, so an image restores only at that address (the
//! sandbox's lease, which a stopped sandbox keeps); an image is used once and then removed, since the files move
//! on from there.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Inner;
use super::boot::BootInputs;
use super::envd_call::{self, Close, EnvdRequest};
use crate::driver::Driver;
use crate::envd_secret::EnvdSecret;
use crate::error::{Error, Result};
use crate::network::NetLease;
use crate::record::Record;

const MEMORY_DIR: &str = "memory";
/// gVisor's name for the image inside `--image-path`.
const IMAGE_FILE: &str = "checkpoint.img";
/// The address the image was saved at.
const ADDRESS_FILE: &str = "address";
/// How long envd may take to close its connections and answer.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the sandbox in `sandbox_dir` has saved memory to continue from.
pub(crate) fn has_saved_memory(sandbox_dir: &Path) -> bool {
    sandbox_dir.join(MEMORY_DIR).join(IMAGE_FILE).is_file()
}

/// What a pause to disk did.
pub(super) enum PauseToDisk {
    /// Memory and state are in the sandbox dir; the container is gone.
    Saved,
    /// Nothing changed: the sandbox runs on (the caller pauses it in memory). The reason, for the log.
    NotSaved(String),
    /// The save failed after the sandbox had stopped: its processes are gone, its files are kept.
    Lost(Error),
}

impl Inner {
    /// Saves the running runsc sandbox `rec`'s memory and state to its dir (see the module docs).
    pub(super) async fn pause_to_disk(&self, rec: &Record, driver: &Driver) -> PauseToDisk {
        let id = &rec.id;
        let dir = self.dir(id);
        let (Some(lease), Some(secret)) = (NetLease::load(&dir), rec.envd_secret.as_ref()) else {
            return PauseToDisk::NotSaved("no network lease or agent secret".into());
        };
        let t0 = Instant::now();
        if let Err(reason) = quiesce_envd(lease.ip, secret).await {
            return PauseToDisk::NotSaved(reason);
        }
        let quiesced_ms = t0.elapsed().as_millis() as u64;
        let memory = dir.join(MEMORY_DIR);
        let prepared = crate::util::remove_dir_all_idem(&memory)
            .and_then(|()| std::fs::create_dir(&memory).map_err(|source| Error::Io { path: memory.clone(), source }))
            .and_then(|()| crate::util::write_atomic(&memory.join(ADDRESS_FILE), lease.ip.to_string().as_bytes()));
        if let Err(e) = prepared {
            return PauseToDisk::NotSaved(format!("preparing {}: {e}", memory.display()));
        }
        match driver.checkpoint(id, &memory).await {
            Ok(()) => {
                let bytes = std::fs::metadata(memory.join(IMAGE_FILE)).map(|m| m.len()).unwrap_or(0);
                tracing::info!(sandbox = %id, quiesced_ms, ms = t0.elapsed().as_millis() as u64, bytes, "memory saved to disk");
                PauseToDisk::Saved
            }
            Err(e) => {
                let _ = crate::util::remove_dir_all_idem(&memory);
                match driver.state(id).await {
                    // Refused before the save began: nothing is lost.
                    Ok(Some(state)) if state.status == "running" => PauseToDisk::NotSaved(e.to_string()),
                    _ => PauseToDisk::Lost(e),
                }
            }
        }
    }

    /// If the sandbox `rec` has saved memory, continues from it on `lease` and returns true; false (after
    /// cleaning up) when there is none or it cannot be used, so that the caller boots cold. The image goes either
    /// way.
    pub(super) async fn restore_saved_memory(&self, inputs: &BootInputs<'_>) -> bool {
        let BootInputs { rec, lease, driver, .. } = *inputs;
        let id = &rec.id;
        let dir = self.dir(id);
        if !has_saved_memory(&dir) {
            return false;
        }
        let memory = dir.join(MEMORY_DIR);
        let saved_at = std::fs::read_to_string(memory.join(ADDRESS_FILE)).ok().and_then(|a| a.trim().parse().ok());
        let t0 = Instant::now();
        let restored = if !driver.kind().is_runsc() {
            Err(Error::Invalid(format!("memory saved by runsc cannot be restored by {}", driver.bin())))
        } else if saved_at != Some(lease.ip) {
            Err(Error::Invalid(format!("saved at {saved_at:?}, the sandbox now has {}", lease.ip)))
        } else {
            let restored = self.restore_container(inputs, &memory).await;
            if restored.is_err() {
                self.undo_restore(id, lease, driver).await;
            }
            restored
        };
        if let Err(e) = crate::util::remove_dir_all_idem(&memory) {
            tracing::warn!(sandbox = %id, error = %e, "could not remove the used memory image");
        }
        match restored {
            Ok(()) => {
                tracing::info!(sandbox = %id, ms = t0.elapsed().as_millis() as u64, "continued from memory saved to disk");
                true
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "could not continue from saved memory; booting from the files");
                false
            }
        }
    }

    /// Removes what a failed restore left: the container, its Sentry (which holds the sandbox's link until it
    /// exits), the log's reader, and the link itself, whose addresses the restore took into its own network stack.
    async fn undo_restore(&self, id: &str, lease: &NetLease, driver: &Driver) {
        let _ = driver.delete_force(id).await;
        if !super::death::wait_exited(&self.dir(id), super::settle::SENTRY_EXIT_LIMIT).await {
            tracing::warn!(sandbox = %id, "the restored sandbox's process is still there");
        }
        self.logs.detach(id).await;
        if let Err(e) = crate::network::renew_links(lease, driver.kind().own_network_stack()).await {
            tracing::warn!(sandbox = %id, error = %e, "could not make the sandbox's links anew");
        }
    }

    async fn restore_container(&self, inputs: &BootInputs<'_>, memory: &Path) -> Result<()> {
        let BootInputs { rec, lease, driver, .. } = *inputs;
        let id = &rec.id;
        let dir = self.dir(id);
        self.write_bundle(inputs)?;
        let stdio = self.logs.attach(id, &dir)?;
        // The pid file names the Sentry of this restore or none: an older pid may belong to another process now.
        crate::util::remove_file_idem(&dir.join("init.pid"))?;
        let restored = driver.restore(id, &dir, stdio, memory).await;
        self.with_log(id, restored).await?;
        // The restored agent answers its health route: the network came back, and the agent runs (a bare connect
        // would succeed on the netstack's backlog even with the agent dead). A sandbox that exits meanwhile has
        // nothing left to answer: that ends the wait at once. (This gVisor saves some images whose agent faults
        // in its first instant after the restore, every time the image is restored: docs/ARCHITECTURE.md.)
        let secret = rec.envd_secret.as_ref().ok_or_else(|| Error::Invalid("no agent secret".into()))?;
        let sentry = super::death::sandbox_pidfd(&dir);
        let sentry_exited = async {
            let exited = match sentry {
                Some(pidfd) => super::death::exited(pidfd).await,
                None => false,
            };
            if !exited {
                std::future::pending::<()>().await;
            }
        };
        let deadline = Instant::now() + Duration::from_millis(self.cfg.ready_timeout_ms);
        let answered = async {
            loop {
                match health(lease.ip, secret).await {
                    Ok(()) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        };
        let reason = tokio::select! {
            answered = answered => match answered {
                Ok(()) => return Ok(()),
                Err(e) => format!("the restored agent does not answer: {e}"),
            },
            () = sentry_exited => "the restored sandbox exited before its agent answered".to_string(),
        };
        self.logs.flush(id).await;
        Err(Error::NotReady { id: id.clone(), reason, log_tail: crate::sandbox_log::tail(&dir, 4000) })
    }
}

/// `GET /health` of the envd at `ip` answered with a success status.
async fn health(ip: Ipv4Addr, secret: &EnvdSecret) -> std::result::Result<(), String> {
    let request = EnvdRequest { method: http::Method::GET, path: "/health", json: None };
    let answer = envd_call::call(ip, secret, request, Close::Drop, Duration::from_secs(2)).await?;
    if answer.status.is_success() { Ok(()) } else { Err(format!("envd: {}", answer.describe())) }
}

/// `POST QUIESCE_PATH` to the envd at `ip` over a connection of its own. On `204` this side closes first (so
/// that envd's end, closing second, does not wait in TIME_WAIT) and waits for envd's close: the end of the stream
/// means envd's socket is gone. `Err` carries why the sandbox cannot be saved now.
async fn quiesce_envd(ip: Ipv4Addr, secret: &EnvdSecret) -> std::result::Result<(), String> {
    let path = soulbox_protocol::envd_init::QUIESCE_PATH;
    let request = EnvdRequest { method: http::Method::POST, path, json: None };
    let answer = envd_call::call(ip, secret, request, Close::AwaitPeer, QUIESCE_TIMEOUT).await;
    let answer = answer.map_err(|e| format!("envd did not quiesce: {e}"))?;
    if answer.status == http::StatusCode::NO_CONTENT { Ok(()) } else { Err(format!("envd: {}", answer.describe())) }
}
