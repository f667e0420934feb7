//! The proxy's memory of running sandboxes, so that a request to one costs a map hit instead of a store query
//! (a query was most of the latency the proxy added to a small request).
//!
//! An entry is a sandbox's record as read while it ran, kept with the stream token ([`crate::stream_cut`]) its
//! traffic is cut by. Every stop this process makes — kill, pause, timeout, a lost sandbox — cancels that token
//! before it changes the record, so an entry whose token is live still describes the sandbox. The proxy reads
//! the record again after taking the token before it fills an entry (a record read earlier may predate a stop
//! that finished meanwhile). What changes a record without a stop here — a crash reconcile, another process on
//! the same database — is seen within [`MAX_AGE`]: no entry is used longer than that. Only sandboxes the proxy
//! reaches directly are cached; traffic through a node agent is checked against the store on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::SandboxRecord;

/// How long an entry may be used without reading the store again.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Entries kept before the first sweep of dead ones.
const FIRST_SWEEP: usize = 1024;

#[derive(Default)]
pub struct RouteCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    /// Sweep dead entries when the map reaches this size (then twice what is left): sandboxes killed and never
    /// asked for again do not pile up, at an amortised constant cost per insert.
    sweep_at: usize,
}

struct Entry {
    record: Arc<SandboxRecord>,
    liveness: CancellationToken,
    read_at: Instant,
}

impl Entry {
    fn usable(&self, now: Instant) -> bool {
        !self.liveness.is_cancelled() && now.duration_since(self.read_at) < MAX_AGE
    }
}

impl RouteCache {
    /// The running sandbox's record and stream token, if a usable entry holds them.
    pub fn get(&self, id: &str) -> Option<(Arc<SandboxRecord>, CancellationToken)> {
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.map.get(id)?;
        if entry.usable(Instant::now()) {
            return Some((entry.record.clone(), entry.liveness.clone()));
        }
        entries.map.remove(id);
        None
    }

    /// Remembers `record` (read after `liveness` was taken, showing the sandbox running).
    pub fn insert(&self, record: Arc<SandboxRecord>, liveness: CancellationToken, read_at: Instant) {
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if entries.map.len() >= entries.sweep_at.max(FIRST_SWEEP) {
            let now = Instant::now();
            entries.map.retain(|_, e| e.usable(now));
            entries.sweep_at = entries.map.len() * 2;
        }
        let id = record.id.clone();
        entries.map.insert(id, Entry { record, liveness, read_at });
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Arc<SandboxRecord> {
        Arc::new(SandboxRecord { started_at_ms: 0, end_at_ms: 0, disk_size_mb: 1024, ..SandboxRecord::running(id) })
    }

    #[test]
    fn a_cut_or_old_entry_is_not_used() {
        let cache = RouteCache::default();
        let live = CancellationToken::new();
        cache.insert(record("a"), live.clone(), Instant::now());
        assert_eq!(cache.get("a").map(|(r, _)| r.id.clone()), Some("a".to_owned()));
        live.cancel();
        assert!(cache.get("a").is_none(), "a cut sandbox's entry is dropped");
        assert!(cache.is_empty());

        let Some(long_ago) = Instant::now().checked_sub(MAX_AGE) else { return };
        cache.insert(record("b"), CancellationToken::new(), long_ago);
        assert!(cache.get("b").is_none(), "an entry older than MAX_AGE is read again");
    }

    #[test]
    fn dead_entries_are_swept() {
        let cache = RouteCache::default();
        for i in 0..FIRST_SWEEP * 4 {
            let token = CancellationToken::new();
            cache.insert(record(&format!("s{i}")), token.clone(), Instant::now());
            token.cancel();
        }
        assert!(cache.len() <= FIRST_SWEEP, "{} entries of killed sandboxes kept", cache.len());
    }
}
