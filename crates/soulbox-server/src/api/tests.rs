//! API behaviour over an in-memory node: status codes, E2B error shapes, list filters and paging, lifecycle
//! rules. (The real node and the official SDKs are exercised by tests/e2e.)

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::lifecycle::LifecycleConfig;
use crate::store::Store;
use crate::testing::FakeNode;

pub(super) struct Harness {
    pub(super) app: axum::Router,
    pub(super) key: String,
    pub(super) node: std::sync::Arc<FakeNode>,
    _dir: tempfile::TempDir,
}

pub(super) async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
    // The admin: these tests cover the admin routes (nodes) too; teams_tests.rs covers what members may not.
    let (_, key) =
        store.create_api_key_in("test", crate::store::DEFAULT_TEAM_NAME, crate::store::Role::Admin).await.unwrap();
    let node = std::sync::Arc::new(FakeNode::default());
    let config = LifecycleConfig { max_lifetime_s: 600, ..Default::default() };
    let lifecycle = Lifecycle::start(store, node.clone(), config).await.unwrap();
    let state = ApiState {
        lifecycle,
        metrics: std::sync::Arc::new(MetricsStore::default()),
        domain: Some("sb.test".into()),
        started: std::time::Instant::now(),
    };
    Harness { app: router(state), key: key.secret, node, _dir: dir }
}

