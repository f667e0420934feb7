//! `soulbox sandbox create|list|info|…`: create, list, inspect and control sandboxes.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use soulbox::{Error, ListQuery, Sandbox, SandboxState, TimeoutBehavior};

use super::output::{print_json, readable_log_line, table};
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
        /// Print only the ids, one per line (for scripts: `xargs soulbox sandbox kill`).
        #[arg(short, long)]
        quiet: bool,
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
    /// CPU, memory, disk and network samples; -f follows them (a live chart on a terminal).
    #[command(
        after_help = "Examples:\n  soulbox sandbox metrics i1a2b3 --since 300\n  soulbox sandbox metrics -f i1a2b3"
    )]
    Metrics {
        id: String,
        /// Samples of the last SECONDS (default: all retained).
        #[arg(long, conflicts_with = "follow")]
        since: Option<i64>,
        /// Keep showing new samples until the sandbox ends: a live CPU/memory chart on a terminal, one line per
        /// sample when piped (NDJSON with --json).
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The sandbox's log (agent output); -f follows it until the sandbox ends.
    #[command(
        after_help = "Examples:\n  soulbox sandbox logs i1a2b3\n  soulbox sandbox logs -f i1a2b3 --json | jq -r .line"
    )]
    Logs {
        id: String,
        #[arg(long, conflicts_with = "follow")]
        limit: Option<u32>,
        /// Keep printing new lines (polls once a second; with --json one object per line).
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the URL of a port of the sandbox, as the SDK's `get_host` would build it.
    #[command(
        after_help = "With a server domain: https://<port>-<id>.<domain> (http with the API URL's port when the API \
URL is plain http). A local server without a domain: http://<port>-<id>.localhost:<api port>, which browsers \
and curl resolve to the loopback address.\n\nExample:\n  curl \"$(soulbox sandbox url i1a2b3 8080)/\""
    )]
    Url {
        id: String,
        port: u16,
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
        SandboxCommand::List { state, metadata, limit, quiet, conn } => {
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
            if quiet {
                items.iter().for_each(|s| println!("{}", s.sandbox_id));
            } else if conn.json {
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
        SandboxCommand::Metrics { id, follow: true, conn, .. } => {
            return super::chart::metrics(&conn.client()?, &id, conn.json).await;
        }
        SandboxCommand::Metrics { id, since, conn, .. } => {
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
        SandboxCommand::Logs { id, follow: true, conn, .. } => {
            return super::follow::logs(&conn.client()?, &id, conn.json).await;
        }
        SandboxCommand::Url { id, port, conn } => {
            let client = conn.client()?;
            let info = client.get_info(&id).await?;
            let url =
                port_url(&client.config().api_url, info.domain.as_deref().or(conn.domain().as_deref()), &id, port)?;
            if conn.json {
                print_json(&serde_json::json!({ "sandboxID": id, "port": port, "url": url }));
            } else {
                println!("{url}");
            }
        }
        SandboxCommand::Logs { id, limit, conn, .. } => {
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

/// The URL of `port` of sandbox `id`: the server's proxy routes by Host `<port>-<id>.<domain>` (any domain when
/// the server has none configured; see `proxy::classify` in soulbox-server).
fn port_url(api_url: &str, domain: Option<&str>, id: &str, port: u16) -> soulbox::Result<String> {
    let api = reqwest::Url::parse(api_url).map_err(|e| Error::Invalid(format!("API URL {api_url:?}: {e}")))?;
    let host = api.host_str().unwrap_or_default();
    let local = host == "localhost"
        || host.ends_with(".localhost")
        || host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    // The port the API is reached on carries the sandbox traffic too (one listener), unless it is the default.
    let api_port = api.port().map(|p| format!(":{p}")).unwrap_or_default();
    match domain.filter(|d| !d.is_empty()) {
        // On the server's own machine `.localhost` needs no DNS: the proxy routes it for loopback clients with or
        // without a domain, and browsers resolve `*.localhost` to loopback themselves.
        _ if local => Ok(format!("{}://{port}-{id}.localhost{api_port}", api.scheme())),
        Some(d) if api.scheme() == "http" => Ok(format!("http://{port}-{id}.{d}{api_port}")),
        Some(d) => Ok(format!("https://{port}-{id}.{d}")),
        None => Err(Error::Invalid(format!(
            "the server at {api_url} has no domain, so a port has no URL of its own: configure `domain` (with \
             wildcard DNS) on the server, or send the headers E2b-Sandbox-Id: {id} and E2b-Sandbox-Port: {port} to \
             {api_url}"
        ))),
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
    use super::port_url;

    #[test]
    fn port_urls() {
        let id = "i1a2b3";
        assert_eq!(port_url("http://127.0.0.1:3000", None, id, 8080).unwrap(), "http://8080-i1a2b3.localhost:3000");
        assert_eq!(port_url("http://localhost:3000/", None, id, 80).unwrap(), "http://80-i1a2b3.localhost:3000");
        let with_domain = port_url("http://127.0.0.1:3000", Some("sb.example"), id, 80).unwrap();
        assert_eq!(with_domain, "http://80-i1a2b3.localhost:3000", "a loopback API: no DNS needed");
        assert_eq!(
            port_url("https://api.sb.example", Some("sb.example"), id, 80).unwrap(),
            "https://80-i1a2b3.sb.example"
        );
        assert_eq!(port_url("http://10.0.0.5:3000", Some("sb.lan"), id, 80).unwrap(), "http://80-i1a2b3.sb.lan:3000");
        assert!(port_url("http://10.0.0.5:3000", None, id, 80).is_err(), "no domain, not local: no URL");
    }
}
