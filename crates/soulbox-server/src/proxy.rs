//! Sandbox traffic through the server (envd RPC, `/files`, and any port a sandbox opens).
//!
//! Routing, in E2B's order: `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers (what `E2B_SANDBOX_URL` clients send),
//! then a host `<port>-<sandboxID>.<domain>`, then — for signed `/files` URLs opened without headers — the
//! `sandbox_id` query parameter SoulBox's SDK adds, else the sandbox whose access token the signature verifies
//! with (found through [`crate::signed_routing`], not a scan of the store). A killed, unknown or paused (without auto-resume)
//! sandbox answers 502 `The sandbox was not found`; streams open when a sandbox stops are cut at the transport
//! level (the SDKs turn that into "sandbox was killed").
//!
//! Only the node talks to envd (issue 11): on every port a client's copy of the envd secret header is dropped;
//! on envd's port the sandbox's real secret is added (never on another port: a user's service must not learn
//! it) and `/init` is refused — the node configures envd at boot, and E2B's SDKs never call it, so nobody can
//! install an access token on a sandbox through here. envd refusing the secret means the address answers for
//! another sandbox than the one meant: that is E2B's 502 "sandbox not found", like any sandbox that is gone.

use soulbox_protocol::api::ProxyError;
use std::sync::Arc;

use crate::upstream::UpstreamClient;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use soulbox_protocol::ENVD_PORT;
use soulbox_protocol::api::{SandboxState, TRAFFIC_ACCESS_TOKEN_HEADER};
use soulbox_protocol::envd_secret;
use soulbox_protocol::signature::{Operation, SignedQuery};
use soulbox_runtime::EnvdSecret;

use crate::client_socket::ClientSocket;
use crate::cluster::Route;
use crate::cluster::wire::{HOST_HEADER, SECRET_HEADER};
use crate::lifecycle::Lifecycle;
use crate::names::{is_valid_sandbox_id, sandbox_route};
use crate::signed_routing::{SignedRequest, SignedRouter};
use crate::store::SandboxRecord;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sandbox {
        id: String,
        port: u16,
    },
    /// A signed `/files` URL without routing headers: find the sandbox by its signature.
    BySignature,
}

/// Decides whether a request is sandbox traffic (and for which sandbox) or an API call (`None`).
pub fn classify(method: &Method, uri: &Uri, headers: &HeaderMap, domain: Option<&str>) -> Option<Target> {
    classify_for(method, uri, headers, domain, false)
}

/// [`classify`]; `local_client`: the client is on this machine (a loopback peer, not through a proxy), so
/// `<port>-<id>.localhost` hosts route even when a domain is configured — browsers resolve `*.localhost` to
/// loopback themselves, which makes port URLs work on one machine without DNS. Safe to allow: a client picks
/// its `Host` freely, and the same sandbox port is reachable as `<port>-<id>.<domain>`; it is limited to local
/// clients only so a public deployment answers for its own domain alone.
pub fn classify_for(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    domain: Option<&str>,
    local_client: bool,
) -> Option<Target> {
    if let Some((id, port)) = sandbox_route(headers) {
        return Some(Target::Sandbox { id, port });
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.host());
    if let Some(target) = host.and_then(|h| host_target(h, domain)) {
        return Some(target);
    }
    if local_client
        && domain.is_some()
        && let Some(target) = host.and_then(|h| host_target(h, Some("localhost")))
    {
        return Some(target);
    }
    let signed_files = uri.path() == "/files"
        && (method == Method::GET || method == Method::POST)
        && !headers.contains_key("x-api-key");
    let query = signed_files.then(|| SignedQuery::parse(uri.query()).ok()).flatten()?;
    query.signature.as_ref()?;
    // The id in the URL only routes: envd checks the signature against its own token.
    match query.sandbox_id.filter(|id| is_valid_sandbox_id(id)) {
        Some(id) => Some(Target::Sandbox { id, port: ENVD_PORT }),
        None => Some(Target::BySignature),
    }
}

