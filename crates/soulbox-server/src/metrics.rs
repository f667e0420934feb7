//! Seed feature 8: per-sandbox metrics sampled on an interval, one hour kept, served by time range.
//!
//! Samples live in memory on the server that owns the node (a cluster moves them next to the node, issue 7).
//! The sampler's rounds run off the request workers (see [`spawn_sampler`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use soulbox_protocol::api::{SandboxMetric, SandboxState};

use crate::cluster::NodeSet;
use crate::node::SandboxStats;
use crate::store::{Store, now_ms};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const RETENTION: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub cpu_used_pct: f64,
    pub stats: SandboxStats,
}

impl Sample {
    pub fn to_api(&self) -> SandboxMetric {
        let s = &self.stats;
        SandboxMetric {
            timestamp: crate::time::rfc3339(self.at_ms),
            timestamp_unix: self.at_ms / 1000,
            cpu_count: s.cpu_count as i32,
            cpu_used_pct: self.cpu_used_pct,
            mem_used: s.mem_used_bytes as i64,
            mem_total: s.mem_total_bytes as i64,
            mem_cache: s.mem_cache_bytes as i64,
            disk_used: s.disk_used_bytes as i64,
            disk_total: s.disk_total_bytes as i64,
            disk_read_bytes: Some(s.disk_read_bytes as i64),
            disk_write_bytes: Some(s.disk_write_bytes as i64),
            net_rx_bytes: Some(s.net_rx_bytes as i64),
            net_tx_bytes: Some(s.net_tx_bytes as i64),
            process_count: Some(s.process_count as i64),
        }
    }
}

#[derive(Default)]
pub struct MetricsStore {
    series: Mutex<HashMap<String, VecDeque<Sample>>>,
    pub creates: AtomicU64,
    pub create_failures: AtomicU64,
    pub kills: AtomicU64,
    /// The sampler's own cost (issue 18 goal 4: under 10 % of a core at 1,000 sandboxes): rounds done, the CPU
    /// time of the thread that ran them (µs) and the wall time of the last one (µs).
    pub sampler_rounds: AtomicU64,
    pub sampler_cpu_us: AtomicU64,
    pub sampler_last_round_us: AtomicU64,
}

impl MetricsStore {
    /// Adds a raw reading; CPU % is the usage since the previous reading over the wall time between them.
    pub fn record(&self, id: &str, at_ms: i64, stats: SandboxStats) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let samples = series.entry(id.to_owned()).or_default();
        let cpu_used_pct = match samples.back() {
            Some(prev) if at_ms > prev.at_ms && stats.cpu_count > 0 => {
                let used_ns = stats.cpu_usage_ns.saturating_sub(prev.stats.cpu_usage_ns) as f64;
                let wall_ns = (at_ms - prev.at_ms) as f64 * 1e6 * f64::from(stats.cpu_count);
                (used_ns / wall_ns * 100.0).clamp(0.0, 100.0)
            }
            _ => 0.0,
        };
        samples.push_back(Sample { at_ms, cpu_used_pct, stats });
        let oldest = at_ms - RETENTION.as_millis() as i64;
        while samples.front().is_some_and(|s| s.at_ms < oldest) {
            samples.pop_front();
        }
    }

    /// Samples with `start_ms <= at <= end_ms`.
    pub fn range(&self, id: &str, start_ms: i64, end_ms: i64) -> Vec<Sample> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .get(id)
            .map(|s| s.iter().filter(|x| x.at_ms >= start_ms && x.at_ms <= end_ms).cloned().collect())
            .unwrap_or_default()
    }

    pub fn latest(&self, id: &str) -> Option<Sample> {
        self.series.lock().unwrap_or_else(|p| p.into_inner()).get(id).and_then(|s| s.back().cloned())
    }

    pub fn forget(&self, id: &str) {
        self.series.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn retain(&self, alive: &std::collections::HashSet<String>) {
        self.series.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, _| alive.contains(id));
    }

    pub fn counter(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The running sampler; dropping it stops it.
pub struct Sampler {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Samples every running sandbox each `interval`. Each round runs on a thread of the blocking pool (one round
/// at a time), driven by this runtime's handle: the per-sandbox work — the node's cgroup and disk reads, which
/// block — never runs on the workers that serve requests, so a round over many sandboxes does not delay API
/// answers. Being driven by the same runtime (not a second one), the store's and the nodes' connections and the
/// tasks they spawn stay on the server's runtime: nothing the API shares waits for the sampler's thread.
pub fn spawn_sampler(store: Store, nodes: Arc<dyn NodeSet>, metrics: Arc<MetricsStore>, interval: Duration) -> Sampler {
    let handle = tokio::runtime::Handle::current();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let (store, nodes, metrics, handle) = (store.clone(), nodes.clone(), metrics.clone(), handle.clone());
            let round = tokio::task::spawn_blocking(move || {
                let (cpu, wall) = (thread_cpu_us(), std::time::Instant::now());
                handle.block_on(sample_round(&store, nodes.as_ref(), &metrics));
                metrics.sampler_rounds.fetch_add(1, Ordering::Relaxed);
                metrics.sampler_cpu_us.fetch_add(thread_cpu_us().saturating_sub(cpu), Ordering::Relaxed);
                metrics.sampler_last_round_us.store(wall.elapsed().as_micros() as u64, Ordering::Relaxed);
            });
            if let Err(e) = round.await {
                tracing::warn!(error = %e, "metrics: a sample round failed");
            }
        }
    });
    Sampler { task }
}

