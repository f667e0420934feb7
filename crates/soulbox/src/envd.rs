//! The agent (envd) transport: Connect unary and server-streaming calls with the sandbox headers.

use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response};
use semver::Version;
use serde::{Serialize, de::DeserializeOwned};
use soulbox_protocol::connect::{self, EnvelopeDecoder, RpcError};
use soulbox_protocol::version::{self, Feature};

use crate::client::Client;
use crate::error::{Error, Result};

pub(crate) type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// Keepalive interval asked of envd on streams, seconds (E2B's SDKs send 50).
const KEEPALIVE_S: &str = "50";

pub(crate) struct Envd {
    pub(crate) client: Client,
    pub(crate) url: String,
    pub(crate) sandbox_id: String,
    pub(crate) access_token: Option<String>,
    pub(crate) version: Version,
    /// The node's secret for this sandbox's agent, sent only when the agent is reached directly
    /// ([`crate::DirectEnvd`]); through a proxy it is the proxy's to add.
    pub(crate) node_secret: Option<String>,
}

impl Envd {
    pub(crate) fn require(&self, feature: Feature) -> Result<()> {
        version::require(&self.version, feature).map_err(Error::Version)
    }

    /// The user a call runs as: the given one, or `user` for agents without a default user (< 0.4.0).
    fn effective_user<'a>(&self, user: Option<&'a str>) -> Option<&'a str> {
        user.or_else(|| (self.version < Feature::DefaultUser.min_version()).then_some("user"))
    }

    /// A request to the agent with the sandbox headers.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str, user: Option<&str>) -> RequestBuilder {
        let mut rb = self
            .client
            .http()
            .request(method, format!("{}{path}", self.url))
            .header("E2b-Sandbox-Id", &self.sandbox_id)
            .header("E2b-Sandbox-Port", soulbox_protocol::ENVD_PORT.to_string());
        if self.client.config().send_access_token
            && let Some(t) = &self.access_token
        {
            rb = rb.header("X-Access-Token", t);
        }
        if let Some(secret) = &self.node_secret
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(secret)
        {
            value.set_sensitive(true);
            rb = rb.header(soulbox_protocol::envd_secret::HEADER, value);
        }
        if let Some(u) = self.effective_user(user) {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
            rb = rb.header("Authorization", format!("Basic {basic}"));
        }
        rb
    }

    pub(crate) async fn unary<Req: Serialize, Resp: DeserializeOwned + Default>(
        &self,
        method: &str,
        req: &Req,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let body = serde_json::to_vec(req).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut rb = self
            .request(reqwest::Method::POST, &format!("/{method}"), user)
            .header("Content-Type", connect::CONTENT_TYPE_JSON)
            .header("Connect-Protocol-Version", "1")
            .body(body);
        let timeout = timeout.or(self.client.config().request_timeout);
        if let Some(t) = timeout {
            rb = rb.timeout(t).header("Connect-Timeout-Ms", t.as_millis().to_string());
        }
        let resp = rb.send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(self.http_error(resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.body_error(e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Resp::default());
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Other(format!("{method}: bad response: {e}")))
    }

    /// Opens a server stream; the returned stream ends after the end-stream envelope.
    pub(crate) async fn stream<Req: Serialize, Resp: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        req: &Req,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<RpcStream<Resp>> {
        let payload = serde_json::to_vec(req).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut rb = self
            .request(reqwest::Method::POST, &format!("/{method}"), user)
            .header("Content-Type", connect::CONTENT_TYPE_STREAM_JSON)
            .header("Connect-Protocol-Version", "1")
            .header("Keepalive-Ping-Interval", KEEPALIVE_S)
            .body(connect::encode_envelope(0, &payload));
        if let Some(t) = timeout {
            rb = rb.header("Connect-Timeout-Ms", t.as_millis().to_string());
        }
        let resp = rb.send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(self.http_error(resp).await);
        }
        let sandbox_id = self.sandbox_id.clone();
        let method = method.to_owned();
        let state = (resp.bytes_stream().boxed(), EnvelopeDecoder::new(connect::DEFAULT_MAX_MESSAGE_BYTES), false);
        let s = futures::stream::unfold(state, move |(mut body, mut dec, done)| {
            let sandbox_id = sandbox_id.clone();
            let method = method.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match dec.next_envelope() {
                        Err(e) => return Some((Err(Error::from_rpc(e)), (body, dec, true))),
                        Ok(Some(env)) if env.is_end_stream() => {
                            return match env.end_stream_error() {
                                Some(e) => Some((Err(Error::from_rpc(e)), (body, dec, true))),
                                None => None,
                            };
                        }
                        Ok(Some(env)) => {
                            let item = serde_json::from_slice::<Resp>(&env.payload)
                                .map_err(|e| Error::Other(format!("{method}: bad stream message: {e}")));
                            return Some((item, (body, dec, false)));
                        }
                        Ok(None) => {}
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => dec.push(&chunk),
                        Some(Err(e)) if e.is_timeout() => {
                            return Some((Err(Error::Timeout(e.to_string())), (body, dec, true)));
                        }
                        // The connection was cut mid-stream: what the proxy does when the sandbox is killed.
                        Some(Err(_)) => return Some((Err(Error::SandboxKilled(sandbox_id)), (body, dec, true))),
                        None => {
                            let e = Error::Other(format!("{method}: stream ended without an end-stream message"));
                            return Some((Err(e), (body, dec, true)));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(s))
    }

    pub(crate) fn body_error(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() { Error::Timeout(e.to_string()) } else { Error::SandboxKilled(self.sandbox_id.clone()) }
    }

    /// Maps a non-2xx agent (or proxy) answer: Connect error bodies, E2B proxy's 502 for a gone sandbox, plain
    /// HTTP errors.
    pub(crate) async fn http_error(&self, resp: Response) -> Error {
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            return crate::client::api_error(resp).await;
        }
        let text = resp.text().await.unwrap_or_default();
        let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if status == 502 && value.as_ref().is_some_and(|v| v.get("sandboxId").is_some()) {
            return Error::SandboxKilled(self.sandbox_id.clone());
        }
        match value {
            Some(v) if v.get("code").is_some_and(|c| c.is_string()) => {
                Error::from_rpc(RpcError::from_json_value(&v, Some(status)))
            }
            Some(v) => {
                let m = v.get("message").and_then(|m| m.as_str()).map(str::to_owned).unwrap_or(text);
                Error::from_status(status, m, None)
            }
            None => Error::from_status(status, text, None),
        }
    }
}