/// `<port>-<sandboxID>.<domain>` (the domain must match when one is configured).
fn host_target(host: &str, domain: Option<&str>) -> Option<Target> {
    let host = host.split(':').next().unwrap_or(host);
    let (label, rest) = host.split_once('.')?;
    if let Some(domain) = domain
        && !rest.eq_ignore_ascii_case(domain)
    {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    is_valid_sandbox_id(id).then(|| Target::Sandbox { id: id.to_owned(), port })
}

pub struct Proxy {
    lifecycle: Arc<Lifecycle>,
    signed: SignedRouter,
    client: UpstreamClient,
    /// Running sandboxes' records, so that most requests need no store query.
    routes: crate::route_cache::RouteCache,
    /// Largest request body passed on to a sandbox (`[http] max_proxy_body_mb`).
    max_body: u64,
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Proxy {
    pub fn new(lifecycle: Arc<Lifecycle>) -> Proxy {
        let signed = SignedRouter::new(lifecycle.store().clone());
        Proxy {
            lifecycle,
            signed,
            client: http_client(),
            routes: Default::default(),
            max_body: crate::serve::HttpSettings::default().max_proxy_body_bytes,
        }
    }

    pub fn with_max_body(mut self, bytes: u64) -> Proxy {
        self.max_body = bytes;
        self
    }

    /// Forwards `request`, its body limited to `max_body`: a declared length over it is answered 413 before
    /// anything is read, and a streamed body that grows past it is cut (and answered 413 when nothing was
    /// answered yet).
    pub async fn forward(&self, target: Target, request: Request) -> Response {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > self.max_body) {
            return too_large(n, self.max_body);
        }
        let (request, overflow) = limit_body(request, self.max_body);
        let response = self.forward_unlimited(target, request).await;
        if overflow.load(std::sync::atomic::Ordering::SeqCst) && !response.status().is_success() {
            return crate::reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {} bytes", self.max_body),
            );
        }
        response
    }

    async fn forward_unlimited(&self, target: Target, request: Request) -> Response {
        // A running sandbox reached directly is usually in the route cache (no store query); else the store says.
        let cached = match &target {
            Target::Sandbox { id, .. } => self.routes.get(id),
            Target::BySignature => None,
        };
        let (record, port, cached_liveness) = match (target, cached) {
            (Target::Sandbox { id, port }, cached) => {
                let (record, live) = match cached {
                    Some((record, live)) => (record, Some(live)),
                    None => match self.lifecycle.store().get_sandbox(&id).await {
                        Ok(record) => (Arc::new(record), None),
                        Err(_) => return not_found(&id),
                    },
                };
                // Before anything else, waking a paused sandbox included: a stranger gets nothing from a private one.
                if !crate::ingress::admits(&record.ingress, port, request.headers()) {
                    tracing::debug!(sandbox = %id, port, "proxy: refused a request without the traffic access token");
                    return crate::reply::error(
                        StatusCode::FORBIDDEN,
                        format!("sandbox {id} is private: its ports need the {TRAFFIC_ACCESS_TOKEN_HEADER} header"),
                    );
                }
                if live.is_some() {
                    (record, port, live)
                } else {
                    match self.running(Arc::unwrap_or_clone(record)).await {
                        Some(r) => (Arc::new(r), port, None),
                        None => return not_found(&id),
                    }
                }
            }
            (Target::BySignature, _) => match self
                .sandbox_by_signature(request.method().clone(), request.uri().clone())
                .await
            {
                Some(r) => (Arc::new(r), ENVD_PORT, None),
                None => {
                    return crate::reply::error(StatusCode::UNAUTHORIZED, "invalid signature: no sandbox matches it");
                }
            },
        };
        let hit = cached_liveness.is_some();
        // None while the sandbox is being killed or paused: its envd is going away.
        let liveness = match cached_liveness {
            Some(live) => live,
            None => match self.lifecycle.streams().serving(&record.id) {
                Some(live) => live,
                None => return not_found(&record.id),
            },
        };
        let upstream = match self.lifecycle.nodes().route(&record.node_id).await {
            // The node says where the sandbox is (not the record): a sandbox that died or was removed there gets
            // no traffic, even while a record still names its old address.
            Some(Route::Direct) => {
                if !hit {
                    self.remember(&record, &liveness).await;
                }
                let recorded = record.address.as_deref().and_then(|a| a.parse().ok());
                let Ok(node) = self.lifecycle.node_of(&record).await else { return not_found(&record.id) };
                let Some(target) = node.traffic_address(&record.id, recorded).await else {
                    return not_found(&record.id);
                };
                // From the owning node's memory (no store or file access per request); envd's port only.
                let envd_secret = match port {
                    ENVD_PORT => node.envd_secret(&record.id),
                    _ => None,
                };
                let masked = crate::ingress::masked_host(&record.ingress, port);
                Upstream {
                    authority: crate::upstream::sandbox_authority(target.ip, target.boot, port),
                    host: Some(match masked.as_ref().and_then(|h| h.to_str().ok()) {
                        Some(mask) => mask.to_owned(),
                        None => std::net::SocketAddr::new(target.ip, port).to_string(),
                    }),
                    headers: HeaderMap::new(),
                    sandbox_id: record.id.clone(),
                    port,
                    envd_secret,
                }
            }
            // Through the owning node agent's proxy: it reaches the sandbox's address on its host and cuts the
            // sandbox's streams itself when it is killed or paused there.
            Some(Route::ViaNode { authority, secret }) => {
                let mut headers = HeaderMap::new();
                let values = [
                    ("e2b-sandbox-id", record.id.clone()),
                    ("e2b-sandbox-port", port.to_string()),
                    (SECRET_HEADER, secret),
                ];
                for (name, value) in values {
                    match http::HeaderValue::from_str(&value) {
                        Ok(v) => headers.insert(HeaderName::from_static(name), v),
                        Err(_) => return not_found(&record.id),
                    };
                }
                if let Some(mask) = crate::ingress::masked_host(&record.ingress, port) {
                    headers.insert(HeaderName::from_static(HOST_HEADER), mask);
                }
                // The node agent adds the envd secret itself: the control plane never holds it.
                Upstream { authority, host: None, headers, sandbox_id: record.id.clone(), port, envd_secret: None }
            }
            // Its node is unhealthy or gone.
            None => return not_found(&record.id),
        };
        forward_to(&self.client, upstream, liveness, request).await
    }

    /// Caches the sandbox's route for the next requests ([`crate::route_cache`]): from a record read again now
    /// that `liveness` is held — the one read before it may predate a stop that has finished since.
    async fn remember(&self, record: &SandboxRecord, liveness: &tokio_util::sync::CancellationToken) {
        let read_at = std::time::Instant::now();
        let Ok(now) = self.lifecycle.store().get_sandbox(&record.id).await else { return };
        if now.state == SandboxState::Running && now.node_id == record.node_id && !liveness.is_cancelled() {
            self.routes.insert(Arc::new(now), liveness.clone(), read_at);
        }
    }

    /// The sandbox's record if it can take traffic now (waking it when paused with auto-resume).
    async fn running(&self, record: SandboxRecord) -> Option<SandboxRecord> {
        match record.state {
            SandboxState::Running => Some(record),
            SandboxState::Paused if record.auto_resume => self.lifecycle.auto_resume(&record.id).await.ok(),
            SandboxState::Paused => None,
        }
    }

    async fn sandbox_by_signature(&self, method: Method, uri: Uri) -> Option<SandboxRecord> {
        let query = SignedQuery::parse(uri.query()).ok()?;
        let operation = if method == Method::POST { Operation::Write } else { Operation::Read };
        let claims = query.claims(operation).ok()?;
        let request = SignedRequest {
            signature: query.signature.clone()?,
            path: claims.path.to_owned(),
            user: claims.user.to_owned(),
            expiration: claims.expiration,
            operation,
        };
        let id = self.signed.route(&request).await?;
        let record = self.lifecycle.store().get_sandbox(&id).await.ok()?;
        self.running(record).await
    }
}

