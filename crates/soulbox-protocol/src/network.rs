//! A sandbox's egress policy as the control plane hands it to a node and the node's firewall applies it.
//! (E2B's REST shape for the same settings, with its optional fields, is [`crate::api::SandboxNetworkConfig`].)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    /// E2B `allowInternetAccess` (default true at the API).
    pub allow_internet: bool,
    /// CIDRs always allowed (take precedence over deny and over internet off).
    #[serde(default)]
    pub allow_out: Vec<String>,
    /// CIDRs always denied.
    #[serde(default)]
    pub deny_out: Vec<String>,
}

impl NetworkPolicy {
    /// Internet on, no lists.
    pub fn open() -> Self {
        NetworkPolicy { allow_internet: true, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let p = NetworkPolicy { allow_internet: false, allow_out: vec!["1.1.1.1/32".into()], deny_out: vec![] };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"allowInternet":false,"allowOut":["1.1.1.1/32"],"denyOut":[]}"#);
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&json).unwrap(), p);
        // The lists may be left out; the switch may not.
        assert_eq!(serde_json::from_str::<NetworkPolicy>(r#"{"allowInternet":true}"#).unwrap(), NetworkPolicy::open());
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"allowOut":[]}"#).is_err());
    }
}
