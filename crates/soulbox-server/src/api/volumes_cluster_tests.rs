//! Node-local volumes in a cluster (`volumes_shared = false`) over the API, with fake nodes: a volume gets a home
//! node, sandboxes mounting it are placed there (two homes: 400; home down: 503), and its content API is forwarded
//! to that node's agent (a stand-in serving the same `volume_ops` on the node's own directory). The real agents:
//! tests/cluster/cluster_test.py.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Query, Request};
use http::StatusCode;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::teams_tests::e2b_error;
use super::{ApiState, router};
use crate::cluster::Route;
use crate::cluster::wire::{NODE_API_PREFIX, SECRET_HEADER, VOLUME_LIMIT_HEADER};
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::metrics::MetricsStore;
use crate::store::{DEFAULT_TEAM_NAME, Role, Store};
use crate::testing::{FakeCluster, FakeNode};

struct Cluster {
    app: axum::Router,
    key: String,
    store: Store,
    nodes: Arc<FakeCluster>,
    /// The control plane's own volumes directory (node-local volumes never use it).
    shared_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("db")))
        .await
        .unwrap()
        .with_secret_box(crate::secret_box::SecretBox::random());
    let (_, key) = store.create_api_key_in("a", "team-a", Role::Member).await.unwrap();
    store.create_api_key_in("ops", DEFAULT_TEAM_NAME, Role::Admin).await.unwrap();
    let node = |name: &str| {
        let files = soulbox_volumes::VolumeStore::open(dir.path().join(name)).unwrap();
        (name.to_owned(), Arc::new(FakeNode::with_volumes(files, name)))
    };
    let nodes = Arc::new(FakeCluster::new(vec![node("n1"), node("n2")]));
    let shared_dir = dir.path().join("shared");
    let config = LifecycleConfig {
        volumes_dir: Some(shared_dir.clone()),
        volume_size_bytes: Some(1000),
        volumes_shared: false,
        ..LifecycleConfig::default()
    };
    let lifecycle = Lifecycle::start_with_nodes(store.clone(), nodes.clone(), config).await.unwrap();
    let state = ApiState {
        lifecycle,
        metrics: Arc::new(MetricsStore::default()),
        domain: None,
        started: std::time::Instant::now(),
    };
    Cluster { app: router(state), key: key.secret, store, nodes, shared_dir, _dir: dir }
}

impl Cluster {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, value) =
            super::tests::send(&self.app, method, path, body.map(|b| b.to_string()), Some(&self.key)).await;
        (status, value)
    }

    /// A new volume: (id, token, home node).
    async fn volume(&self, name: &str) -> (String, String, String) {
        let (status, v) = self.call("POST", "/volumes", Some(json!({"name": name}))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let id = v["volumeID"].as_str().unwrap().to_owned();
        let record = self.store.find_volume(&id).await.unwrap().unwrap();
        (id, v["token"].as_str().unwrap().to_owned(), record.node_id.expect("a node-local volume has a home"))
    }

    async fn mounting(&self, names: &[&str]) -> (StatusCode, Value) {
        let mounts: Vec<Value> = names.iter().map(|n| json!({"name": n, "path": format!("/mnt/{n}")})).collect();
        self.call("POST", "/v2/sandboxes", Some(json!({"templateID": "base", "volumeMounts": mounts}))).await
    }

    async fn content(&self, method: &str, uri: &str, token: &str, body: &str) -> (StatusCode, Vec<u8>) {
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (status, axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec())
    }
}

fn other(node: &str) -> &'static str {
    if node == "n1" { "n2" } else { "n1" }
}

