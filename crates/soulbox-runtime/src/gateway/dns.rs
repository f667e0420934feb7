//! The DNS side of the egress gateway: a sandbox with host rules has its DNS queries (UDP 53, to any server)
//! redirected here. A name its policy can never reach is answered NXDOMAIN at once — a denied lookup fails fast
//! instead of resolving to an address whose connections would then be refused — and every other query is passed
//! to the runtime's DNS servers and the answer relayed, so the names the sandbox asks for are the ones the
//! gateway judges.
use super::Shared;
use crate::spec::NetworkPolicy;
use hickory_resolver::proto::op::{Message, ResponseCode};
use soulbox_protocol::hosts;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// How long an upstream server may take to answer one query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn serve(socket: UdpSocket, upstreams: Vec<Ipv4Addr>, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "egress gateway: DNS receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let SocketAddr::V4(from) = from else { continue };
        let query = buf[..n].to_vec();
        let (socket, upstreams, shared) = (socket.clone(), upstreams.clone(), shared.clone());
        tokio::spawn(async move {
            if let Some(answer) = answer(&query, from, &upstreams, &shared).await {
                let _ = socket.send_to(&answer, from).await;
            }
        });
    }
}

async fn answer(query: &[u8], from: SocketAddrV4, upstreams: &[Ipv4Addr], shared: &Shared) -> Option<Vec<u8>> {
    let id = (shared.sandbox_of)(*from.ip())?;
    let policy = shared.fw.gateway_policy(&id)?;
    let message = Message::from_vec(query).ok()?;
    let refused = message.queries.iter().map(|q| q.name().to_ascii()).find(|name| never_reachable(&policy, name));
    if let Some(name) = refused {
        tracing::info!(sandbox = %id, name, "egress gateway: name denied (NXDOMAIN)");
        let mut reply = Message::error_msg(message.metadata.id, message.metadata.op_code, ResponseCode::NXDomain);
        reply.metadata.recursion_desired = message.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.queries = message.queries.clone();
        return reply.to_vec().ok();
    }
    let own = super::decide::dns_servers(&shared.fw, &policy).unwrap_or_default();
    let servers = match own.is_empty() && policy.dns_servers.is_empty() {
        true => upstreams,
        false => &own,
    };
    for server in servers {
        if let Some(reply) = ask(query, *server).await {
            return Some(reply);
        }
    }
    let mut reply = Message::error_msg(message.metadata.id, message.metadata.op_code, ResponseCode::ServFail);
    reply.queries = message.queries;
    reply.to_vec().ok()
}

/// One query to `server`, from a fresh socket (so replies cannot be confused between queries).
async fn ask(query: &[u8], server: Ipv4Addr) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.connect((server, 53)).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf)).await.ok()?.ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Whether no connection to `name` could ever pass: the name is denied (and not allowed), or everything is denied
/// by address and only allowed names get through. A name that might still resolve to an allowed address is
/// looked up as usual (its connections are judged then).
pub(super) fn never_reachable(p: &NetworkPolicy, name: &str) -> bool {
    let name = hosts::normalize(name);
    let named = |list: &[String]| list.iter().any(|pattern| hosts::matches(pattern, &name));
    if named(&p.allow_hosts) {
        return false;
    }
    let closed_by_address =
        p.allow_out.is_empty() && (!p.allow_internet || p.deny_out.iter().any(|c| c.trim() == "0.0.0.0/0"));
    named(&p.deny_hosts) || closed_by_address
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_that_can_never_pass_are_refused() {
        let only_good = NetworkPolicy {
            allow_internet: true,
            deny_out: vec!["0.0.0.0/0".into()],
            allow_hosts: vec!["good.test".into(), "*.wild.test".into()],
            ..Default::default()
        };
        assert!(!never_reachable(&only_good, "good.test."));
        assert!(!never_reachable(&only_good, "a.wild.test"));
        assert!(never_reachable(&only_good, "bad.test"), "deny-all: only allowed names resolve");
        let deny_bad =
            NetworkPolicy { allow_internet: true, deny_hosts: vec!["bad.test".into()], ..Default::default() };
        assert!(never_reachable(&deny_bad, "BAD.test."));
        assert!(!never_reachable(&deny_bad, "other.test"), "internet on: other names resolve");
        let with_address = NetworkPolicy { allow_out: vec!["203.0.113.7".into()], ..only_good };
        assert!(!never_reachable(&with_address, "bad.test"), "it might resolve to the allowed address");
    }
}
