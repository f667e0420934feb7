//! The HTTP client shared by a process's sandboxes, and the control-plane (REST) calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use soulbox_protocol::api;

use crate::config::{ConnectionConfig, Redirects};
use crate::error::{Error, Result};

/// Sandbox details (`GET /sandboxes/{id}`).
pub type SandboxInfo = api::SandboxDetail;
/// One entry of a sandbox listing.
pub type ListedSandbox = api::ListedSandbox;
/// One metrics sample (seed feature 8).
pub type SandboxMetric = api::SandboxMetric;
/// A node of the cluster with its status and capacity (seed feature 10).
pub use api::NodeInfo;
pub use api::SandboxState;
/// One line of a sandbox's log.
pub type LogLine = api::SandboxLog;

/// Sort order of a listing (by start time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// Filters of [`Client::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Sandboxes whose metadata contains all these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Empty = running and paused.
    pub states: Vec<SandboxState>,
    /// Template id or alias.
    pub template: Option<String>,
    /// RFC 3339; inclusive.
    pub started_after: Option<String>,
    pub order: Option<Order>,
    /// Page size (1..=100).
    pub limit: Option<u32>,
}

impl ListQuery {
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    pub fn state(mut self, state: SandboxState) -> Self {
        self.states.push(state);
        self
    }
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(template.into());
        self
    }
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    pub fn order(mut self, order: Order) -> Self {
        self.order = Some(order);
        self
    }

    fn params(&self, next_token: Option<&str>) -> Vec<(&'static str, String)> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let mut p = Vec::new();
        if !self.metadata.is_empty() {
            let inner: Vec<String> = self
                .metadata
                .iter()
                .map(|(k, v)| {
                    format!("{}={}", utf8_percent_encode(k, NON_ALPHANUMERIC), utf8_percent_encode(v, NON_ALPHANUMERIC))
                })
                .collect();
            p.push(("metadata", inner.join("&")));
        }
        if !self.states.is_empty() {
            let s: Vec<&str> = self
                .states
                .iter()
                .map(|s| match s {
                    SandboxState::Running => "running",
                    SandboxState::Paused => "paused",
                })
                .collect();
            p.push(("state", s.join(",")));
        }
        if let Some(t) = &self.template {
            p.push(("template", t.clone()));
        }
        if let Some(t) = &self.started_after {
            p.push(("startedAfter", t.clone()));
        }
        if let Some(o) = self.order {
            p.push(("order", if o == Order::Asc { "asc" } else { "desc" }.to_owned()));
        }
        if let Some(l) = self.limit {
            p.push(("limit", l.to_string()));
        }
        if let Some(t) = next_token {
            p.push(("nextToken", t.to_owned()));
        }
        p
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<ListedSandbox>,
    /// `None` on the last page.
    pub next_token: Option<String>,
}

/// A connection to a server: the HTTP connection pool and the [`ConnectionConfig`]. Cheap to clone; share one
/// per process.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) config: ConnectionConfig,
    pub(crate) http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("api_url", &self.inner.config.api_url).finish()
    }
}

impl Client {
    /// A client for `config`.
    pub fn new(config: ConnectionConfig) -> Result<Client> {
        let redirect = match config.redirects {
            Redirects::Follow(n) => reqwest::redirect::Policy::limited(n),
            Redirects::Off => reqwest::redirect::Policy::none(),
        };
        let http = crate::tls::client_builder()
            .redirect(redirect)
            .user_agent(config.user_agent.clone())
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .map_err(|e| Error::Other(format!("building the HTTP client: {e}")))?;
        Ok(Client { inner: Arc::new(ClientInner { config, http }) })
    }

