//! Which sandbox a signed `/files` URL that names no sandbox belongs to.
//!
//! E2B's `v1_` signature is `sha256("path:op:user:token[:exp]")` and the official SDKs build
//! `E2B_SANDBOX_URL/files?path&username&signature&signature_expiration` — nothing in it says which sandbox it is
//! for, so the only way to route it is to find the access token it verifies with. (SoulBox's own SDK adds
//! `sandbox_id` to the URL, and host-routed URLs carry the id in the host: those never come here.)
//!
//! Done per request against the store, as before, that is a `SELECT` of every sandbox plus a hash per sandbox
//! for every download. Here:
//! - the tokens live in an in-memory snapshot of the sandboxes that have one (running or paused), refreshed from
//!   the store only when a signature matches none of them, at most every [`MIN_REFRESH`] (single flight), so a
//!   flood of bogus signatures costs a bounded number of store queries;
//! - a signature that matched is remembered (signature + claims → sandbox id; a genuine signature can only ever
//!   verify with one token), so repeated downloads of the same URL cost a hash-map lookup;
//! - a scan (one hash per sandbox) runs inline only for small snapshots and otherwise on the blocking pool, at
//!   most [`MAX_CONCURRENT_SCANS`] at once, so the async workers never spend O(sandboxes) on one request.
//!
//! The proxy then routes to the sandbox like any other request; its envd verifies the signature itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use soulbox_protocol::signature::{self, Claims, Operation, SignatureError};
use tokio::sync::Semaphore;

use crate::store::Store;

/// Shortest interval between two store refreshes of the snapshot.
pub const MIN_REFRESH: Duration = Duration::from_millis(250);
/// Scans on the blocking pool at once (more requests wait for a permit).
pub const MAX_CONCURRENT_SCANS: usize = 2;
/// Snapshots up to this size are scanned on the calling task (a few microseconds).
const INLINE_SCAN: usize = 32;
/// Remembered matches; the map is emptied when it is full.
const REMEMBERED: usize = 4096;

/// The parts of a signed `/files` request the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub signature: String,
    pub path: String,
    pub user: String,
    pub expiration: Option<i64>,
    pub operation: Operation,
}

impl SignedRequest {
    fn claims(&self) -> Claims<'_> {
        Claims { path: &self.path, operation: self.operation, user: &self.user, expiration: self.expiration }
    }

    fn key(&self) -> String {
        format!("{}\n{}\n{}\n{}\n{:?}", self.signature, self.path, self.operation.as_str(), self.user, self.expiration)
    }

    /// Whether it was signed with `token` (an expired but genuine signature still names its sandbox: envd then
    /// answers with the exact error).
    fn signed_with(&self, token: &str, now: i64) -> bool {
        matches!(signature::verify(&self.signature, &self.claims(), token, now), Ok(_) | Err(SignatureError::Expired))
    }
}

struct Entry {
    id: String,
    token: String,
}

#[derive(Default)]
struct Snapshot {
    generation: u64,
    entries: Vec<Entry>,
    taken: Option<Instant>,
}

pub struct SignedRouter {
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    refresh: tokio::sync::Mutex<()>,
    remembered: Mutex<HashMap<String, String>>,
    scans: Arc<Semaphore>,
}

impl SignedRouter {
    pub fn new(store: Store) -> SignedRouter {
        SignedRouter {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            refresh: tokio::sync::Mutex::new(()),
            remembered: Mutex::new(HashMap::new()),
            scans: Arc::new(Semaphore::new(MAX_CONCURRENT_SCANS)),
        }
    }

    /// The id of the sandbox whose access token `request` is signed with, if any.
    pub async fn route(&self, request: &SignedRequest) -> Option<String> {
        let key = request.key();
        if let Some(id) = self.remembered.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Some(id.clone());
        }
        let mut snapshot = self.current();
        loop {
            if let Some(id) = self.scan(snapshot.clone(), request).await {
                let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
                if remembered.len() >= REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(key, id.clone());
                return Some(id);
            }
            // No match: the sandbox may be newer than the snapshot. One refresh at a time; a request that waited
            // for another's refresh scans its result instead of querying again.
            let _turn = self.refresh.lock().await;
            let latest = self.current();
            if latest.generation != snapshot.generation {
                snapshot = latest;
                continue;
            }
            if latest.taken.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
                return None;
            }
            snapshot = self.reload(latest.generation + 1).await?;
        }
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn reload(&self, generation: u64) -> Option<Arc<Snapshot>> {
        let records = match self.store.list_sandboxes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "signed URL routing: cannot list sandboxes");
                return None;
            }
        };
        let entries =
            records.into_iter().filter_map(|r| Some(Entry { token: r.envd_access_token?, id: r.id })).collect();
        let fresh = Arc::new(Snapshot { generation, entries, taken: Some(Instant::now()) });
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Some(fresh)
    }

    async fn scan(&self, snapshot: Arc<Snapshot>, request: &SignedRequest) -> Option<String> {
        let now = crate::store::now_ms() / 1000;
        if snapshot.entries.len() <= INLINE_SCAN {
            return find(&snapshot, request, now);
        }
        let permit = self.scans.clone().acquire_owned().await.ok()?;
        let request = request.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            find(&snapshot, &request, now)
        })
        .await
        .ok()
        .flatten()
    }
}

