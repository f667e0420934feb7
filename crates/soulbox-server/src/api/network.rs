//! `PUT /sandboxes/{id}/network` (E2B's live network update) and the network options a create may not use yet.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::SandboxNetworkUpdate;

use super::sandboxes::body;
use super::{ApiState, error};
use crate::store::Caller;

/// Most DNS servers a sandbox may name (E2B's limit).
const MAX_DNS_SERVERS: usize = 10;

/// `dnsServers`: IPv4 addresses, at most ten. They open the firewall only for domain entries in `allowOut`, which
/// SoulBox does not take, so beyond this check they change nothing.
fn check_dns_servers(servers: &[String]) -> Result<(), String> {
    if servers.len() > MAX_DNS_SERVERS {
        return Err(format!("at most {MAX_DNS_SERVERS} dnsServers"));
    }
    match servers.iter().find(|s| s.parse::<std::net::Ipv4Addr>().is_err()) {
        Some(bad) => Err(format!("dnsServers entry {bad:?} is not an IPv4 address")),
        None => Ok(()),
    }
}

pub async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let update: SandboxNetworkUpdate = match body(&bytes) {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    if let Some(message) = crate::egress::unsupported(update.egress_proxy.as_ref()) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let rules = match crate::egress::header_rules(update.rules.as_ref()) {
        Ok(rules) => rules,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Err(message) = check_dns_servers(update.dns_servers.as_deref().unwrap_or_default()) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    // Replace, not merge: what the update leaves out is cleared.
    let mut policy = crate::egress::policy(
        update.allow_internet_access.unwrap_or(true),
        &update.allow_out.unwrap_or_default(),
        &update.deny_out.unwrap_or_default(),
    );
    policy.rules = rules;
    policy.egress_proxy = match update.egress_proxy.as_ref().map(crate::egress::socks_proxy).transpose() {
        Ok(proxy) => proxy,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.lifecycle.update_network(&caller.team_id, &id, policy).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_servers_are_ipv4_and_few() {
        assert!(check_dns_servers(&["8.8.8.8".into()]).is_ok());
        assert!(check_dns_servers(&["dns.google".into()]).is_err());
        assert!(check_dns_servers(&vec!["1.1.1.1".into(); 11]).is_err());
    }
}
