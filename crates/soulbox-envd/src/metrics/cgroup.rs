//! The sandbox's own control group, v2 (unified) or v1, as the source of its resource usage and limits.
//!
//! Inside a container with a cgroup namespace `/sys/fs/cgroup` is the sandbox's own group. Without one, the
//! path from `/proc/self/cgroup` is tried under the mount, then the mount itself (Docker without cgroupns
//! mounts the container's group there). A host's root group has no limits and no `memory.current`, so then
//! the caller falls back to host-wide numbers.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
/// v1 reports "no limit" as a page-rounded `i64::MAX`; anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 60;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub memory_usage: Option<u64>,
    pub memory_limit: Option<u64>,
    /// Page cache charged to the group (v2 `file`, v1 `cache`).
    pub memory_cache: Option<u64>,
    /// Anonymous memory (v2 `anon`, v1 `rss`).
    pub memory_anon: Option<u64>,
    pub cpu_usage_usec: Option<u64>,
    /// CPUs' worth of time the group may use (quota / period), if limited.
    pub cpu_limit: Option<f64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Cgroup {
    V2(PathBuf),
    V1 { memory: Option<PathBuf>, cpu: Option<PathBuf>, cpuacct: Option<PathBuf>, blkio: Option<PathBuf> },
}

impl Cgroup {
    /// The group envd (and so the sandbox) lives in, if one other than the host's root can be found.
    pub fn detect() -> Option<Cgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::detect_in(Path::new(ROOT), &own)
    }

    pub fn detect_in(root: &Path, proc_self_cgroup: &str) -> Option<Cgroup> {
        if root.join("cgroup.controllers").exists() {
            // The true root group has no `memory.current`; a namespace root that has one is the sandbox's.
            if root.join("memory.current").exists() {
                return Some(Cgroup::V2(root.to_path_buf()));
            }
            let path = proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
            let dir = join_cgroup(root, path);
            return (path.trim() != "/" && dir.join("memory.current").exists()).then_some(Cgroup::V2(dir));
        }
        let find = |controller: &str| -> Option<PathBuf> {
            let mount = root.join(controller);
            let own = proc_self_cgroup.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                controllers.split(',').any(|c| c == controller).then(|| join_cgroup(&mount, path))
            });
            own.filter(|d| d.is_dir()).or_else(|| mount.is_dir().then_some(mount))
        };
        let v1 =
            Cgroup::V1 { memory: find("memory"), cpu: find("cpu"), cpuacct: find("cpuacct"), blkio: find("blkio") };
        match &v1 {
            Cgroup::V1 { memory: None, cpu: None, cpuacct: None, blkio: None } => None,
            _ => Some(v1),
        }
    }

    pub fn stats(&self) -> CgroupStats {
        match self {
            Cgroup::V2(dir) => v2_stats(dir),
            Cgroup::V1 { memory, cpu, cpuacct, blkio } => {
                v1_stats(memory.as_deref(), cpu.as_deref(), cpuacct.as_deref(), blkio.as_deref())
            }
        }
    }
}

fn join_cgroup(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim().trim_start_matches('/'))
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

/// A `key value` line from a flat-keyed file such as `memory.stat` or `cpu.stat`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn v2_stats(dir: &Path) -> CgroupStats {
    let mem_stat = read(dir, "memory.stat").unwrap_or_default();
    let (io_read_bytes, io_write_bytes) = read(dir, "io.stat").map(|t| v2_io(&t)).unwrap_or_default();
    CgroupStats {
        memory_usage: read_u64(dir, "memory.current"),
        memory_limit: read(dir, "memory.max").and_then(|m| m.trim().parse().ok()),
        memory_cache: keyed(&mem_stat, "file"),
        memory_anon: keyed(&mem_stat, "anon"),
        cpu_usage_usec: read(dir, "cpu.stat").and_then(|s| keyed(&s, "usage_usec")),
        cpu_limit: read(dir, "cpu.max").and_then(|m| v2_cpu_limit(&m)),
        io_read_bytes,
        io_write_bytes,
    }
}

