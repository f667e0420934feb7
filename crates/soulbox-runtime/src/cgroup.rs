//! cgroup counters and leftover cleanup, for cgroup v1 (incl. hybrid) and v2.
//! Limits themselves are set by the OCI runtime from `config.json`; this module only reads and GCs.
use crate::spec::Stats;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Every directory that may hold this sandbox's cgroup (one per v1 hierarchy, or the v2 one).
pub fn dirs(parent: &str, id: &str) -> Vec<PathBuf> {
    hierarchies().into_iter().map(|h| h.join(parent).join(id)).collect()
}

fn hierarchies() -> Vec<PathBuf> {
    if is_v2() {
        return vec![PathBuf::from(ROOT)];
    }
    std::fs::read_dir(ROOT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                // Skip symlinked co-mounts (cpu,cpuacct → cpu). Keep hybrid's v2 mount (`unified`): it has no
                // controllers, but runc creates the sandbox's cgroup there too, and it must be removed with the rest.
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// Child cgroup names under `parent` in any hierarchy.
pub fn children(parent: &str) -> Vec<String> {
    let mut v: Vec<String> = hierarchies()
        .into_iter()
        .flat_map(|h| std::fs::read_dir(h.join(parent)).map(|rd| rd.flatten().collect::<Vec<_>>()).unwrap_or_default())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Kill what is left in the sandbox's cgroups and remove them (idempotent).
pub fn remove(parent: &str, id: &str) {
    for d in dirs(parent, id) {
        if !d.exists() {
            continue;
        }
        for round in 0..50 {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() {
                break;
            }
            if round == 49 {
                // What follows (unmounting the rootfs) then finds it busy and detaches it lazily.
                tracing::warn!(dir = %d.display(), ?pids, "sandbox processes still alive after SIGKILL for 0.5 s");
            }
            // A frozen v1 cgroup must be thawed for SIGKILL to be delivered.
            let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
            for p in pids {
                // SAFETY: plain kill(2) on pids read from the sandbox's own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if let Err(e) = std::fs::remove_dir(&d)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %d.display(), error = %e, "could not remove cgroup");
        }
    }
}

/// Remove the (empty) parent cgroup dirs of this instance.
pub fn remove_parent(parent: &str) {
    for h in hierarchies() {
        let _ = std::fs::remove_dir(h.join(parent));
    }
}

fn read_u64(p: PathBuf) -> u64 {
    std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn keyed(p: PathBuf, key: &str) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0)
}

/// cgroup counters of one sandbox (network counters are added by the caller).
pub fn stats(parent: &str, id: &str) -> Stats {
    let mut s = Stats::default();
    if is_v2() {
        let d = Path::new(ROOT).join(parent).join(id);
        s.cpu_usage_ns = keyed(d.join("cpu.stat"), "usage_usec ") * 1000;
        s.memory_bytes = read_u64(d.join("memory.current"));
        s.memory_limit_bytes = read_u64(d.join("memory.max"));
        s.oom_kills = keyed(d.join("memory.events"), "oom_kill ");
        s.pids = read_u64(d.join("pids.current"));
        for l in std::fs::read_to_string(d.join("io.stat")).unwrap_or_default().lines() {
            for kv in l.split_whitespace() {
                if let Some(v) = kv.strip_prefix("rbytes=") {
                    s.io_read_bytes += v.parse::<u64>().unwrap_or(0);
                } else if let Some(v) = kv.strip_prefix("wbytes=") {
                    s.io_write_bytes += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    } else {
        let d = |c: &str| Path::new(ROOT).join(c).join(parent).join(id);
        s.cpu_usage_ns = read_u64(d("cpuacct").join("cpuacct.usage"));
        s.memory_bytes = read_u64(d("memory").join("memory.usage_in_bytes"));
        s.memory_limit_bytes = read_u64(d("memory").join("memory.limit_in_bytes"));
        s.oom_kills = keyed(d("memory").join("memory.oom_control"), "oom_kill ");
        s.pids = read_u64(d("pids").join("pids.current"));
        for l in std::fs::read_to_string(d("blkio").join("blkio.throttle.io_service_bytes")).unwrap_or_default().lines()
        {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 3 {
                match f[1] {
                    "Read" => s.io_read_bytes += f[2].parse::<u64>().unwrap_or(0),
                    "Write" => s.io_write_bytes += f[2].parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    s
}

/// Freeze (`true`) or thaw the sandbox's cgroup and wait until the kernel reports the new state.
/// v2: `cgroup.freeze` + `cgroup.events`; v1: `freezer.state` (FREEZING → FROZEN).
pub async fn set_frozen(parent: &str, id: &str, frozen: bool) -> std::io::Result<()> {
    let (ctl, val, events, want): (PathBuf, &str, PathBuf, &str) = if is_v2() {
        let d = Path::new(ROOT).join(parent).join(id);
        (
            d.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
            d.join("cgroup.events"),
            if frozen { "frozen 1" } else { "frozen 0" },
        )
    } else {
        let d = Path::new(ROOT).join("freezer").join(parent).join(id);
        let f = d.join("freezer.state");
        (f.clone(), if frozen { "FROZEN" } else { "THAWED" }, f, if frozen { "FROZEN" } else { "THAWED" })
    };
    std::fs::write(&ctl, val)?;
    // The kernel offers no wakeup for the v1 freezer; the transition takes microseconds, so
    // yield first and back off to 1 ms sleeps only if it drags (bounded at ~2 s).
    for i in 0..3000u32 {
        let s = std::fs::read_to_string(&events)?;
        if s.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if !is_v2() && frozen && i % 50 == 49 {
            // re-kick a v1 freeze that raced with a fork
            std::fs::write(&ctl, val)?;
        }
        if i < 1000 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("cgroup did not reach {want}")))
}
