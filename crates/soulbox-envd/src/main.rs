//! soulbox-envd: the agent inside every SoulBox sandbox, wire-compatible with E2B's envd.

mod auth;
#[cfg(test)]
mod claim_tests;
mod entry;
mod env_scrub;
mod errors;
mod etc_files;
mod filesystem;
mod http;
mod init_process;
mod io_memory;
mod metrics;
#[cfg(test)]
mod node_secret_tests;
mod paths;
mod process;
mod process_table;
mod quiesce;
mod request_log;
mod rpc;
mod server;
mod state;
mod token_file;
mod trust;
mod users;
mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};

use clap::Parser;
use soulbox_protocol::envd_init::{
    ENVD_PORT, INIT_ENV, LEGACY_LOG_ENV, LOG_ENV, LOG_FORMAT_ENV, PORT_FLAG, READY_FD_FLAG,
};
use tracing_subscriber::EnvFilter;

use crate::state::{AppState, InitRequest, SandboxConfig};

/// tokio's I/O registrations at addresses never reused: a gVisor restore may wake them after they were freed
/// (`io_memory`).
#[global_allocator]
static ALLOCATOR: io_memory::RegistrationArena = io_memory::RegistrationArena::new();

#[derive(Debug, Parser)]
#[command(name = "soulbox-envd", version, about = "SoulBox in-sandbox agent (E2B envd compatible)")]
struct Args {
    /// Port to serve Connect RPC and HTTP on.
    #[arg(long = PORT_FLAG, default_value_t = ENVD_PORT)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    listen: IpAddr,
    /// File descriptor to write one byte to (then close) once the server listens.
    #[arg(long = READY_FD_FLAG)]
    ready_fd: Option<i32>,
}

fn main() -> anyhow::Result<()> {
    // The boot configuration (node secret, access token) stays readable in this process's initial environment
    // (`/proc/<pid>/environ`) even after `remove_var`. Not dumpable: only a caller with CAP_SYS_PTRACE (the
    // host, not root inside a sandbox) may read our environ, memory or fds. Children are dumpable again after
    // their exec.
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        eprintln!("soulbox-envd: could not make the agent non-dumpable: {e}");
    }
    if init_process::should_run_as_init() {
        let code = init_process::run()?;
        std::process::exit(code);
    }
    let args = Args::parse();
    init_logging();

    let mut config = SandboxConfig::default();
    let mut node_secret = None;
    let mut pooled = false;
    if let Ok(raw) = std::env::var(INIT_ENV) {
        let mut init: InitRequest =
            serde_json::from_str(&raw).map_err(|e| anyhow::anyhow!("{INIT_ENV} is not valid init JSON: {e}"))?;
        node_secret = init.envd_secret.take();
        pooled = init.pooled.take().unwrap_or(false);
        let network = init.network.take();
        let egress_ca = init.egress_ca.take();
        config.apply(init);
        // Before listening: once the node hears "ready", name resolution inside is already right.
        if let Some(network) = network {
            for (path, error) in etc_files::write_all(std::path::Path::new("/"), &network) {
                tracing::warn!(path, %error, "could not write a network file of the sandbox");
            }
        }
        // Also before listening: the first command run already trusts the egress gateway.
        if let Some(pem) = egress_ca {
            for (path, error) in trust::install(std::path::Path::new("/"), &pem) {
                tracing::warn!(path, %error, "could not install the egress CA in the sandbox");
            }
        }
    }
    if node_secret.is_none() {
        tracing::warn!("started without a node secret: anything that reaches this agent's port may call it");
    }
    // Children get an environment built per call; the init JSON (with the token) must not leak to them, nor
    // stay readable in our own initial environment (`env_scrub`).
    env_scrub::wipe(INIT_ENV);
    // SAFETY: single-threaded here, before the runtime starts. (A no-op after the wipe; kept for an environment
    // the wipe did not find the variable in.)
    unsafe { std::env::remove_var(INIT_ENV) };

    let ready_fd = args.ready_fd.map(|fd| {
        // SAFETY: the fd number comes from our parent (the node runtime), which passed it open for us alone.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let state = AppState::with_node_secret(config, node_secret).publishing_token_digest("/".into());
    // Only with a secret: the claim hands out a new one, and an agent anything may call has nothing to hand.
    if pooled && state.node_secret().is_some() {
        state.pooled.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(server::serve(state, SocketAddr::new(args.listen, args.port), move || {
        if let Some(fd) = ready_fd {
            let mut file = std::fs::File::from(fd);
            if let Err(e) = std::io::Write::write_all(&mut file, b"R") {
                tracing::warn!(error = %e, "could not signal readiness");
            }
        }
    }))
}

/// The node passes its own log setting (`envd_init::LOG_ENV`, `LOG_FORMAT_ENV`); the older `SOULBOX_ENVD_LOG`
/// still wins when set. Lines go to stderr, which the node keeps as the sandbox's log.
fn init_logging() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let filter = var(LEGACY_LOG_ENV)
        .or_else(|| var(LOG_ENV))
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // stderr is the sandbox's log file: no colour codes in it.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    if var(LOG_FORMAT_ENV).is_some_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().flatten_event(true).with_span_list(false).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    /// The node starts envd with the protocol's command line; envd must understand every word of it.
    #[test]
    fn parses_the_command_line_the_node_uses() {
        let args = Args::try_parse_from(soulbox_protocol::envd_init::command_line("/.soulbox/envd", 3)).unwrap();
        assert_eq!((args.port, args.ready_fd), (soulbox_protocol::ENVD_PORT, Some(3)));
    }
}