/// `cpu.max` is `"<quota|max> <period>"`.
pub fn v2_cpu_limit(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// Sums `rbytes=`/`wbytes=` over the devices of `io.stat`.
pub fn v2_io(text: &str) -> (Option<u64>, Option<u64>) {
    let (mut read, mut write) = (None::<u64>, None::<u64>);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=").and_then(|v| v.parse::<u64>().ok()) {
            read = Some(read.unwrap_or(0) + v);
        } else if let Some(v) = field.strip_prefix("wbytes=").and_then(|v| v.parse::<u64>().ok()) {
            write = Some(write.unwrap_or(0) + v);
        }
    }
    (read.or(Some(0)), write.or(Some(0)))
}

fn v1_stats(memory: Option<&Path>, cpu: Option<&Path>, cpuacct: Option<&Path>, blkio: Option<&Path>) -> CgroupStats {
    let mem_stat = memory.and_then(|d| read(d, "memory.stat")).unwrap_or_default();
    let cpu_limit = cpu.and_then(|d| {
        let quota: i64 = read(d, "cpu.cfs_quota_us")?.trim().parse().ok()?;
        let period: i64 = read(d, "cpu.cfs_period_us")?.trim().parse().ok()?;
        (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
    });
    let io = blkio.and_then(|d| {
        // The throttle file counts every I/O; the CFQ one only on CFQ-scheduled devices. Take whichever has data.
        ["blkio.throttle.io_service_bytes", "blkio.io_service_bytes"]
            .iter()
            .filter_map(|f| read(d, f).map(|t| v1_io(&t)))
            .find(|(r, w)| r + w > 0)
            .or(Some((0, 0)))
    });
    CgroupStats {
        memory_usage: memory.and_then(|d| read_u64(d, "memory.usage_in_bytes")),
        memory_limit: memory.and_then(|d| read_u64(d, "memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED),
        memory_cache: keyed(&mem_stat, "total_cache").or_else(|| keyed(&mem_stat, "cache")),
        memory_anon: keyed(&mem_stat, "total_rss").or_else(|| keyed(&mem_stat, "rss")),
        cpu_usage_usec: cpuacct.and_then(|d| read_u64(d, "cpuacct.usage")).map(|ns| ns / 1000),
        cpu_limit,
        io_read_bytes: io.map(|(r, _)| r),
        io_write_bytes: io.map(|(_, w)| w),
    }
}

/// Sums the `<dev> Read <n>` / `<dev> Write <n>` lines (the `Total` summary line has no device).
pub fn v1_io(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, op, value] = fields.as_slice() {
            let value: u64 = value.parse().unwrap_or(0);
            match *op {
                "Read" => read += value,
                "Write" => write += value,
                _ => {}
            }
        }
    }
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v2_files() {
        assert_eq!(v2_cpu_limit("max 100000"), None);
        assert_eq!(v2_cpu_limit("150000 100000"), Some(1.5));
        let io = "8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n253:0 rbytes=5 wbytes=1 rios=1 wios=1";
        assert_eq!(v2_io(io), (Some(105), Some(21)));
        assert_eq!(keyed("anon 10\nfile 20\nfile_mapped 3\n", "file"), Some(20));
    }

    #[test]
    fn parses_v1_files() {
        let io = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\n8:16 Read 4\nTotal 4612\n";
        assert_eq!(v1_io(io), (4100, 512));
    }

    #[test]
    fn detects_v2_namespace_root_and_v1_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory io pids").unwrap();
        std::fs::write(dir.path().join("memory.current"), "1234\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.stat"), "anon 1000\nfile 200\n").unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 5000\nuser_usec 1\n").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "200000 100000\n").unwrap();
        let cg = Cgroup::detect_in(dir.path(), "0::/\n").unwrap();
        let s = cg.stats();
        assert_eq!(
            (s.memory_usage, s.memory_limit, s.memory_cache, s.memory_anon),
            (Some(1234), None, Some(200), Some(1000))
        );
        assert_eq!((s.cpu_usage_usec, s.cpu_limit), (Some(5000), Some(2.0)));

        let v1 = tempfile::tempdir().unwrap();
        let mem = v1.path().join("memory/sandbox");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "300\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(mem.join("memory.stat"), "cache 100\nrss 150\ntotal_cache 120\n").unwrap();
        let cg = Cgroup::detect_in(v1.path(), "4:memory:/sandbox\n").unwrap();
        let s = cg.stats();
        assert_eq!((s.memory_usage, s.memory_limit, s.memory_cache), (Some(300), None, Some(120)));
    }
}
