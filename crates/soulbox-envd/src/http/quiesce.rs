//! `POST /soulbox/quiesce` (`soulbox_protocol::envd_init::QUIESCE_PATH`): the node is about to checkpoint this
//! sandbox with gVisor, whose save (Debian 12's release) refuses any TCP connection that is not closed — in
//! TIME_WAIT too — and any endpoint something waits on through epoll; a save it refuses ends the sandbox. So the
//! agent answers `409`, closing nothing, while the sandbox has TCP connections of its own or a process holds an
//! internet socket beside an epoll set (the node then pauses it in memory). Otherwise it resets every connection
//! but the asking one (`crate::quiesce`) and answers `204`; the node then closes its side first (so that this
//! end does not wait in TIME_WAIT) and checkpoints once it has read the end of the connection.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::errors::json_error;
use crate::quiesce::{ConnectionId, Connections};
use crate::state::AppState;

/// How long the other connections get to close (their tasks only need to be polled once).
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

pub async fn quiesce(
    State(state): State<AppState>,
    Extension(connections): Extension<Arc<Connections>>,
    ConnectInfo(own): ConnectInfo<ConnectionId>,
) -> Response {
    if state.node_secret().is_none() {
        // Only an agent a node started (with its secret) is ever checkpointed.
        return StatusCode::NOT_FOUND.into_response();
    }
    let connected = connections_of_the_sandbox(Path::new("/proc/net"), soulbox_protocol::ENVD_PORT);
    if !connected.is_empty() {
        tracing::info!(connections = %connected.join(", "), "not quiescing: open TCP connections");
        return json_error(
            StatusCode::CONFLICT,
            &format!(
                "the sandbox has TCP connections the runtime cannot save (closed ones linger up to a minute): {}",
                connected.join(", ")
            ),
        );
    }
    let busy = busy_processes(Path::new("/proc"), std::process::id());
    if !busy.is_empty() {
        let names: Vec<String> = busy.iter().map(|(pid, comm)| format!("{pid} ({comm})")).collect();
        tracing::info!(processes = %names.join(", "), "not quiescing: sockets in epoll sets");
        return json_error(
            StatusCode::CONFLICT,
            &format!(
                "processes hold internet sockets in epoll sets, which the runtime cannot save: {}",
                names.join(", ")
            ),
        );
    }
    match connections.close_all_but(own.0, CLOSE_LIMIT).await {
        Ok(closed) => {
            tracing::info!(closed, "quiesced for a checkpoint");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(left) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{left} connections did not close within {} s", CLOSE_LIMIT.as_secs()),
        ),
    }
}

/// Processes under `proc_root` (other than `own_pid`) that hold both an epoll instance and a TCP or UDP socket:
/// the socket may be in the epoll set, and gVisor's save refuses an endpoint something waits on. A socket is known
/// by its inode in the namespace's `net/{tcp,tcp6,udp,udp6}` tables; Unix sockets and pipes are not in them.
pub fn busy_processes(proc_root: &Path, own_pid: u32) -> Vec<(u32, String)> {
    let inet = inet_socket_inodes(proc_root);
    let mut busy = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else { return busy };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == own_pid {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let (mut epoll, mut socket) = (false, false);
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            if target == "anon_inode:[eventpoll]" {
                epoll = true;
            } else if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']'))
                && inet.contains(inode)
            {
                socket = true;
            }
        }
        if epoll && socket {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            busy.push((pid, comm.trim().to_string()));
        }
    }
    busy.sort();
    busy
}

/// TCP endpoints of the namespace (`net_dir`: its `/proc/net`) other than listeners and the agent's own open
/// connections on `agent_port` (established or closed by the peer: the quiesce resets them), as
/// `local -> remote (state)`. A connection the agent closed first waits in TIME_WAIT and counts.
pub fn connections_of_the_sandbox(net_dir: &Path, agent_port: u16) -> Vec<String> {
    let agent = format!(":{agent_port:04X}");
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(net_dir.join(table)) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) = (fields.get(1), fields.get(2), fields.get(3)) else {
                continue;
            };
            if *state == "0A" || (local.ends_with(&agent) && matches!(*state, "01" | "08")) {
                continue;
            }
            found.push(format!("{local} -> {remote} ({})", tcp_state_name(state)));
        }
    }
    found
}

fn tcp_state_name(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0B" => "CLOSING",
        _ => "unknown state",
    }
}

fn inet_socket_inodes(proc_root: &Path) -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(proc_root.join("net").join(table)) else { continue };
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9).filter(|i| *i != "0") {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn process(root: &Path, pid: u32, comm: &str, fds: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        for (n, target) in fds.iter().enumerate() {
            symlink(target, dir.join("fd").join(n.to_string())).unwrap();
        }
    }

    #[test]
    fn only_processes_with_an_epoll_set_and_an_internet_socket_are_busy() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("net")).unwrap();
        let header =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        std::fs::write(
            root.join("net/tcp"),
            format!("{header}   4: 00000000:C33F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("net/udp6"),
            format!("{header}   1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9 1\n"),
        )
        .unwrap();
        process(root, 1, "envd", &["anon_inode:[eventpoll]", "socket:[1]", "socket:[2]"]); // Unix sockets only
        process(root, 2, "envd", &["anon_inode:[eventpoll]", "socket:[5]"]); // the agent itself
        process(root, 7, "node", &["anon_inode:[eventpoll]", "pipe:[3]", "socket:[5]"]);
        process(root, 8, "python3", &["socket:[9]"]); // blocking calls: the checkpoint interrupts them
        process(root, 9, "dnsmasq", &["socket:[9]", "anon_inode:[eventpoll]"]);
        assert_eq!(busy_processes(root, 2), vec![(7, "node".to_string()), (9, "dnsmasq".to_string())]);
        assert_eq!(busy_processes(root, 7), vec![(2, "envd".to_string()), (9, "dnsmasq".to_string())]);
    }

    #[test]
    fn open_connections_other_than_the_agents_are_reported_with_their_state() {
        let net = tempfile::tempdir().unwrap();
        let header =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let rows = [
            "   0: 00000000:C33F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1", // listener
            "   1: 0200F10A:C33F 0100F10A:B41A 01 00000000:00000000 00:00000000 00000000     0        0 6 1", // agent's
            "   2: 0200F10A:9C40 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 1",
            "   3: 0200F10A:C33F 0100F10A:B41B 06 00000000:00000000 00:00000000 00000000     0        0 0 1", // agent's, closed
        ];
        std::fs::write(net.path().join("tcp"), format!("{header}{}\n", rows.join("\n"))).unwrap();
        std::fs::write(
            net.path().join("tcp6"),
            format!("{header}   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 0 0 0 0 0 7 1\n"),
        )
        .unwrap();
        assert_eq!(
            connections_of_the_sandbox(net.path(), 49983),
            vec![
                "0200F10A:9C40 -> 0100007F:1F90 (TIME_WAIT)".to_string(),
                "0200F10A:C33F -> 0100F10A:B41B (TIME_WAIT)".to_string(),
                "00000000000000000000000001000000:1F90 -> 00000000000000000000000001000000:D431 (ESTABLISHED)"
                    .to_string(),
            ]
        );
        std::fs::write(net.path().join("tcp"), format!("{header}{}\n", rows[..2].join("\n"))).unwrap();
        std::fs::remove_file(net.path().join("tcp6")).unwrap();
        assert!(connections_of_the_sandbox(net.path(), 49983).is_empty());
    }
}
