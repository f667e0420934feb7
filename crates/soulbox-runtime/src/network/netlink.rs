//! The sandbox network made and removed by rtnetlink messages from this process, instead of `ip` processes
//! (issue 18: two `ip -batch` runs per create and `ip link del` + `ip netns del` per kill were four of the
//! ~16 process spawns of a create and its kill). The result is what those `ip` commands made: the same
//! messages, flags and attributes that iproute2 sends for `link add … type veth peer name eth0 netns <ns>`,
//! `addr add`, `link set up` and `route add` (table main, protocol `boot`), so `ip` shows no difference.
//!
//! Only the handful of messages we need, written by hand on a raw `NETLINK_ROUTE` socket: each is sent
//! with `NLM_F_ACK` and its answer read before the next, so errors arrive in order with the kernel's
//! extended-ack text. Work inside the sandbox's netns runs on a short-lived thread that `setns` moves there
//! (a socket belongs to the netns it was made in; a thread we throw away never takes the sandbox's netns
//! back to the runtime's thread pool).
use crate::error::{Error, Result};
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `VETH_INFO_PEER` (linux/veth.h; not in libc): the peer's `ifinfomsg` and attributes.
const VETH_INFO_PEER: u16 = 1;
/// `NETLINK_CAP_ACK`: error answers echo only the request's header, not its whole payload.
const NETLINK_CAP_ACK: libc::c_int = 10;
/// Answer flags (linux/netlink.h): the echo was capped; extended-ack attributes follow.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's text for an error.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

/// The addressing of one sandbox's link pair (see `network::setup`).
#[derive(Debug, Clone)]
pub(super) struct Links {
    pub netns_path: std::path::PathBuf,
    pub veth: String,
    pub gateway: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub on_link: bool,
}

/// One rtnetlink request being written: header, family header, attributes (nested ones patched on close).
struct Msg {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: libc::c_int, family_header: &[u8]) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16).to_ne_bytes());
        buf.extend_from_slice(family_header);
        Msg { buf, open: Vec::new() }
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn attr(mut self, kind: u16, data: &[u8]) -> Msg {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }
    fn name(self, kind: u16, name: &str) -> Msg {
        let mut s = name.as_bytes().to_vec();
        s.push(0);
        self.attr(kind, &s)
    }
    /// Opens a nested attribute; the bytes that follow (`raw` or attributes) are inside it until [`Msg::close`].
    fn nest(mut self, kind: u16) -> Msg {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }
    fn raw(mut self, data: &[u8]) -> Msg {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }
    fn close(mut self) -> Msg {
        if let Some(at) = self.open.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }
}

/// `struct ifinfomsg`: AF_UNSPEC, the link's index (0: by `IFLA_IFNAME`), flags and which of them to change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// `struct ifaddrmsg`: an IPv4 /32, scope global (what `ip addr add` sends for a non-loopback address).
fn ifaddrmsg(index: u32) -> [u8; 8] {
    let mut h = [libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

/// `struct rtmsg` for an IPv4 unicast route in table main, protocol `boot` (`ip route add`'s defaults).
fn rtmsg(dst_len: u8, scope: u8) -> [u8; 12] {
    [libc::AF_INET as u8, dst_len, 0, 0, libc::RT_TABLE_MAIN, libc::RTPROT_BOOT, scope, libc::RTN_UNICAST, 0, 0, 0, 0]
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A route socket in the calling thread's network namespace.
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for opt in [libc::NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and an int option; failure only costs the error text.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        Ok(Socket { fd, seq: 0 })
    }

    /// Sends `msg` and waits for its acknowledgement: Ok, or the kernel's errno with its text.
    fn request(&mut self, what: &dyn Fn() -> String, mut msg: Msg) -> Result<()> {
        self.seq += 1;
        let len = msg.buf.len() as u32;
        msg.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        let fail = |source: io::Error| Error::Io { path: format!("rtnetlink: {}", what()).into(), source };
        // SAFETY: sends our own buffer; an unbound netlink socket sends to the kernel (port 0).
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.buf.as_ptr().cast(), msg.buf.len(), 0) };
        if sent < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 16384];
        loop {
            // SAFETY: receives into our own buffer of that length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(fail(e));
            }
            if let Some(answer) = ack(&buf[..n as usize], self.seq) {
                return answer.map_err(|(errno, text)| {
                    let e = io::Error::from_raw_os_error(errno);
                    fail(if text.is_empty() { e } else { io::Error::new(e.kind(), format!("{e}: {text}")) })
                });
            }
        }
    }
}

