//! Teams and roles over the API with an in-memory node: another team's sandboxes answer exactly like unknown
//! ones, members get 403 on the admin routes, private egress needs the setting, limits answer 429.

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::lifecycle::LifecycleConfig;
use crate::store::{DEFAULT_TEAM_NAME, Role, Store, TeamLimits};
use crate::testing::FakeNode;

pub(super) struct Teams {
    pub(super) app: axum::Router,
    pub(super) a: String,
    pub(super) b: String,
    pub(super) admin: String,
    pub(super) store: Store,
    pub(super) node: std::sync::Arc<FakeNode>,
    _dir: tempfile::TempDir,
}

pub(super) async fn teams(config: LifecycleConfig) -> Teams {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db")))
        .await
        .unwrap()
        .with_secret_box(crate::secret_box::SecretBox::random());
    let (_, admin) = store.create_api_key_in("ops", DEFAULT_TEAM_NAME, Role::Admin).await.unwrap();
    let (_, a) = store.create_api_key_in("a", "team-a", Role::Member).await.unwrap();
    let (_, b) = store.create_api_key_in("b", "team-b", Role::Member).await.unwrap();
    let node = std::sync::Arc::new(FakeNode::default());
    let lifecycle = Lifecycle::start(store.clone(), node.clone(), config).await.unwrap();
    let state = ApiState {
        lifecycle,
        metrics: std::sync::Arc::new(MetricsStore::default()),
        domain: None,
        started: std::time::Instant::now(),
    };
    Teams { app: router(state), a: a.secret, b: b.secret, admin: admin.secret, store, node, _dir: dir }
}

