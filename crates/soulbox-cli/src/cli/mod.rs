//! The client side of the `soulbox` command, built on the `soulbox` SDK: `soulbox sandbox …`, `exec`, `shell`,
//! `cp`, `nodes`, `profile`. Human tables by default, `--json` for scripts, `-q` for ids only on lists.
//!
//! Exit codes: 0 ok; 1 other error; 2 usage; 3 not found; 4 auth; 5 rate limited; 6 sandbox killed;
//! 7 agent version; 8 invalid request; 9 template build failed; 124 timeout; `exec` passes the command's own exit code through.

mod archive;
mod chart;
mod follow;
mod nodes;
mod output;
mod profile;
mod sandbox;
mod shell;
mod template;
mod transfer;
mod transfer_dir;

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use soulbox::{Client, CommandOptions, ConnectionConfig, Error, Sandbox};

use output::print_json;

/// API URL when nothing is configured: `soulbox server`'s default listen address.
const LOCAL_API_URL: &str = "http://127.0.0.1:3000";

/// Connection flags shared by every client command (flags win over the environment, which wins over the
/// profile).
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
    /// Connection profile from ~/.config/soulbox/profiles.toml [env: SOULBOX_PROFILE; default: its `current`].
    #[arg(long, global = true)]
    pub profile: Option<String>,
}

/// The first of these environment variables that is set and not empty.
fn env_var(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

impl Conn {
    fn client(&self) -> soulbox::Result<Client> {
        Client::new(self.connection()?)
    }

    /// The domain set for sandbox URLs (environment, else the profile), if any.
    fn domain(&self) -> Option<String> {
        env_var(&["SOULBOX_DOMAIN", "E2B_DOMAIN"])
            .or_else(|| profile::selected(self.profile.as_deref()).ok().flatten().and_then(|p| p.domain))
    }

    /// The resolved connection settings (flags over environment over the profile over the local default).
    fn connection(&self) -> soulbox::Result<ConnectionConfig> {
        let mut c = ConnectionConfig::from_env();
        let env_url = env_var(&["SOULBOX_API_URL", "E2B_API_URL"]);
        let env_domain = env_var(&["SOULBOX_DOMAIN", "E2B_DOMAIN"]);
        let p = profile::selected(self.profile.as_deref())?.unwrap_or_default();
        if env_domain.is_none()
            && let Some(d) = &p.domain
        {
            c.domain.clone_from(d);
        }
        if env_url.is_none() {
            // The environment's domain is the environment's API (`https://api.<domain>`, as E2B's SDKs do).
            c.api_url = match (env_domain, &p.api_url, &p.domain) {
                (Some(d), _, _) => format!("https://api.{d}"),
                (None, Some(u), _) => u.clone(),
                (None, None, Some(d)) => format!("https://api.{d}"),
                // A self-hosted default: the local `soulbox server`, never a public host.
                (None, None, None) => LOCAL_API_URL.to_owned(),
            };
        }
        if c.api_key.is_none() {
            c.api_key = p.api_key;
        }
        if c.sandbox_url.is_none() {
            c.sandbox_url = p.sandbox_url;
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
        Ok(c)
    }
}

/// Client subcommands, flattened into `soulbox`'s own.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, inspect and control sandboxes.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Run a command in a sandbox, streaming its output; exits with the command's exit code.
    #[command(
        after_help = "Examples:\n  soulbox exec i1a2b3 -- ls -la /\n  soulbox exec i1a2b3 --cwd /tmp -e A=1 -- 'echo $A > a.txt'\n  echo hi | soulbox exec -i i1a2b3 -- cat"
    )]
    Exec(ExecArgs),
    /// Open an interactive shell (PTY) in a sandbox; the terminal follows window size changes.
    #[command(after_help = "Example:\n  soulbox shell i1a2b3")]
    Shell(ShellArgs),
    /// Copy a file, or with -r a directory, to or from a sandbox (`<sandbox-id>:<path>` names the sandbox side).
    #[command(
        after_help = "Examples:\n  soulbox cp ./data.csv i1a2b3:/home/user/data.csv\n  soulbox cp i1a2b3:/var/log/app.log ./app.log\n  soulbox cp -r ./src i1a2b3:/home/user/project\n  soulbox cp -r i1a2b3:/home/user/out ./results\n\nWith -r, like docker cp: when DST is an existing directory SRC is copied into it (DST/<name of SRC>),\notherwise DST is created with SRC's contents. Directories travel as one tar file (in /tmp of the sandbox);\nunpacking on this machine refuses absolute paths, `..`, links out of DST and device files."
    )]
    Cp(CpArgs),
    /// Cluster nodes: list, show, drain, undrain, evacuate, remove.
    #[command(subcommand)]
    Nodes(nodes::NodesCommand),
    /// Build (from a Dockerfile, with the live log), list and delete templates.
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Named connection profiles (API URL, key, domain) in ~/.config/soulbox/profiles.toml, like docker contexts.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
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
    /// Copy a directory (as a tar stream).
    #[arg(short, long)]
    pub recursive: bool,
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
        ClientCommand::Sandbox(c) => sandbox::run(c).await,
        ClientCommand::Exec(a) => exec(a).await,
        ClientCommand::Shell(a) => shell::run(a).await,
        ClientCommand::Cp(a) if a.recursive => transfer_dir::cp_dir(a).await,
        ClientCommand::Cp(a) => transfer::cp(a).await,
        ClientCommand::Nodes(c) => nodes::run(c).await,
        ClientCommand::Template(c) => template::run(c).await,
        ClientCommand::Profile(c) => profile::run(c),
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