impl Harness {
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        self.raw(method, path, body.map(|b| b.to_string()), true).await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        auth: bool,
    ) -> (StatusCode, http::HeaderMap, Value) {
        send(&self.app, method, path, body, auth.then_some(self.key.as_str())).await
    }

    pub(super) async fn create(&self, metadata: Value) -> String {
        let (status, _, body) =
            self.call("POST", "/v2/sandboxes", Some(json!({"templateID": "base", "metadata": metadata}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["sandboxID"].as_str().unwrap().to_owned()
    }
}

pub(super) fn assert_e2b_error(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["code"], want.as_u16(), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn create_connect_kill_with_e2b_statuses() {
    let h = harness().await;
    let (status, _, created) =
        h.call("POST", "/sandboxes", Some(json!({"templateID": "base", "timeout": 60, "secure": true}))).await;
    assert_eq!(status, StatusCode::CREATED);
    for key in ["templateID", "sandboxID", "clientID", "envdVersion", "envdAccessToken"] {
        assert!(created.get(key).is_some(), "{key} missing: {created}");
    }
    assert_eq!(created["domain"], "sb.test");
    let id = created["sandboxID"].as_str().unwrap();

    let (status, _, _) = h.call("POST", &format!("/v2/sandboxes/{id}/connect"), Some(json!({"timeout": 30}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, info) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(info["state"], "running");
    assert_eq!(info["memoryMB"], 512);

    assert_eq!(h.call("POST", &format!("/sandboxes/{id}/pause"), None).await.0, StatusCode::NO_CONTENT);
    let (status, _, body) = h.call("POST", &format!("/sandboxes/{id}/pause"), Some(json!({}))).await;
    assert_e2b_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(h.call("POST", &format!("/v2/sandboxes/{id}/connect"), Some(json!({}))).await.0, StatusCode::CREATED);

    assert_eq!(h.call("DELETE", &format!("/sandboxes/{id}"), None).await.0, StatusCode::NO_CONTENT);
    let (status, _, body) = h.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_e2b_error(status, &body, StatusCode::NOT_FOUND);
    assert!(h.node.sandboxes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn v1_only_secures_when_asked() {
    let h = harness().await;
    let (_, _, created) = h.call("POST", "/sandboxes", Some(json!({"templateID": "base"}))).await;
    assert!(created.get("envdAccessToken").is_none(), "{created}");
    let (_, _, created) = h.call("POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
    assert!(created["envdAccessToken"].as_str().is_some_and(|t| t.len() == 64));
}

#[tokio::test]
async fn bad_input_gets_e2b_errors_and_leaves_nothing() {
    let h = harness().await;
    let cases: Vec<(&str, &str, Option<String>, StatusCode)> = vec![
        ("POST", "/v2/sandboxes", Some("{not json".into()), StatusCode::BAD_REQUEST),
        ("POST", "/v2/sandboxes", Some(r#"{"templateID": 5}"#.into()), StatusCode::BAD_REQUEST),
        ("POST", "/v2/sandboxes", Some(r#"{"templateID": "base", "timeout": 0}"#.into()), StatusCode::BAD_REQUEST),
        (
            "POST",
            "/v2/sandboxes",
            Some(r#"{"templateID": "base", "timeout": 999999999}"#.into()),
            StatusCode::BAD_REQUEST,
        ),
        ("POST", "/v2/sandboxes", Some(r#"{"templateID": "nope"}"#.into()), StatusCode::NOT_FOUND),
        (
            "POST",
            "/v2/sandboxes",
            Some(format!(r#"{{"templateID": "base", "metadata": {{"k": "{}"}}}}"#, "x".repeat(2 << 20))),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("GET", "/v2/sandboxes?metadata=novalue", None, StatusCode::BAD_REQUEST),
        ("GET", "/v2/sandboxes?state=dead", None, StatusCode::BAD_REQUEST),
        ("GET", "/v2/sandboxes?limit=0", None, StatusCode::BAD_REQUEST),
        ("GET", "/v2/sandboxes?nextToken=%21%21", None, StatusCode::BAD_REQUEST),
        ("GET", "/no/such/route", None, StatusCode::NOT_FOUND),
        ("PUT", "/v2/sandboxes", None, StatusCode::METHOD_NOT_ALLOWED),
        ("POST", "/sandboxes/x/connect", Some("{}".into()), StatusCode::BAD_REQUEST),
        ("POST", "/sandboxes/missing/timeout", Some(r#"{"timeout": 5}"#.into()), StatusCode::NOT_FOUND),
        // Every optional-field body is parsed before the sandbox is looked up; an empty one is all defaults.
        ("POST", "/sandboxes/missing/pause", Some("[1]".into()), StatusCode::BAD_REQUEST),
        ("POST", "/sandboxes/missing/pause", None, StatusCode::NOT_FOUND),
        ("POST", "/sandboxes/missing/resume", Some(r#"{"timeout": "x"}"#.into()), StatusCode::BAD_REQUEST),
        ("POST", "/sandboxes/missing/refreshes", Some("{".into()), StatusCode::BAD_REQUEST),
        ("POST", "/sandboxes/missing/fork", Some(r#"{"count": "two"}"#.into()), StatusCode::BAD_REQUEST),
        ("POST", "/v2/sandboxes/missing/connect", Some("1".into()), StatusCode::BAD_REQUEST),
        ("POST", "/sandboxes/missing/snapshots", Some(r#"{"name": 1}"#.into()), StatusCode::BAD_REQUEST),
        ("POST", "/sandboxes/missing/snapshots", None, StatusCode::NOT_FOUND),
        ("PUT", "/sandboxes/missing/network", Some(r#"{"allowOut": "x"}"#.into()), StatusCode::BAD_REQUEST),
    ];
    for (method, path, body, want) in cases {
        let (status, _, value) = h.raw(method, path, body, true).await;
        assert_e2b_error(status, &value, want);
    }
    let (status, _, value) = h.raw("GET", "/v2/sandboxes", None, false).await;
    assert_e2b_error(status, &value, StatusCode::UNAUTHORIZED);
    let mut req = Request::get("/v2/sandboxes").header("x-api-key", "e2b_0123").body(Body::empty()).unwrap();
    req.headers_mut().insert("x-api-key", "e2b_0123".parse().unwrap());
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(h.node.sandboxes.lock().unwrap().is_empty(), "no partial sandbox");
    let (_, _, list) = h.call("GET", "/v2/sandboxes", None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn list_filters_and_pages() {
    let h = harness().await;
    let a = h.create(json!({"team": "red", "user id": "a&b=c"})).await;
    let b = h.create(json!({"team": "blue"})).await;
    let c = h.create(json!({"team": "red"})).await;
    h.call("POST", &format!("/sandboxes/{c}/pause"), None).await;

    let ids = |v: &Value| {
        v.as_array().unwrap().iter().map(|s| s["sandboxID"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let (_, headers, all) = h.call("GET", "/v2/sandboxes?order=asc", None).await;
    assert_eq!(ids(&all), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(headers["x-total-running"], "2");
    assert!(headers.get("x-next-token").is_none());

    // Python: urlencode({quote(k): quote(v)}), then encoded again as a query value.
    let (_, _, red) = h.call("GET", "/v2/sandboxes?metadata=team%3Dred", None).await;
    assert_eq!(ids(&red).len(), 2);
    let (_, _, special) = h.call("GET", "/v2/sandboxes?metadata=user%252520id%3Da%252526b%25253Dc", None).await;
    assert_eq!(ids(&special), vec![a.clone()]);
    let (_, _, paused) = h.call("GET", "/v2/sandboxes?state=paused", None).await;
    assert_eq!(ids(&paused), vec![c.clone()]);
    let (_, _, none) = h.call("GET", "/v2/sandboxes?template=unknown", None).await;
    assert_eq!(none, json!([]));

    let mut seen = Vec::new();
    let mut path = "/v2/sandboxes?limit=1".to_owned();
    loop {
        let (status, headers, page) = h.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(ids(&page));
        match headers.get("x-next-token") {
            Some(t) => path = format!("/v2/sandboxes?limit=1&nextToken={}", t.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, vec![c, b, a], "newest first across pages");
}

#[tokio::test]
async fn refresh_and_timeouts() {
    let h = harness().await;
    let id = h.create(json!({})).await;
    let end = |v: &Value| crate::time::parse_rfc3339_ms(v["endAt"].as_str().unwrap()).unwrap();
    let (_, _, before) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(
        h.call("POST", &format!("/sandboxes/{id}/refreshes"), Some(json!({"duration": 500}))).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, _, after) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert!(end(&after) > end(&before));
    let (status, _, body) = h.call("POST", &format!("/sandboxes/{id}/refreshes"), Some(json!({"duration": 700}))).await;
    assert_e2b_error(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("maximum lifetime"));

    // Connect never shortens; set_timeout may.
    h.call("POST", &format!("/v2/sandboxes/{id}/connect"), Some(json!({"timeout": 10}))).await;
    let (_, _, connected) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(end(&connected), end(&after));
    assert_eq!(
        h.call("POST", &format!("/sandboxes/{id}/timeout"), Some(json!({"timeout": 10}))).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, _, shortened) = h.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert!(end(&shortened) < end(&after));
}

#[tokio::test]
async fn system_endpoints() {
    let h = harness().await;
    let (status, _, health) = h.raw("GET", "/health", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    let (status, _, text) = h.raw("GET", "/metrics", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("soulbox_sandboxes{state=\"running\"} 0"));
    let (_, _, nodes) = h.call("GET", "/nodes", None).await;
    assert_eq!(nodes[0]["status"], "healthy");
    let (status, _, doc) = h.raw("GET", "/openapi.json", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc.is_object());
    let id = h.create(json!({})).await;
    let (_, _, logs) = h.call("GET", &format!("/sandboxes/{id}/logs"), None).await;
    // E2B's line is a JSON object (the official CLI parses it and reads `level` and `logger`).
    let line: Value = serde_json::from_str(logs["logs"][0]["line"].as_str().unwrap()).unwrap();
    assert_eq!(line, json!({"level": "info", "logger": "soulbox_envd", "message": "envd listening"}));
    // E2B's start (unix ms) and limit select a range; the node does the selecting
    let (_, _, logs) = h.call("GET", &format!("/sandboxes/{id}/logs?start=6&limit=1"), None).await;
    assert_eq!(logs["logs"].as_array().unwrap().len(), 1);
    assert!(logs["logs"][0]["line"].as_str().unwrap().contains(r#""message":"second line""#));
    assert_eq!(logs["logEntries"][0]["message"], "second line");
    assert_eq!(logs["logEntries"][0]["level"], "warn");
    assert_eq!(logs["logEntries"][0]["fields"]["logger"], "soulbox_envd::process");
    for bad in ["start=-1", "limit=x", "start=1.5"] {
        let (status, _, body) = h.raw("GET", &format!("/sandboxes/{id}/logs?{bad}"), None, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["code"], 400, "{bad}: {body}");
    }
}

/// Every route the OpenAPI document names exists, and its auth requirement matches the document.
#[tokio::test]
async fn openapi_document_matches_router() {
    let doc: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let h = harness().await;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{sandboxID}", "inosuchsandbox");
        for (method, op) in ops.as_object().unwrap() {
            let m = method.to_uppercase();
            let (status, _, body) = h.raw(&m, &concrete, None, true).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            assert_ne!(body.get("message"), Some(&json!("no such route")), "{m} {path} is not routed");
            let public = op.get("security") == Some(&json!([]));
            let (status, _, _) = h.raw(&m, &concrete, None, false).await;
            assert_eq!(status == StatusCode::UNAUTHORIZED, !public, "{m} {path}: auth differs from the document");
        }
    }
}

/// One request to the router as a client sends it (JSON, the key in `x-api-key` when given): the answer's
/// status, headers and body as JSON (a JSON string when the body is not JSON).
pub(super) async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<String>,
    key: Option<&str>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(key) = key {
        // An access token goes where E2B sends it.
        req = match key.starts_with(crate::keys::ACCESS_TOKEN_PREFIX) {
            true => req.header("authorization", format!("Bearer {key}")),
            false => req.header("x-api-key", key),
        };
    }
    let resp = app.clone().oneshot(req.body(body.map(Body::from).unwrap_or_default()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

/// The listing pages in the database unless a metadata filter is given, which pages in memory. A filter every
/// sandbox matches must therefore change nothing: the same pages, order, cursors and running count, for every
/// order, state set, page size, start time and template.
#[tokio::test]
async fn list_pages_the_same_in_the_database_and_in_memory() {
    let h = harness().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(h.create(json!({"all": "yes"})).await);
        if i % 2 == 1 {
            h.call("POST", &format!("/sandboxes/{}/pause", ids[i]), None).await;
        }
    }
    let (_, _, first) = h.call("GET", &format!("/sandboxes/{}", ids[2]), None).await;
    let third_started = urlencoding(first["startedAt"].as_str().unwrap());
    let h = &h;
    let walk = |query: String| async move {
        let (mut seen, mut running, mut path) = (Vec::new(), Vec::new(), format!("/v2/sandboxes?{query}"));
        loop {
            let (status, headers, page) = h.call("GET", &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            seen.extend(page.as_array().unwrap().iter().map(|s| s["sandboxID"].as_str().unwrap().to_owned()));
            running.push(headers.get("x-total-running").map(|v| v.to_str().unwrap().to_owned()));
            match headers.get("x-next-token") {
                Some(t) => path = format!("/v2/sandboxes?{query}&nextToken={}", t.to_str().unwrap()),
                None => return (seen, running),
            }
        }
    };
    let mut checked = 0;
    for order in ["order=asc", "order=desc"] {
        for state in ["", "&state=running", "&state=paused", "&state=running,paused"] {
            for limit in ["&limit=1", "&limit=2", ""] {
                for extra in ["", &format!("&startedAfter={third_started}"), "&template=base", "&template=unknown"] {
                    let query = format!("{order}{state}{limit}{extra}");
                    let in_db = walk(query.clone()).await;
                    let in_memory = walk(format!("{query}&metadata=all%3Dyes")).await;
                    assert_eq!(in_db, in_memory, "{query}");
                    checked += usize::from(!in_db.0.is_empty());
                }
            }
        }
    }
    assert!(checked > 40, "most queries list something ({checked})");
    let (all, running) = walk("order=asc".into()).await;
    assert_eq!(all, ids, "every sandbox, oldest first");
    assert_eq!(running, vec![Some("3".to_owned())]);
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