impl Teams {
    pub(super) async fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, value) =
            super::tests::send(&self.app, method, path, body.map(|b| b.to_string()), Some(key)).await;
        (status, value)
    }

    pub(super) async fn create(&self, key: &str) -> Value {
        let (status, body) = self.call(key, "POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

pub(super) fn e2b_error(status: StatusCode, body: &Value, want: StatusCode) -> String {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["code"], want.as_u16(), "{body}");
    body["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn another_teams_sandbox_answers_like_an_unknown_one() {
    let t = teams(LifecycleConfig::default()).await;
    let created = t.create(&t.a).await;
    let id = created["sandboxID"].as_str().unwrap();
    let token = created["envdAccessToken"].as_str().unwrap();
    let (status, own) = t.call(&t.a, "GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!((status, own["envdAccessToken"].as_str()), (StatusCode::OK, Some(token)));

    // Every sandbox route, by team B: the same 404 as for an id that does not exist.
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/sandboxes/{id}"), None),
        ("DELETE", format!("/sandboxes/{id}"), None),
        ("POST", format!("/sandboxes/{id}/connect"), Some(json!({"timeout": 60}))),
        ("POST", format!("/v2/sandboxes/{id}/connect"), Some(json!({"timeout": 60}))),
        ("POST", format!("/sandboxes/{id}/timeout"), Some(json!({"timeout": 60}))),
        ("POST", format!("/sandboxes/{id}/refreshes"), Some(json!({"duration": 60}))),
        ("POST", format!("/sandboxes/{id}/pause"), None),
        ("POST", format!("/sandboxes/{id}/resume"), Some(json!({}))),
        ("GET", format!("/sandboxes/{id}/metrics"), None),
        ("GET", format!("/sandboxes/{id}/logs"), None),
    ];
    for (method, path, body) in routes {
        let (status, theirs) = t.call(&t.b, method, &path, body.clone()).await;
        let message = e2b_error(status, &theirs, StatusCode::NOT_FOUND);
        assert!(!theirs.to_string().contains(token), "{method} {path} leaked the token: {theirs}");
        let unknown = path.replace(id, "inosuchsandbox");
        let (status, missing) = t.call(&t.b, method, &unknown, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {unknown}");
        assert_eq!(
            message.replace(id, "inosuchsandbox"),
            missing["message"].as_str().unwrap(),
            "{method} {path}: distinguishable"
        );
    }
    // Listings and batch metrics leave it out.
    for path in ["/v2/sandboxes", "/sandboxes", "/v2/sandboxes?state=running,paused"] {
        let (status, list) = t.call(&t.b, "GET", path, None).await;
        assert_eq!((status, list), (StatusCode::OK, json!([])), "{path}");
    }
    let (_, many) = t.call(&t.b, "GET", &format!("/sandboxes/metrics?sandbox_ids={id}"), None).await;
    assert_eq!(many, json!({"sandboxes": {}}));

    // Nothing happened to it, and team A still has it all.
    assert_eq!(t.node.sandboxes.lock().unwrap().get(id), Some(&false), "still running");
    let (_, list) = t.call(&t.a, "GET", "/v2/sandboxes", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(t.call(&t.a, "DELETE", &format!("/sandboxes/{id}"), None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn members_get_403_on_admin_routes_and_the_admin_manages_keys() {
    let t = teams(LifecycleConfig::default()).await;
    let admin_routes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/nodes", None),
        ("GET", "/nodes/local", None),
        ("DELETE", "/nodes/local", None),
        ("POST", "/nodes/local/drain", None),
        ("POST", "/nodes/local/undrain", None),
        ("POST", "/nodes/local/evacuate", None),
        ("GET", "/api-keys", None),
        ("POST", "/api-keys", Some(json!({"name": "sneaky"}))),
        ("DELETE", "/api-keys/key_000000000000", None),
    ];
    for (method, path, body) in &admin_routes {
        let (status, answer) = t.call(&t.a, method, path, body.clone()).await;
        let message = e2b_error(status, &answer, StatusCode::FORBIDDEN);
        assert!(message.contains("admin"), "{method} {path}: {message}");
    }
    assert_eq!(t.call(&t.admin, "GET", "/nodes", None).await.0, StatusCode::OK);
    // One machine: its node is never draining, so there is nothing to evacuate.
    let (status, answer) = t.call(&t.admin, "POST", "/nodes/local/evacuate", None).await;
    assert!(e2b_error(status, &answer, StatusCode::CONFLICT).contains("not draining"), "{answer}");
    // Refused before its body was read: hyper closes such a connection, so the answer says so (a keep-alive
    // client would otherwise send its next request into a closed connection).
    let refused = Request::post("/admin/teams/team_default/api-keys")
        .header("x-api-key", &t.a)
        .header("content-length", "12")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    let refused = t.app.clone().oneshot(refused).await.unwrap();
    assert_eq!(
        (refused.status(), refused.headers().get("connection").map(|v| v.to_str().unwrap())),
        (StatusCode::FORBIDDEN, Some("close"))
    );

    // The admin's key management, in E2B's shapes.
    let (status, created) = t.call(&t.admin, "POST", "/api-keys", Some(json!({"name": "ci"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let new_key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["mask"]["prefix"], "e2b_");
    let (_, keys) = t.call(&t.admin, "GET", "/api-keys", None).await;
    // Keys made within one millisecond are listed in random-id order: compare by name.
    let mut listed: Vec<(&str, &str)> =
        keys.as_array().unwrap().iter().map(|k| (k["name"].as_str().unwrap(), k["role"].as_str().unwrap())).collect();
    listed.sort();
    assert_eq!(listed, [("a", "member"), ("b", "member"), ("ci", "member"), ("ops", "admin")]);
    assert!(!keys.to_string().contains(&new_key), "secrets are never listed");
    let (_, teams) = t.call(&new_key, "GET", "/teams", None).await;
    assert_eq!(teams[0]["name"], DEFAULT_TEAM_NAME, "a key the admin makes is in the admin's team");
    assert_eq!(t.call(&new_key, "GET", "/nodes", None).await.0, StatusCode::FORBIDDEN, "and a member");
    let id = created["id"].as_str().unwrap();
    assert_eq!(t.call(&t.admin, "DELETE", &format!("/api-keys/{id}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.call(&new_key, "GET", "/teams", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(t.call(&t.admin, "DELETE", &format!("/api-keys/{id}"), None).await.0, StatusCode::NOT_FOUND);

    // GET /teams: the caller's own team, E2B's shape.
    let (status, teams) = t.call(&t.b, "GET", "/teams", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(teams.as_array().unwrap().len(), 1);
    assert_eq!(
        (teams[0]["name"].as_str(), teams[0]["apiKey"].as_str(), teams[0]["isDefault"].as_bool()),
        (Some("team-b"), Some(t.b.as_str()), Some(true))
    );
    assert!(teams[0]["teamID"].as_str().is_some_and(|id| id.starts_with("team_")));
    assert_eq!(teams[0]["limits"]["maxSandboxes"], TeamLimits::default().max_sandboxes);
}

#[tokio::test]
async fn private_egress_needs_the_server_setting() {
    let t = teams(LifecycleConfig::default()).await;
    for cidr in ["169.254.169.254/32", "10.0.0.0/8", "192.168.1.1"] {
        let body = json!({"templateID": "base", "network": {"allowOut": [cidr]}});
        let (status, answer) = t.call(&t.a, "POST", "/v2/sandboxes", Some(body)).await;
        let message = e2b_error(status, &answer, StatusCode::BAD_REQUEST);
        assert!(message.contains("allow_private_egress") && message.contains(cidr), "{message}");
    }
    assert!(t.node.sandboxes.lock().unwrap().is_empty(), "nothing was created");
    assert_eq!(
        t.store.team_usage(&t.store.team_by_name("team-a").await.unwrap().id).await.unwrap().sandboxes,
        0,
        "no hold left"
    );
    let open = json!({"templateID": "base", "network": {"allowOut": ["0.0.0.0/0", "1.1.1.1/32"]}});
    assert_eq!(
        t.call(&t.a, "POST", "/v2/sandboxes", Some(open)).await.0,
        StatusCode::CREATED,
        "internet-wide and public are fine"
    );

    let allowed = teams(LifecycleConfig { allow_private_egress: true, ..Default::default() }).await;
    let body = json!({"templateID": "base", "network": {"allowOut": ["10.0.0.0/8"]}});
    assert_eq!(allowed.call(&allowed.a, "POST", "/v2/sandboxes", Some(body)).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn team_limits_answer_429_naming_the_limit() {
    // FakeNode's base template: 2 vCPUs, 512 MiB.
    let limits = TeamLimits { max_sandboxes: 2, max_vcpus: 100, max_memory_mb: 100_000, max_builds: 1 };
    let t = teams(LifecycleConfig { team_limits: limits, ..Default::default() }).await;
    let first = t.create(&t.a).await;
    t.create(&t.a).await;
    let (status, answer) = t.call(&t.a, "POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
    let message = e2b_error(status, &answer, StatusCode::TOO_MANY_REQUESTS);
    assert!(message.contains("teams.max_sandboxes") && message.contains("team-a"), "{message}");
    assert_eq!(t.node.sandboxes.lock().unwrap().len(), 2, "the refused create touched no node");
    t.create(&t.b).await; // another team is not affected

    // A sandbox paused to disk frees its place; resuming it needs the place again.
    let id = first["sandboxID"].as_str().unwrap();
    assert_eq!(
        t.call(&t.a, "POST", &format!("/sandboxes/{id}/pause"), Some(json!({"memory": false}))).await.0,
        StatusCode::NO_CONTENT
    );
    let third = t.create(&t.a).await;
    let (status, answer) = t.call(&t.a, "POST", &format!("/sandboxes/{id}/resume"), Some(json!({}))).await;
    e2b_error(status, &answer, StatusCode::TOO_MANY_REQUESTS);
    let (status, answer) = t.call(&t.a, "POST", &format!("/v2/sandboxes/{id}/connect"), Some(json!({}))).await;
    e2b_error(status, &answer, StatusCode::TOO_MANY_REQUESTS);
    let (_, still) = t.call(&t.a, "GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(still["state"], "paused", "a refused resume leaves it paused");
    let third = third["sandboxID"].as_str().unwrap();
    assert_eq!(t.call(&t.a, "DELETE", &format!("/sandboxes/{third}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        t.call(&t.a, "POST", &format!("/v2/sandboxes/{id}/connect"), Some(json!({}))).await.0,
        StatusCode::CREATED
    );

    // vCPUs and memory: a team override below one sandbox's size.
    let team_b = "team-b";
    let changes = crate::store::LimitChanges { max_vcpus: crate::store::LimitChange::Set(3), ..Default::default() };
    t.store.set_team_limits(team_b, changes).await.unwrap();
    let (status, answer) = t.call(&t.b, "POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
    assert!(e2b_error(status, &answer, StatusCode::TOO_MANY_REQUESTS).contains("teams.max_vcpus"));
    let changes = crate::store::LimitChanges {
        max_vcpus: crate::store::LimitChange::Default,
        max_memory_mb: crate::store::LimitChange::Set(600),
        ..Default::default()
    };
    t.store.set_team_limits(team_b, changes).await.unwrap();
    let (status, answer) = t.call(&t.b, "POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
    assert!(e2b_error(status, &answer, StatusCode::TOO_MANY_REQUESTS).contains("teams.max_memory_mb"));
}
