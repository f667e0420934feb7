//! A sandbox's network settings in E2B's REST shape: on create (`network`), in `GET /sandboxes/{id}`, and the
//! live update `PUT /sandboxes/{id}/network` (spec §1.5 "SandboxNetworkConfig").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header that carries a private sandbox's `trafficAccessToken` on requests to its ports (E2B's name; HTTP
/// header names are case-insensitive).
pub const TRAFFIC_ACCESS_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// The placeholder `maskRequestHost` may hold: replaced by the port the request goes to.
pub const MASK_PORT_PLACEHOLDER: &str = "${PORT}";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// `false`: the sandbox's ports answer only requests carrying its `trafficAccessToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// The `Host` requests to the sandbox's ports arrive with (`${PORT}` replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<NetworkRule>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
}

/// Body of `PUT /sandboxes/{id}/network`: replaces the egress settings; whatever is left out is cleared
/// (internet access back on, no lists, no rules, no proxy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetworkUpdate {
    #[serde(rename = "allow_internet_access", default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<NetworkRule>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
}

/// One rule for requests to a host (`rules: {host: [rule, …]}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<NetworkTransform>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkTransform {
    /// Headers set on matching requests (values may hold `${e2b.secrets.NAME}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A SOCKS5 proxy the sandbox's outbound TCP is tunnelled through.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressProxy {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Write-only: never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EgressProxyTls>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressProxyTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_update_body_parses() {
        // What e2b 2.63's `update_network` sends (Python `SandboxNetworkUpdateConfig.to_dict`).
        let body = r#"{"allowOut":["1.1.1.1"],"denyOut":["0.0.0.0/0"],"dnsServers":["8.8.8.8"],
            "rules":{"api.example.com":[{"transform":{"headers":{"Authorization":"Bearer x"}}}]},
            "egressProxy":{"address":"proxy:1080","username":"u","password":"p"},"allow_internet_access":false}"#;
        let u: SandboxNetworkUpdate = serde_json::from_str(body).unwrap();
        assert_eq!(u.allow_internet_access, Some(false));
        assert_eq!(u.allow_out.as_deref(), Some(&["1.1.1.1".to_string()][..]));
        let rule = &u.rules.as_ref().unwrap()["api.example.com"][0];
        assert_eq!(rule.transform.as_ref().unwrap().headers.as_ref().unwrap()["Authorization"], "Bearer x");
        let proxy = u.egress_proxy.unwrap();
        assert!(!format!("{proxy:?}").contains("\"p\""), "the password never reaches a log");
        // The SDK sends `egressProxy: null` for "no proxy".
        let u: SandboxNetworkUpdate = serde_json::from_str(r#"{"egressProxy":null}"#).unwrap();
        assert_eq!(u, SandboxNetworkUpdate::default());
    }

    #[test]
    fn create_config_keeps_e2b_names() {
        let c: SandboxNetworkConfig =
            serde_json::from_str(r#"{"allowPublicTraffic":false,"maskRequestHost":"${PORT}-x.example.com"}"#).unwrap();
        assert_eq!(c.allow_public_traffic, Some(false));
        assert_eq!(c.mask_request_host.as_deref(), Some("${PORT}-x.example.com"));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"allowPublicTraffic":false,"maskRequestHost":"${PORT}-x.example.com"}"#
        );
    }
}
