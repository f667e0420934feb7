//! Sandbox endpoints (spec §1.4–§1.7) and SoulBox's refresh and metrics additions.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use soulbox_protocol::api::{
    ConnectSandbox, Lifecycle as ApiLifecycle, ListedSandbox, NewSandbox, OnTimeout, ResumedSandbox, Sandbox,
    SandboxDetail, SandboxNetworkConfig, SandboxPauseRequest, SandboxRefreshRequest, SandboxState,
    SandboxTimeoutRequest, SandboxVolumeMount,
};

use super::json_body::JsonBody;
use super::{ApiState, error};
use crate::lifecycle::{CreateRequest, LifecycleError};
use crate::listing::{PageCursor, page_params, parse_metadata_filter, parse_states, take_page};
use crate::store::{Caller, SandboxPageQuery, SandboxRecord};
use crate::time::{parse_rfc3339_ms, rfc3339};

type Params = Query<HashMap<String, String>>;

/// E2B's constant (deprecated) client id, in every sandbox it describes.
pub const CLIENT_ID: &str = "6532622b";

/// The REST answer to a create, connect or resume.
pub(super) fn sandbox(r: &SandboxRecord, domain: Option<String>) -> Sandbox {
    Sandbox {
        template_id: r.template_id.clone(),
        sandbox_id: r.id.clone(),
        client_id: CLIENT_ID.into(),
        envd_version: r.envd_version.clone(),
        alias: r.alias.clone(),
        envd_access_token: r.envd_access_token.clone(),
        traffic_access_token: r.ingress.traffic_access_token.clone(),
        domain,
    }
}

fn create_request(team_id: String, req: NewSandbox, secure: bool) -> CreateRequest {
    let network = req.network.unwrap_or_default();
    CreateRequest {
        team_id,
        template: req.template_id,
        timeout_s: req.timeout,
        metadata: req.metadata.unwrap_or_default(),
        env_vars: req.env_vars.unwrap_or_default(),
        auto_pause: req.auto_pause.unwrap_or(false),
        auto_pause_memory: req.auto_pause_memory.unwrap_or(true),
        auto_pause_grace_s: req.auto_pause_grace_period.unwrap_or(0),
        auto_resume: req.auto_resume.map(|a| a.enabled).unwrap_or(false),
        allow_internet: req.allow_internet_access.unwrap_or(true),
        allow_out: network.allow_out.unwrap_or_default(),
        deny_out: network.deny_out.unwrap_or_default(),
        egress_proxy: network.egress_proxy.as_ref().and_then(|p| crate::egress::socks_proxy(p).ok()),
        rules: crate::egress::header_rules(network.rules.as_ref()).unwrap_or_default(),
        dns_servers: crate::egress::dns_servers(network.dns_servers.as_deref().unwrap_or_default(), true)
            .unwrap_or_default(),
        private_ports: network.allow_public_traffic == Some(false),
        mask_request_host: network.mask_request_host,
        secure,
        volume_mounts: req.volume_mounts.unwrap_or_default(),
    }
}

async fn create(state: ApiState, caller: Caller, req: NewSandbox, v2: bool) -> Response {
    if req.template_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "templateID is required");
    }
    if let Some(network) = &req.network {
        if let Some(message) = crate::egress::unsupported(network.egress_proxy.as_ref()) {
            return error(StatusCode::BAD_REQUEST, message);
        }
        if let Err(message) = crate::egress::header_rules(network.rules.as_ref()) {
            return error(StatusCode::BAD_REQUEST, message);
        }
        let allow_private = state.lifecycle.config().allow_private_egress;
        if let Err(message) =
            crate::egress::dns_servers(network.dns_servers.as_deref().unwrap_or_default(), allow_private)
        {
            return error(StatusCode::BAD_REQUEST, message);
        }
        if let Some(Err(message)) = network.egress_proxy.as_ref().map(crate::egress::socks_proxy) {
            return error(StatusCode::BAD_REQUEST, message);
        }
    }
    // v1 issues an access token only for `secure: true`; v2 always secures the sandbox.
    let secure = v2 || req.secure.unwrap_or(false);
    state.metrics.creates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::Instant::now();
    let created = state.lifecycle.create(create_request(caller.team_id, req, secure)).await;
    crate::prom::latencies().create.observe(started.elapsed());
    match created {
        Ok(record) => (StatusCode::CREATED, Json(sandbox(&record, state.domain.clone()))).into_response(),
        Err(e) => {
            state.metrics.create_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.into_response()
        }
    }
}

pub async fn create_v1(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewSandbox>,
) -> Response {
    create(state, caller, req, false).await
}

pub async fn create_v2(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewSandbox>,
) -> Response {
    create(state, caller, req, true).await
}