fn too_large(declared: u64, limit: u64) -> Response {
    crate::reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body of {declared} bytes is over the limit of {limit} bytes"),
    )
}

/// `request` with its body cut off (an error frame) once more than `limit` bytes passed; the flag says it was.
/// Length and end-of-stream hints pass through, so a request without a body is forwarded without one.
fn limit_body(request: Request, limit: u64) -> (Request, Arc<std::sync::atomic::AtomicBool>) {
    let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, inner) = request.into_parts();
    let body = CappedBody { inner, seen: 0, limit, overflow: overflow.clone() };
    (Request::from_parts(parts, Body::new(body)), overflow)
}

struct CappedBody {
    inner: Body,
    seen: u64,
    limit: u64,
    overflow: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                self.overflow.store(true, std::sync::atomic::Ordering::SeqCst);
                let message = format!("request body over the limit of {} bytes", self.limit);
                return std::task::Poll::Ready(Some(Err(axum::Error::new(std::io::Error::other(message)))));
            }
        }
        std::task::Poll::Ready(frame)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where one proxied request goes.
pub struct Upstream {
    /// `host:port` to connect to: the sandbox's envd/port ([`crate::upstream::sandbox_authority`]), or the node
    /// agent that owns the sandbox.
    pub authority: String,
    /// The `Host` header to send, when it is not `authority` (a sandbox sees its `ip:port`, as it always did).
    pub host: Option<String>,
    /// Set on the forwarded request (routing headers and the node secret when going through a node agent).
    pub headers: HeaderMap,
    pub sandbox_id: String,
    pub port: u16,
    /// The secret of the sandbox's envd, known to the node that owns the sandbox. Sent only when `port` is
    /// envd's.
    pub envd_secret: Option<EnvdSecret>,
}

