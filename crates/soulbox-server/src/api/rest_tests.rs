//! The rest of E2B's API (issue 15): v2 logs, template list fields and updates, keys and access tokens over
//! REST, team metrics and the admin routes — each with a call from another team that must be refused.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::teams_tests::{Teams, e2b_error, teams};
use crate::lifecycle::LifecycleConfig;
use crate::store::now_ms;
use crate::time::parse_rfc3339_ms;

impl Teams {
    async fn team_id(&self, key: &str) -> String {
        let (_, teams) = self.call(key, "GET", "/teams", None).await;
        teams[0]["teamID"].as_str().unwrap().to_owned()
    }

    /// A call with extra headers (`X-Team-ID`, `X-Admin-Token`, ...).
    async fn call_with(
        &self,
        headers: &[(&str, &str)],
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
        let resp = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn v2_logs_filter_by_cursor_direction_level_and_search() {
    let t = teams(LifecycleConfig::default()).await;
    let id = t.create(&t.a).await["sandboxID"].as_str().unwrap().to_owned();
    let messages = |body: &Value| -> Vec<String> {
        body["logs"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
    };
    let get = |query: &str| {
        let path = format!("/v2/sandboxes/{id}/logs{query}");
        let t = &t;
        async move { t.call(&t.a, "GET", &path, None).await }
    };
    let (status, all) = get("").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(messages(&all), ["envd listening", "second line", "third line"]);
    assert_eq!(all["logs"][1]["level"], "warn");
    assert_eq!(all["logs"][1]["fields"]["logger"], "soulbox_envd::process");
    assert_eq!(all["logs"][0]["timestamp"], "1970-01-01T00:00:00.005Z");
    assert_eq!(messages(&get("?level=warn").await.1), ["second line", "third line"]);
    assert_eq!(messages(&get("?level=error").await.1), ["third line"]);
    assert_eq!(messages(&get("?search=line").await.1), ["second line", "third line"]);
    assert!(messages(&get("?search=LINE").await.1).is_empty(), "search is case-sensitive");
    assert_eq!(messages(&get("?direction=backward").await.1), ["third line", "second line", "envd listening"]);
    assert_eq!(messages(&get("?cursor=7").await.1), ["second line", "third line"]);
    assert_eq!(messages(&get("?cursor=7&direction=backward").await.1), ["second line", "envd listening"]);
    assert_eq!(messages(&get("?cursor=7&direction=backward&limit=1").await.1), ["second line"]);
    assert_eq!(messages(&get("?limit=1&level=warn&search=third").await.1), ["third line"]);
    let long = "x".repeat(257);
    for bad in ["?direction=sideways", "?level=trace", "?limit=1001", "?cursor=-1", &format!("?search={long}")] {
        let (status, body) = get(bad).await;
        e2b_error(status, &body, StatusCode::BAD_REQUEST);
    }
    // Another team's sandbox is not found, exactly like an unknown one.
    let (status, body) = t.call(&t.b, "GET", &format!("/v2/sandboxes/{id}/logs"), None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn template_list_has_every_field_e2b_requires() {
    let t = teams(LifecycleConfig::default()).await;
    t.create(&t.a).await;
    t.create(&t.b).await;
    for path in ["/templates", "/v2/templates"] {
        let (status, list) = t.call(&t.a, "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let base = list.as_array().unwrap().iter().find(|e| e["templateID"] == "base").unwrap();
        for field in ["createdAt", "updatedAt", "lastSpawnedAt"] {
            assert!(crate::time::parse_rfc3339_ms(base[field].as_str().unwrap()).is_some(), "{field}: {base}");
        }
        assert_eq!((base["spawnCount"].as_i64(), base["buildCount"].as_i64()), (Some(2), Some(1)), "{base}");
        assert!(base["createdBy"].is_null() && base["public"] == true, "{base}");
        assert_eq!(base["diskSizeMB"], 1024, "the node's disk limit, not 0");
    }
    // v2 pages are 1..=100 long.
    let (status, page) = t.call(&t.a, "GET", "/v2/templates?limit=0", None).await;
    e2b_error(status, &page, StatusCode::BAD_REQUEST);
    let team_b = t.team_id(&t.b).await;
    let (status, body) = t.call(&t.a, "GET", &format!("/v2/templates?teamID={team_b}"), None).await;
    e2b_error(status, &body, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn template_public_flag_is_the_owners_to_change() {
    let t = teams(LifecycleConfig::default()).await;
    let (status, built) = t.call(&t.a, "POST", "/v3/templates", Some(json!({"name": "app"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{built}");
    let (status, body) = t.call(&t.b, "PATCH", "/v2/templates/app", Some(json!({"public": true}))).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = t.call(&t.a, "PATCH", "/v2/templates/app", Some(json!({"public": "yes"}))).await;
    e2b_error(status, &body, StatusCode::BAD_REQUEST);
    assert!(!t.store.get_template_record("app").await.unwrap().unwrap().public, "nothing changed");
    let (status, body) = t.call(&t.a, "PATCH", "/v2/templates/app", Some(json!({"public": true}))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"names": ["app"]})));
    assert!(t.store.get_template_record("app").await.unwrap().unwrap().public);
    // Public: another team may now use it (and sees it as public).
    t.store.set_tags("app", built["buildID"].as_str().unwrap(), &["default".to_owned()]).await.unwrap();
    let (status, alias) = t.call(&t.b, "GET", "/templates/aliases/app", None).await;
    assert_eq!((status, alias["public"].as_bool()), (StatusCode::OK, Some(true)), "{alias}");
    assert_eq!(t.call(&t.a, "PATCH", "/templates/app", Some(json!({"public": false}))).await.0, StatusCode::OK);
    let (status, body) = t.call(&t.b, "GET", "/templates/aliases/app", None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    assert!(!t.store.get_template_record("app").await.unwrap().unwrap().public);
    let (status, body) = t.call(&t.a, "PATCH", "/v2/templates/base", Some(json!({"public": false}))).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn access_tokens_manage_their_own_teams_keys_only() {
    let t = teams(LifecycleConfig::default()).await;
    let (team_a, team_b) = (t.team_id(&t.a).await, t.team_id(&t.b).await);
    // A member key does not manage keys or tokens.
    let (status, body) = t.call(&t.a, "POST", "/access-tokens", Some(json!({"name": "laptop"}))).await;
    e2b_error(status, &body, StatusCode::FORBIDDEN);
    // The admin makes a token for team A (X-Team-ID), shown once.
    let admin_for = |team: &str| [("x-api-key", t.admin.clone()), ("x-team-id", team.to_owned())];
    let h = admin_for(&team_a);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, created) = t.call_with(&headers, "POST", "/access-tokens", Some(json!({"name": "laptop"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk_e2b_") && created["mask"]["prefix"] == "sk_e2b_", "{created}");
    let token_id = created["id"].as_str().unwrap().to_owned();
    // The token acts for team A: its team, its keys (masked), a new key, a rename, a delete.
    assert_eq!(t.team_id(&token).await, team_a);
    let (status, keys) = t.call(&token, "GET", "/api-keys", None).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let names: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a"], "team A's keys only");
    assert!(!keys.to_string().contains(&t.a), "secrets are never listed");
    assert_eq!(keys[0]["mask"]["prefix"], "e2b_");
    let (status, new_key) = t.call(&token, "POST", "/api-keys", Some(json!({"name": "ci"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{new_key}");
    let (key, key_id) = (new_key["key"].as_str().unwrap().to_owned(), new_key["id"].as_str().unwrap().to_owned());
    assert_eq!(t.team_id(&key).await, team_a);
    let (status, body) = t.call(&token, "POST", "/api-keys", Some(json!({"name": ""}))).await;
    e2b_error(status, &body, StatusCode::BAD_REQUEST);
    let path = format!("/api-keys/{key_id}");
    assert_eq!(t.call(&token, "PATCH", &path, Some(json!({"name": "ci-2"}))).await.0, StatusCode::OK);
    let (_, keys) = t.call(&token, "GET", "/api-keys", None).await;
    assert!(keys.as_array().unwrap().iter().any(|k| k["name"] == "ci-2"), "{keys}");
    // Team B's keys and tokens are not found through A's token.
    let b_key_id = t.store.list_api_keys().await.unwrap().into_iter().find(|k| k.name == "b").unwrap().id;
    for (method, body) in [("PATCH", Some(json!({"name": "x"}))), ("DELETE", None)] {
        let (status, answer) = t.call(&token, method, &format!("/api-keys/{b_key_id}"), body).await;
        e2b_error(status, &answer, StatusCode::NOT_FOUND);
    }
    let h = admin_for(&team_b);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, token_b) = t.call_with(&headers, "POST", "/access-tokens", Some(json!({"name": "b"}))).await;
    let token_b_id = token_b["id"].as_str().unwrap();
    let (status, body) = t.call(&token, "DELETE", &format!("/access-tokens/{token_b_id}"), None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    // A token names no other team.
    let (status, body) = t
        .call_with(&[("authorization", &format!("Bearer {token}")), ("x-team-id", &team_b)], "GET", "/api-keys", None)
        .await;
    e2b_error(status, &body, StatusCode::FORBIDDEN);
    let (status, _) = t
        .call_with(&[("authorization", &format!("Bearer {token}")), ("x-team-id", &team_a)], "GET", "/api-keys", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // A token is a member: no admin routes.
    let (status, body) = t.call(&token, "GET", "/admin/sandboxes/running-counts", None).await;
    e2b_error(status, &body, StatusCode::FORBIDDEN);
    // Deleting: the key stops working, then the token itself.
    assert_eq!(t.call(&token, "DELETE", &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.call(&key, "GET", "/teams", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(t.call(&token, "DELETE", &format!("/access-tokens/{token_id}"), None).await.0, StatusCode::NO_CONTENT);
    let (status, body) = t.call(&token, "GET", "/teams", None).await;
    e2b_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_key_used_once_shows_its_last_use_in_the_key_list() {
    let t = teams(LifecycleConfig::default()).await;
    let (status, created) = t.call(&t.admin, "POST", "/api-keys", Some(json!({"name": "ci"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["lastUsed"].is_null(), "{created}");
    let (key, id) = (created["key"].as_str().unwrap().to_owned(), created["id"].clone());
    let last_used = |keys: &Value| keys.as_array().unwrap().iter().find(|k| k["id"] == id).unwrap()["lastUsed"].clone();
    let (status, keys) = t.call(&t.admin, "GET", "/api-keys", None).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert!(last_used(&keys).is_null(), "never used yet: {keys}");
    assert_eq!(t.call(&key, "GET", "/teams", None).await.0, StatusCode::OK);
    let (_, keys) = t.call(&t.admin, "GET", "/api-keys", None).await;
    let used = last_used(&keys);
    let used_ms = used.as_str().and_then(parse_rfc3339_ms).unwrap_or_else(|| panic!("an RFC 3339 time: {keys}"));
    let created_ms = created["createdAt"].as_str().and_then(parse_rfc3339_ms).unwrap();
    assert!(created_ms <= used_ms && used_ms <= now_ms(), "used {used} after its creation {created}");
}

#[tokio::test]
async fn team_metrics_count_the_callers_team_only() {
    let t = teams(LifecycleConfig::default()).await;
    let (team_a, team_b) = (t.team_id(&t.a).await, t.team_id(&t.b).await);
    t.create(&t.a).await;
    t.create(&t.a).await;
    t.create(&t.b).await;
    let (status, points) = t.call(&t.a, "GET", &format!("/teams/{team_a}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK, "{points}");
    let last = points.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["concurrentSandboxes"], 2, "{last}");
    assert!(last["timestampUnix"].as_i64().is_some() && last["timestamp"].is_string(), "{last}");
    let started: f64 = points.as_array().unwrap().iter().map(|p| p["sandboxStartRate"].as_f64().unwrap()).sum();
    assert!(started > 0.0, "{points}");
    let (status, max) =
        t.call(&t.a, "GET", &format!("/teams/{team_a}/metrics/max?metric=concurrent_sandboxes"), None).await;
    assert_eq!((status, max["value"].as_f64()), (StatusCode::OK, Some(2.0)), "{max}");
    for bad in ["/metrics/max?metric=bogus", "/metrics/max", "/metrics?start=20&end=10", "/metrics?start=x"] {
        let (status, body) = t.call(&t.a, "GET", &format!("/teams/{team_a}{bad}"), None).await;
        e2b_error(status, &body, StatusCode::BAD_REQUEST);
    }
    for path in ["/metrics", "/metrics/max?metric=concurrent_sandboxes"] {
        let (status, body) = t.call(&t.a, "GET", &format!("/teams/{team_b}{path}"), None).await;
        e2b_error(status, &body, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn admin_routes_kill_count_cancel_and_make_keys_per_team() {
    let t = teams(LifecycleConfig::default()).await;
    let (team_a, team_b) = (t.team_id(&t.a).await, t.team_id(&t.b).await);
    let a1 = t.create(&t.a).await["sandboxID"].as_str().unwrap().to_owned();
    let b1 = t.create(&t.b).await["sandboxID"].as_str().unwrap().to_owned();
    let routes = [
        ("GET", "/admin/sandboxes/running-counts".to_owned(), None),
        ("POST", format!("/admin/teams/{team_b}/sandboxes/kill"), None),
        ("POST", format!("/admin/teams/{team_b}/builds/cancel"), None),
        ("POST", format!("/admin/teams/{team_b}/api-keys"), Some(json!({"name": "x"}))),
        ("DELETE", format!("/admin/teams/{team_b}/api-keys/key_000000000000"), None),
    ];
    for (method, path, body) in &routes {
        let (status, answer) = t.call(&t.a, method, path, body.clone()).await;
        e2b_error(status, &answer, StatusCode::FORBIDDEN);
    }
    let (status, counts) = t.call(&t.admin, "GET", "/admin/sandboxes/running-counts", None).await;
    assert_eq!((status, counts), (StatusCode::OK, json!({team_a.clone(): 1, team_b.clone(): 1})));
    // E2B's admin header works too.
    let (status, _) = t.call_with(&[("x-admin-token", &t.admin)], "GET", "/admin/sandboxes/running-counts", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = t.call_with(&[("x-admin-token", &t.a)], "GET", "/admin/sandboxes/running-counts", None).await;
    e2b_error(status, &body, StatusCode::UNAUTHORIZED);

    let (status, killed) = t.call(&t.admin, "POST", &format!("/admin/teams/{team_a}/sandboxes/kill"), None).await;
    assert_eq!((status, killed), (StatusCode::OK, json!({"killedCount": 1, "failedCount": 0})));
    assert_eq!(t.call(&t.a, "GET", &format!("/sandboxes/{a1}"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(t.call(&t.b, "GET", &format!("/sandboxes/{b1}"), None).await.0, StatusCode::OK, "B's sandbox lives");
    for path in ["sandboxes/kill", "builds/cancel"] {
        let (status, body) = t.call(&t.admin, "POST", &format!("/admin/teams/team_nope/{path}"), None).await;
        e2b_error(status, &body, StatusCode::NOT_FOUND);
    }

    // A build not started yet is cancelled; B's is not touched.
    let (_, built) = t.call(&t.a, "POST", "/v3/templates", Some(json!({"name": "app"}))).await;
    let (_, built_b) = t.call(&t.b, "POST", "/v3/templates", Some(json!({"name": "app-b"}))).await;
    let (status, cancelled) = t.call(&t.admin, "POST", &format!("/admin/teams/{team_a}/builds/cancel"), None).await;
    assert_eq!((status, cancelled), (StatusCode::OK, json!({"cancelledCount": 1, "failedCount": 0})));
    let build = |v: &Value| v["buildID"].as_str().unwrap().to_owned();
    assert_eq!(t.store.get_build(&build(&built)).await.unwrap().unwrap().status, "error");
    assert_eq!(t.store.get_build(&build(&built_b)).await.unwrap().unwrap().status, "waiting");

    // Keys for a named team; deleting needs the key's own team.
    let (status, created) =
        t.call(&t.admin, "POST", &format!("/admin/teams/{team_b}/api-keys"), Some(json!({"name": "svc"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(t.team_id(created["key"].as_str().unwrap()).await, team_b);
    let id = created["id"].as_str().unwrap();
    let (status, body) = t.call(&t.admin, "DELETE", &format!("/admin/teams/{team_a}/api-keys/{id}"), None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    let (status, _) = t.call(&t.admin, "DELETE", &format!("/admin/teams/{team_b}/api-keys/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn build_logs_node_status_and_the_501_routes() {
    let t = teams(LifecycleConfig::default()).await;
    let (_, built) = t.call(&t.a, "POST", "/v3/templates", Some(json!({"name": "app"}))).await;
    let build = built["buildID"].as_str().unwrap();
    // The build's log: its owner reads it (a waiting build has its first line), another team gets a 404.
    let path = format!("/templates/app/builds/{build}/logs");
    let (status, logs) = t.call(&t.a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(logs["logs"].is_array(), "{logs}");
    let (status, body) = t.call(&t.b, "GET", &path, None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    for bad in ["?limit=101", "?direction=up", "?level=loud", "?source=cloud", "?cursor=-5"] {
        let (status, body) = t.call(&t.a, "GET", &format!("{path}{bad}"), None).await;
        e2b_error(status, &body, StatusCode::BAD_REQUEST);
    }
    // E2B's node status change: admin only, draining and ready.
    let (status, body) = t.call(&t.a, "POST", "/nodes/local", Some(json!({"status": "draining"}))).await;
    e2b_error(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = t.call(&t.admin, "POST", "/nodes/local", Some(json!({"status": "standby"}))).await;
    e2b_error(status, &body, StatusCode::BAD_REQUEST);
    // E2B's deprecated build flows: 501 saying what to use.
    for (method, path) in [
        ("POST", "/templates".to_owned()),
        ("POST", "/v2/templates".to_owned()),
        ("POST", "/templates/app".to_owned()),
        ("POST", format!("/templates/app/builds/{build}")),
    ] {
        let (status, body) = t.call(&t.a, method, &path, Some(json!({}))).await;
        let message = e2b_error(status, &body, StatusCode::NOT_IMPLEMENTED);
        assert!(message.contains("POST /v"), "{path}: {message}");
    }
}

#[tokio::test]
async fn a_template_with_its_builds_is_its_teams() {
    let t = teams(LifecycleConfig::default()).await;
    let (_, first) = t.call(&t.a, "POST", "/v3/templates", Some(json!({"name": "app"}))).await;
    let (_, second) = t.call(&t.a, "POST", "/v3/templates", Some(json!({"name": "app"}))).await;
    let (status, got) = t.call(&t.a, "GET", "/templates/app", None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let ids: Vec<&str> = got["builds"].as_array().unwrap().iter().map(|b| b["buildID"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{got}");
    assert!(ids.contains(&first["buildID"].as_str().unwrap()) && ids.contains(&second["buildID"].as_str().unwrap()));
    assert_eq!((got["templateID"].as_str(), got["builds"][0]["status"].as_str()), (Some("app"), Some("waiting")));
    let (status, page) = t.call(&t.a, "GET", "/templates/app?limit=1", None).await;
    assert_eq!((status, page["builds"].as_array().unwrap().len()), (StatusCode::OK, 1));
    let (status, body) = t.call(&t.b, "GET", "/templates/app", None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    let (status, base) = t.call(&t.b, "GET", "/templates/base", None).await;
    assert_eq!((status, base["public"].as_bool()), (StatusCode::OK, Some(true)), "{base}");
}
