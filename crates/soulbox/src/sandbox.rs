//! [`Sandbox`]: create, connect, lifecycle, and access to commands, PTYs and files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use soulbox_protocol::api::{self, AutoResume, NewSandbox, SandboxNetworkConfig};
use soulbox_protocol::version;

use crate::client::{Client, SandboxInfo, SandboxMetric, secs, seg};
use crate::commands::Commands;
use crate::envd::Envd;
use crate::error::{Error, Result};
use crate::files::Filesystem;
use crate::pty::Pty;

/// What happens when a sandbox's timeout passes (seed feature 4).
///
/// SoulBox's API takes this at create time only (there is no endpoint to change it afterwards), so it is set
/// on the [`SandboxBuilder`] with [`SandboxBuilder::set_timeout_behavior`]. The timer itself is replaceable
/// any time with [`Sandbox::set_timeout`] / [`Sandbox::refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeoutBehavior {
    /// Kill the sandbox (E2B's default).
    #[default]
    Kill,
    /// Pause it (keeping memory) once the timeout plus `grace` has passed.
    Pause { grace: Duration },
}

/// Options of a new sandbox. Start with [`Sandbox::builder`].
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    client: Option<Client>,
    request: NewSandbox,
}

impl SandboxBuilder {
    /// Use this client (default: [`Client::from_env`]).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }
    /// Lifetime before the timeout behavior applies (default: the server's, 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout = Some(secs(timeout) as i32);
        self
    }
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.metadata.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
        self
    }
    /// Environment variables every command in the sandbox gets.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.env_vars.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
        self
    }
    /// Pause instead of kill at timeout, optionally after a grace period.
    pub fn set_timeout_behavior(mut self, behavior: TimeoutBehavior) -> Self {
        match behavior {
            TimeoutBehavior::Kill => {
                self.request.auto_pause = Some(false);
                self.request.auto_pause_grace_period = None;
            }
            TimeoutBehavior::Pause { grace } => {
                self.request.auto_pause = Some(true);
                self.request.auto_pause_grace_period = (!grace.is_zero()).then(|| secs(grace) as u32);
            }
        }
        self
    }
    /// Shorthand for [`TimeoutBehavior::Pause`] with no grace period.
    pub fn auto_pause(self, on: bool) -> Self {
        self.set_timeout_behavior(if on {
            TimeoutBehavior::Pause { grace: Duration::ZERO }
        } else {
            TimeoutBehavior::Kill
        })
    }
    /// Resume a paused sandbox automatically when traffic arrives for it.
    pub fn auto_resume(mut self, on: bool) -> Self {
        self.request.auto_resume = Some(AutoResume { enabled: on });
        self
    }
    pub fn allow_internet_access(mut self, on: bool) -> Self {
        self.request.allow_internet_access = Some(on);
        self
    }
    /// Egress allow-list (CIDRs / IPs), checked before the deny-list.
    pub fn allow_out(mut self, targets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.network().allow_out = Some(targets.into_iter().map(Into::into).collect());
        self
    }
    /// Egress deny-list.
    pub fn deny_out(mut self, targets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.network().deny_out = Some(targets.into_iter().map(Into::into).collect());
        self
    }
    /// Require the access token on every agent request (E2B `secure`).
    pub fn secure(mut self, on: bool) -> Self {
        self.request.secure = Some(on);
        self
    }
    fn network(&mut self) -> &mut SandboxNetworkConfig {
        self.request.network.get_or_insert_with(Default::default)
    }

    /// The request body that [`SandboxBuilder::create`] sends.
    pub fn request(&self) -> &NewSandbox {
        &self.request
    }

    /// Creates the sandbox. Refuses (and kills) it when its agent is older than the minimum supported version.
    pub async fn create(self) -> Result<Sandbox> {
        let client = match self.client {
            Some(c) => c,
            None => Client::from_env()?,
        };
        let body = serde_json::to_value(&self.request).map_err(|e| Error::Invalid(e.to_string()))?;
        let created: api::Sandbox = client.api_json(Method::POST, "/v2/sandboxes", &[], Some(body)).await?;
        Sandbox::from_api(client, created)
    }
}