fn listed(r: &SandboxRecord) -> ListedSandbox {
    ListedSandbox {
        template_id: r.template_id.clone(),
        sandbox_id: r.id.clone(),
        client_id: CLIENT_ID.into(),
        started_at: rfc3339(r.started_at_ms),
        end_at: rfc3339(r.end_at_ms),
        cpu_count: r.cpu_count,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_size_mb,
        state: r.state,
        envd_version: r.envd_version.clone(),
        alias: r.alias.clone(),
        metadata: Some(r.metadata.clone()),
    }
}

fn detail(r: &SandboxRecord, domain: Option<String>, mounts: Vec<SandboxVolumeMount>) -> SandboxDetail {
    SandboxDetail {
        template_id: r.template_id.clone(),
        sandbox_id: r.id.clone(),
        client_id: CLIENT_ID.into(),
        started_at: rfc3339(r.started_at_ms),
        end_at: rfc3339(r.end_at_ms),
        envd_version: r.envd_version.clone(),
        cpu_count: r.cpu_count,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_size_mb,
        state: r.state,
        alias: r.alias.clone(),
        envd_access_token: r.envd_access_token.clone(),
        domain,
        allow_internet_access: Some(r.network.allow_internet),
        metadata: Some(r.metadata.clone()),
        network: Some(SandboxNetworkConfig {
            allow_out: Some(crate::egress::entries(&r.network).0),
            deny_out: Some(crate::egress::entries(&r.network).1),
            allow_public_traffic: Some(r.ingress.traffic_access_token.is_none()),
            mask_request_host: r.ingress.mask_request_host.clone(),
            // Never the password.
            egress_proxy: r.network.egress_proxy.as_ref().map(|p| soulbox_protocol::api::EgressProxy {
                address: p.address.clone(),
                username: p.username.clone(),
                ..Default::default()
            }),
            rules: crate::egress::rules_view(&r.network.rules),
            dns_servers: (!r.network.dns_servers.is_empty())
                .then(|| r.network.dns_servers.iter().map(|ip| ip.to_string()).collect()),
        }),
        lifecycle: Some(ApiLifecycle {
            auto_resume: r.auto_resume,
            on_timeout: if r.auto_pause { OnTimeout::Pause } else { OnTimeout::Kill },
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
    }
}

pub async fn list_v2(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Params,
) -> Response {
    let filter = match params.get("metadata").map(|m| parse_metadata_filter(m)).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let states = match parse_states(params.get("state").map(String::as_str)) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let ascending = match params.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => return error(StatusCode::BAD_REQUEST, format!("invalid order {other:?}: expected asc or desc")),
    };
    let started_after = match params.get("startedAfter") {
        Some(raw) => match parse_rfc3339_ms(raw) {
            Some(ms) => Some(ms),
            None => return error(StatusCode::BAD_REQUEST, format!("invalid startedAfter {raw:?}: expected RFC 3339")),
        },
        None => None,
    };
    let page = match page_params(params.get("limit").map(String::as_str), params.get("nextToken").map(String::as_str)) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let template = params.get("template");
    let after = page.after.as_ref().map(|c| (c.started_at_ms, c.sandbox_id.clone()));

    let (mut records, total_running) = if filter.is_empty() {
        // The common case: the database filters, orders and cuts the page (O(page), not O(sandboxes)).
        let query = SandboxPageQuery {
            states: states.clone(),
            started_after_ms: started_after,
            template: template.cloned(),
            ascending,
            after,
            limit: page.limit,
        };
        match state.lifecycle.store().page_team_sandboxes(&caller.team_id, &query).await {
            Ok(p) => (p.records, p.total_running as usize),
            Err(e) => return LifecycleError::from(e).into_response(),
        }
    } else {
        // A metadata filter matches inside a JSON column: every record of the team, filtered here.
        let mut records = match state.lifecycle.store().list_team_sandboxes(&caller.team_id).await {
            Ok(r) => r,
            Err(e) => return LifecycleError::from(e).into_response(),
        };
        records.retain(|r| {
            states.contains(&r.state)
                && filter.iter().all(|(k, v)| r.metadata.get(k) == Some(v))
                && started_after.is_none_or(|after| r.started_at_ms >= after)
                && template.is_none_or(|t| r.template_id == *t || r.alias.as_deref() == Some(t.as_str()))
        });
        let total_running = records.iter().filter(|r| r.state == SandboxState::Running).count();
        let key = |r: &SandboxRecord| (r.started_at_ms, r.id.clone());
        records.sort_by_key(key);
        if !ascending {
            records.reverse();
        }
        if let Some(pos) = after {
            records.retain(|r| if ascending { key(r) > pos } else { key(r) < pos });
        }
        (records, total_running)
    };
    let next = take_page(&mut records, page.limit, |r| PageCursor {
        started_at_ms: r.started_at_ms,
        sandbox_id: r.id.clone(),
    });

    let items: Vec<ListedSandbox> = records.iter().map(listed).collect();
    let mut response = Json(items).into_response();
    let headers = response.headers_mut();
    if let Some(v) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-next-token", v);
    }
    if states.contains(&SandboxState::Running) {
        headers.insert("x-total-running", HeaderValue::from(total_running));
    }
    response
}