/// The acknowledgement of request `seq` in one datagram, if it holds one: Ok or (errno, the kernel's text).
fn ack(mut data: &[u8], seq: u32) -> Option<std::result::Result<(), (i32, String)>> {
    let u32_at = |d: &[u8], at: usize| d.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let u16_at = |d: &[u8], at: usize| d.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    while data.len() >= NLMSG_HDRLEN {
        let len = (u32_at(data, 0)? as usize).clamp(NLMSG_HDRLEN, data.len());
        let (kind, flags, this_seq) = (u16_at(data, 4)?, u16_at(data, 6)?, u32_at(data, 8)?);
        let msg = &data[..len];
        if kind == libc::NLMSG_ERROR as u16 && this_seq == seq {
            let errno = -(u32_at(msg, NLMSG_HDRLEN)? as i32);
            if errno == 0 {
                return Some(Ok(()));
            }
            // After the errno: the request's header (its payload too unless capped), then the ext-ack TLVs.
            let echoed = if flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                u32_at(msg, NLMSG_HDRLEN + 4).unwrap_or(0) as usize
            };
            let mut text = String::new();
            let mut at = NLMSG_HDRLEN + 4 + echoed;
            while flags & NLM_F_ACK_TLVS != 0 && at + 4 <= msg.len() {
                let (alen, akind) = (u16_at(msg, at)? as usize, u16_at(msg, at + 2)?);
                if alen < 4 || at + alen > msg.len() {
                    break;
                }
                if akind == NLMSGERR_ATTR_MSG {
                    text = String::from_utf8_lossy(&msg[at + 4..at + alen]).trim_end_matches('\0').to_string();
                }
                at += alen.next_multiple_of(4);
            }
            return Some(Err((errno, text)));
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    None
}

/// The index of link `name` in the calling thread's network namespace.
fn index(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::Invalid(format!("link name {name:?}")))?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(Error::Io { path: format!("link {name}").into(), source: io::Error::last_os_error() });
    }
    Ok(i)
}

fn link_up(sock: &mut Socket, name: &str) -> Result<()> {
    let i = index(name)?;
    let up = libc::IFF_UP as u32;
    sock.request(&|| format!("link set {name} up"), Msg::new(libc::RTM_NEWLINK, 0, &ifinfomsg(i, up, up)))
}

/// `ip addr add <local>/32 [peer <peer>/32] dev <name>`: a point-to-point address names its peer in
/// `IFA_ADDRESS`; a plain one repeats the local address there.
fn add_address(sock: &mut Socket, name: &str, local: Ipv4Addr, peer: Ipv4Addr) -> Result<()> {
    let msg = Msg::new(libc::RTM_NEWADDR, libc::NLM_F_CREATE | libc::NLM_F_EXCL, &ifaddrmsg(index(name)?))
        .attr(libc::IFA_LOCAL, &local.octets())
        .attr(libc::IFA_ADDRESS, &peer.octets());
    sock.request(&|| format!("addr add {local}/32 peer {peer}/32 dev {name}"), msg)
}

/// `ip route add <dst>/<len> [via <gateway>] dev <name> [scope link]`.
fn add_route(sock: &mut Socket, name: &str, dst: Option<Ipv4Addr>, via: Option<Ipv4Addr>, scope: u8) -> Result<()> {
    let oif = index(name)?;
    let mut msg = Msg::new(
        libc::RTM_NEWROUTE,
        libc::NLM_F_CREATE | libc::NLM_F_EXCL,
        &rtmsg(if dst.is_some() { 32 } else { 0 }, scope),
    );
    if let Some(d) = dst {
        msg = msg.attr(libc::RTA_DST, &d.octets());
    }
    if let Some(g) = via {
        msg = msg.attr(libc::RTA_GATEWAY, &g.octets());
    }
    msg = msg.attr(libc::RTA_OIF, &oif.to_ne_bytes());
    sock.request(&|| format!("route add {dst:?} via {via:?} dev {name}"), msg)
}