/// Where a sandbox's agent is when reached directly, for [`Sandbox::direct`].
#[derive(Clone, Default)]
pub struct DirectEnvd {
    pub sandbox_id: String,
    pub template_id: String,
    /// `host:port` of the agent (plain HTTP: the node reaches it over the sandbox's own veth).
    pub addr: String,
    /// Sent in [`soulbox_protocol::envd_secret::HEADER`]: the agent answers its node only with it.
    pub node_secret: Option<String>,
    /// The sandbox's access token, when it was created secure.
    pub access_token: Option<String>,
    /// The agent's version; `None`: the one this SDK is built with (the node's own agent).
    pub envd_version: Option<String>,
}

impl std::fmt::Debug for DirectEnvd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectEnvd")
            .field("sandbox_id", &self.sandbox_id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A running (or paused) sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) envd: Arc<Envd>,
    template_id: String,
    domain: Option<String>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.envd.sandbox_id)
            .field("envd_version", &self.envd.version.to_string())
            .finish()
    }
}

impl Sandbox {
    /// Options for a new sandbox from `template` (id or alias, e.g. `"base"`).
    pub fn builder(template: impl Into<String>) -> SandboxBuilder {
        SandboxBuilder { client: None, request: NewSandbox { template_id: template.into(), ..Default::default() } }
    }

    /// Creates a sandbox from `template` with defaults and the environment's connection settings.
    pub async fn create(template: impl Into<String>) -> Result<Sandbox> {
        Sandbox::builder(template).create().await
    }

    /// Connects to an existing sandbox (resuming it when paused). `timeout` only ever extends its life.
    pub async fn connect(client: &Client, sandbox_id: &str, timeout: Option<Duration>) -> Result<Sandbox> {
        let body = serde_json::json!({ "timeout": secs(timeout.unwrap_or(Duration::from_secs(300))) });
        let path = format!("/v2/sandboxes/{}/connect", seg(sandbox_id));
        let s: api::Sandbox = client.api_json(Method::POST, &path, &[], Some(body)).await?;
        Sandbox::from_api(client.clone(), s)
    }

    /// A handle to a running sandbox without touching its lifecycle (connect would extend its timeout and resume
    /// it): reads `GET /sandboxes/{id}`. A paused sandbox is [`Error::Invalid`]; use [`Sandbox::connect`] to resume.
    pub async fn get(client: &Client, sandbox_id: &str) -> Result<Sandbox> {
        let d = client.get_info(sandbox_id).await?;
        if d.state == api::SandboxState::Paused {
            return Err(Error::Invalid(format!("sandbox {sandbox_id} is paused: resume it first")));
        }
        let s = api::Sandbox {
            template_id: d.template_id,
            sandbox_id: d.sandbox_id,
            client_id: d.client_id,
            envd_version: d.envd_version,
            alias: d.alias,
            envd_access_token: d.envd_access_token,
            traffic_access_token: None,
            domain: d.domain,
        };
        Sandbox::from_api(client.clone(), s)
    }

    /// Builds a handle from a create/connect answer, checking the agent version (seed feature 3).
    pub fn from_api(client: Client, s: api::Sandbox) -> Result<Sandbox> {
        let v = version::parse_version(&s.envd_version)?;
        if let Err(e) = version::check_supported(&v) {
            let id = s.sandbox_id.clone();
            let c = client.clone();
            // Best effort, like the official SDKs: do not leave an unusable sandbox running.
            tokio::spawn(async move {
                let _ = c.kill(&id).await;
            });
            return Err(Error::Version(e));
        }
        let url = client.config().envd_url(&s.sandbox_id, s.domain.as_deref());
        Ok(Sandbox {
            envd: Arc::new(Envd {
                client,
                url,
                sandbox_id: s.sandbox_id,
                access_token: s.envd_access_token,
                version: v,
                node_secret: None,
            }),
            template_id: s.template_id,
            domain: s.domain,
        })
    }

