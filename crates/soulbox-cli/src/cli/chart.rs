//! `soulbox sandbox metrics -f`: follows a sandbox's metrics. On a terminal a live chart (CPU and memory as
//! sparklines over the last samples, redrawn in place); piped, one line per new sample (NDJSON with --json).
//! Ends when the sandbox is gone.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use soulbox::{Client, Error, SandboxMetric};

/// The server samples every few seconds (`metrics_interval_s`, 5 by default); polling faster shows nothing new.
const POLL: Duration = Duration::from_secs(2);
/// Samples kept on screen.
const WIDTH: usize = 60;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One sparkline of `values` (each 0..=max).
fn sparkline(values: &[f64], max: f64) -> String {
    values
        .iter()
        .map(|v| {
            let f = if max > 0.0 { (v / max).clamp(0.0, 1.0) } else { 0.0 };
            BARS[((f * (BARS.len() - 1) as f64).round() as usize).min(BARS.len() - 1)]
        })
        .collect()
}

fn mib(b: i64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn draw(id: &str, samples: &[SandboxMetric]) -> String {
    let Some(last) = samples.last() else { return format!("{id}: waiting for the first sample…\n") };
    let cpu: Vec<f64> = samples.iter().map(|m| m.cpu_used_pct).collect();
    let mem: Vec<f64> = samples.iter().map(|m| mib(m.mem_used)).collect();
    format!(
        "sandbox {id}   {}   (Ctrl-C to stop)\n\nCPU {:>5.1}% of {} vCPU\n{}\n\nMEM {:>7.1} / {:.0} MiB\n{}\n\nDISK {:.0} / {:.0} MiB   procs {}\n",
        last.timestamp,
        last.cpu_used_pct,
        last.cpu_count,
        sparkline(&cpu, 100.0),
        mib(last.mem_used),
        mib(last.mem_total),
        sparkline(&mem, mib(last.mem_total)),
        mib(last.disk_used),
        mib(last.disk_total),
        last.process_count.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
    )
}

pub async fn metrics(client: &Client, id: &str, json: bool) -> soulbox::Result<i32> {
    let live = !json && std::io::stdout().is_terminal();
    let mut samples: Vec<SandboxMetric> = Vec::new();
    loop {
        let since = samples.last().map(|m| m.timestamp_unix + 1);
        let fresh = match client.get_metrics(id, since, None).await {
            Ok(f) => f,
            Err(Error::NotFound(_)) => {
                eprintln!("sandbox {id} is gone");
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let last_seen = samples.last().map_or(i64::MIN, |m| m.timestamp_unix);
        let fresh: Vec<_> = fresh.into_iter().filter(|m| m.timestamp_unix > last_seen).collect();
        let mut out = std::io::stdout().lock();
        if live {
            samples.extend(fresh);
            let drop = samples.len().saturating_sub(WIDTH);
            samples.drain(..drop);
            // Home and clear, then the frame: the chart stays in place.
            let _ = write!(out, "\x1b[H\x1b[2J{}", draw(id, &samples));
        } else {
            for m in &fresh {
                let line = if json {
                    serde_json::to_string(m).unwrap_or_default()
                } else {
                    format!(
                        "{} cpu {:.1}% mem {:.0}/{:.0} MiB disk {:.0}/{:.0} MiB",
                        m.timestamp,
                        m.cpu_used_pct,
                        mib(m.mem_used),
                        mib(m.mem_total),
                        mib(m.disk_used),
                        mib(m.disk_total)
                    )
                };
                let _ = writeln!(out, "{line}");
            }
            samples.extend(fresh);
            let drop = samples.len().saturating_sub(1);
            samples.drain(..drop);
        }
        let _ = out.flush();
        drop(out);
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::sparkline;

    #[test]
    fn sparklines_scale_to_the_maximum() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0, 150.0], 100.0), "▁▅██");
        assert_eq!(sparkline(&[1.0], 0.0), "▁");
    }
}