/// Creates the veth pair with its sandbox end `eth0` made straight in the netns, and addresses and
/// raises both ends (`network::setup`'s configuration). Blocking: run it off the async workers.
pub(super) fn setup(l: &Links) -> Result<()> {
    let ns = std::fs::File::open(&l.netns_path).map_err(|source| Error::Io { path: l.netns_path.clone(), source })?;
    let mut host = Socket::open().map_err(|source| Error::Io { path: "rtnetlink socket".into(), source })?;
    let ns_fd = (ns.as_raw_fd() as u32).to_ne_bytes();
    let peer = Msg::new(0, 0, &[]).raw(&ifinfomsg(0, 0, 0)).name(libc::IFLA_IFNAME, "eth0");
    let msg = Msg::new(libc::RTM_NEWLINK, libc::NLM_F_CREATE | libc::NLM_F_EXCL, &ifinfomsg(0, 0, 0))
        .name(libc::IFLA_IFNAME, &l.veth)
        .nest(libc::IFLA_LINKINFO)
        .name(libc::IFLA_INFO_KIND, "veth")
        .nest(libc::IFLA_INFO_DATA)
        .nest(VETH_INFO_PEER)
        .raw(&peer.buf[NLMSG_HDRLEN..])
        .attr(libc::IFLA_NET_NS_FD, &ns_fd)
        .close()
        .close()
        .close();
    host.request(&|| format!("link add {} type veth peer name eth0 netns {}", l.veth, l.netns_path.display()), msg)?;
    // Before the link is up, so it never gets an IPv6 link-local address (the old path removed it right after).
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", l.veth), "1");
    add_address(&mut host, &l.veth, l.gateway, l.ip)?;
    link_up(&mut host, &l.veth)?;
    let (gw, ip, on_link) = (l.gateway, l.ip, l.on_link);
    std::thread::scope(|s| {
        s.spawn(move || -> Result<()> {
            // SAFETY: moves only this thread, which ends when the closure returns, into the netns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Io { path: "setns(sandbox netns)".into(), source: io::Error::last_os_error() });
            }
            let mut sock = Socket::open().map_err(|source| Error::Io { path: "rtnetlink socket".into(), source })?;
            link_up(&mut sock, "lo")?;
            add_address(&mut sock, "eth0", ip, if on_link { ip } else { gw })?;
            link_up(&mut sock, "eth0")?;
            if on_link {
                add_route(&mut sock, "eth0", Some(gw), None, libc::RT_SCOPE_LINK)?;
            }
            add_route(&mut sock, "eth0", None, Some(gw), libc::RT_SCOPE_UNIVERSE)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Invalid("the netns setup thread panicked".into())))
    })
}

/// Deletes host link `veth` (its peer goes with it); a link already gone is not an error.
pub(super) fn delete_link(veth: &str) -> Result<()> {
    let mut sock = Socket::open().map_err(|source| Error::Io { path: "rtnetlink socket".into(), source })?;
    let msg = Msg::new(libc::RTM_DELLINK, 0, &ifinfomsg(0, 0, 0)).name(libc::IFLA_IFNAME, veth);
    match sock.request(&|| format!("link del {veth}"), msg) {
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        r => r,
    }
}

/// What `ip netns del` does: detach the namespace's bind mount and remove the file (idempotent).
pub(super) fn delete_netns(path: &std::path::Path) -> Result<()> {
    use rustix::mount::{UnmountFlags, unmount};
    match unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(Error::Io { path: path.into(), source: e.into() }),
    }
    crate::util::remove_file_idem(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        d.extend_from_slice(&kind.to_ne_bytes());
        d.extend_from_slice(&flags.to_ne_bytes());
        d.extend_from_slice(&seq.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn acks_are_matched_by_sequence_and_carry_the_kernels_text() {
        let err = libc::NLMSG_ERROR as u16;
        assert_eq!(ack(&datagram(err, 0, 7, &[0; 20]), 7), Some(Ok(())));
        assert_eq!(ack(&datagram(err, 0, 6, &[0; 20]), 7), None, "another request's answer");
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; NLMSG_HDRLEN]); // the capped echo of the request's header
        let text = b"File exists\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let mut two = datagram(libc::NLMSG_DONE as u16, 0, 7, &[0; 4]);
        two.extend(datagram(err, NLM_F_CAPPED | NLM_F_ACK_TLVS, 7, &payload));
        assert_eq!(ack(&two, 7), Some(Err((libc::EEXIST, "File exists".into()))));
        assert_eq!(ack(&[1, 2, 3], 7), None, "a short datagram holds nothing");
    }

    #[test]
    fn nested_attributes_are_sized_and_aligned() {
        let m = Msg::new(libc::RTM_NEWLINK, 0, &ifinfomsg(0, 0, 0)).nest(18).name(1, "veth").close();
        // header 16 + ifinfomsg 16 + nest header 4 + (attr header 4 + "veth\0" 5 + 3 padding)
        assert_eq!(m.buf.len(), 48);
        assert_eq!(u16::from_ne_bytes([m.buf[32], m.buf[33]]), 16, "the nest covers its attribute");
        assert_eq!(u16::from_ne_bytes([m.buf[36], m.buf[37]]), 9, "an attribute's length excludes padding");
    }
}