    /// A handle to a sandbox's agent reached straight at its address, without the control plane: what the node
    /// that runs the sandbox does (template build steps, a template's start and ready commands). Only
    /// [`Sandbox::commands`], [`Sandbox::files`] and [`Sandbox::pty`] work on it; lifecycle calls need the API.
    pub fn direct(client: Client, envd: DirectEnvd) -> Result<Sandbox> {
        let version = version::parse_version(envd.envd_version.as_deref().unwrap_or(version::ENVD_PROTOCOL_VERSION))?;
        Ok(Sandbox {
            envd: Arc::new(Envd {
                client,
                url: format!("http://{}", envd.addr),
                sandbox_id: envd.sandbox_id,
                access_token: envd.access_token,
                version,
                node_secret: envd.node_secret,
            }),
            template_id: envd.template_id,
            domain: None,
        })
    }

    pub fn id(&self) -> &str {
        &self.envd.sandbox_id
    }
    pub fn template_id(&self) -> &str {
        &self.template_id
    }
    /// The agent's protocol version as reported at create/connect.
    pub fn envd_version(&self) -> &semver::Version {
        &self.envd.version
    }
    pub fn access_token(&self) -> Option<&str> {
        self.envd.access_token.as_deref()
    }
    /// Base URL of the sandbox's agent.
    pub fn envd_url(&self) -> &str {
        &self.envd.url
    }
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }
    pub fn client(&self) -> &Client {
        &self.envd.client
    }

    /// Run and manage processes.
    pub fn commands(&self) -> Commands {
        Commands { envd: self.envd.clone() }
    }
    /// Interactive terminals.
    pub fn pty(&self) -> Pty {
        Pty { envd: self.envd.clone() }
    }
    /// The sandbox's filesystem.
    pub fn files(&self) -> Filesystem {
        Filesystem { envd: self.envd.clone() }
    }

    /// Kills the sandbox; `Ok(false)` when it was already gone.
    pub async fn kill(&self) -> Result<bool> {
        self.client().kill(self.id()).await
    }
    /// Sets the sandbox to end `timeout` from now.
    pub async fn set_timeout(&self, timeout: Duration) -> Result<()> {
        self.client().set_timeout(self.id(), timeout).await
    }
    /// Extends the sandbox's life by `duration`, within the server's maximum total lifetime (seed feature 7).
    pub async fn refresh(&self, duration: Duration) -> Result<()> {
        self.client().refresh(self.id(), duration).await
    }
    pub async fn get_info(&self) -> Result<SandboxInfo> {
        self.client().get_info(self.id()).await
    }
    /// Pauses the sandbox; `Ok(false)` when it was already paused.
    pub async fn pause(&self) -> Result<bool> {
        self.client().pause(self.id()).await
    }
    /// Resumes a paused sandbox (connect); returns the refreshed handle.
    pub async fn resume(&self, timeout: Option<Duration>) -> Result<Sandbox> {
        Sandbox::connect(self.client(), self.id(), timeout).await
    }
    /// Metrics between `start` and `end` (unix seconds).
    pub async fn get_metrics(&self, start: Option<i64>, end: Option<i64>) -> Result<Vec<SandboxMetric>> {
        self.client().get_metrics(self.id(), start, end).await
    }
    /// Whether the agent answers its health check (`false` when the sandbox is paused or gone).
    pub async fn is_running(&self) -> Result<bool> {
        let resp = self
            .envd
            .request(Method::GET, "/health", None)
            .timeout(self.client().config().request_timeout.unwrap_or(Duration::from_secs(60)))
            .send()
            .await
            .map_err(Error::transport)?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            502 => Ok(false),
            _ => Err(self.envd.http_error(resp).await),
        }
    }
}
