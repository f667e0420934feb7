//! PID 1 duties. When envd is a container's first process it must reap orphans, but a `waitpid(-1)` loop in
//! the server would steal exit statuses from the children tokio waits for. So PID 1 splits in two (like tini):
//! this small init re-executes envd as its only direct child, forwards termination signals to it, reaps every
//! orphan that the kernel re-parents to PID 1, and exits with the server's status.

use std::process::Command;

use rustix::process::{Pid, Signal, WaitOptions, kill_process, wait};

/// Environment marker telling the re-executed envd that it is the server, not the init.
pub const CHILD_MARKER: &str = "SOULBOX_ENVD_CHILD";

pub fn should_run_as_init() -> bool {
    rustix::process::getpid().is_init() && std::env::var_os(CHILD_MARKER).is_none()
}

/// Runs the init loop. Returns the server's exit code.
pub fn run() -> anyhow::Result<i32> {
    let exe = std::env::current_exe()?;
    let server = Command::new(exe).args(std::env::args_os().skip(1)).env(CHILD_MARKER, "1").spawn()?;
    let server_pid = server.id() as i32;
    // The server has its copy of the boot configuration; PID 1's own (its /proc/1/environ) goes. Still one thread.
    crate::env_scrub::wipe(soulbox_protocol::envd_init::INIT_ENV);
    forward_termination_signals(server_pid);
    loop {
        match wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == server_pid => {
                let code = status.exit_status().or_else(|| status.terminating_signal().map(|s| 128 + s)).unwrap_or(1);
                return Ok(code);
            }
            Ok(_) => {} // an orphan, now reaped
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A thread that turns SIGTERM/SIGINT sent to PID 1 into the same signal for the server.
fn forward_termination_signals(server_pid: i32) {
    let forwarder = std::thread::Builder::new().name("signal-forwarder".into());
    let spawned = forwarder.spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
            Ok(rt) => rt,
            Err(_) => return,
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            loop {
                let sig = tokio::select! {
                    _ = term.recv() => Signal::TERM,
                    _ = int.recv() => Signal::INT,
                };
                if let Some(pid) = Pid::from_raw(server_pid) {
                    let _ = kill_process(pid, sig);
                }
            }
        });
    });
    if let Err(e) = spawned {
        eprintln!("soulbox-envd init: cannot start signal forwarder: {e}");
    }
}
