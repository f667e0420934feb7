//! Keeps the firewall table in place: listens to nftables change notifications (netlink group
//! `NFNLGRP_NFTABLES`, what `nft monitor` reads) and, when a transaction that was not ours touched
//! our table, checks the table against what was applied and rebuilds it ([`Firewall::check_and_repair`]).
//!
//! Event-driven rather than periodic: a deleted or flushed table is rebuilt within milliseconds,
//! and an idle node spends nothing. Our own transactions are recognised by the pid in the
//! generation message that ends every nftables transaction (`NFTA_GEN_PROC_PID`) against the pids
//! of the `nft` processes the firewall ran; anything else touching our table (or a lost
//! notification: ENOBUFS) triggers a check. Where notifications are unavailable (no netlink
//! multicast permission, an old kernel) the watcher falls back to a check every
//! [`FALLBACK_INTERVAL`], with a warning.
use super::Firewall;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFNLGRP_NFTABLES: libc::c_int = 7;
const NFPROTO_INET: u8 = 1;
/// In every nftables object message (table, chain, rule, set, element, object, flowtable), attribute
/// 1 is the name of the table it belongs to.
const ATTR_TABLE: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
/// When notifications cannot be had.
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(5);

/// The running watcher; stops it when dropped.
pub struct WatchHandle(tokio::task::JoinHandle<()>);

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start watching `fw`'s table (on the current tokio runtime).
pub fn spawn(fw: Arc<Firewall>) -> WatchHandle {
    WatchHandle(tokio::spawn(async move {
        match subscribe() {
            Ok(socket) => {
                if let Err(e) = watch_events(&fw, socket).await {
                    tracing::warn!(error = %e, table = %fw.table(), "nftables notifications failed; checking the firewall table periodically instead");
                    poll(&fw).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, table = %fw.table(), interval_s = FALLBACK_INTERVAL.as_secs(), "cannot subscribe to nftables notifications; checking the firewall table periodically instead");
                poll(&fw).await;
            }
        }
    }))
}

async fn poll(fw: &Firewall) {
    let mut tick = tokio::time::interval(FALLBACK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check(fw).await;
    }
}

async fn check(fw: &Firewall) {
    if let Err(e) = fw.check_and_repair().await {
        tracing::error!(error = %e, table = %fw.table(), "could not check or restore the firewall table");
    }
}

/// A netlink socket subscribed to nftables notifications (non-blocking).
fn subscribe() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right after the check.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (kernel picks the port id).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a valid sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    setsockopt_int(&socket, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)?;
    // Bursts of our own transactions (many creates at once) must not overflow the queue; as root
    // the limit can be raised past rmem_max. A failure only makes ENOBUFS (→ a check) likelier.
    let _ = setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
    Ok(socket)
}

fn setsockopt_int(socket: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the option value is a c_int that lives for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

async fn watch_events(fw: &Firewall, socket: OwnedFd) -> std::io::Result<()> {
    // SAFETY: an OwnedFd always returns its own, open descriptor, which lives as long as the AsyncFd.
    let socket = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let mut buf = vec![0u8; 256 * 1024];
    // Whether the transaction being read so far touched our table.
    let mut touched = false;
    // Something happened since subscribing that only a check can judge: start with one, which
    // also covers changes between `Runtime::open`'s rebuild and the subscription.
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            check(fw).await;
        }
        let mut guard = socket.readable().await?;
        loop {
            // SAFETY: recv into a buffer we own, of the length passed.
            let n = unsafe {
                libc::recv(guard.get_inner().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Some(libc::EINTR) => continue,
                    // The queue overflowed: notifications were lost, so we cannot know.
                    Some(libc::ENOBUFS) => {
                        tracing::debug!(table = %fw.table(), "nftables notifications overflowed; checking the table");
                        dirty = true;
                        touched = false;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            for event in parse(&buf[..n as usize], fw.table()) {
                match event {
                    Event::TouchesTable => touched = true,
                    Event::Generation { pid } => {
                        if std::mem::take(&mut touched) && !pid.is_some_and(|p| fw.take_own_pid(p)) {
                            tracing::debug!(table = %fw.table(), ?pid, "another process changed the firewall table");
                            dirty = true;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Event {
    /// An object of our table was added, changed or deleted.
    TouchesTable,
    /// A transaction ended (committed by `pid`, when the kernel says).
    Generation { pid: Option<u32> },
}

/// The events in one datagram of nftables notifications.
fn parse(mut buf: &[u8], table: &str) -> Vec<Event> {
    let mut events = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
        let body = &buf[16..len];
        if msg_type >> 8 == NFNL_SUBSYS_NFTABLES && body.len() >= 4 {
            let family = body[0];
            let attrs = attributes(&body[4..]);
            if msg_type & 0xff == NFT_MSG_NEWGEN {
                let pid = attrs
                    .iter()
                    .find(|(t, v)| *t == NFTA_GEN_PROC_PID && v.len() == 4)
                    .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                events.push(Event::Generation { pid });
            } else if family == NFPROTO_INET
                && attrs.iter().any(|(t, v)| *t == ATTR_TABLE && v.split(|b| *b == 0).next() == Some(table.as_bytes()))
            {
                events.push(Event::TouchesTable);
            }
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
    events
}

/// Top-level netlink attributes as (type without flags, value).
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(msg: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let payload: Vec<u8> = [vec![family, 0, 0, 0], attrs.concat()].concat();
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn table_events_and_generations_are_recognised() {
        const DELTABLE: u16 = 2;
        const DELRULE: u16 = 8;
        let datagram = [
            message(DELRULE, NFPROTO_INET, &[attr(ATTR_TABLE, b"soulbox_tq1\0"), attr(2, b"forward\0")]),
            message(DELTABLE, NFPROTO_INET, &[attr(ATTR_TABLE, b"soulbox_tq10\0")]),
            message(DELTABLE, 2 /* ip */, &[attr(ATTR_TABLE, b"soulbox_tq1\0")]),
            message(
                NFT_MSG_NEWGEN,
                0,
                &[attr(1, &7u32.to_be_bytes()), attr(NFTA_GEN_PROC_PID, &4242u32.to_be_bytes()), attr(3, b"nft\0")],
            ),
        ]
        .concat();
        assert_eq!(parse(&datagram, "soulbox_tq1"), vec![Event::TouchesTable, Event::Generation { pid: Some(4242) }]);
    }
}
