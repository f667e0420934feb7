//! Several API replicas on one database act as one control plane (issue 7): each replica is a full `app()` with
//! its own `Lifecycle`, its own store connection pool and its own HTTP listener on loopback, as separate
//! `soulbox server` processes would be; they share the database and one in-memory node (in single-machine mode
//! every server process owns its own runtime, so sharing sandboxes between processes needs cluster nodes —
//! here the shared `FakeNode` stands in for them). Every test runs on SQLite and on a throwaway PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use soulbox_protocol::api::SandboxState;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::metrics::MetricsStore;
use crate::node::*;
use crate::store::test_db::{TestDatabase, store_test};
use crate::store::{ClaimCondition, Store, now_ms};
use crate::testing::FakeNode;

/// The shared node, counting the operations that must happen once, and slow enough in them that replicas
/// acting at the same moment really overlap.
#[derive(Default)]
struct CountingNode {
    inner: FakeNode,
    kills: AtomicU32,
    pauses: AtomicU32,
    resumes: AtomicU32,
}

const NODE_OPERATION: Duration = Duration::from_millis(300);

#[async_trait]
impl Node for CountingNode {
    async fn info(&self) -> NodeInfo {
        self.inner.info().await
    }
    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        self.inner.templates().await
    }
    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        self.inner.create(spec).await
    }
    async fn pause(&self, id: &str, keep_memory: bool) -> Result<(), NodeError> {
        self.pauses.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(NODE_OPERATION).await; // simulated work, so that a second pauser would overlap
        self.inner.pause(id, keep_memory).await
    }
    async fn resume(&self, id: &str) -> Result<std::net::IpAddr, NodeError> {
        self.resumes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(NODE_OPERATION).await;
        self.inner.resume(id).await
    }
    async fn kill(&self, id: &str) -> Result<(), NodeError> {
        self.kills.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(NODE_OPERATION).await;
        self.inner.kill(id).await
    }
    async fn stats(&self, id: &str) -> Result<SandboxStats, NodeError> {
        self.inner.stats(id).await
    }
    async fn logs(&self, id: &str, query: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        self.inner.logs(id, query).await
    }
}

