//! Tags over the API with a node that "builds" by registering templates in memory (the harness is shared
//! with `access_tests.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use serde_json::{Value, json};

use std::sync::{Arc, Mutex};

use http::StatusCode;

use crate::api::ApiState;
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::names::build_template_name;
use crate::node::*;
use crate::store::Store;
use soulbox_templates::{BuildFailure, BuildJob, LogLevel, LogSink};

#[derive(Default)]
pub(crate) struct BuildingNode {
    pub(crate) templates: Mutex<BTreeMap<String, TemplateInfo>>,
    pub(crate) created_from: Mutex<Vec<String>>,
    /// The runtime each build job asked for, in order.
    pub(crate) build_runtimes: Mutex<Vec<Option<String>>>,
    /// Where uploads go (default: the system temp dir).
    pub(crate) files_dir: Option<std::path::PathBuf>,
    /// Builds run until their call is dropped (a cancel), which `builds_dropped` counts.
    pub(crate) hang: bool,
    pub(crate) builds_dropped: Arc<std::sync::atomic::AtomicU32>,
}

/// Counts a dropped build call.
struct CountDrop(Arc<std::sync::atomic::AtomicU32>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn info(name: &str, cpu: u32) -> TemplateInfo {
    TemplateInfo {
        template_id: name.into(),
        aliases: vec![name.into()],
        cpu_count: cpu,
        memory_mb: 512,
        disk_size_mb: 0,
        envd_version: "0.6.13".into(),
        created_at_ms: 0,
    }
}

#[async_trait]
impl Node for BuildingNode {
    async fn info(&self) -> NodeInfo {
        crate::testing::FakeNode::default().info().await
    }
    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        let mut all = vec![info("base", 2)];
        all.extend(self.templates.lock().unwrap().values().cloned());
        Ok(all)
    }
    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        let mut created = self.created_from.lock().unwrap();
        created.push(spec.template_id);
        Ok(CreatedSandbox { sandbox_id: format!("t{}", created.len()), address: IpAddr::V4(Ipv4Addr::LOCALHOST) })
    }
    async fn pause(&self, _: &str, _: bool) -> Result<(), NodeError> {
        Ok(())
    }
    async fn resume(&self, _: &str) -> Result<IpAddr, NodeError> {
        Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    async fn kill(&self, _: &str) -> Result<(), NodeError> {
        Ok(())
    }
    async fn stats(&self, _: &str) -> Result<SandboxStats, NodeError> {
        Err(NodeError::Failed("no stats".into()))
    }
    async fn logs(&self, _: &str, _: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        Ok(vec![])
    }
    /// The build's cpu count marks which build a template came from.
    async fn build_template(&self, job: BuildJob, log: LogSink) -> Result<(), BuildFailure> {
        log(LogLevel::Info, format!("[1/1] building {}", job.template_name), Some("1".into()));
        if self.hang {
            let _counted = CountDrop(self.builds_dropped.clone());
            return std::future::pending().await;
        }
        self.build_runtimes.lock().unwrap().push(job.runtime.clone());
        self.templates.lock().unwrap().insert(job.template_name.clone(), info(&job.template_name, job.cpu_count));
        Ok(())
    }
    async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
        Ok(self.templates.lock().unwrap().remove(name).is_some())
    }
    async fn copy_template(&self, from: &str, to: &str) -> Result<(), NodeError> {
        let mut t = self.templates.lock().unwrap();
        let mut copy = t.get(from).cloned().ok_or_else(|| NodeError::TemplateNotFound(from.into()))?;
        copy.template_id = to.into();
        copy.aliases = vec![to.into()];
        t.insert(to.into(), copy);
        Ok(())
    }
    fn template_files_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.files_dir.clone().unwrap_or_else(std::env::temp_dir))
    }
}