pub use crate::upstream::http_client;

/// Forwards `request` to `upstream`, streaming both ways; the response body is cut (and an HTTP/1 client
/// connection reset) when `liveness` is cancelled or the upstream fails mid-body, so a client sees a killed
/// sandbox the same way whether it was cut here or on the node one hop further.
pub async fn forward_to(
    client: &UpstreamClient,
    upstream: Upstream,
    liveness: tokio_util::sync::CancellationToken,
    request: Request,
) -> Response {
    let Upstream { authority, host, headers: extra_headers, sandbox_id, port, envd_secret } = upstream;
    let to_envd = port == ENVD_PORT;
    if to_envd && let Some(reserved) = node_only_path(request.uri().path()) {
        tracing::info!(sandbox = %sandbox_id, path = request.uri().path(), "proxy: refused a client's {reserved}");
        return crate::reply::error(
            StatusCode::FORBIDDEN,
            format!(
                "{reserved} is reserved for the sandbox's node: a sandbox is configured when it is created (E2B's SDKs never call {reserved})"
            ),
        );
    }
    // HTTP/1 only: on h2 a body error resets just this stream, and the connection carries others.
    let socket = (request.version() <= http::Version::HTTP_11)
        .then(|| request.extensions().get::<axum::extract::ConnectInfo<ClientSocket>>().map(|c| c.0))
        .flatten();
    let mut request = request;
    let upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = match format!("http://{authority}{path}").parse() {
        Ok(u) => u,
        Err(_) => return crate::reply::error(StatusCode::BAD_REQUEST, "invalid request path"),
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let upgrade_headers = upgrade.is_some().then(|| upgrade_headers(&parts.headers));
    strip_hop_by_hop(&mut parts.headers);
    if let Some(kept) = upgrade_headers {
        parts.headers.extend(kept);
    }
    parts.headers.remove(header::HOST);
    if let Some(host) = host.and_then(|h| http::HeaderValue::from_str(&h).ok()) {
        parts.headers.insert(header::HOST, host);
    }
    // Never pass a node secret on to a sandbox: only the hop to a node agent carries one (set just below).
    parts.headers.remove(SECRET_HEADER);
    // Nor a private sandbox's traffic token (checked already), nor a client's idea of the host a node agent is to
    // send (only the control plane sets that, just below).
    parts.headers.remove(TRAFFIC_ACCESS_TOKEN_HEADER);
    parts.headers.remove(HOST_HEADER);
    // Nor a client's envd secret, on any port: only the node's own (set just below, on envd's port only).
    parts.headers.remove(envd_secret::HEADER);
    let via_node = extra_headers.contains_key(SECRET_HEADER);
    parts.headers.extend(extra_headers);
    if to_envd && let Some(secret) = &envd_secret {
        let Ok(mut value) = http::HeaderValue::from_str(secret.expose()) else { return not_found(&sandbox_id) };
        value.set_sensitive(true);
        parts.headers.insert(envd_secret::HEADER, value);
    }
    let upstream = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(sandbox = %sandbox_id, port, error = %e, "proxy: upstream unreachable");
            return if via_node { not_found(&sandbox_id) } else { port_not_open(&sandbox_id, port) };
        }
    };
    if to_envd && refused_for_secret(&upstream) {
        // This envd is not the sandbox's (its address answers for another one now): the sandbox is gone.
        tracing::warn!(sandbox = %sandbox_id, "proxy: envd at the sandbox's address refused its secret; answering not found");
        return not_found(&sandbox_id);
    }
    if let Some(client_side) = upgrade
        && upstream.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return splice_upgrade(client_side, upstream, liveness);
    }
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(envd_secret::HEADER);
    // Cut the body when the sandbox stops: an error mid-body makes hyper drop the connection without a
    // clean end, which is what E2B clients recognise as a killed sandbox.
    Response::from_parts(parts, Body::new(crate::stream_cut::CutBody::new(body, liveness, socket)))
}

