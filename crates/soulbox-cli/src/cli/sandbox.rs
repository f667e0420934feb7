//! `soulbox sandbox create|list|info|…`: create, list, inspect and control sandboxes.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use soulbox::{Error, ListQuery, Sandbox, SandboxState, TimeoutBehavior};

use super::output::{print_json, table};
use super::{Conn, parse_kv};

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Create a sandbox and print its id.
    #[command(
        after_help = "Examples:\n  soulbox sandbox create\n  soulbox sandbox create base --timeout 600 -m owner=me -e DEBUG=1 --auto-pause --grace 30\n  ID=$(soulbox sandbox create --json | jq -r .sandboxID)"
    )]
    Create {
        /// Template id or alias.
        #[arg(default_value = "base")]
        template: String,
        /// Lifetime in seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Metadata `key=value` (repeatable).
        #[arg(short, long = "metadata", value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
        /// Environment variable `KEY=value` for every command (repeatable).
        #[arg(short, long = "env", value_parser = parse_kv)]
        env: Vec<(String, String)>,
        /// Pause instead of kill when the timeout passes.
        #[arg(long)]
        auto_pause: bool,
        /// With --auto-pause: seconds to wait past the timeout before pausing.
        #[arg(long, requires = "auto_pause")]
        grace: Option<u64>,
        /// Resume automatically when traffic arrives for a paused sandbox.
        #[arg(long)]
        auto_resume: bool,
        /// Cut the sandbox off the internet.
        #[arg(long)]
        no_internet: bool,
        /// Egress allow-list entry (CIDR or IP; repeatable).
        #[arg(long)]
        allow_out: Vec<String>,
        /// Egress deny-list entry (repeatable).
        #[arg(long)]
        deny_out: Vec<String>,
        /// Require the access token on every agent request.
        #[arg(long)]
        secure: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List sandboxes.
    #[command(
        after_help = "Examples:\n  soulbox sandbox list\n  soulbox sandbox list --state paused -m owner=me --json"
    )]
    List {
        /// running | paused (repeatable; default both).
        #[arg(long)]
        state: Vec<String>,
        /// Metadata filter `key=value` (repeatable).
        #[arg(short, long = "metadata", value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
        /// At most this many sandboxes.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one sandbox.
    Info {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Kill sandboxes.
    Kill {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pause a sandbox (keeping its memory).
    Pause {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused sandbox.
    Resume {
        id: String,
        /// New lifetime in seconds.
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set the sandbox to end SECONDS from now.
    Timeout {
        id: String,
        seconds: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Keep the sandbox alive at least SECONDS from now, within the server's maximum lifetime.
    Refresh {
        id: String,
        seconds: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// CPU, memory, disk and network samples.
    #[command(after_help = "Example:\n  soulbox sandbox metrics i1a2b3 --since 300")]
    Metrics {
        id: String,
        /// Samples of the last SECONDS (default: all retained).
        #[arg(long)]
        since: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The sandbox's log (agent output).
    Logs {
        id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: SandboxCommand) -> soulbox::Result<i32> {
    match cmd {
        SandboxCommand::Create {
            template,
            timeout,
            metadata,
            env,
            auto_pause,
            grace,
            auto_resume,
            no_internet,
            allow_out,
            deny_out,
            secure,
            conn,
        } => {
            let mut b = Sandbox::builder(template).client(conn.client()?);
            if let Some(t) = timeout {
                b = b.timeout(Duration::from_secs(t));
            }
            for (k, v) in metadata {
                b = b.metadata(k, v);
            }
            for (k, v) in env {
                b = b.env(k, v);
            }
            if auto_pause {
                b = b.set_timeout_behavior(TimeoutBehavior::Pause { grace: Duration::from_secs(grace.unwrap_or(0)) });
            }
            if auto_resume {
                b = b.auto_resume(true);
            }
            if no_internet {
                b = b.allow_internet_access(false);
            }
            if !allow_out.is_empty() {
                b = b.allow_out(allow_out);
            }
            if !deny_out.is_empty() {
                b = b.deny_out(deny_out);
            }
            if secure {
                b = b.secure(true);
            }
            let s = b.create().await?;
            if conn.json {
                print_json(&serde_json::json!({
                    "sandboxID": s.id(), "templateID": s.template_id(), "envdVersion": s.envd_version().to_string(),
                    "envdAccessToken": s.access_token(), "domain": s.domain(),
                }));
            } else {
                println!("{}", s.id());
            }
        }
        SandboxCommand::List { state, metadata, limit, conn } => {
            let client = conn.client()?;
            let mut q = ListQuery::default();
            for s in state {
                q = q.state(match s.as_str() {
                    "running" => SandboxState::Running,
                    "paused" => SandboxState::Paused,
                    other => return Err(Error::Invalid(format!("unknown state {other:?}: use running or paused"))),
                });
            }
            for (k, v) in metadata {
                q = q.metadata(k, v);
            }
            let mut stream = std::pin::pin!(client.list(q));
            let mut items = Vec::new();
            while let Some(item) = futures::StreamExt::next(&mut stream).await {
                items.push(item?);
                if limit.is_some_and(|l| items.len() >= l) {
                    break;
                }
            }
            if conn.json {
                print_json(&items);
            } else {
                let rows = items
                    .iter()
                    .map(|s| {
                        vec![
                            s.sandbox_id.clone(),
                            s.alias.clone().unwrap_or_else(|| s.template_id.clone()),
                            state_str(s.state).into(),
                            s.started_at.clone(),
                            s.end_at.clone(),
                            fmt_metadata(s.metadata.as_ref()),
                        ]
                    })
                    .collect();
                table(&["SANDBOX ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "METADATA"], rows);
            }
        }
        SandboxCommand::Info { id, conn } => {
            let info = conn.client()?.get_info(&id).await?;
            if conn.json {
                print_json(&info);
            } else {
                let lifecycle = info
                    .lifecycle
                    .as_ref()
                    .map(|l| format!("{:?} on timeout, auto-resume {}", l.on_timeout, l.auto_resume));
                let rows = vec![
                    vec!["sandbox".into(), info.sandbox_id.clone()],
                    vec!["template".into(), info.alias.clone().unwrap_or_else(|| info.template_id.clone())],
                    vec!["state".into(), state_str(info.state).into()],
                    vec!["started".into(), info.started_at.clone()],
                    vec!["ends".into(), info.end_at.clone()],
                    vec!["agent".into(), info.envd_version.clone()],
                    vec!["cpus / memory".into(), format!("{} / {} MiB", info.cpu_count, info.memory_mb)],
                    vec!["lifecycle".into(), lifecycle.unwrap_or_else(|| "-".into())],
                    vec!["metadata".into(), fmt_metadata(info.metadata.as_ref())],
                ];
                table(&["FIELD", "VALUE"], rows);
            }
        }
        SandboxCommand::Kill { ids, conn } => {
            let client = conn.client()?;
            let mut missing = 0;
            let mut results = Vec::new();
            for id in &ids {
                let killed = client.kill(id).await?;
                if !killed {
                    missing += 1;
                }
                results.push(serde_json::json!({ "sandboxID": id, "killed": killed }));
                if !conn.json {
                    println!("{id}: {}", if killed { "killed" } else { "not found" });
                }
            }
            if conn.json {
                print_json(&results);
            }
            return Ok(if missing > 0 { 3 } else { 0 });
        }
        SandboxCommand::Pause { id, conn } => {
            let paused = conn.client()?.pause(&id).await?;
            report(&conn, &id, if paused { "paused" } else { "already paused" });
        }
        SandboxCommand::Resume { id, timeout, conn } => {
            let s = Sandbox::connect(&conn.client()?, &id, timeout.map(Duration::from_secs)).await?;
            report(&conn, s.id(), "running");
        }
        SandboxCommand::Timeout { id, seconds, conn } => {
            let c = conn.client()?;
            c.set_timeout(&id, Duration::from_secs(seconds)).await?;
            let info = c.get_info(&id).await?;
            report(&conn, &id, &format!("ends at {}", info.end_at));
        }
        SandboxCommand::Refresh { id, seconds, conn } => {
            let c = conn.client()?;
            c.refresh(&id, Duration::from_secs(seconds)).await?;
            let info = c.get_info(&id).await?;
            report(&conn, &id, &format!("ends at {}", info.end_at));
        }
        SandboxCommand::Metrics { id, since, conn } => {
            let now = chrono::Utc::now().timestamp();
            let samples = conn.client()?.get_metrics(&id, since.map(|s| now - s), None).await?;
            if conn.json {
                print_json(&samples);
            } else {
                let rows = samples
                    .iter()
                    .map(|m| {
                        vec![
                            m.timestamp.clone(),
                            format!("{:.1}", m.cpu_used_pct),
                            format!("{}/{}", mib(m.mem_used), mib(m.mem_total)),
                            format!("{}/{}", mib(m.disk_used), mib(m.disk_total)),
                            format!("{}/{}", opt(m.disk_read_bytes), opt(m.disk_write_bytes)),
                            format!("{}/{}", opt(m.net_rx_bytes), opt(m.net_tx_bytes)),
                            opt(m.process_count),
                        ]
                    })
                    .collect();
                table(&["TIME", "CPU %", "MEM MiB", "DISK MiB", "DISK R/W B", "NET RX/TX B", "PROCS"], rows);
            }
        }
        SandboxCommand::Logs { id, limit, conn } => {
            let lines = conn.client()?.logs(&id, None, limit).await?;
            if conn.json {
                print_json(&lines);
            } else {
                for l in lines {
                    println!("{} {}", l.timestamp, readable_log_line(&l.line));
                }
            }
        }
    }
    Ok(0)
}

/// A log line as E2B shapes it (a JSON object with `level` and `message`) as `LEVEL message`; other text as is.
fn readable_log_line(line: &str) -> String {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(line).ok();
    match parsed {
        Some(o) => {
            let field = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            format!("{:<5} {}", field("level").to_uppercase(), field("message"))
        }
        None => line.to_owned(),
    }
}

fn report(conn: &Conn, id: &str, status: &str) {
    if conn.json {
        print_json(&serde_json::json!({ "sandboxID": id, "status": status }));
    } else {
        println!("{id}: {status}");
    }
}

fn state_str(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Running => "running",
        SandboxState::Paused => "paused",
    }
}

fn fmt_metadata(m: Option<&BTreeMap<String, String>>) -> String {
    match m {
        Some(m) if !m.is_empty() => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

fn mib(b: i64) -> String {
    (b / (1024 * 1024)).to_string()
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::readable_log_line;

    #[test]
    fn e2b_shaped_log_lines_read_as_level_and_message() {
        let line = r#"{"level":"warn","logger":"soulbox_envd","message":"disk almost full"}"#;
        assert_eq!(readable_log_line(line), "WARN  disk almost full");
        assert_eq!(readable_log_line("plain text"), "plain text");
    }
}