#[tokio::test]
async fn a_sandbox_mounting_a_node_local_volume_runs_on_its_node() {
    let c = cluster().await;
    let (one, _, home_one) = c.volume("one").await;
    let (two, _, home_two) = c.volume("two").await;
    // The scheduler spreads volumes; each volume's directory is on its node only, never in the shared directory.
    assert_ne!(home_one, home_two);
    for (id, home) in [(&one, &home_one), (&two, &home_two)] {
        assert!(c.nodes.node(home).volumes.lock().unwrap().contains(id));
        assert!(!c.nodes.node(other(home)).volumes.lock().unwrap().contains(id));
        assert!(!c.shared_dir.join(id).exists());
    }

    // Sandboxes without volumes go round both nodes; those mounting `two` all run on its node.
    let mut plain_nodes = std::collections::HashSet::new();
    for _ in 0..2 {
        let (status, body) = c.call("POST", "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        plain_nodes.insert(c.store.get_sandbox(body["sandboxID"].as_str().unwrap()).await.unwrap().node_id);
    }
    assert_eq!(plain_nodes.len(), 2, "placement is not pinned without volumes");
    let mut mounting = Vec::new();
    for _ in 0..3 {
        let (status, body) = c.mounting(&["two"]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["sandboxID"].as_str().unwrap().to_owned();
        assert_eq!(c.store.get_sandbox(&id).await.unwrap().node_id, home_two);
        assert!(c.nodes.node(&home_two).sandboxes.lock().unwrap().contains_key(&id));
        mounting.push(id);
    }

    // Volumes of two nodes: 400 naming both, and nothing made anywhere.
    let before: usize = c.nodes.nodes.iter().map(|(_, n)| n.sandboxes.lock().unwrap().len()).sum();
    let (status, body) = c.mounting(&["one", "two"]).await;
    let message = e2b_error(status, &body, StatusCode::BAD_REQUEST);
    assert!(message.contains("different nodes") && message.contains(&home_one) && message.contains(&home_two));
    let after: usize = c.nodes.nodes.iter().map(|(_, n)| n.sandboxes.lock().unwrap().len()).sum();
    assert_eq!(before, after);

    // The home node down: 503 naming it (another node cannot run it), and deleting the volume waits for it too.
    c.nodes.down.lock().unwrap().insert(home_two.clone());
    let (status, body) = c.mounting(&["two"]).await;
    let message = e2b_error(status, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains(&home_two), "{message}");
    c.nodes.down.lock().unwrap().clear();

    // Mounted: 409. Once its sandboxes are gone the volume goes, its directory with it on its node.
    let (status, _) = c.call("DELETE", &format!("/volumes/{two}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    for id in &mounting {
        let (status, _) = c.call("DELETE", &format!("/sandboxes/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    c.nodes.down.lock().unwrap().insert(home_two.clone());
    let (status, body) = c.call("DELETE", &format!("/volumes/{two}"), None).await;
    e2b_error(status, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(c.store.find_volume(&two).await.unwrap().is_some(), "kept while its node cannot remove the files");
    c.nodes.down.lock().unwrap().clear();
    let (status, _) = c.call("DELETE", &format!("/volumes/{two}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!c.nodes.node(&home_two).volumes.lock().unwrap().contains(&two));
    assert!(c.store.find_volume(&two).await.unwrap().is_none());
}

/// What the stand-in node agent saw: the size limit header of each request.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// A node agent's volume content route for `node`'s directory, behind the node secret.
async fn stand_in_agent(node: &FakeNode, secret: &'static str) -> (String, Seen) {
    let files = node.volume_store.clone().unwrap();
    let seen: Seen = Arc::default();
    let seen_here = seen.clone();
    let handler = move |Path((id, kind)): Path<(String, String)>,
                        Query(params): Query<HashMap<String, String>>,
                        request: Request| {
        let (files, seen) = (files.clone(), seen_here.clone());
        async move {
            let (parts, body) = request.into_parts();
            if parts.headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok()) != Some(secret) {
                return super::error(StatusCode::UNAUTHORIZED, "wrong node secret");
            }
            let limit = parts.headers.get(VOLUME_LIMIT_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            seen.lock().unwrap().push(limit.clone());
            let size_limit = limit.and_then(|l| l.parse().ok());
            let request = super::volume_ops::ContentRequest {
                volume_id: id,
                kind,
                method: parts.method,
                params,
                size_limit,
                body,
            };
            super::volume_ops::serve(files, request).await
        }
    };
    let app =
        axum::Router::new().route(&format!("{NODE_API_PREFIX}/volumes/{{id}}/{{kind}}"), axum::routing::any(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (authority, seen)
}

#[tokio::test]
async fn the_content_of_a_node_local_volume_is_served_by_its_node() {
    let c = cluster().await;
    let (id, token, home) = c.volume("data").await;
    let node = c.nodes.node(&home);
    let (authority, seen) = stand_in_agent(node, "node-secret").await;
    c.nodes.routes.lock().unwrap().insert(home.clone(), Route::ViaNode { authority, secret: "node-secret".into() });

    let (status, stat) =
        c.content("PUT", &format!("/volumecontent/{id}/file?path=/a/hello.txt&force=true"), &token, "hi").await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&stat));
    let stat: Value = serde_json::from_slice(&stat).unwrap();
    assert_eq!((stat["size"].as_i64(), stat["path"].as_str()), (Some(2), Some("/a/hello.txt")));
    let on_node = node.volume_store.as_ref().unwrap().root().join(&id).join("a/hello.txt");
    assert_eq!(std::fs::read_to_string(on_node).unwrap(), "hi");
    assert!(!c.shared_dir.join(&id).exists(), "nothing in the control plane's directory");

    let (status, bytes) = c.content("GET", &format!("/volumecontent/{id}/file?path=/a/hello.txt"), &token, "").await;
    assert_eq!((status, bytes.as_slice()), (StatusCode::OK, b"hi".as_slice()));
    let (status, listed) = c.content("GET", &format!("/volumecontent/{id}/dir?path=/a"), &token, "").await;
    let listed: Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!((status, listed[0]["name"].as_str()), (StatusCode::OK, Some("hello.txt")));
    // The node's errors come back as they are, in E2B's shape; the server's size limit applies there.
    let (status, body) = c.content("GET", &format!("/volumecontent/{id}/path?path=/missing"), &token, "").await;
    e2b_error(status, &serde_json::from_slice(&body).unwrap(), StatusCode::NOT_FOUND);
    let big = "x".repeat(2000);
    let (status, _) = c.content("PUT", &format!("/volumecontent/{id}/file?path=/big"), &token, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen.lock().unwrap().iter().all(|limit| limit.as_deref() == Some("1000")));
    // The caller's token is checked here first: a wrong one never reaches the node.
    let asked = seen.lock().unwrap().len();
    let (status, _) = c.content("GET", &format!("/volumecontent/{id}/dir?path=/"), "sbvol_wrong", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(seen.lock().unwrap().len(), asked);

    // Its node unreachable: 503 naming it.
    c.nodes.down.lock().unwrap().insert(home.clone());
    let (status, body) = c.content("GET", &format!("/volumecontent/{id}/dir?path=/"), &token, "").await;
    let message = e2b_error(status, &serde_json::from_slice(&body).unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains(&home), "{message}");
}
