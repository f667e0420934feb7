//! `PUT /sandboxes/{id}/network` (E2B's live network update).

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::SandboxNetworkUpdate;

use super::json_body::JsonBody;
use super::{ApiState, error};
use crate::store::Caller;

pub async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<SandboxNetworkUpdate>,
) -> Response {
    if let Some(message) = crate::egress::unsupported(update.egress_proxy.as_ref()) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let rules = match crate::egress::header_rules(update.rules.as_ref()) {
        Ok(rules) => rules,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let allow_private = state.lifecycle.config().allow_private_egress;
    let dns_servers = match crate::egress::dns_servers(update.dns_servers.as_deref().unwrap_or_default(), allow_private)
    {
        Ok(servers) => servers,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // Replace, not merge: what the update leaves out is cleared.
    let mut policy = crate::egress::policy(
        update.allow_internet_access.unwrap_or(true),
        &update.allow_out.unwrap_or_default(),
        &update.deny_out.unwrap_or_default(),
    );
    policy.rules = rules;
    policy.dns_servers = dns_servers;
    policy.egress_proxy = match update.egress_proxy.as_ref().map(crate::egress::socks_proxy).transpose() {
        Ok(proxy) => proxy,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.lifecycle.update_network(&caller.team_id, &id, policy).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