/// The node's own envd route `path` names, however it is spelled (percent-encoded, repeated or trailing slashes,
/// dot segments, any case): `/init`, the booted pool's claim (envd answers that one only while pooled, and
/// only once; refusing it here too keeps a client from racing the node for it), and everything else under
/// `/soulbox/` (the quiesce before a gVisor checkpoint closes every connection of the sandbox). envd routes only
/// the exact paths, but the refusal must not depend on that.
fn node_only_path(path: &str) -> Option<&'static str> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    match segments.as_slice() {
        [only] if only.eq_ignore_ascii_case("init") => Some("/init"),
        [a, b] if a.eq_ignore_ascii_case("soulbox") && b.eq_ignore_ascii_case("claim") => {
            Some(soulbox_protocol::envd_init::CLAIM_PATH)
        }
        // The node's own routes of envd, present and future (the quiesce before a checkpoint, …).
        [a, _, ..] if a.eq_ignore_ascii_case("soulbox") => Some("/soulbox/…"),
        _ => None,
    }
}

/// envd's refusal of the node secret (`soulbox_protocol::envd_secret`), as opposed to its access-token checks.
fn refused_for_secret<B>(response: &http::Response<B>) -> bool {
    response.status() == StatusCode::FORBIDDEN
        && response.headers().get(envd_secret::REFUSED_HEADER).is_some_and(|v| v == envd_secret::REFUSED_VALUE)
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn upgrade_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [header::CONNECTION, header::UPGRADE] {
        if let Some(v) = headers.get(&name) {
            kept.insert(name, v.clone());
        }
    }
    kept
}

/// A WebSocket (or any HTTP/1.1 upgrade) to a sandbox port: answer 101 to the client, then copy bytes both ways
/// until either side closes or the sandbox stops.
fn splice_upgrade(
    client_side: hyper::upgrade::OnUpgrade,
    mut upstream: http::Response<hyper::body::Incoming>,
    liveness: tokio_util::sync::CancellationToken,
) -> Response {
    let upstream_side = hyper::upgrade::on(&mut upstream);
    tokio::spawn(async move {
        let (client, sandbox) = match tokio::try_join!(client_side, upstream_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "proxy: upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut sandbox = hyper_util::rt::TokioIo::new(sandbox);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut sandbox) => {}
            _ = liveness.cancelled() => {}
        }
    });
    let (parts, _) = upstream.into_parts();
    Response::from_parts(parts, Body::empty())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(HeaderName::from_static(name));
    }
}

