//! Who may reach a sandbox's ports through the proxy, and with which `Host` (E2B's `allowPublicTraffic` and
//! `maskRequestHost`).
//!
//! A private sandbox (`allowPublicTraffic: false`) gets a `trafficAccessToken` at create; every request to one of
//! its ports must carry it in `e2b-traffic-access-token`, checked before anything else happens for the request —
//! in particular before a paused sandbox is woken, so a stranger who knows the id can neither reach a port nor
//! resume the sandbox. envd's port is not a user port: it keeps its own access token (`X-Access-Token`) and is
//! not checked here. The header is removed before a request goes on, so a sandbox's service never learns the
//! token.

use http::{HeaderMap, HeaderValue};
use soulbox_protocol::ENVD_PORT;
use soulbox_protocol::api::{MASK_PORT_PLACEHOLDER, TRAFFIC_ACCESS_TOKEN_HEADER};
use subtle::ConstantTimeEq;

use crate::store::Ingress;

/// Longest `maskRequestHost` (a host name is at most 253 characters, plus a port).
const MAX_MASK_LEN: usize = 260;

/// Whether a request to `port` of a sandbox with `ingress` may pass.
pub fn admits(ingress: &Ingress, port: u16, headers: &HeaderMap) -> bool {
    let Some(token) = ingress.traffic_access_token.as_deref().filter(|_| port != ENVD_PORT) else {
        return true;
    };
    let mut offered = headers.get_all(TRAFFIC_ACCESS_TOKEN_HEADER).iter();
    match (offered.next(), offered.next()) {
        (Some(value), None) => value.as_bytes().ct_eq(token.as_bytes()).into(),
        // None, or several (which one would count is the kind of ambiguity an attacker looks for).
        _ => false,
    }
}

/// The `Host` a request to `port` arrives with, when the sandbox masks it (never on envd's port).
pub fn masked_host(ingress: &Ingress, port: u16) -> Option<HeaderValue> {
    let mask = ingress.mask_request_host.as_deref().filter(|_| port != ENVD_PORT)?;
    HeaderValue::from_str(&mask.replace(MASK_PORT_PLACEHOLDER, &port.to_string())).ok()
}

/// Checks a create's `maskRequestHost`: a host (with `${PORT}` where the port goes), usable as a `Host` header.
pub fn check_mask(mask: &str) -> Result<(), String> {
    let example = mask.replace(MASK_PORT_PLACEHOLDER, "65535");
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']');
    if mask.is_empty() || mask.len() > MAX_MASK_LEN || !example.chars().all(allowed) {
        return Err(format!(
            "maskRequestHost {mask:?} is not a host: letters, digits, '.', '-', '_', ':' and {MASK_PORT_PLACEHOLDER} only, \
             at most {MAX_MASK_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private() -> Ingress {
        Ingress { traffic_access_token: Some("tok".into()), mask_request_host: None }
    }

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRAFFIC_ACCESS_TOKEN_HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn private_ports_need_exactly_the_token() {
        assert!(admits(&private(), 8080, &with(&["tok"])));
        for headers in [with(&[]), with(&["nope"]), with(&["tok", "tok"]), with(&["to"]), with(&["tokk"])] {
            assert!(!admits(&private(), 8080, &headers), "{headers:?}");
        }
        // envd keeps its own token; public sandboxes take anyone.
        assert!(admits(&private(), ENVD_PORT, &with(&[])));
        assert!(admits(&Ingress::default(), 8080, &with(&[])));
    }

    #[test]
    fn masks_name_the_port_and_must_be_hosts() {
        let ingress = Ingress { traffic_access_token: None, mask_request_host: Some("${PORT}-app.example.com".into()) };
        assert_eq!(masked_host(&ingress, 3000).unwrap(), "3000-app.example.com");
        assert_eq!(masked_host(&ingress, ENVD_PORT), None);
        assert!(check_mask("${PORT}-app.example.com").is_ok());
        assert!(check_mask("localhost:8080").is_ok());
        for bad in ["", "a b", "evil\r\nX-Injected: 1", "a/b", &"a".repeat(300)] {
            assert!(check_mask(bad).is_err(), "{bad:?}");
        }
    }
}
