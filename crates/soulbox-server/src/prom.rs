//! Prometheus pieces beyond the sandbox counters: latency histograms, `soulbox_build_info` and the process's own
//! resource use (read from `/proc/self`; a few lines, no metrics crate).
//!
//! The histograms are process-wide, like the process metrics: a create, a resume, a proxied request or a template
//! build is timed where it happens (handlers, the proxy front, the build task) without threading a handle there.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A cumulative histogram with fixed upper bounds (seconds); counts and the sum are atomics.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    /// One counter per bound (not cumulative; summed when rendered), then +Inf.
    buckets: Vec<AtomicU64>,
    /// The sum in microseconds (an integer, so one atomic add).
    sum_us: AtomicU64,
}

/// Sandbox create and resume: a warm start is tens of milliseconds, a cold image start seconds.
const LIFECYCLE_BOUNDS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Proxied requests to a sandbox (time to the response head; streams are not timed to their end).
const PROXY_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Template builds: seconds to tens of minutes.
const BUILD_BOUNDS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0];

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Histogram {
        Histogram {
            name,
            help,
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", self.help);
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// The server's latency histograms.
pub struct Latencies {
    pub create: Histogram,
    pub resume: Histogram,
    pub proxy: Histogram,
    pub build: Histogram,
}

/// The process's histograms.
pub fn latencies() -> &'static Latencies {
    static L: std::sync::OnceLock<Latencies> = std::sync::OnceLock::new();
    L.get_or_init(|| Latencies {
        create: Histogram::new(
            "soulbox_sandbox_create_duration_seconds",
            "Sandbox create requests, from the request to the answer (failures too).",
            LIFECYCLE_BOUNDS,
        ),
        resume: Histogram::new(
            "soulbox_sandbox_resume_duration_seconds",
            "Resumes of paused sandboxes (resume, and connect when it resumed).",
            LIFECYCLE_BOUNDS,
        ),
        proxy: Histogram::new(
            "soulbox_proxy_request_duration_seconds",
            "Requests proxied to sandboxes (envd and user ports), to the response head.",
            PROXY_BOUNDS,
        ),
        build: Histogram::new(
            "soulbox_template_build_duration_seconds",
            "Template builds, start to finish (failed ones too).",
            BUILD_BOUNDS,
        ),
    })
}

/// Histograms, `soulbox_build_info` and the process metrics, in text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    let l = latencies();
    for h in [&l.create, &l.resume, &l.proxy, &l.build] {
        h.render(&mut out);
    }
    let _ = writeln!(
        out,
        "# HELP soulbox_build_info The running build (always 1).\n# TYPE soulbox_build_info gauge\n\
         soulbox_build_info{{version=\"{}\"}} 1",
        soulbox_protocol::version::SOULBOX_VERSION
    );
    if let Some(p) = ProcessStats::read() {
        p.render(&mut out);
    }
    out
}

/// What `/proc/self` tells about this process.
#[derive(Debug, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mut p = parse_stat(&stat, &uptime, now)?;
        p.open_fds = open_fds;
        p.max_fds = parse_max_fds(&limits);
        p.resident_bytes = status_kb(&status, "VmRSS:").unwrap_or(0) * 1024;
        p.virtual_bytes = status_kb(&status, "VmSize:").unwrap_or(p.virtual_bytes / 1024) * 1024;
        Some(p)
    }

    fn render(&self, out: &mut String) {
        let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge("process_cpu_seconds_total", "counter", "User and system CPU time spent.", self.cpu_seconds.to_string());
        gauge("process_resident_memory_bytes", "gauge", "Resident memory.", self.resident_bytes.to_string());
        gauge("process_virtual_memory_bytes", "gauge", "Virtual memory.", self.virtual_bytes.to_string());
        gauge("process_open_fds", "gauge", "Open file descriptors.", self.open_fds.to_string());
        if let Some(max) = self.max_fds {
            gauge("process_max_fds", "gauge", "The open-file limit.", max.to_string());
        }
        gauge(
            "process_start_time_seconds",
            "gauge",
            "Start time since the Unix epoch.",
            format!("{:.2}", self.start_time_seconds),
        );
    }
}

/// Clock ticks in `/proc` times: USER_HZ, which the kernel ABI fixes at 100 on every architecture Linux runs
/// SoulBox on (what `sysconf(_SC_CLK_TCK)` answers).
const TICKS: f64 = 100.0;

/// `/proc/self/stat` after the command name (which may hold spaces and parentheses: split at the last `)`):
/// utime, stime (14, 15), starttime (22, ticks after boot), vsize (23, bytes). Resident memory comes from
/// `/proc/self/status` (in kB, no page size needed).
fn parse_stat(stat: &str, uptime: &str, now: f64) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is rest's first word.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let boot_uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let boot_time = now - boot_uptime;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / TICKS,
        start_time_seconds: boot_time + field(22)? as f64 / TICKS,
        virtual_bytes: field(23)?,
        resident_bytes: 0,
        open_fds: 0,
        max_fds: None,
    })
}

/// A `Name:   1234 kB` line of `/proc/self/status`.
fn status_kb(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
}

fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The configured `metrics_token` (handed to the `/metrics` handler as a request extension).
#[derive(Clone, Debug, Default)]
pub struct MetricsToken(pub Option<String>);

/// `Authorization: Bearer <token>` against the configured `metrics_token` (compared in constant time).
pub fn authorized(token: Option<&str>, authorization: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else { return false };
    use subtle::ConstantTimeEq;
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::new("t_seconds", "test", &[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(3));
        let mut out = String::new();
        h.render(&mut out);
        assert!(out.contains("# TYPE t_seconds histogram\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_sum 3.55\n"), "{out}");
        assert!(out.contains("t_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn proc_stat_is_parsed_past_a_command_name_with_spaces_and_parens() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
        // cstime priority nice threads itrealvalue starttime vsize rss ...
        let stat =
            "42 (my (odd) name) S 1 42 42 0 -1 0 0 0 0 0 250 150 0 0 20 0 4 0 1000 8192000 300 18446744073709551615";
        let p = parse_stat(stat, "500.00 900.00\n", 10_000.0).unwrap();
        assert_eq!(p.cpu_seconds, 4.0);
        assert_eq!(p.start_time_seconds, 10_000.0 - 500.0 + 10.0);
        assert_eq!(p.virtual_bytes, 8_192_000);
        assert_eq!(status_kb("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn this_process_reports_itself() {
        let text = render();
        for name in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "soulbox_build_info{version=\"",
            "soulbox_sandbox_create_duration_seconds_bucket{le=\"+Inf\"}",
            "soulbox_template_build_duration_seconds_count ",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        let p = ProcessStats::read().unwrap();
        assert!(p.resident_bytes > 0 && p.open_fds > 0);
    }

    #[test]
    fn the_metrics_token_is_checked_only_when_set() {
        assert!(authorized(None, None));
        assert!(!authorized(Some("s3cret"), None));
        assert!(!authorized(Some("s3cret"), Some("Bearer wrong")));
        assert!(!authorized(Some("s3cret"), Some("s3cret")));
        assert!(authorized(Some("s3cret"), Some("Bearer s3cret")));
    }
}