/// E2B's proxy answer for a sandbox that does not run (killed, expired, paused, unknown).
pub fn not_found(id: &str) -> Response {
    let body = ProxyError {
        code: 502,
        message: "The sandbox was not found".to_owned(),
        port: None,
        sandbox_id: id.to_owned(),
    };
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

fn port_not_open(id: &str, port: u16) -> Response {
    let body = ProxyError {
        code: 502,
        message: format!("The sandbox is running but port is not open ({port})"),
        port: Some(port),
        sandbox_id: id.to_owned(),
    };
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn routing_rules() {
        let uri: Uri = "/process.Process/Start".parse().unwrap();
        let by_header =
            classify(&Method::POST, &uri, &headers(&[("e2b-sandbox-id", "iabc"), ("e2b-sandbox-port", "49983")]), None);
        assert_eq!(by_header, Some(Target::Sandbox { id: "iabc".into(), port: 49983 }));

        let by_host = classify(&Method::GET, &uri, &headers(&[("host", "8001-iabc.sb.local:3000")]), Some("sb.local"));
        assert_eq!(by_host, Some(Target::Sandbox { id: "iabc".into(), port: 8001 }));
        assert_eq!(classify(&Method::GET, &uri, &headers(&[("host", "8001-iabc.other.com")]), Some("sb.local")), None);
        assert_eq!(classify(&Method::GET, &uri, &headers(&[("host", "127.0.0.1:3000")]), None), None);
        assert_eq!(classify(&Method::GET, &uri, &headers(&[("host", "api.sb.local")]), Some("sb.local")), None);
        // `.localhost` port URLs: always without a domain; with one, for local clients only.
        let local = headers(&[("host", "8080-iabc.localhost:3000")]);
        let want = Some(Target::Sandbox { id: "iabc".into(), port: 8080 });
        assert_eq!(classify(&Method::GET, &uri, &local, None), want);
        assert_eq!(classify_for(&Method::GET, &uri, &local, Some("sb.local"), true), want);
        assert_eq!(classify_for(&Method::GET, &uri, &local, Some("sb.local"), false), None);
        let api_local = headers(&[("host", "localhost:3000")]);
        assert_eq!(classify_for(&Method::GET, &uri, &api_local, Some("sb.local"), true), None);

        let signed: Uri = "/files?path=a.txt&signature=v1_abc".parse().unwrap();
        assert_eq!(
            classify(&Method::GET, &signed, &headers(&[("host", "localhost:3000")]), None),
            Some(Target::BySignature)
        );
        assert_eq!(classify(&Method::GET, &signed, &headers(&[("x-api-key", "k")]), None), None);
        // SoulBox's SDK names the sandbox: routed like a header, no signature search.
        let with_id: Uri = "/files?path=a.txt&signature=sb1_abc&sandbox_id=iabc".parse().unwrap();
        assert_eq!(
            classify(&Method::GET, &with_id, &HeaderMap::new(), None),
            Some(Target::Sandbox { id: "iabc".into(), port: 49983 })
        );
        let bad_id: Uri = "/files?path=a.txt&signature=sb1_abc&sandbox_id=../x".parse().unwrap();
        assert_eq!(classify(&Method::GET, &bad_id, &HeaderMap::new(), None), Some(Target::BySignature));
        let unsigned: Uri = "/files?path=a.txt".parse().unwrap();
        assert_eq!(classify(&Method::GET, &unsigned, &HeaderMap::new(), None), None);
    }

    #[test]
    fn node_only_paths_are_recognised_however_they_are_spelled() {
        for path in ["/init", "/init/", "//init", "/./init", "/x/../init", "/%69nit", "/%2Finit", "/INIT", "/Init//"] {
            assert_eq!(node_only_path(path), Some("/init"), "{path}");
        }
        for path in
            ["/soulbox/claim", "//soulbox//claim/", "/SoulBox/Claim", "/soulbox/%63laim", "/x/../soulbox/./claim"]
        {
            assert_eq!(node_only_path(path), Some("/soulbox/claim"), "{path}");
        }
        for path in ["/soulbox/quiesce", "/SOULBOX/%71uiesce", "//soulbox/x/y", "/x/../soulbox/quiesce/"] {
            assert_eq!(node_only_path(path), Some("/soulbox/…"), "{path}");
        }
        for path in [
            "/",
            "/health",
            "/initialize",
            "/init/x",
            "/files",
            "/x/init",
            "/process.Process/Start",
            "/soulbox",
            "/soulboxes/quiesce",
            "/claim",
            "/quiesce",
        ] {
            assert_eq!(node_only_path(path), None, "{path}");
        }
    }
}