    /// A client configured from the environment ([`ConnectionConfig::from_env`]).
    pub fn from_env() -> Result<Client> {
        Client::new(ConnectionConfig::from_env())
    }

    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn api_request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let key = self.inner.config.api_key.as_deref().ok_or_else(|| {
            Error::Auth("no API key: set E2B_API_KEY or SOULBOX_API_KEY, or ConnectionConfig::with_api_key".into())
        })?;
        let url = format!("{}{path}", self.inner.config.api_url.trim_end_matches('/'));
        let mut rb = self.inner.http.request(method, url).header("X-API-Key", key);
        if let Some(t) = self.inner.config.request_timeout {
            rb = rb.timeout(t);
        }
        Ok(rb)
    }

    /// Sends an API request with safe retries and maps non-2xx answers to [`Error`]s.
    pub(crate) async fn api_send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<Response> {
        let idempotent = method == Method::GET;
        let mut attempt = 0u32;
        loop {
            let mut rb = self.api_request(method.clone(), path)?.query(query);
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            let result = rb.send().await;
            let retries_left = attempt < self.inner.config.retries;
            match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(&resp);
                    let should_retry =
                        resp.headers().get("should-retry").and_then(|v| v.to_str().ok()).map(|v| v == "true");
                    let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    if retries_left && should_retry.unwrap_or(idempotent && transient) {
                        tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(api_error(resp).await);
                }
                // Nothing reached the server: safe to retry any method.
                Err(e) if retries_left && e.is_connect() => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(Error::transport(e)),
            }
        }
    }

    pub(crate) async fn api_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let resp = self.api_send(method, path, query, body).await?;
        let bytes = resp.bytes().await.map_err(Error::transport)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("unexpected response body: {e}: {}", String::from_utf8_lossy(&bytes))))
    }

    /// `GET /health` of the server: its JSON (status, version, uptime_seconds).
    pub async fn health(&self) -> Result<serde_json::Value> {
        let url = format!("{}/health", self.inner.config.api_url.trim_end_matches('/'));
        let resp = self.inner.http.get(url).send().await.map_err(Error::transport)?;
        resp.json().await.map_err(Error::transport)
    }

    /// Details of one sandbox.
    pub async fn get_info(&self, sandbox_id: &str) -> Result<SandboxInfo> {
        self.api_json(Method::GET, &format!("/sandboxes/{}", seg(sandbox_id)), &[], None).await
    }

    /// Kills a sandbox; `Ok(false)` when it did not exist.
    pub async fn kill(&self, sandbox_id: &str) -> Result<bool> {
        match self.api_send(Method::DELETE, &format!("/sandboxes/{}", seg(sandbox_id)), &[], None).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the sandbox to end `timeout` from now (may shorten it).
    pub async fn set_timeout(&self, sandbox_id: &str, timeout: Duration) -> Result<()> {
        let body = serde_json::json!({ "timeout": secs(timeout) });
        self.api_send(Method::POST, &format!("/sandboxes/{}/timeout", seg(sandbox_id)), &[], Some(body)).await?;
        Ok(())
    }

    /// Extends the sandbox's life by `duration` (seed feature 7); the server refuses (as [`Error::Invalid`]) to go
    /// past its maximum total lifetime.
    pub async fn refresh(&self, sandbox_id: &str, duration: Duration) -> Result<()> {
        let body = serde_json::json!({ "duration": secs(duration) });
        self.api_send(Method::POST, &format!("/sandboxes/{}/refreshes", seg(sandbox_id)), &[], Some(body)).await?;
        Ok(())
    }

    /// Pauses a sandbox; `Ok(false)` when it was already paused.
    pub async fn pause(&self, sandbox_id: &str) -> Result<bool> {
        match self
            .api_send(Method::POST, &format!("/sandboxes/{}/pause", seg(sandbox_id)), &[], Some(serde_json::json!({})))
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Invalid(m)) if m.contains("paused") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Metrics samples between `start` and `end` (unix seconds, inclusive; `None` = open).
    pub async fn get_metrics(
        &self,
        sandbox_id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        let mut q = Vec::new();
        if let Some(s) = start {
            q.push(("start", s.to_string()));
        }
        if let Some(e) = end {
            q.push(("end", e.to_string()));
        }
        self.api_json(Method::GET, &format!("/sandboxes/{}/metrics", seg(sandbox_id)), &q, None).await
    }

    /// The sandbox's log lines from `start_ms` (unix ms) on.
    pub async fn logs(&self, sandbox_id: &str, start_ms: Option<i64>, limit: Option<u32>) -> Result<Vec<LogLine>> {
        let mut q = Vec::new();
        if let Some(s) = start_ms {
            q.push(("start", s.to_string()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        let body: api::SandboxLogs =
            self.api_json(Method::GET, &format!("/sandboxes/{}/logs", seg(sandbox_id)), &q, None).await?;
        Ok(body.logs)
    }

    /// One page of `GET /v2/sandboxes`.
    pub async fn list_page(&self, query: &ListQuery, next_token: Option<&str>) -> Result<Page> {
        let resp = self.api_send(Method::GET, "/v2/sandboxes", &query.params(next_token), None).await?;
        let next_token = resp
            .headers()
            .get("x-next-token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let items = resp.json().await.map_err(Error::transport)?;
        Ok(Page { items, next_token })
    }

    /// Every sandbox matching `query`, fetched page by page as the stream is read.
    pub fn list(&self, query: ListQuery) -> impl Stream<Item = Result<ListedSandbox>> + Send + 'static {
        let client = self.clone();
        enum St {
            Next(Option<String>),
            Done,
        }
        let pages = futures::stream::try_unfold(St::Next(None), move |state| {
            let client = client.clone();
            let query = query.clone();
            async move {
                let token = match state {
                    St::Done => return Ok::<_, Error>(None),
                    St::Next(t) => t,
                };
                let page = client.list_page(&query, token.as_deref()).await?;
                let next = match page.next_token {
                    Some(t) => St::Next(Some(t)),
                    None => St::Done,
                };
                Ok(Some((futures::stream::iter(page.items.into_iter().map(Ok::<_, Error>)), next)))
            }
        });
        futures::TryStreamExt::try_flatten(pages)
    }

    /// Nodes with status and capacity (`GET /nodes`, seed feature 10).
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.api_json(Method::GET, "/nodes", &[], None).await
    }
}

pub(crate) fn secs(d: Duration) -> i64 {
    // E2B rounds up (JS `Math.ceil(ms / 1000)`).
    d.as_millis().div_ceil(1000).min(i32::MAX as u128) as i64
}

/// A path segment, percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6)).min(Duration::from_secs(10))
}

fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The [`Error`] for a non-2xx API answer.
pub(crate) async fn api_error(resp: Response) -> Error {
    let status = resp.status();
    let retry = retry_after(&resp);
    if status.is_redirection() {
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
        return Error::Other(format!(
            "HTTP {status}: redirect to {location} not followed (redirects are off or over the limit)"
        ));
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            if text.is_empty() { status.canonical_reason().unwrap_or("").to_owned() } else { text.clone() }
        });
    if status == StatusCode::CONFLICT && message.contains("paused") {
        return Error::Invalid(message);
    }
    Error::from_status(status.as_u16(), message, retry)
}
