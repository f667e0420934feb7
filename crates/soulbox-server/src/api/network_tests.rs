//! `PUT /sandboxes/{id}/network` and the network options of a create, over an in-memory node.

use http::StatusCode;
use serde_json::json;

use super::tests::{assert_e2b_error, harness};
use crate::node::NetworkPolicy;

#[tokio::test]
async fn an_update_replaces_the_policy_on_the_node_and_in_the_record() {
    let h = harness().await;
    let id = h.create(json!({})).await;
    let path = format!("/sandboxes/{id}/network");
    let body = json!({"allowOut": ["203.0.113.7"], "denyOut": ["0.0.0.0/0"], "dnsServers": ["8.8.8.8"]});
    let (status, _, answer) = h.call("PUT", &path, Some(body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let wanted = NetworkPolicy {
        allow_internet: true,
        allow_out: vec!["203.0.113.7".into()],
        deny_out: vec!["0.0.0.0/0".into()],
        dns_servers: vec![std::net::Ipv4Addr::new(8, 8, 8, 8)],
        ..Default::default()
    };
    assert_eq!(h.node.networks.lock().unwrap()[&id], wanted);
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(detail["network"]["dnsServers"], json!(["8.8.8.8"]), "{detail}");
    assert_eq!(detail["network"]["allowOut"], json!(["203.0.113.7"]), "{detail}");
    assert_eq!(detail["network"]["denyOut"], json!(["0.0.0.0/0"]), "{detail}");

    // Replace semantics: an empty body clears everything (internet back on).
    let (status, _, _) = h.call("PUT", &path, Some(json!({"allow_internet_access": false}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.node.networks.lock().unwrap()[&id], NetworkPolicy::default());
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(detail["allowInternetAccess"], false, "{detail}");
    let (status, _, _) = h.call("PUT", &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.node.networks.lock().unwrap()[&id], NetworkPolicy::open());
}

#[tokio::test]
async fn host_names_go_to_the_host_lists_and_read_back_as_given() {
    let h = harness().await;
    let id = h.create(json!({})).await;
    let body = json!({"allowOut": ["203.0.113.7", "API.example.com", "*.example.org"], "denyOut": ["0.0.0.0/0"]});
    let (status, _, answer) = h.call("PUT", &format!("/sandboxes/{id}/network"), Some(body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let policy = h.node.networks.lock().unwrap()[&id].clone();
    assert_eq!(policy.allow_out, ["203.0.113.7"]);
    assert_eq!(policy.allow_hosts, ["api.example.com", "*.example.org"]);
    assert_eq!(policy.deny_out, ["0.0.0.0/0"]);
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(detail["network"]["allowOut"], json!(["203.0.113.7", "api.example.com", "*.example.org"]), "{detail}");
    // The same at create, through the record.
    let create = json!({"templateID": "base", "network": {"allowOut": ["api.example.com"], "denyOut": ["0.0.0.0/0"]}});
    let (status, _, created) = h.call("POST", "/v2/sandboxes", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{}", created["sandboxID"].as_str().unwrap()), None).await;
    assert_eq!(detail["network"]["allowOut"], json!(["api.example.com"]), "{detail}");
}

#[tokio::test]
async fn an_egress_proxy_reaches_the_node_and_its_password_never_comes_back() {
    let h = harness().await;
    let id = h.create(json!({})).await;
    let proxy = json!({"address": "203.0.113.9:1080", "username": "agent", "password": "s3cret-pw"});
    let (status, _, answer) =
        h.call("PUT", &format!("/sandboxes/{id}/network"), Some(json!({"egressProxy": proxy}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let sent = h.node.networks.lock().unwrap()[&id].egress_proxy.clone().expect("the node got the proxy");
    assert_eq!((sent.address.as_str(), sent.password.as_deref()), ("203.0.113.9:1080", Some("s3cret-pw")));
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(
        detail["network"]["egressProxy"],
        json!({"address": "203.0.113.9:1080", "username": "agent"}),
        "{detail}"
    );
    assert!(!detail.to_string().contains("s3cret-pw"), "{detail}");
    // At create too, and forks keep it.
    let create = json!({"templateID": "base", "network": {"egressProxy": proxy}});
    let (status, _, created) = h.call("POST", "/v2/sandboxes", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains("s3cret-pw"));
    // An update without it stops tunnelling (replace semantics).
    let (status, _, _) = h.call("PUT", &format!("/sandboxes/{id}/network"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.node.networks.lock().unwrap()[&id].egress_proxy, None);
}

#[tokio::test]
async fn bad_updates_are_e2b_errors_and_change_nothing() {
    let h = harness().await;
    let id = h.create(json!({})).await;
    let path = format!("/sandboxes/{id}/network");
    for body in [
        json!({"allowOut": ["api.*.example.com"]}),
        json!({"denyOut": ["::/0"]}),
        json!({"allowOut": ["169.254.169.254"]}),
        json!({"rules": {"api.*.example.com": [{"transform": {"headers": {"X": "y"}}}]}}),
        json!({"rules": {"api.example.com": [{"transform": {"headers": {"bad header": "y"}}}]}}),
        json!({"rules": {"api.example.com": [{"transform": {"headers": {"X": "${e2b.identity.tokens.aws}"}}}]}}),
        json!({"rules": {"api.example.com": [{"transform": {"headers": {"X": "${e2b.secrets.open"}}}]}}),
        json!({"egressProxy": {"address": "203.0.113.9:1080", "tls": {}}}),
        json!({"egressProxy": {"address": "10.0.0.1:1080"}}),
        json!({"egressProxy": {"address": "169.254.169.254:1080"}}),
        json!({"egressProxy": {"address": "203.0.113.9"}}),
        json!({"egressProxy": {"address": "203.0.113.9:1080", "password": "no-user"}}),
        json!({"dnsServers": ["dns.google"]}),
        json!({"dnsServers": ["10.0.0.2"]}),
        json!({"allowOut": "not a list"}),
    ] {
        let (status, _, answer) = h.call("PUT", &path, Some(body.clone())).await;
        assert_e2b_error(status, &answer, StatusCode::BAD_REQUEST);
    }
    assert!(h.node.networks.lock().unwrap().is_empty(), "a refused update reached the node");
    let (status, _, answer) = h.call("PUT", "/sandboxes/inosuchsandbox/network", Some(json!({}))).await;
    assert_e2b_error(status, &answer, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn private_sandboxes_get_a_token_and_forks_get_their_own() {
    let h = harness().await;
    let create =
        json!({"templateID": "base", "network": {"allowPublicTraffic": false, "maskRequestHost": "${PORT}-app.test"}});
    let (status, _, created) = h.call("POST", "/v2/sandboxes", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["trafficAccessToken"].as_str().expect("a private sandbox has a traffic access token");
    assert!(token.len() >= 32, "{token}");
    let id = created["sandboxID"].as_str().unwrap();
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(detail["network"]["allowPublicTraffic"], false, "{detail}");
    assert_eq!(detail["network"]["maskRequestHost"], "${PORT}-app.test", "{detail}");
    // Connect hands out the same token.
    let (_, _, connected) = h.call("POST", &format!("/sandboxes/{id}/connect"), Some(json!({"timeout": 60}))).await;
    assert_eq!(connected["trafficAccessToken"], token, "{connected}");
    // A fork is private too, with a token of its own.
    let (status, _, forks) = h.call("POST", &format!("/sandboxes/{id}/fork"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{forks}");
    let fork_token = forks[0]["sandbox"]["trafficAccessToken"].as_str().expect("a private fork has a token");
    assert_ne!(fork_token, token);

    // Public by default: no token.
    let (_, _, public) = h.call("POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
    assert!(public["trafficAccessToken"].is_null(), "{public}");
    // A mask that is not a host is refused.
    let bad = json!({"templateID": "base", "network": {"maskRequestHost": "a\r\nX-Evil: 1"}});
    let (status, _, answer) = h.call("POST", "/v2/sandboxes", Some(bad)).await;
    assert_e2b_error(status, &answer, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn header_rules_reach_the_node_and_read_back_without_secret_values() {
    let h = harness().await;
    let headers = json!({"Authorization": "Bearer ${e2b.secrets.openai}", "X-Plain": "yes"});
    let create =
        json!({"templateID": "base", "network": {"rules": {"API.test": [{"transform": {"headers": headers}}]}}});
    let (status, _, created) = h.call("POST", "/v2/sandboxes", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["sandboxID"].as_str().unwrap();
    let (_, _, detail) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(detail["network"]["rules"]["api.test"][0]["transform"]["headers"], headers, "{detail}");
    // An update replaces them; the node gets the new rules, placeholders and all.
    let update = json!({"rules": {"203.0.113.0/24": [{"transform": {"headers": {"X-Key": "${e2b.secrets.k}"}}}]}});
    let (status, _, answer) = h.call("PUT", &format!("/sandboxes/{id}/network"), Some(update)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let rules = h.node.networks.lock().unwrap()[id].rules.clone();
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0].host.as_str(), rules[0].headers["X-Key"].as_str()), ("203.0.113.0/24", "${e2b.secrets.k}"));
    // A bad rule at create is refused before anything is made.
    let bad = json!({"templateID": "base", "network": {"rules": {"a b": [{}]}}});
    let (status, _, answer) = h.call("POST", "/v2/sandboxes", Some(bad)).await;
    assert_e2b_error(status, &answer, StatusCode::BAD_REQUEST);
}
