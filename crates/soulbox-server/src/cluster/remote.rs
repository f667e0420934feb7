//! `Node` over HTTP: the control plane's handle on one node agent.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{
    AddressResponse, DeletedResponse, ErrorBody, LayerList, NODE_API_PREFIX, PauseRequest, SECRET_HEADER,
    SnapshotRequest,
};
use crate::node::{
    ByteStream, CreatedSandbox, LogLine, LogQuery, NetworkPolicy, Node, NodeError, NodeInfo, SandboxSpec, SandboxStats,
    SnapshotTaken, TemplateInfo, TemplateMeta,
};

/// Creating waits for envd (and a template's ready command); everything else is quick.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A layer moving between nodes (gigabytes at worst).
const LAYER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub struct RemoteNode {
    node_id: String,
    base_url: String,
    secret: String,
    http: reqwest::Client,
}

impl RemoteNode {
    /// `http` is shared by all nodes (one connection pool per replica).
    pub fn new(
        node_id: impl Into<String>,
        base_url: &str,
        secret: impl Into<String>,
        http: reqwest::Client,
    ) -> RemoteNode {
        RemoteNode {
            node_id: node_id.into(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret: secret.into(),
            http,
        }
    }

    /// A client suited to node API calls (no proxy from the environment: nodes are addressed directly).
    pub fn http_client() -> reqwest::Client {
        // reqwest is built without a crypto provider of its own: ring is the process default (Err: already set).
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, NodeError> {
        let url = format!("{}{NODE_API_PREFIX}{path}", self.base_url);
        let mut request =
            with_request_id(self.http.request(method, &url).header(SECRET_HEADER, &self.secret).timeout(timeout));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            if status == StatusCode::NO_CONTENT {
                return serde_json::from_str("null").map_err(|e| NodeError::Failed(e.to_string()));
            }
            return response.json::<T>().await.map_err(|e| self.unreachable(e));
        }
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        Err(self.refusal(status, &text))
    }

    /// A request whose body or answer is a layer's bytes: the error an unsuccessful answer carries.
    async fn layer_request(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, NodeError> {
        let response = with_request_id(request)
            .header(SECRET_HEADER, &self.secret)
            .timeout(LAYER_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        Err(self.refusal(status, &text))
    }

    fn layer_url(&self, digest: &str) -> String {
        format!("{}{NODE_API_PREFIX}/layers/{}", self.base_url, segment(digest))
    }

    /// What an unsuccessful answer means. A 401 comes from an agent whose secret is not the one this control
    /// plane holds: it lost its saved secret and restarted with a new one, which its next heartbeat brings — so
    /// it is unavailable for now (a 503 to the caller, who may retry), not a failure.
    fn refusal(&self, status: StatusCode, text: &str) -> NodeError {
        if status == StatusCode::UNAUTHORIZED {
            return NodeError::Unreachable(format!(
                "node {} refused the control plane's secret: it restarted with a new one, which its next heartbeat brings",
                self.node_id
            ));
        }
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(body) => body.into_error(),
            Err(_) => NodeError::Failed(format!("node {} answered {status}: {}", self.node_id, text.trim())),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> NodeError {
        NodeError::Unreachable(format!("node {} ({}): {e}", self.node_id, self.base_url))
    }
}

/// The API request this call serves, named to the node agent (its access log shows the same id).
fn with_request_id(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::access_log::current() {
        Some(id) => request.header(soulbox_protocol::envd_init::REQUEST_ID_HEADER, id),
        None => request,
    }
}

fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[async_trait]
impl Node for RemoteNode {
    async fn info(&self) -> NodeInfo {
        match self.call::<(), NodeInfo>(Method::GET, "/info", None, CALL_TIMEOUT).await {
            Ok(info) => info,
            Err(e) => NodeInfo {
                node_id: self.node_id.clone(),
                status: crate::node::NodeStatus::Unhealthy,
                region: String::new(),
                version: String::new(),
                cpu_count: 0,
                memory_mb: 0,
                cpu_available: 0.0,
                memory_available_mb: 0,
                sandbox_count: 0,
                last_health_check_unix_ms: 0,
                trouble: Some(e.to_string()),
            },
        }
    }

    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        self.call::<(), _>(Method::GET, "/templates", None, CALL_TIMEOUT).await
    }

    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        self.call(Method::POST, "/sandboxes", Some(&spec), CREATE_TIMEOUT).await
    }

    async fn pause(&self, sandbox_id: &str, keep_memory: bool) -> Result<(), NodeError> {
        let path = format!("/sandboxes/{}/pause", segment(sandbox_id));
        self.call::<_, ()>(Method::POST, &path, Some(&PauseRequest { keep_memory }), CREATE_TIMEOUT).await
    }

    async fn snapshot(&self, sandbox_id: &str, name: &str) -> Result<SnapshotTaken, NodeError> {
        let path = format!("/sandboxes/{}/snapshot", segment(sandbox_id));
        self.call(Method::POST, &path, Some(&SnapshotRequest { name: name.to_owned() }), CREATE_TIMEOUT).await
    }

    async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
        let path = format!("/templates/{}", segment(name));
        let r: DeletedResponse = self.call::<(), _>(Method::DELETE, &path, None, CALL_TIMEOUT).await?;
        Ok(r.deleted)
    }

    async fn resume(&self, sandbox_id: &str) -> Result<IpAddr, NodeError> {
        let path = format!("/sandboxes/{}/resume", segment(sandbox_id));
        let r: AddressResponse = self.call::<(), _>(Method::POST, &path, None, CREATE_TIMEOUT).await?;
        Ok(r.address)
    }

    async fn update_network(&self, sandbox_id: &str, policy: &NetworkPolicy) -> Result<(), NodeError> {
        let path = format!("/sandboxes/{}/network", segment(sandbox_id));
        self.call::<_, ()>(Method::PUT, &path, Some(policy), CALL_TIMEOUT).await
    }

    async fn kill(&self, sandbox_id: &str) -> Result<(), NodeError> {
        let path = format!("/sandboxes/{}", segment(sandbox_id));
        self.call::<(), ()>(Method::DELETE, &path, None, CALL_TIMEOUT).await
    }

    async fn stats(&self, sandbox_id: &str) -> Result<SandboxStats, NodeError> {
        let path = format!("/sandboxes/{}/stats", segment(sandbox_id));
        self.call::<(), _>(Method::GET, &path, None, CALL_TIMEOUT).await
    }

    async fn logs(&self, sandbox_id: &str, query: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        let path = format!("/sandboxes/{}/logs?start={}&limit={}", segment(sandbox_id), query.start_ms, query.limit);
        self.call::<(), _>(Method::GET, &path, None, CALL_TIMEOUT).await
    }

    async fn export_template(&self, name: &str) -> Result<TemplateMeta, NodeError> {
        self.call::<(), _>(Method::GET, &format!("/templates/{}", segment(name)), None, CALL_TIMEOUT).await
    }

    async fn missing_layers(&self, layers: &[String]) -> Result<Vec<String>, NodeError> {
        let body = LayerList { layers: layers.to_vec() };
        let answer: LayerList = self.call(Method::POST, "/layers/missing", Some(&body), CALL_TIMEOUT).await?;
        Ok(answer.layers)
    }

    async fn export_layer(&self, digest: &str) -> Result<ByteStream, NodeError> {
        use futures::StreamExt;
        let response = self.layer_request(self.http.get(self.layer_url(digest))).await?;
        Ok(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed())
    }

    async fn import_layer(&self, digest: &str, tar: ByteStream) -> Result<(), NodeError> {
        let request = self.http.put(self.layer_url(digest)).body(reqwest::Body::wrap_stream(tar));
        self.layer_request(request).await.map(|_| ())
    }

    async fn create_volume(&self, volume_id: &str, size_bytes: Option<u64>) -> Result<(), NodeError> {
        let body = super::wire::NewNodeVolume { size_bytes };
        self.call::<_, ()>(Method::PUT, &super::wire::volume_path(volume_id), Some(&body), CALL_TIMEOUT).await
    }

    async fn delete_volume(&self, volume_id: &str) -> Result<(), NodeError> {
        // A volume of gigabytes takes a while to remove.
        self.call::<(), ()>(Method::DELETE, &super::wire::volume_path(volume_id), None, CREATE_TIMEOUT).await
    }

    async fn import_template(&self, template: TemplateMeta) -> Result<(), NodeError> {
        let path = format!("/templates/{}", segment(&template.name));
        self.call::<_, ()>(Method::PUT, &path, Some(&template), CALL_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Path, Query};

    /// `start` and `limit` cross the node API as the agent's logs route reads them (same query type), and a
    /// request without them (a control plane from before) gets E2B's defaults.
    #[tokio::test]
    async fn log_ranges_cross_the_node_api() {
        let app = axum::Router::new().route(
            &format!("{NODE_API_PREFIX}/sandboxes/{{id}}/logs"),
            axum::routing::get(|Path(id): Path<String>, Query(q): Query<LogQuery>| async move {
                axum::Json(vec![LogLine { unix_ms: q.start_ms, line: format!("{id} limit {}", q.limit) }])
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let node = RemoteNode::new("n1", &url, "secret", reqwest::Client::builder().no_proxy().build().unwrap());
        let lines = node.logs("sbx1", LogQuery { start_ms: 1_765_000_000_123, limit: 7 }).await.unwrap();
        assert_eq!(lines, vec![LogLine { unix_ms: 1_765_000_000_123, line: "sbx1 limit 7".into() }]);
        let uri: http::Uri = "http://n/logs".parse().unwrap();
        let Query(q) = Query::<LogQuery>::try_from_uri(&uri).unwrap();
        assert_eq!(q, LogQuery::default());
        assert_eq!(q.limit, LogQuery::DEFAULT_LIMIT);
    }

    /// A node call made while serving an API request names that request to the agent; other calls name none.
    #[tokio::test]
    async fn node_calls_carry_the_request_id() {
        let app = axum::Router::new().route(
            &format!("{NODE_API_PREFIX}/sandboxes/{{id}}/logs"),
            axum::routing::get(|headers: http::HeaderMap| async move {
                let id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
                axum::Json(vec![LogLine { unix_ms: 0, line: id }])
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let node = RemoteNode::new("n1", &url, "secret", reqwest::Client::builder().no_proxy().build().unwrap());
        let seen = crate::access_log::scoped("req-9", node.logs("sbx1", LogQuery::default())).await.unwrap();
        assert_eq!(seen[0].line, "req-9");
        assert_eq!(node.logs("sbx1", LogQuery::default()).await.unwrap()[0].line, "none");
    }

    /// An agent that restarted with a new secret refuses the old one with a 401: the caller is told the node is
    /// unavailable for now (503), not that something failed (500).
    #[tokio::test]
    async fn a_refused_secret_is_unavailable_not_a_failure() {
        let app = axum::Router::new()
            .fallback(|| async { crate::reply::error(StatusCode::UNAUTHORIZED, "only its control plane may call it") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let node = RemoteNode::new("n1", &url, "old", reqwest::Client::builder().no_proxy().build().unwrap());
        match node.resume("sbx1").await {
            Err(NodeError::Unreachable(why)) => assert!(why.contains("next heartbeat"), "{why}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
    }
}