pub(crate) struct Harness {
    app: axum::Router,
    pub(crate) key: String,
    /// A member key of another team.
    pub(crate) key_b: String,
    pub(crate) node: Arc<BuildingNode>,
    /// An admin key (of the default team).
    pub(crate) admin: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) async fn new() -> Harness {
        Harness::with_node(BuildingNode::default()).await
    }

    pub(crate) async fn with_node(node: BuildingNode) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
        let (_, key) = store.create_api_key("test").await.unwrap();
        let (_, key_b) = store.create_api_key_in("b", "other", crate::store::Role::Member).await.unwrap();
        let (_, admin) =
            store.create_api_key_in("ops", crate::store::DEFAULT_TEAM_NAME, crate::store::Role::Admin).await.unwrap();
        let node = Arc::new(BuildingNode { files_dir: Some(dir.path().join("uploads")), ..node });
        let lifecycle = Lifecycle::start(store, node.clone(), LifecycleConfig::default()).await.unwrap();
        let state = ApiState {
            lifecycle,
            metrics: Arc::new(crate::metrics::MetricsStore::default()),
            domain: None,
            started: std::time::Instant::now(),
        };
        Harness {
            app: crate::api::router(state),
            key: key.secret,
            key_b: key_b.secret,
            node,
            admin: admin.secret,
            _dir: dir,
        }
    }

    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.key, method, path, body).await
    }

    pub(crate) async fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, value) =
            crate::api::tests::send(&self.app, method, path, body.map(|b| b.to_string()), Some(key)).await;
        (status, value)
    }

    /// Requests and runs a build; the live stream ends with the build, so reading it to the end waits for it.
    pub(crate) async fn build(&self, name: &str, tags: &[&str], cpu: i32) -> (String, Value) {
        let (status, req) =
            self.call("POST", "/v3/templates", Some(json!({"name": name, "tags": tags, "cpuCount": cpu}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{req}");
        let (id, build) =
            (req["templateID"].as_str().unwrap().to_string(), req["buildID"].as_str().unwrap().to_string());
        let (status, _) = self
            .call("POST", &format!("/v2/templates/{id}/builds/{build}"), Some(json!({"fromTemplate": "base"})))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, log) = self.call("GET", &format!("/templates/{id}/builds/{build}/logs/stream"), None).await;
        assert_eq!(status, StatusCode::OK);
        let last = log.as_str().unwrap().lines().last().unwrap().to_string();
        assert_eq!(serde_json::from_str::<Value>(&last).unwrap()["status"], "ready", "{log}");
        (build, req)
    }

    pub(crate) async fn create_from(&self, template: &str) -> (StatusCode, Option<String>) {
        let (status, body) = self.call("POST", "/v2/sandboxes", Some(json!({"templateID": template}))).await;
        (
            status,
            (status == StatusCode::CREATED)
                .then(|| self.node.created_from.lock().unwrap().last().cloned().unwrap())
                .inspect(|_| {
                    assert!(body["sandboxID"].is_string());
                }),
        )
    }
}

#[tokio::test]
async fn tags_point_names_at_builds() {
    let h = Harness::new().await;
    // `name:tag` plus `tags`: the build gets both, not `default`.
    let (b1, req) = h.build("app:v1", &["stable"], 1).await;
    assert_eq!(req["tags"], json!(["v1", "stable"]));
    assert_eq!(h.create_from("app:v1").await, (StatusCode::CREATED, Some(build_template_name(&b1))));
    assert_eq!(h.create_from("app:stable").await.1, Some(build_template_name(&b1)));
    assert_eq!(h.create_from("app").await.0, StatusCode::NOT_FOUND, "no default tag yet");
    assert_eq!(h.call("GET", "/templates/aliases/app:v1", None).await.0, StatusCode::OK);
    assert_eq!(h.call("GET", "/templates/aliases/app:nope", None).await.0, StatusCode::NOT_FOUND);

    // A plain name is the `default` tag: the runtime template `app` is that build.
    let (b2, req) = h.build("app", &[], 3).await;
    assert_eq!(req["tags"], json!(["default"]));
    assert_eq!(h.create_from("app").await.1.as_deref(), Some("app"));
    assert_eq!(h.node.templates.lock().unwrap()["app"].cpu_count, 3);

    let (status, tags) = h.call("GET", "/templates/app/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    let pairs: Vec<(String, String)> = tags
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t["createdAt"].as_str().is_some_and(|c| c.ends_with('Z')), "{t}");
            (t["tag"].as_str().unwrap().into(), t["buildID"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(pairs, [("default".into(), b2.clone()), ("stable".into(), b1.clone()), ("v1".into(), b1.clone())]);

    // Assign: new tags on v1's build; `default` moves and re-registers `app` as that build.
    let (status, body) =
        h.call("POST", "/templates/tags", Some(json!({"target": "app:v1", "tags": ["prod", "default"]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"buildID": b1, "tags": ["prod", "default"]}));
    assert_eq!(h.create_from("app:prod").await.1, Some(build_template_name(&b1)));
    assert_eq!(h.node.templates.lock().unwrap()["app"].cpu_count, 1, "`app` is now build 1");
    let (status, _) = h.call("POST", "/templates/tags", Some(json!({"target": "app:nope", "tags": ["x"]}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("POST", "/templates/tags", Some(json!({"target": "app:v1", "tags": ["bad tag"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Remove: the tag no longer resolves; removing `default` removes `app` as a startable name.
    let (status, _) =
        h.call("DELETE", "/templates/tags", Some(json!({"name": "app", "tags": ["prod", "default"]}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.create_from("app:prod").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.create_from("app").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.create_from("app:v1").await.0, StatusCode::CREATED, "other tags stay");
    let (status, _) = h.call("DELETE", "/templates/tags", Some(json!({"name": "nope", "tags": ["v1"]}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.call("GET", "/templates/nope/tags", None).await.0, StatusCode::NOT_FOUND);

    // Build runtime templates are not listed; deleting the template removes every build of it.
    let (_, list) = h.call("GET", "/templates", None).await;
    assert!(list.as_array().unwrap().iter().all(|t| !t["templateID"].as_str().unwrap().starts_with("sbb-")), "{list}");
    assert_eq!(h.call("DELETE", "/templates/app", None).await.0, StatusCode::NO_CONTENT);
    assert!(h.node.templates.lock().unwrap().is_empty(), "{:?}", h.node.templates.lock().unwrap().keys());
    assert_eq!(h.call("GET", "/templates/app/tags", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.call("POST", "/v3/templates", Some(json!({"name": "sbb-x"}))).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_build_asking_for_a_runtime_hands_it_to_the_node_and_an_unknown_one_is_refused() {
    let h = Harness::new().await;
    let (status, req) = h.call("POST", "/v3/templates", Some(json!({"name": "hostile", "runtime": "runsc"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{req}");
    let build = req["buildID"].as_str().unwrap();
    let path = format!("/v2/templates/hostile/builds/{build}");
    assert_eq!(h.call("POST", &path, Some(json!({"fromTemplate": "base"}))).await.0, StatusCode::ACCEPTED);
    h.call("GET", &format!("/templates/hostile/builds/{build}/logs/stream"), None).await;
    h.build("plain", &[], 1).await;
    assert_eq!(*h.node.build_runtimes.lock().unwrap(), vec![Some("runsc".to_string()), None]);

    let (status, body) = h.call("POST", "/v3/templates", Some(json!({"name": "odd", "runtime": "kata"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("unknown runtime 'kata'"), "{body}");
    assert_eq!(
        h.call("GET", "/templates/aliases/odd", None).await.0,
        StatusCode::NOT_FOUND,
        "a refused build left a record"
    );
}

/// An admin's cancel stops a running build: its node call is dropped (the engine then removes its build sandbox)
/// and the build ends as an error saying why.
#[tokio::test]
async fn an_admin_cancels_a_running_build() {
    let h = Harness::with_node(BuildingNode { hang: true, ..Default::default() }).await;
    let (status, req) = h.call("POST", "/v3/templates", Some(json!({"name": "slow"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{req}");
    let (id, build) = (req["templateID"].as_str().unwrap().to_string(), req["buildID"].as_str().unwrap().to_string());
    let (status, _) =
        h.call("POST", &format!("/v2/templates/{id}/builds/{build}"), Some(json!({"fromTemplate": "base"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let team = crate::store::DEFAULT_TEAM_ID;
    // The build runs once its status says so (it is started in the background).
    let status_of = || async {
        let (_, got) = h.call("GET", &format!("/templates/{id}/builds/{build}/status"), None).await;
        got["status"].as_str().unwrap_or_default().to_owned()
    };
    for _ in 0..500 {
        if status_of().await == "building" {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status_of().await, "building");
    let (status, cancelled) = h.call_as(&h.admin, "POST", &format!("/admin/teams/{team}/builds/cancel"), None).await;
    assert_eq!((status, cancelled), (StatusCode::OK, json!({"cancelledCount": 1, "failedCount": 0})));
    // The live log ends with the build: read to its end, the build has finished.
    let (_, log) = h.call("GET", &format!("/templates/{id}/builds/{build}/logs/stream"), None).await;
    let last = log.as_str().unwrap().lines().last().unwrap().to_string();
    let end: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(end["status"], "error", "{log}");
    assert!(log.as_str().unwrap().contains("cancelled by an admin"), "{log}");
    assert_eq!(h.node.builds_dropped.load(std::sync::atomic::Ordering::SeqCst), 1, "the node call was not dropped");
}