/// Deprecated v1 list: running sandboxes, optional metadata filter.
pub async fn list_v1(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Params,
) -> Response {
    let filter = match params.get("metadata").map(|m| parse_metadata_filter(m)).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.lifecycle.store().list_team_sandboxes(&caller.team_id).await {
        Ok(records) => Json(
            records
                .iter()
                .filter(|r| {
                    r.state == SandboxState::Running && filter.iter().all(|(k, v)| r.metadata.get(k) == Some(v))
                })
                .map(listed)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => LifecycleError::from(e).into_response(),
    }
}

pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.lifecycle.team_sandbox(&caller.team_id, &id).await {
        Ok(r) => {
            let mounts = match state.lifecycle.volume_mounts(&r.id).await {
                Ok(m) => m.into_iter().map(|m| SandboxVolumeMount { name: m.name, path: m.path }).collect(),
                Err(e) => return e.into_response(),
            };
            Json(detail(&r, state.domain.clone(), mounts)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn kill(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.lifecycle.kill(&caller.team_id, &id).await {
        Ok(()) => {
            state.metrics.forget(&id);
            state.metrics.kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn connect(state: ApiState, caller: Caller, id: String, req: ConnectSandbox) -> Response {
    let started = std::time::Instant::now();
    match state.lifecycle.connect(&caller.team_id, &id, req.timeout).await {
        Ok((record, resumed)) => {
            if resumed {
                crate::prom::latencies().resume.observe(started.elapsed());
            }
            let status = if resumed { StatusCode::CREATED } else { StatusCode::OK };
            (status, Json(sandbox(&record, state.domain.clone()))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn connect_v1(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ConnectSandbox>,
) -> Response {
    if req.timeout.is_none() {
        return error(StatusCode::BAD_REQUEST, "timeout is required");
    }
    connect(state, caller, id, req).await
}

pub async fn connect_v2(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ConnectSandbox>,
) -> Response {
    connect(state, caller, id, req).await
}

pub async fn set_timeout(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let req: SandboxTimeoutRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")),
    };
    match state.lifecycle.set_timeout(&caller.team_id, &id, req.timeout).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn pause(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SandboxPauseRequest>,
) -> Response {
    match state.lifecycle.pause(&caller.team_id, &id, req.memory.unwrap_or(true)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn resume(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ResumedSandbox>,
) -> Response {
    let started = std::time::Instant::now();
    match state.lifecycle.resume(&caller.team_id, &id, req.timeout).await {
        Ok(record) => {
            crate::prom::latencies().resume.observe(started.elapsed());
            (StatusCode::CREATED, Json(sandbox(&record, state.domain.clone()))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn refresh(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SandboxRefreshRequest>,
) -> Response {
    match state.lifecycle.refresh(&caller.team_id, &id, req.duration).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn unix_s_param(params: &HashMap<String, String>, key: &str) -> Result<Option<i64>, Response> {
    params
        .get(key)
        .map(|v| v.parse::<i64>().map_err(|_| error(StatusCode::BAD_REQUEST, format!("{key} must be unix seconds"))))
        .transpose()
}

pub async fn metrics_one(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    if let Err(e) = state.lifecycle.team_sandbox(&caller.team_id, &id).await {
        return e.into_response();
    }
    let (start, end) = match (unix_s_param(&params, "start"), unix_s_param(&params, "end")) {
        (Ok(s), Ok(e)) => (s.map(|s| s * 1000).unwrap_or(0), e.map(|e| e * 1000 + 999).unwrap_or(i64::MAX)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let samples: Vec<_> = state.metrics.range(&id, start, end).iter().map(|s| s.to_api()).collect();
    Json(samples).into_response()
}

pub async fn metrics_many(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Params,
) -> Response {
    let ids = params.get("sandbox_ids").map(String::as_str).unwrap_or_default();
    // Only the team's own sandboxes; another team's id is left out as an unknown one is.
    let own: std::collections::HashSet<String> =
        match state.lifecycle.store().list_team_sandboxes(&caller.team_id).await {
            Ok(records) => records.into_iter().map(|r| r.id).collect(),
            Err(e) => return LifecycleError::from(e).into_response(),
        };
    let sandboxes: std::collections::BTreeMap<String, _> = ids
        .split(',')
        .filter(|i| own.contains(*i))
        .filter_map(|id| state.metrics.latest(id).map(|s| (id.to_owned(), s.to_api())))
        .collect();
    Json(soulbox_protocol::api::SandboxesMetrics { sandboxes }).into_response()
}