struct Replica {
    url: String,
    lifecycle: Arc<Lifecycle>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

async fn replica(db: &TestDatabase, node: Arc<CountingNode>) -> Replica {
    replica_with_limits(db, node, crate::store::TeamLimits::default()).await
}

async fn replica_with_limits(
    db: &TestDatabase,
    node: Arc<CountingNode>,
    team_limits: crate::store::TeamLimits,
) -> Replica {
    let store = db.open().await; // its own pool, as its own process would have
    let config = LifecycleConfig {
        deadline_sweep: Duration::from_millis(100),
        claim_lease: Duration::from_secs(3),
        team_limits,
        ..LifecycleConfig::default()
    };
    let lifecycle = Lifecycle::start(store, node, config).await.unwrap();
    let app = crate::server::app(ApiState {
        lifecycle: lifecycle.clone(),
        metrics: Arc::new(MetricsStore::default()),
        domain: None,
        started: std::time::Instant::now(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        axum::serve(
            crate::client_socket::ServerListener(listener),
            app.into_make_service_with_connect_info::<crate::client_socket::ClientSocket>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .unwrap();
    });
    Replica { url, lifecycle, stop, server }
}

impl Replica {
    /// Stops the replica as a process exit would: its server ends and nothing keeps its lifecycle (timers,
    /// sweep) alive any more.
    async fn shut_down(self) {
        let weak = Arc::downgrade(&self.lifecycle);
        self.stop.cancel();
        self.server.await.unwrap();
        drop(self.lifecycle);
        // Timer callbacks in flight may hold it for a moment; none are due in the tests that call this.
        assert!(weak.upgrade().is_none(), "the replica's lifecycle outlived it");
    }
}

async fn call(key: &str, replica: &Replica, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    // No pooled connections: a replica that shuts down must not be kept alive by an idle keep-alive connection.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", replica.url))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn admin_key(db: &TestDatabase) -> String {
    db.open().await.create_api_key("test").await.unwrap().1.secret
}

/// Waits (bounded) for the store to say the sandbox is gone or in `state`.
async fn wait_for(store: &Store, id: &str, want: Option<SandboxState>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = store.get_sandbox(id).await.ok().map(|r| r.state);
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "sandbox {id} stayed {now:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

store_test!(a_sandbox_created_through_one_replica_is_managed_through_the_other, |db| {
    let key = admin_key(&db).await;
    let node = Arc::new(CountingNode::default());
    let (a, b) = (replica(&db, node.clone()).await, replica(&db, node.clone()).await);
    let (status, created) =
        call(&key, &a, Method::POST, "/sandboxes", Some(json!({"templateID": "base", "timeout": 300}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["sandboxID"].as_str().unwrap().to_owned();

    let (status, listed) = call(&key, &b, Method::GET, "/v2/sandboxes", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().iter().filter(|s| s["sandboxID"] == id.as_str()).count(), 1, "{listed}");
    let (status, _) =
        call(&key, &b, Method::POST, &format!("/sandboxes/{id}/timeout"), Some(json!({"timeout": 600}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&key, &b, Method::POST, &format!("/sandboxes/{id}/pause"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, info) = call(&key, &a, Method::GET, &format!("/sandboxes/{id}"), None).await;
    assert_eq!((status, info["state"].as_str()), (StatusCode::OK, Some("paused")), "{info}");
    let (status, _) =
        call(&key, &a, Method::POST, &format!("/sandboxes/{id}/connect"), Some(json!({"timeout": 60}))).await;
    assert_eq!(status, StatusCode::CREATED, "connect resumes the sandbox paused through the other replica");
    let (status, _) = call(&key, &b, Method::DELETE, &format!("/sandboxes/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&key, &a, Method::GET, &format!("/sandboxes/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!((node.pauses.load(Ordering::SeqCst), node.resumes.load(Ordering::SeqCst)), (1, 1));
});

store_test!(a_timeout_fires_once_with_both_replicas_up, |db| {
    let key = admin_key(&db).await;
    let node = Arc::new(CountingNode::default());
    let (a, b) = (replica(&db, node.clone()).await, replica(&db, node.clone()).await);
    let store = db.open().await;
    let create = |body: Value| {
        let (key, a) = (key.clone(), &a);
        async move {
            let (status, created) = call(&key, a, Method::POST, "/sandboxes", Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created["sandboxID"].as_str().unwrap().to_owned()
        }
    };
    let killed = create(json!({"templateID": "base", "timeout": 1})).await;
    let paused = create(json!({"templateID": "base", "timeout": 1, "autoPause": true})).await;
    wait_for(&store, &killed, None).await;
    wait_for(&store, &paused, Some(SandboxState::Paused)).await;
    // Both replicas fired both deadlines (A armed them at create, B's sweep found them due): each acted once.
    // Wait out a further sweep and lease so that a late second action would be counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.kills.load(Ordering::SeqCst), 1, "the timeout killed once");
    assert_eq!(node.pauses.load(Ordering::SeqCst), 1, "the auto-pause paused once");
    let record = store.get_sandbox(&paused).await.unwrap();
    assert!(record.state == SandboxState::Paused, "{record:?}");
    drop((a, b));
});

store_test!(a_timeout_set_through_a_replica_that_is_gone_still_fires, |db| {
    let key = admin_key(&db).await;
    let node = Arc::new(CountingNode::default());
    let a = replica(&db, node.clone()).await;
    let b = replica(&db, node.clone()).await;
    let store = db.open().await;
    let (status, created) =
        call(&key, &a, Method::POST, "/sandboxes", Some(json!({"templateID": "base", "timeout": 300}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["sandboxID"].as_str().unwrap().to_owned();
    // Shortened through A (only A's wheel knows the new end), then A goes away before it is due.
    let (status, _) =
        call(&key, &a, Method::POST, &format!("/sandboxes/{id}/timeout"), Some(json!({"timeout": 2}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    a.shut_down().await;
    wait_for(&store, &id, None).await;
    assert_eq!(node.kills.load(Ordering::SeqCst), 1);

    // A replica that died holding a claim (mid-timeout) blocks the others only until its lease runs out.
    let (status, created) =
        call(&key, &b, Method::POST, "/sandboxes", Some(json!({"templateID": "base", "timeout": 1}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["sandboxID"].as_str().unwrap().to_owned();
    let end = store.get_sandbox(&id).await.unwrap().end_at_ms;
    let lease_ms = end - now_ms() + 1_500; // expires 1.5 s after the deadline
    let running = ClaimCondition { state: SandboxState::Running, end_at_ms: Some(end) };
    assert!(store.claim_sandbox(&id, running, "replica-that-died", lease_ms).await.unwrap());
    let claim_expires = now_ms() + lease_ms;
    wait_for(&store, &id, None).await;
    assert!(now_ms() >= claim_expires, "B acted while the dead replica's claim was still valid");
    assert_eq!(node.kills.load(Ordering::SeqCst), 2);
    drop(b);
});

store_test!(concurrent_resumes_through_both_replicas_resume_once, |db| {
    let key = admin_key(&db).await;
    let node = Arc::new(CountingNode::default());
    let (a, b) = (replica(&db, node.clone()).await, replica(&db, node.clone()).await);
    let body = json!({"templateID": "base", "timeout": 300, "autoResume": {"enabled": true}});
    let (status, created) = call(&key, &a, Method::POST, "/v2/sandboxes", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["sandboxID"].as_str().unwrap().to_owned();
    let (status, _) = call(&key, &a, Method::POST, &format!("/sandboxes/{id}/pause"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Proxied traffic wakes it through `auto_resume`: three requests on each replica at once.
    let wakes = (0..6).map(|i| {
        let lifecycle = if i % 2 == 0 { a.lifecycle.clone() } else { b.lifecycle.clone() };
        let id = id.clone();
        tokio::spawn(async move { lifecycle.auto_resume(&id).await })
    });
    for woken in futures::future::join_all(wakes).await {
        let record = woken.unwrap().unwrap();
        assert_eq!((record.state, record.address.as_deref()), (SandboxState::Running, Some("127.0.0.1")));
    }
    assert_eq!(node.resumes.load(Ordering::SeqCst), 1, "resumed once");

    // The same through the API: connect on both replicas at once.
    let (status, _) = call(&key, &b, Method::POST, &format!("/sandboxes/{id}/pause"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let path = format!("/sandboxes/{id}/connect");
    let connect = |r| call(&key, r, Method::POST, &path, Some(json!({"timeout": 60})));
    let (on_a, on_b) = tokio::join!(connect(&a), connect(&b));
    assert!(on_a.0.is_success() && on_b.0.is_success(), "{on_a:?} {on_b:?}");
    assert_eq!(node.resumes.load(Ordering::SeqCst), 2, "the second pause was resumed once");
    assert_eq!(db.open().await.get_sandbox(&id).await.unwrap().state, SandboxState::Running);
});

store_test!(creates_racing_through_both_replicas_stop_at_the_team_limit, |db| {
    let key = admin_key(&db).await;
    let node = Arc::new(CountingNode::default());
    // The base template is 2 vCPUs: 3 sandboxes' worth of vCPUs for the team, and room for 2 already taken.
    let limits = crate::store::TeamLimits { max_sandboxes: 100, max_vcpus: 6, ..Default::default() };
    let (a, b) =
        (replica_with_limits(&db, node.clone(), limits).await, replica_with_limits(&db, node.clone(), limits).await);
    for replica in [&a, &b] {
        let (status, created) =
            call(&key, replica, Method::POST, "/v2/sandboxes", Some(json!({"templateID": "base"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    // Eight creates for the last place, four through each replica, at the same moment: exactly one gets it.
    let creates = (0..8).map(|i| {
        call(&key, if i % 2 == 0 { &a } else { &b }, Method::POST, "/v2/sandboxes", Some(json!({"templateID": "base"})))
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let limited: Vec<&Value> =
        answers.iter().filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS).map(|(_, body)| body).collect();
    assert_eq!((created, limited.len()), (1, 7), "{answers:?}");
    assert!(limited.iter().all(|body| body["message"].as_str().unwrap().contains("teams.max_vcpus")), "{limited:?}");
    assert_eq!(node.inner.sandboxes.lock().unwrap().len(), 3, "the refused create reached no node");
});
