//! The node API's JSON (server ⇄ node agent). Every request carries the node's secret in [`SECRET_HEADER`];
//! heartbeats to the server carry the cluster's node token as `Authorization: Bearer`.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::node::{NodeError, NodeInfo, NodeStatus};

/// Header with the node's own secret on every control-plane → node request (node API and proxied traffic). A
/// dedicated header, so proxied requests keep their own `Authorization` for the sandbox's services.
pub const SECRET_HEADER: &str = "x-soulbox-node-secret";
/// On proxied traffic to a node agent: the `Host` the sandbox's port is to see (the sandbox's `maskRequestHost`),
/// which only the control plane knows. Taken from the control plane only; dropped from any client's request.
pub const HOST_HEADER: &str = "x-soulbox-sandbox-host";
/// On a volume content request forwarded to the volume's node: the volume's size limit in bytes (a server
/// setting the node does not have). Absent: no limit.
pub const VOLUME_LIMIT_HEADER: &str = "x-soulbox-volume-size-limit";
/// The server's endpoint for registration and heartbeats.
pub const HEARTBEAT_PATH: &str = "/cluster/heartbeat";
pub const NODE_API_PREFIX: &str = "/node/v1";

/// The node API path of volume `id` (`PUT` makes it, `DELETE` removes it; `/{path|dir|file}` below it serve the
/// content API's operations on it).
pub fn volume_path(id: &str) -> String {
    format!("/volumes/{}", percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC))
}
/// `PUT` of [`volume_path`]: the new volume's size (its image's; `None`: a plain directory, no limit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewNodeVolume {
    pub size_bytes: Option<u64>,
}
/// Where a node agent gets the installation's egress CA (certificate and key) before it opens its runtime.
pub const EGRESS_CA_PATH: &str = "/cluster/egress-ca";
/// Where a node agent's egress gateway asks for a header rule's secret as a request leaves.
pub const SECRET_PATH: &str = "/cluster/secret";

/// `POST /cluster/secret`: the secret `name` of the team owning `sandbox_id`, which runs on `node_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRequest {
    pub node_id: String,
    pub sandbox_id: String,
    pub name: String,
}

/// The answer: `None` when the team has no such secret. Never logged.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretResponse {
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// Where the control plane reaches the node agent (`http://host:port`).
    pub address: String,
    /// The secret the control plane must present to the node.
    pub secret: String,
    pub info: NodeInfo,
    /// Sandboxes the node holds (running, paused or stopped to disk), except those created in the last few
    /// seconds (their records may not be written yet). What reconciliation compares.
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub status: NodeStatus,
    /// Sandboxes the control plane no longer knows: the node kills them.
    pub kill: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseRequest {
    pub keep_memory: bool,
}

/// Node API `DELETE /templates/{name}`: whether there was one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedResponse {
    pub deleted: bool,
}

/// Node API `POST /layers/missing`: which of these layers the node lacks (the answer's `missing`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerList {
    pub layers: Vec<String>,
}

/// Node API `POST /sandboxes/{id}/snapshot`: the template to capture the sandbox into.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressResponse {
    pub address: std::net::IpAddr,
}

/// A node API error: `kind` names the [`NodeError`] variant so it survives the hop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: String,
    pub message: String,
}

impl ErrorBody {
    pub fn from_error(e: &NodeError) -> (http::StatusCode, ErrorBody) {
        use http::StatusCode as S;
        let (status, kind, message) = match e {
            NodeError::SandboxNotFound(m) => (S::NOT_FOUND, "sandbox_not_found", m),
            NodeError::TemplateNotFound(m) => (S::NOT_FOUND, "template_not_found", m),
            NodeError::Invalid(m) => (S::BAD_REQUEST, "invalid", m),
            NodeError::NoCapacity(m) => (S::SERVICE_UNAVAILABLE, "no_capacity", m),
            NodeError::Failed(m) => (S::INTERNAL_SERVER_ERROR, "failed", m),
            NodeError::Unreachable(m) => (S::BAD_GATEWAY, "unreachable", m),
            NodeError::NodeNotFound(m) => (S::NOT_FOUND, "node_not_found", m),
        };
        (status, ErrorBody { kind: kind.into(), message: message.clone() })
    }

    pub fn into_error(self) -> NodeError {
        match self.kind.as_str() {
            "sandbox_not_found" => NodeError::SandboxNotFound(self.message),
            "template_not_found" => NodeError::TemplateNotFound(self.message),
            "invalid" => NodeError::Invalid(self.message),
            "no_capacity" => NodeError::NoCapacity(self.message),
            "unreachable" => NodeError::Unreachable(self.message),
            "node_not_found" => NodeError::NodeNotFound(self.message),
            _ => NodeError::Failed(self.message),
        }
    }
}

/// Constant-time check of a node's `Authorization: Bearer <token>` against the cluster's node token.
pub fn token_matches(expected: &str, authorization: Option<&str>) -> bool {
    let presented = authorization.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or_default();
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// Node ids name rows, log lines and URLs: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_ids() {
        assert!(token_matches("secret", Some("Bearer secret")));
        assert!(!token_matches("secret", Some("Bearer secreT")));
        assert!(!token_matches("secret", Some("secret")));
        assert!(!token_matches("secret", None));
        assert!(!token_matches("", Some("Bearer ")));
        assert!(valid_node_id("node-1"));
        assert!(!valid_node_id("-x") && !valid_node_id("Node") && !valid_node_id("") && !valid_node_id("a/b"));
    }

    #[test]
    fn errors_survive_the_hop() {
        for e in [
            NodeError::SandboxNotFound("i1".into()),
            NodeError::TemplateNotFound("t".into()),
            NodeError::Invalid("bad".into()),
            NodeError::NoCapacity("full".into()),
            NodeError::Failed("boom".into()),
        ] {
            let (_, body) = ErrorBody::from_error(&e);
            let json = serde_json::to_string(&body).unwrap();
            let back: ErrorBody = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_error().to_string(), e.to_string());
        }
    }
}
