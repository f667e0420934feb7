//! The client side of the `soulbox` command, built on the `soulbox` SDK: `soulbox sandbox …`, `exec`, `shell`,
//! `cp`, `nodes`. Human tables by default, `--json` for scripts.
//!
//! Exit codes: 0 ok; 1 other error; 2 usage; 3 not found; 4 auth; 5 rate limited; 6 sandbox killed;
//! 7 agent version; 8 invalid request; 9 template build failed; 124 timeout; `exec` passes the command's own exit code through.

mod nodes;
mod output;
mod shell;
mod template;
mod transfer;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use soulbox::{Client, CommandOptions, ConnectionConfig, Error, ListQuery, Sandbox, SandboxState, TimeoutBehavior};

use output::{print_json, table};

/// API URL when nothing is configured: `soulbox server`'s default listen address.
const LOCAL_API_URL: &str = "http://127.0.0.1:3000";

/// Connection flags shared by every client command (flags win over the environment).
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// API URL [env: SOULBOX_API_URL / E2B_API_URL; default http://127.0.0.1:3000, or https://api.<domain> when
    /// SOULBOX_DOMAIN / E2B_DOMAIN is set].
    #[arg(long, global = true)]
    pub api_url: Option<String>,
    /// Sandbox (agent) URL; defaults to the API URL, where `soulbox server` serves both [env: SOULBOX_SANDBOX_URL /
    /// E2B_SANDBOX_URL].
    #[arg(long, global = true)]
    pub sandbox_url: Option<String>,
    /// API key [env: SOULBOX_API_KEY / E2B_API_KEY].
    #[arg(long, global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Conn {
    fn client(&self) -> soulbox::Result<Client> {
        Client::new(self.connection())
    }

    /// The resolved connection settings (flags over environment over the local default).
    fn connection(&self) -> ConnectionConfig {
        let mut c = ConnectionConfig::from_env();
        let configured = ["SOULBOX_API_URL", "E2B_API_URL", "SOULBOX_DOMAIN", "E2B_DOMAIN"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()));
        if !configured {
            // A self-hosted default: the local `soulbox server`, never a public host.
            c.api_url = LOCAL_API_URL.to_owned();
        }
        if let Some(u) = &self.api_url {
            c.api_url = u.clone();
        }
        if let Some(k) = &self.api_key {
            c.api_key = Some(k.clone());
        }
        match &self.sandbox_url {
            Some(u) => c.sandbox_url = Some(u.clone()),
            None if c.sandbox_url.is_none() => c.sandbox_url = Some(c.api_url.clone()),
            None => {}
        }
        c
    }
}

/// Client subcommands, flattened into `soulbox`'s own.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, inspect and control sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Run a command in a sandbox, streaming its output; exits with the command's exit code.
    #[command(
        after_help = "Examples:\n  soulbox exec i1a2b3 -- ls -la /\n  soulbox exec i1a2b3 --cwd /tmp -e A=1 -- 'echo $A > a.txt'\n  echo hi | soulbox exec -i i1a2b3 -- cat"
    )]
    Exec(ExecArgs),
    /// Open an interactive shell (PTY) in a sandbox; the terminal follows window size changes.
    #[command(after_help = "Example:\n  soulbox shell i1a2b3")]
    Shell(ShellArgs),
    /// Copy a file to or from a sandbox (`<sandbox-id>:<path>` names the sandbox side).
    #[command(
        after_help = "Examples:\n  soulbox cp ./data.csv i1a2b3:/home/user/data.csv\n  soulbox cp i1a2b3:/var/log/app.log ./app.log"
    )]
    Cp(CpArgs),
    /// Cluster nodes: list, show, drain, undrain, remove.
    #[command(subcommand)]
    Nodes(nodes::NodesCommand),
    /// Build (from a Dockerfile, with the live log), list and delete templates.
    #[command(subcommand)]
    Template(template::TemplateCommand),
}

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

#[derive(Args, Debug)]
pub struct ExecArgs {
    pub id: String,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// User to run as.
    #[arg(long)]
    pub user: Option<String>,
    /// Environment variable `KEY=value` (repeatable).
    #[arg(short, long = "env", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Kill the command after SECONDS (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Forward this process's stdin to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// The command (run with `bash -l -c`; several words are shell-quoted and joined).
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    pub id: String,
    /// User to log in as.
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Source: a local path or `<sandbox-id>:<path>`.
    pub src: String,
    /// Destination: a local path or `<sandbox-id>:<path>`.
    pub dst: String,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: Conn,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected KEY=value, got {s:?}"))
}

/// Exit code for an SDK error.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::NotFound(_) => 3,
        Error::Auth(_) => 4,
        Error::RateLimit { .. } => 5,
        Error::SandboxKilled(_) => 6,
        Error::Version(_) => 7,
        Error::Invalid(_) => 8,
        Error::Timeout(_) => 124,
        Error::CommandExit { exit_code, .. } => *exit_code,
        Error::Build { .. } => 9,
        Error::Other(_) => 1,
    }
}

/// Runs a client command; returns the process exit code.
pub async fn run(cmd: ClientCommand) -> i32 {
    let result = match cmd {
        ClientCommand::Sandbox(c) => sandbox(c).await,
        ClientCommand::Exec(a) => exec(a).await,
        ClientCommand::Shell(a) => shell::run(a).await,
        ClientCommand::Cp(a) => transfer::cp(a).await,
        ClientCommand::Nodes(c) => nodes::run(c).await,
        ClientCommand::Template(c) => template::run(c).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

async fn sandbox(cmd: SandboxCommand) -> soulbox::Result<i32> {
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
                    println!("{} {}", l.timestamp, l.line);
                }
            }
        }
    }
    Ok(0)
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

/// Quotes words for `bash -c` unless there is a single word (taken as a script).
fn shell_join(words: &[String]) -> String {
    if words.len() == 1 {
        return words[0].clone();
    }
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn exec(a: ExecArgs) -> soulbox::Result<i32> {
    let client = a.conn.client()?;
    let s = Sandbox::get(&client, &a.id).await?;
    let mut opts = CommandOptions::default()
        .timeout(Duration::from_secs(a.timeout))
        .stdin(a.interactive)
        .on_stdout(|c| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(c.as_bytes());
            let _ = out.flush();
        })
        .on_stderr(|c| {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(c.as_bytes());
            let _ = err.flush();
        });
    opts.cwd = a.cwd;
    opts.user = a.user;
    opts.envs = a.env.into_iter().collect();
    let handle = s.commands().spawn_with(&shell_join(&a.cmd), opts).await?;
    if a.interactive {
        let cmds = s.commands();
        let pid = handle.pid();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if cmds.send_stdin(pid, bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = cmds.close_stdin(pid).await;
        });
    }
    match handle.wait().await {
        Ok(_) => Ok(0),
        Err(Error::CommandExit { exit_code, error, .. }) => {
            if let Some(e) = error.filter(|e| !e.starts_with("exit status")) {
                eprintln!("soulbox: {e}");
            }
            // A process killed by a signal reports -1: map it like a shell would (128 + 9).
            Ok(if exit_code < 0 { 137 } else { exit_code })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_join(&["echo $A > x".into()]), "echo $A > x");
        assert_eq!(shell_join(&["echo".into(), "a b".into(), "it's".into()]), "echo 'a b' 'it'\\''s'");
    }
}
