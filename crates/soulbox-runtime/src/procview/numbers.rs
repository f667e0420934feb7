//! A sandbox's own numbers, read from its cgroup — both layouts: cgroup v2 (one hierarchy) and v1 (one directory
//! per controller, as on this project's hybrid hosts). Every reader takes the hierarchy root as a parameter so the
//! parsers are tested on fixture trees of both layouts.
use std::path::{Path, PathBuf};

/// Memory of one sandbox, in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Memory {
    /// None: no limit (the host's memory is the limit).
    pub limit: Option<u64>,
    /// Everything charged to the cgroup (anonymous, page cache, kernel).
    pub usage: u64,
    /// Page cache, shared memory included (as `Cached` in `/proc/meminfo`).
    pub cache: u64,
    pub shmem: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub unevictable: u64,
    pub anon: u64,
    pub mapped: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
}

/// CPU of one sandbox.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// CFS quota in CPUs, rounded up; None: no quota.
    pub quota_cpus: Option<u32>,
    /// The host CPUs the sandbox may run on (its cpuset), ascending; empty: not known (all).
    pub cpuset: Vec<u32>,
    /// Time spent in user and kernel mode, nanoseconds.
    pub user_ns: u64,
    pub system_ns: u64,
}

/// Where a sandbox's cgroup lives: `root` is `/sys/fs/cgroup` (or a fixture tree), `rel` is `<parent>/<id>`.
#[derive(Debug, Clone)]
pub struct Place {
    pub root: PathBuf,
    pub rel: PathBuf,
    pub v2: bool,
}

impl Place {
    /// The directory of `controller` (v1) or the one directory (v2).
    fn dir(&self, controller: &str) -> PathBuf {
        if self.v2 { self.root.join(&self.rel) } else { self.root.join(controller).join(&self.rel) }
    }

    /// Whether the sandbox's cgroup exists (it runs, or is paused).
    pub fn exists(&self) -> bool {
        self.dir("memory").is_dir()
    }

    pub fn memory(&self) -> Memory {
        let d = self.dir("memory");
        if self.v2 {
            let stat = keyed_file(&d.join("memory.stat"));
            let get = |k: &str| stat.iter().find(|(key, _)| key == k).map_or(0, |(_, v)| *v);
            Memory {
                limit: read_limit(&d.join("memory.max")),
                usage: read_u64(&d.join("memory.current")),
                cache: get("file"),
                shmem: get("shmem"),
                active_anon: get("active_anon"),
                inactive_anon: get("inactive_anon"),
                active_file: get("active_file"),
                inactive_file: get("inactive_file"),
                unevictable: get("unevictable"),
                anon: get("anon"),
                mapped: get("file_mapped"),
                dirty: get("file_dirty"),
                writeback: get("file_writeback"),
                slab_reclaimable: get("slab_reclaimable"),
                slab_unreclaimable: get("slab_unreclaimable"),
            }
        } else {
            // `total_*`: the cgroup and its descendants (the sandbox may make none, but count them if it could).
            let stat = keyed_file(&d.join("memory.stat"));
            let get = |k: &str| stat.iter().find(|(key, _)| key == k).map_or(0, |(_, v)| *v);
            Memory {
                limit: read_limit(&d.join("memory.limit_in_bytes")),
                usage: read_u64(&d.join("memory.usage_in_bytes")),
                cache: get("total_cache"),
                shmem: get("total_shmem"),
                active_anon: get("total_active_anon"),
                inactive_anon: get("total_inactive_anon"),
                active_file: get("total_active_file"),
                inactive_file: get("total_inactive_file"),
                unevictable: get("total_unevictable"),
                anon: get("total_rss"),
                mapped: get("total_mapped_file"),
                dirty: get("total_dirty"),
                writeback: get("total_writeback"),
                // v1 does not split kernel memory by kind here.
                slab_reclaimable: 0,
                slab_unreclaimable: 0,
            }
        }
    }

    pub fn cpu(&self) -> Cpu {
        if self.v2 {
            let d = self.dir("");
            let stat = keyed_file(&d.join("cpu.stat"));
            let get = |k: &str| stat.iter().find(|(key, _)| key == k).map_or(0, |(_, v)| *v);
            let max = std::fs::read_to_string(d.join("cpu.max")).unwrap_or_default();
            let mut f = max.split_whitespace();
            let quota_cpus = match (f.next().and_then(|q| q.parse::<u64>().ok()), f.next().and_then(|p| p.parse().ok()))
            {
                (Some(q), Some(p)) => cpus_of_quota(q, p),
                _ => None,
            };
            Cpu {
                quota_cpus,
                cpuset: parse_cpu_list(&read_string(&d.join("cpuset.cpus.effective"))),
                user_ns: get("user_usec").saturating_mul(1000),
                system_ns: get("system_usec").saturating_mul(1000),
            }
        } else {
            let cpu = self.dir("cpu");
            let quota: i64 = read_string(&cpu.join("cpu.cfs_quota_us")).trim().parse().unwrap_or(-1);
            let period = read_u64(&cpu.join("cpu.cfs_period_us"));
            // cpuacct.stat counts USER_HZ ticks.
            let stat = keyed_file(&self.dir("cpuacct").join("cpuacct.stat"));
            let get = |k: &str| stat.iter().find(|(key, _)| key == k).map_or(0, |(_, v)| *v);
            let tick_ns = 1_000_000_000 / user_hz();
            Cpu {
                quota_cpus: u64::try_from(quota).ok().and_then(|q| cpus_of_quota(q, period)),
                cpuset: parse_cpu_list(&read_string(&self.dir("cpuset").join("cpuset.cpus"))),
                user_ns: get("user").saturating_mul(tick_ns),
                system_ns: get("system").saturating_mul(tick_ns),
            }
        }
    }
}

/// USER_HZ: the unit of `/proc/stat` and of v1's `cpuacct.stat`.
pub fn user_hz() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

fn cpus_of_quota(quota: u64, period: u64) -> Option<u32> {
    if period == 0 {
        return None;
    }
    u32::try_from(quota.div_ceil(period).max(1)).ok()
}

/// `0-3,8,10-11` → [0, 1, 2, 3, 8, 10, 11]; anything unreadable is left out.
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
                    && b >= a
                    && b - a < 4096
                {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.trim().parse::<u32>().ok()),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

fn read_string(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn read_u64(p: &Path) -> u64 {
    read_string(p).trim().parse().unwrap_or(0)
}

/// A limit file: `max` (v2) or a number near `i64::MAX` (v1's "unlimited", rounded down to the page size) is no
/// limit.
fn read_limit(p: &Path) -> Option<u64> {
    read_string(p).trim().parse::<u64>().ok().filter(|v| *v < (1u64 << 62))
}

/// `key value` lines.
fn keyed_file(p: &Path) -> Vec<(String, u64)> {
    read_string(p)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
#[path = "numbers_tests.rs"]
mod tests;
