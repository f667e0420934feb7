//! The text of each file a sandbox sees instead of the host's: pure functions of the sandbox's numbers and the
//! host's own file (its layout and the lines that need no change), so they are tested on fixtures.
use super::numbers::{Cpu, Memory};
use std::fmt::Write;

/// What the sandbox is, at the time of a read.
#[derive(Debug, Clone)]
pub struct Machine {
    pub memory: Memory,
    pub cpu: Cpu,
    /// The host's CPUs (online), for a sandbox without a quota or cpuset.
    pub host_cpus: u32,
    /// Seconds since the sandbox's cold boot.
    pub uptime_s: f64,
}

impl Machine {
    /// The host CPUs the sandbox is shown: its cpuset (all host CPUs when none), at most its quota's count.
    pub fn cpus(&self) -> Vec<u32> {
        let mut cpus = if self.cpu.cpuset.is_empty() { (0..self.host_cpus).collect() } else { self.cpu.cpuset.clone() };
        if let Some(q) = self.cpu.quota_cpus {
            cpus.truncate(q.max(1) as usize);
        }
        if cpus.is_empty() {
            cpus.push(0);
        }
        cpus
    }
}

const KIB: u64 = 1024;

/// `/proc/meminfo`: the host's lines in the host's order, the memory ones replaced by the sandbox's (its limit as
/// `MemTotal`, no swap).
pub fn meminfo(host: &str, host_total: u64, m: &Memory) -> String {
    let total = m.limit.map_or(host_total, |l| l.min(host_total));
    let free = total.saturating_sub(m.usage);
    let available = (free + m.active_file + m.inactive_file + m.slab_reclaimable).min(total);
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let key = line.split(':').next().unwrap_or("");
        let value = match key {
            "MemTotal" => Some(total),
            "MemFree" => Some(free),
            "MemAvailable" => Some(available),
            "Buffers" | "SwapCached" | "SwapTotal" | "SwapFree" | "Zswap" | "Zswapped" => Some(0),
            "Cached" => Some(m.cache.min(total)),
            "Active" => Some(m.active_anon + m.active_file),
            "Inactive" => Some(m.inactive_anon + m.inactive_file),
            "Active(anon)" => Some(m.active_anon),
            "Inactive(anon)" => Some(m.inactive_anon),
            "Active(file)" => Some(m.active_file),
            "Inactive(file)" => Some(m.inactive_file),
            "Unevictable" => Some(m.unevictable),
            "Dirty" => Some(m.dirty),
            "Writeback" => Some(m.writeback),
            "AnonPages" => Some(m.anon),
            "Mapped" => Some(m.mapped),
            "Shmem" => Some(m.shmem),
            "Slab" => Some(m.slab_reclaimable + m.slab_unreclaimable),
            "SReclaimable" => Some(m.slab_reclaimable),
            "SUnreclaim" => Some(m.slab_unreclaimable),
            // Commit accounting follows the sandbox's limit: there is no swap.
            "CommitLimit" => Some(total),
            _ => None,
        };
        match value {
            Some(v) => {
                let _ = writeln!(out, "{:<16}{:>8} kB", format!("{key}:"), v / KIB);
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `MemTotal` of a meminfo text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb * KIB)
    })
}

/// `/proc/cpuinfo`: the host's blocks of the CPUs the sandbox is shown, numbered from 0, with `siblings` and
/// `cpu cores` saying how many there are. A host whose text has no `processor` blocks is returned as it is.
pub fn cpuinfo(host: &str, cpus: &[u32]) -> String {
    let blocks: Vec<&str> = host.split("\n\n").filter(|b| !b.trim().is_empty()).collect();
    let number = |b: &str| {
        b.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if k.trim() == "processor" { v.trim().parse::<u32>().ok() } else { None }
        })
    };
    let shown: Vec<&str> = blocks.iter().copied().filter(|b| number(b).is_some_and(|n| cpus.contains(&n))).collect();
    if shown.is_empty() {
        return host.to_string();
    }
    let mut out = String::with_capacity(host.len());
    for (i, block) in shown.iter().enumerate() {
        for line in block.lines() {
            let key = line.split(':').next().unwrap_or("").trim();
            match key {
                "processor" => {
                    let _ = writeln!(out, "processor\t: {i}");
                }
                "siblings" | "cpu cores" => {
                    let tabs = line.split(':').next().unwrap_or(key);
                    let _ = writeln!(out, "{tabs}: {}", shown.len());
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
    }
    out
}

/// `/proc/stat`: one aggregate `cpu` line and one per CPU shown (the sandbox's CPU time split evenly over them,
/// idle being what is left of its uptime), the host's `btime` (process start times in `/proc/<pid>/stat` count
/// from the host's boot, so `ps` needs it), and counters the sandbox cannot see as zero.
pub fn stat(host: &str, machine: &Machine, hz: u64) -> String {
    let cpus = machine.cpus().len() as u64;
    let ticks = |ns: u64| ns / (1_000_000_000 / hz.max(1));
    let user = ticks(machine.cpu.user_ns);
    let system = ticks(machine.cpu.system_ns);
    let available = (machine.uptime_s.max(0.0) * hz as f64) as u64 * cpus;
    let idle = available.saturating_sub(user + system);
    let line = |name: &str, u: u64, s: u64, i: u64| format!("{name} {u} 0 {s} {i} 0 0 0 0 0 0\n");
    let mut out = line("cpu ", user, system, idle);
    for n in 0..cpus {
        out.push_str(&line(&format!("cpu{n}"), user / cpus, system / cpus, idle / cpus));
    }
    let btime = host.lines().find(|l| l.starts_with("btime ")).unwrap_or("btime 0");
    let _ = write!(
        out,
        "intr 0\nctxt 0\n{btime}\nprocesses 0\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n"
    );
    out
}

/// `/proc/uptime`: seconds since the sandbox's cold boot, and the idle seconds of the CPUs it is shown.
pub fn uptime(machine: &Machine) -> String {
    let up = machine.uptime_s.max(0.0);
    let busy = (machine.cpu.user_ns + machine.cpu.system_ns) as f64 / 1e9;
    let idle = (up * machine.cpus().len() as f64 - busy).max(0.0);
    format!("{up:.2} {idle:.2}\n")
}

/// `/sys/devices/system/cpu/online`: the CPUs shown, numbered from 0 as in [`cpuinfo`].
pub fn cpu_online(cpus: usize) -> String {
    if cpus <= 1 { "0\n".to_string() } else { format!("0-{}\n", cpus - 1) }
}

/// `/proc/swaps`: a sandbox has no swap.
pub fn swaps() -> String {
    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".to_string()
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