fn find(snapshot: &Snapshot, request: &SignedRequest, now: i64) -> Option<String> {
    snapshot.entries.iter().find(|e| request.signed_with(&e.token, now)).map(|e| e.id.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use soulbox_protocol::signature::{Scheme, sign};

    use super::*;
    use crate::lifecycle::{CreateRequest, Lifecycle, LifecycleConfig};

    /// `n` secure sandboxes (plus one without a token) on a fake node; `(id, token)` of each secure one.
    async fn sandboxes(n: usize) -> (Arc<Lifecycle>, Vec<(String, String)>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
        let lifecycle = Lifecycle::start(
            store,
            Arc::new(crate::testing::FakeNode::default()),
            // More sandboxes than a team's default limit of concurrent ones.
            LifecycleConfig {
                team_limits: crate::store::TeamLimits {
                    max_sandboxes: 1000,
                    max_vcpus: 10_000,
                    max_memory_mb: 10_000_000,
                    max_builds: 1,
                },
                ..LifecycleConfig::default()
            },
        )
        .await
        .unwrap();
        let mut made = Vec::new();
        for _ in 0..n {
            made.push(create(&lifecycle, true).await);
        }
        create(&lifecycle, false).await;
        (lifecycle, made, dir)
    }

    async fn create(lifecycle: &Lifecycle, secure: bool) -> (String, String) {
        let req = CreateRequest {
            template: "base".into(),
            secure,
            team_id: crate::store::DEFAULT_TEAM_ID.into(),
            ..Default::default()
        };
        let sandbox = lifecycle.create(req).await.unwrap();
        (sandbox.id, sandbox.envd_access_token.unwrap_or_default())
    }

    fn signed(token: &str, path: &str, expiration: Option<i64>) -> SignedRequest {
        let claims = Claims { path, operation: Operation::Read, user: "user", expiration };
        SignedRequest {
            signature: sign(Scheme::E2b, &claims, token),
            path: path.into(),
            user: "user".into(),
            expiration,
            operation: Operation::Read,
        }
    }

    #[tokio::test]
    async fn signatures_route_to_their_sandbox_in_small_and_large_snapshots() {
        for n in [3, 200] {
            let (lifecycle, made, _dir) = sandboxes(n).await;
            let router = SignedRouter::new(lifecycle.store().clone());
            for (id, token) in made.iter().step_by(n / 3) {
                assert_eq!(router.route(&signed(token, "/a.txt", None)).await.as_deref(), Some(id.as_str()));
                // Expired but genuine: still its sandbox (envd says "expired").
                assert_eq!(router.route(&signed(token, "/b.txt", Some(1))).await.as_deref(), Some(id.as_str()));
            }
            let mut forged = signed("not-a-token", "/a.txt", None);
            assert_eq!(router.route(&forged).await, None);
            // A remembered signature is bound to its claims: the same signature for another path matches nothing.
            forged = signed(&made[0].1, "/a.txt", None);
            forged.path = "/etc/shadow".into();
            assert_eq!(router.route(&forged).await, None);
        }
    }

    #[tokio::test]
    async fn a_sandbox_newer_than_the_snapshot_is_found_and_misses_query_the_store_at_a_bounded_rate() {
        let (lifecycle, _made, _dir) = sandboxes(2).await;
        let router = SignedRouter::new(lifecycle.store().clone());
        assert_eq!(router.route(&signed("nobody", "/x", None)).await, None);
        let first = router.current().generation;
        // Misses right after a refresh do not refresh again.
        for _ in 0..50 {
            assert_eq!(router.route(&signed("nobody", "/x", None)).await, None);
        }
        assert_eq!(router.current().generation, first, "no store query within MIN_REFRESH");
        let (late, late_token) = create(&lifecycle, true).await;
        // Found once the snapshot may be refreshed again (bounded wait, polled: the refresh is rate-limited).
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(id) = router.route(&signed(&late_token, "/x", None)).await {
                    return id;
                }
                tokio::time::sleep(MIN_REFRESH / 5).await;
            }
        })
        .await
        .expect("the new sandbox is found after a refresh");
        assert_eq!(found, late);
    }
}
