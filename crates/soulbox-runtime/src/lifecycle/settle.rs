//! A gVisor sandbox that stops — saved to disk by a pause, or killed by a stop (a filesystem-only pause) — runs no
//! code any more, but its Sentry takes ~1.3 s to exit on the ptrace platform (it tears down a stub process per
//! task), and its mounts are busy until then. The verb answers at once; what the sandbox holds on the host (Sentry,
//! mounts, cgroup, links, rules) is released in the background, under the sandbox's lock, so whatever comes next
//! for it — a resume, a kill, a snapshot, a close of the runtime (which lists every sandbox) — waits for the
//! release. A crash halfway is finished by the next open, which releases every stopped record again.

use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use super::Inner;
use crate::record::Record;

/// How long a stopped sandbox's Sentry may take to exit.
pub(super) const SENTRY_EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Releases the stopped sandbox `rec` (already saved as `Stopped`) in the background, holding its lock.
pub(super) fn release_in_background(inner: std::sync::Arc<Inner>, rec: OwnedMutexGuard<Record>) {
    tokio::spawn(async move {
        let id = rec.id.clone();
        let t0 = Instant::now();
        if !super::death::wait_exited(&inner.dir(&id), SENTRY_EXIT_LIMIT).await {
            tracing::warn!(sandbox = %id, "the stopped sandbox's process is still there; releasing anyway");
        }
        match inner.release(&id, true).await {
            Ok(()) => tracing::info!(sandbox = %id, ms = t0.elapsed().as_millis() as u64, "released after its stop"),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "release after the stop failed; the next start or open retries")
            }
        }
        drop(rec);
    });
}
