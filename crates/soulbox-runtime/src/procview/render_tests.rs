use super::*;

const HOST_MEMINFO: &str = "MemTotal:       24684544 kB\nMemFree:        13529088 kB\nMemAvailable:   23868416 kB\n\
Buffers:          102400 kB\nCached:         10000000 kB\nSwapCached:            0 kB\nActive:          5000000 kB\n\
Inactive:        5000000 kB\nShmem:              9000 kB\nSReclaimable:    400000 kB\nSUnreclaim:       90000 kB\n\
SwapTotal:             0 kB\nSwapFree:              0 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";

fn machine(limit: Option<u64>, usage: u64) -> Machine {
    Machine {
        memory: Memory {
            limit,
            usage,
            cache: 8 << 20,
            active_file: 2 << 20,
            inactive_file: 4 << 20,
            ..Default::default()
        },
        cpu: Cpu { quota_cpus: Some(1), cpuset: vec![1], user_ns: 3_000_000_000, system_ns: 1_000_000_000 },
        host_cpus: 2,
        uptime_s: 10.0,
    }
}

fn kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).and_then(|r| r.split_whitespace().next()?.parse().ok()))
        .unwrap_or_else(|| panic!("{key} not in {text}"))
}

#[test]
fn meminfo_shows_the_limit_and_keeps_the_rest() {
    let host_total = mem_total(HOST_MEMINFO).unwrap();
    assert_eq!(host_total, 24684544 * 1024);
    let m = machine(Some(256 << 20), 50 << 20).memory;
    let text = meminfo(HOST_MEMINFO, host_total, &m);
    assert_eq!(kb(&text, "MemTotal"), 256 * 1024);
    assert_eq!(kb(&text, "MemFree"), 206 * 1024);
    assert_eq!(kb(&text, "MemAvailable"), 212 * 1024);
    assert_eq!(kb(&text, "Cached"), 8 * 1024);
    assert_eq!((kb(&text, "Buffers"), kb(&text, "SwapTotal"), kb(&text, "SReclaimable")), (0, 0, 0));
    assert!(text.contains("HugePages_Total:       0\n") && text.contains("Hugepagesize:       2048 kB\n"));
    assert_eq!(text.lines().count(), HOST_MEMINFO.lines().count());
    // No limit (or one above the host's memory): the host's.
    assert_eq!(kb(&meminfo(HOST_MEMINFO, host_total, &machine(None, 0).memory), "MemTotal"), 24684544);
    assert_eq!(kb(&meminfo(HOST_MEMINFO, host_total, &machine(Some(u64::MAX >> 3), 0).memory), "MemTotal"), 24684544);
    // Usage over the limit (kernel memory) never makes free negative.
    assert_eq!(kb(&meminfo(HOST_MEMINFO, host_total, &machine(Some(1 << 20), 2 << 20).memory), "MemFree"), 0);
}

const HOST_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nsiblings\t: 2\ncpu cores\t: 2\nflags\t\t: fpu\n\n\
processor\t: 1\nvendor_id\t: GenuineIntel\nsiblings\t: 2\ncpu cores\t: 2\nflags\t\t: fpu vme\n\n";

#[test]
fn cpuinfo_lists_the_sandbox_cpus_from_zero() {
    let text = cpuinfo(HOST_CPUINFO, &[1]);
    assert_eq!(text.matches("processor").count(), 1);
    assert!(text.starts_with("processor\t: 0\n"), "{text}");
    assert!(text.contains("flags\t\t: fpu vme\n"), "the block of host CPU 1: {text}");
    assert!(text.contains("siblings\t: 1\n") && text.contains("cpu cores\t: 1\n"), "{text}");
    assert_eq!(cpuinfo(HOST_CPUINFO, &[0, 1]).matches("processor").count(), 2);
    assert_eq!(cpuinfo("no blocks here", &[0]), "no blocks here");
}

#[test]
fn stat_and_uptime_count_the_sandbox() {
    let m = machine(None, 0);
    assert_eq!(m.cpus(), vec![1]);
    let text = stat("cpu  1 2 3 4\ncpu0 1\ncpu1 1\nbtime 1700000000\nprocesses 99999\n", &m, 100);
    let cpu_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("cpu")).collect();
    assert_eq!(cpu_lines, vec!["cpu  300 0 100 600 0 0 0 0 0 0", "cpu0 300 0 100 600 0 0 0 0 0 0"]);
    assert!(text.contains("btime 1700000000\n") && text.contains("processes 0\n"), "{text}");
    assert_eq!(uptime(&m), "10.00 6.00\n");
    // Without quota or cpuset every host CPU is shown.
    let mut all = machine(None, 0);
    all.cpu = Cpu::default();
    assert_eq!(all.cpus(), vec![0, 1]);
    assert_eq!(stat("", &all, 100).lines().filter(|l| l.starts_with("cpu")).count(), 3);
    assert_eq!(uptime(&all), "10.00 20.00\n");
    assert_eq!((cpu_online(1), cpu_online(3)), ("0\n".to_string(), "0-2\n".to_string()));
}
