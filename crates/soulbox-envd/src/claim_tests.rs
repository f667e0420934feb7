//! The claim of a pooled agent over real HTTP (`http::claim`): the pool's secret stops working the moment the
//! claim answers, the configuration is the claim's alone, and the route answers once.

use std::sync::atomic::Ordering;

use soulbox_protocol::envd_init::CLAIM_PATH;
use soulbox_protocol::envd_secret::HEADER;

use crate::node_secret_tests::{request, start};

const POOL: &str = "pool-secret-0123456789abcdef0123456789abcdef0123456789abcdef";
const REAL: &str = "real-secret-0123456789abcdef0123456789abcdef0123456789abcdef";

fn claim_body(secret: &str, token: &str) -> Vec<u8> {
    serde_json::json!({
        "accessToken": token, "envdSecret": secret, "sandboxId": "sbx-real",
        "envVars": {"ONLY": "mine"}, "defaultUser": "user", "defaultWorkdir": "/home/user",
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_claim_rotates_the_secret_and_replaces_the_configuration() {
    let (addr, state) = start(Some(POOL), None).await;
    state.update_config(crate::state::InitRequest {
        env_vars: Some([("POOL_ONLY".to_string(), "x".to_string())].into()),
        sandbox_id: Some("pool-id".into()),
        ..Default::default()
    });
    state.pooled.store(true, Ordering::SeqCst);
    let json = [("Content-Type", "application/json")];
    let with = |s: &'static str| vec![(HEADER, s), json[0]];

    // Without the pool's secret nothing is claimed.
    let reply = request(addr, "POST", CLAIM_PATH, &json, &claim_body(REAL, "tok")).await;
    assert!(reply.refused_for_secret(), "{} {}", reply.head, reply.body);
    // A claim without a secret of its own is refused (it would leave the pool's one working).
    let reply = request(addr, "POST", CLAIM_PATH, &with(POOL), br#"{"sandboxId":"x"}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(state.pooled.load(Ordering::SeqCst));

    let reply = request(addr, "POST", CLAIM_PATH, &with(POOL), &claim_body(REAL, "tok")).await;
    assert_eq!(reply.status, 204, "{} {}", reply.head, reply.body);
    let config = state.config();
    assert_eq!(config.sandbox_id.as_deref(), Some("sbx-real"));
    assert_eq!(config.access_token.as_deref(), Some("tok"));
    assert_eq!(config.env_vars, [("ONLY".to_string(), "mine".to_string())].into(), "nothing of the pool's stays");

    // The pool's secret is dead on every route; the real one works.
    for target in ["/health", "/envs", CLAIM_PATH] {
        let reply = request(addr, "GET", target, &[(HEADER, POOL)], b"").await;
        assert!(reply.refused_for_secret(), "{target} with the pool's secret: {}", reply.head);
    }
    let reply = request(addr, "GET", "/health", &[(HEADER, REAL)], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("sbx-real"), "{}", reply.body);

    // Once only: a second claim (even with the real secret and token) finds no route.
    let again = [(HEADER, REAL), ("X-Access-Token", "tok"), json[0]];
    let reply = request(addr, "POST", CLAIM_PATH, &again, &claim_body("attacker-secret", "tok")).await;
    assert_eq!(reply.status, 404, "{} {}", reply.head, reply.body);
    assert_eq!(state.node_secret().as_deref(), Some(REAL));
}

#[tokio::test]
async fn an_agent_not_started_pooled_has_no_claim_route() {
    let (addr, state) = start(Some(REAL), None).await;
    let reply = request(addr, "POST", CLAIM_PATH, &[(HEADER, REAL)], &claim_body("attacker-secret", "t")).await;
    assert_eq!(reply.status, 404, "{} {}", reply.head, reply.body);
    assert_eq!(state.node_secret().as_deref(), Some(REAL));
    assert_eq!(state.config().access_token, None);
}