/// CPU time of the calling thread in µs: the round runs on one blocking-pool thread, so the difference around it
/// is the round's own CPU (the store's query runs on its connection's thread and is not counted).
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000)
}

/// One reading of every running sandbox (on the round's blocking-pool thread).
async fn sample_round(store: &Store, nodes: &dyn NodeSet, metrics: &MetricsStore) {
    let records = match store.list_sandboxes().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot list sandboxes");
            return;
        }
    };
    metrics.retain(&records.iter().map(|r| r.id.clone()).collect());
    let running = records.into_iter().filter(|r| r.state == SandboxState::Running);
    let reads =
        running.map(|r| async move { (r.id.clone(), async { nodes.get(&r.node_id).await?.stats(&r.id).await }.await) });
    for (id, result) in futures::future::join_all(reads).await {
        match result {
            Ok(stats) => metrics.record(&id, now_ms(), stats),
            Err(e) => tracing::debug!(sandbox = %id, error = %e, "metrics: no stats"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_and_retention() {
        let m = MetricsStore::default();
        let stats = |ns| SandboxStats { cpu_usage_ns: ns, cpu_count: 2, ..Default::default() };
        m.record("a", 1_000, stats(0));
        m.record("a", 2_000, stats(1_000_000_000)); // 1 s of CPU over 1 s on 2 CPUs = 50 %
        let got = m.range("a", 0, 10_000);
        assert_eq!(got.len(), 2);
        assert!((got[1].cpu_used_pct - 50.0).abs() < 1e-9);
        assert_eq!(m.range("a", 1_500, 10_000).len(), 1);
        m.record("a", 2_000 + RETENTION.as_millis() as i64 + 1, stats(2_000_000_000));
        assert_eq!(m.range("a", 0, i64::MAX).len(), 1, "samples older than an hour are dropped");
        assert_eq!(m.latest("a").unwrap().to_api().timestamp_unix, (2_000 + RETENTION.as_millis() as i64 + 1) / 1000);
    }

    /// A node whose `stats` blocks its thread until the test lets it go (as slow cgroup and disk reads would).
    struct BlockingNode {
        inner: crate::testing::FakeNode,
        entered: std::sync::mpsc::SyncSender<()>,
        release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    }

    #[async_trait::async_trait]
    impl crate::node::Node for BlockingNode {
        async fn info(&self) -> crate::node::NodeInfo {
            self.inner.info().await
        }
        async fn templates(&self) -> Result<Vec<crate::node::TemplateInfo>, crate::node::NodeError> {
            self.inner.templates().await
        }
        async fn create(
            &self,
            spec: crate::node::SandboxSpec,
        ) -> Result<crate::node::CreatedSandbox, crate::node::NodeError> {
            self.inner.create(spec).await
        }
        async fn pause(&self, id: &str, keep: bool) -> Result<(), crate::node::NodeError> {
            self.inner.pause(id, keep).await
        }
        async fn resume(&self, id: &str) -> Result<std::net::IpAddr, crate::node::NodeError> {
            self.inner.resume(id).await
        }
        async fn kill(&self, id: &str) -> Result<(), crate::node::NodeError> {
            self.inner.kill(id).await
        }
        async fn stats(&self, _id: &str) -> Result<SandboxStats, crate::node::NodeError> {
            let _ = self.entered.send(());
            // Blocks the thread it runs on: the sampler's own, never a request worker.
            let _ = self.release.lock().unwrap().recv();
            Ok(SandboxStats { cpu_count: 1, ..Default::default() })
        }
        async fn logs(
            &self,
            id: &str,
            query: crate::node::LogQuery,
        ) -> Result<Vec<crate::node::LogLine>, crate::node::NodeError> {
            self.inner.logs(id, query).await
        }
    }

    /// One request worker only: if the sampler's blocking reads ran on it, the API call below could not finish
    /// (nor if the store connection the round used were held by a runtime that waits for the sampler).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_sample_round_does_not_hold_up_requests() {
        use crate::lifecycle::{CreateRequest, Lifecycle, LifecycleConfig};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&crate::store::Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
        let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(16);
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let node =
            BlockingNode { inner: Default::default(), entered: entered_tx, release: std::sync::Mutex::new(release_rx) };
        let lifecycle = Lifecycle::start(store, Arc::new(node), LifecycleConfig::default()).await.unwrap();
        let id = lifecycle
            .create(CreateRequest {
                template: "base".into(),
                team_id: crate::store::DEFAULT_TEAM_ID.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .id;
        let metrics = Arc::new(MetricsStore::default());
        let sampler = spawn_sampler(
            lifecycle.store().clone(),
            lifecycle.nodes().clone(),
            metrics.clone(),
            Duration::from_millis(10),
        );
        // The sampler is inside a blocking read now.
        tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)).unwrap()).await.unwrap();
        let state = crate::api::ApiState {
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
            domain: None,
            started: std::time::Instant::now(),
        };
        let request = http::Request::get("/health").body(axum::body::Body::empty()).unwrap();
        // Served by a task, i.e. on the request worker (the test body itself runs on another thread); waited for
        // with a plain thread, since tokio's timers would stop too if that worker were stuck.
        let (answer_tx, answer_rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let response = tower::ServiceExt::oneshot(crate::api::router(state), request).await;
            let _ = answer_tx.send(response.is_ok_and(|r| r.status().is_success()));
        });
        let answered =
            tokio::task::spawn_blocking(move || answer_rx.recv_timeout(Duration::from_secs(30))).await.unwrap();
        assert_eq!(answered, Ok(true), "/health must not wait for the sampler");
        release_tx.send(()).unwrap();
        drop(release_tx);
        // The released round records its sample (bounded wait; rounds repeat every 10 ms).
        let recorded = tokio::time::timeout(Duration::from_secs(30), async {
            while metrics.latest(&id).is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(recorded.is_ok(), "the round finished and recorded its sample");
        // The sampler counts its own rounds (the round is counted once its block_on returns, just after).
        let counted = tokio::time::timeout(Duration::from_secs(30), async {
            while MetricsStore::counter(&metrics.sampler_rounds) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(counted.is_ok(), "soulbox_metrics_sampler_rounds_total counts the rounds");
        drop(sampler);
    }
}
