//! Machine-wide numbers from `/proc` and `statvfs`, used where the cgroup has none (or for what cgroups do
//! not account: network, disk space, processes). In a sandbox VM or a container with its own network and PID
//! namespaces these are the sandbox's own.

use std::path::Path;

/// `/proc/stat` counts in USER_HZ, which Linux fixes at 100 for user space.
const USER_HZ: u64 = 100;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Meminfo {
    pub total: u64,
    pub available: u64,
    pub cache: u64,
}

pub fn meminfo() -> Meminfo {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
}

pub fn parse_meminfo(text: &str) -> Meminfo {
    let kb = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Meminfo { total: kb("MemTotal"), available: kb("MemAvailable"), cache: kb("Cached") + kb("Buffers") }
}

/// CPU time spent busy by all CPUs (not idle, not waiting for I/O), in microseconds.
pub fn cpu_busy_usec() -> Option<u64> {
    parse_cpu_busy_usec(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_cpu_busy_usec(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice — already included in user/nice]
    let busy: u64 = values.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Some(busy * (1_000_000 / USER_HZ))
}

/// Received and sent bytes over all interfaces but loopback.
pub fn network_bytes() -> (u64, u64) {
    parse_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default())
}

pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let values: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if values.len() >= 9 {
            rx += values[0];
            tx += values[8];
        }
    }
    (rx, tx)
}

/// Bytes read and written by whole block devices (partitions would count twice; loop and RAM disks are not
/// storage).
pub fn disk_io_bytes() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    parse_diskstats(&text, |name| Path::new("/sys/block").join(name).exists())
}

pub fn parse_diskstats(text: &str, is_whole_disk: impl Fn(&str) -> bool) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") || !is_whole_disk(name) {
            continue;
        }
        read += f[5].parse::<u64>().unwrap_or(0) * 512;
        write += f[9].parse::<u64>().unwrap_or(0) * 512;
    }
    (read, write)
}

/// Processes visible in `/proc` (the sandbox's own in its PID namespace).
pub fn process_count() -> u64 {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name().to_str().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count() as u64
        })
        .unwrap_or(0)
}

/// Used and total bytes of the root filesystem (used counts blocks reserved for root as used, like `df`).
pub fn disk_space() -> (u64, u64) {
    match rustix::fs::statvfs("/") {
        Ok(st) => {
            let total = st.f_blocks * st.f_frsize;
            (total.saturating_sub(st.f_bfree * st.f_frsize), total)
        }
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let m = parse_meminfo(
            "MemTotal:       2048 kB\nMemFree: 1 kB\nMemAvailable:   1024 kB\nBuffers: 1 kB\nCached: 3 kB\nSwapCached: 100 kB\n",
        );
        assert_eq!(m, Meminfo { total: 2048 * 1024, available: 1024 * 1024, cache: 4 * 1024 });
        assert_eq!(parse_cpu_busy_usec("cpu  10 0 5 100 50 1 1 0 0 0\ncpu0 1 1 1 1\n"), Some(17 * 10_000));
        let net = "Inter-|\n face |\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 200 2 0 0 0 0 0 0 300 3 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(net), (200, 300));
        let disks = "   8       0 sda 10 0 8 0 5 0 4 0 0 0 0\n   8       1 sda1 10 0 8 0 5 0 4 0 0 0 0\n   7 0 loop0 1 0 8 0 1 0 8 0 0 0 0\n";
        assert_eq!(parse_diskstats(disks, |n| n == "sda" || n == "loop0"), (8 * 512, 4 * 512));
    }
}
