//! The sandbox's resource usage as seen from inside, served by `GET /metrics` — E2B's fields plus SoulBox's (seed
//! feature 8). Limits and usage come from the sandbox's cgroup when there is one, otherwise from host-wide
//! `/proc` numbers; network, disk space and processes always come from `/proc` and `statvfs`.
//!
//! CPU percentage: [`MetricsSampler`] keeps the previous (time, CPU time used) sample; a request reports the
//! usage between that sample and now, as a share of the CPUs the sandbox may use. The first sample is taken
//! when envd starts, so even the first request needs no waiting (it reports the average since start). Two
//! requests closer together than [`MIN_WINDOW`] repeat the last figure instead of dividing by noise.

mod cgroup;
mod host;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use self::cgroup::{Cgroup, CgroupStats};

const MIB: u64 = 1024 * 1024;
pub const MIN_WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize, PartialEq)]
pub struct Metrics {
    /// Unix seconds.
    pub ts: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_cache: u64,
    pub mem_total_mib: u64,
    pub mem_used_mib: u64,
    pub disk_used: u64,
    pub disk_total: u64,
    // SoulBox additions (seed feature 8).
    pub mem_used_pct: f64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub process_count: u64,
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    busy_usec: u64,
    pct: f64,
}

pub struct MetricsSampler {
    cgroup: Option<Cgroup>,
    /// Only swapped under the lock; all reading of files happens before taking it.
    last: Mutex<Option<CpuSample>>,
}

impl Default for MetricsSampler {
    fn default() -> Self {
        let cgroup = Cgroup::detect();
        let busy = cpu_busy_usec(cgroup.as_ref().map(Cgroup::stats).as_ref());
        let last = busy.map(|busy_usec| CpuSample { at: Instant::now(), busy_usec, pct: 0.0 });
        MetricsSampler { cgroup, last: Mutex::new(last) }
    }
}

impl MetricsSampler {
    /// Reads everything now. Blocking (small `/proc` and `/sys` reads): call it off the async threads.
    pub fn collect(&self) -> Metrics {
        let stats = self.cgroup.as_ref().map(Cgroup::stats).unwrap_or_default();
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let allowed_cpus = stats.cpu_limit.map_or(online, |limit| limit.min(online)).max(0.01);
        let cpu_used_pct = self.cpu_pct(cpu_busy_usec(self.cgroup.as_ref().map(|_| &stats)), allowed_cpus);

        let host_mem = host::meminfo();
        let mem_total = match stats.memory_limit {
            Some(limit) if host_mem.total > 0 => limit.min(host_mem.total),
            Some(limit) => limit,
            None => host_mem.total,
        };
        let (mem_used, mem_cache) = match stats.memory_usage {
            // What the sandbox's processes hold, not the page cache the kernel can take back.
            Some(usage) => {
                let cache = stats.memory_cache.unwrap_or(0);
                (stats.memory_anon.unwrap_or_else(|| usage.saturating_sub(cache)), cache)
            }
            None => (host_mem.total.saturating_sub(host_mem.available), host_mem.cache),
        };
        let (disk_used, disk_total) = host::disk_space();
        let (disk_read_bytes, disk_write_bytes) = match (stats.io_read_bytes, stats.io_write_bytes) {
            (Some(r), Some(w)) if r + w > 0 => (r, w),
            _ => host::disk_io_bytes(),
        };
        let (net_rx_bytes, net_tx_bytes) = host::network_bytes();
        Metrics {
            ts: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
            cpu_count: allowed_cpus.ceil() as u32,
            cpu_used_pct: round2(cpu_used_pct),
            mem_total,
            mem_used,
            mem_cache,
            mem_total_mib: mem_total / MIB,
            mem_used_mib: mem_used / MIB,
            disk_used,
            disk_total,
            mem_used_pct: if mem_total > 0 { round2(mem_used as f64 * 100.0 / mem_total as f64) } else { 0.0 },
            disk_read_bytes,
            disk_write_bytes,
            net_rx_bytes,
            net_tx_bytes,
            process_count: host::process_count(),
        }
    }

    fn cpu_pct(&self, busy_usec: Option<u64>, allowed_cpus: f64) -> f64 {
        let Some(busy_usec) = busy_usec else { return 0.0 };
        let now = Instant::now();
        let mut last = match self.last.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let pct = match *last {
            Some(prev) if now.duration_since(prev.at) < MIN_WINDOW => return prev.pct,
            Some(prev) => {
                let wall_usec = now.duration_since(prev.at).as_micros() as f64;
                let used = busy_usec.saturating_sub(prev.busy_usec) as f64;
                (used * 100.0 / (wall_usec * allowed_cpus)).clamp(0.0, 100.0)
            }
            None => 0.0,
        };
        *last = Some(CpuSample { at: now, busy_usec, pct });
        pct
    }
}

/// CPU time used so far: the cgroup's when there is one, else the whole machine's.
fn cpu_busy_usec(stats: Option<&CgroupStats>) -> Option<u64> {
    stats.and_then(|s| s.cpu_usage_usec).or_else(host::cpu_busy_usec)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percentage_between_samples() {
        let sampler = MetricsSampler {
            cgroup: None,
            last: Mutex::new(Some(CpuSample { at: Instant::now() - Duration::from_secs(1), busy_usec: 0, pct: 0.0 })),
        };
        // Half a CPU-second over ~1 s with 2 CPUs allowed ≈ 25 %.
        let pct = sampler.cpu_pct(Some(500_000), 2.0);
        assert!((20.0..=25.1).contains(&pct), "{pct}");
        // Too soon after: the same figure again.
        assert_eq!(sampler.cpu_pct(Some(900_000), 2.0), pct);
    }

    #[test]
    fn collects_sane_values() {
        let m = MetricsSampler::default().collect();
        assert!(m.cpu_count >= 1);
        assert!(m.mem_total > 0 && m.mem_used <= m.mem_total.max(m.mem_used));
        assert!(m.disk_total > 0 && m.disk_used <= m.disk_total);
        assert!(m.process_count >= 1);
        assert!((0.0..=100.0).contains(&m.cpu_used_pct));
    }
}
