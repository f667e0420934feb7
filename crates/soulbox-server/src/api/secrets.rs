//! E2B's secrets: `POST /secrets`, `GET /secrets`, `GET|POST|DELETE /secrets/{secretID}`, scoped to the caller's
//! team (another team's secret is a 404, like an unknown one). `{secretID}` is an id (`sec_…`) or a name.
//! Values go in and are never answered, logged or echoed in an error.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use soulbox_protocol::api::{NewSecret, Secret, SecretUpdate};

use super::{ApiState, error};
use crate::listing::{PageCursor, page_params, take_page};
use crate::store::{Caller, SecretRecord, SecretValue, StoreError};
use crate::time::rfc3339;

fn info(s: &SecretRecord) -> Secret {
    Secret {
        secret_id: s.id.clone(),
        name: s.name.clone(),
        current_version: s.current_version,
        metadata: s.metadata.clone(),
        created_at: rfc3339(s.created_at_ms),
        updated_at: rfc3339(s.updated_at_ms),
    }
}

/// A request body, or a 400 that does not quote it: serde's messages can include a value they could not use.
#[allow(clippy::result_large_err)] // the error is the handler's answer, returned at once
fn parse<T: DeserializeOwned>(bytes: &Bytes, shape: &str) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        let why = if text.starts_with("missing field") {
            text.split(" at line").next().unwrap_or_default().to_owned()
        } else {
            format!("expected {shape}")
        };
        error(StatusCode::BAD_REQUEST, format!("invalid request body: {why}"))
    })
}

fn failed(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(what) => error(StatusCode::NOT_FOUND, format!("{what} not found")),
        StoreError::Conflict(m) => error(StatusCode::CONFLICT, m),
        StoreError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        other => {
            tracing::error!(error = %other, "secrets request failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the secret could not be stored or read")
        }
    }
}

fn not_found(id_or_name: &str) -> Response {
    failed(StoreError::NotFound(format!("secret '{id_or_name}'")))
}

pub async fn create(State(state): State<ApiState>, Extension(caller): Extension<Caller>, bytes: Bytes) -> Response {
    let req: NewSecret = match parse(&bytes, r#"{"name": string, "value": string, "metadata"?: {string: string}}"#) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let value = SecretValue::new(req.value.into_inner());
    let metadata = req.metadata.unwrap_or_default();
    match state.lifecycle.store().create_secret(&caller.team_id, &req.name, &value, &metadata).await {
        Ok(s) => (StatusCode::CREATED, Json(info(&s))).into_response(),
        Err(e) => failed(e),
    }
}

/// `GET /secrets?limit=&nextToken=`: the team's secrets, oldest first, `x-next-token` when there are more.
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let page = match page_params(params.get("limit").map(String::as_str), params.get("nextToken").map(String::as_str)) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut secrets = match state.lifecycle.store().list_team_secrets(&caller.team_id).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    if let Some(c) = &page.after {
        let after = (c.started_at_ms, c.sandbox_id.as_str());
        secrets.retain(|s| (s.created_at_ms, s.id.as_str()) > after);
    }
    let next = take_page(&mut secrets, page.limit, |s| PageCursor {
        started_at_ms: s.created_at_ms,
        sandbox_id: s.id.clone(),
    });
    let mut response = Json(secrets.iter().map(info).collect::<Vec<_>>()).into_response();
    if let Some(v) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert("x-next-token", v);
    }
    response
}

pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_name): Path<String>,
) -> Response {
    match state.lifecycle.store().get_secret(&caller.team_id, &id_or_name).await {
        Ok(Some(s)) => Json(info(&s)).into_response(),
        Ok(None) => not_found(&id_or_name),
        Err(e) => failed(e),
    }
}

/// `POST /secrets/{secretID}`: a new version (200 with the secret, `currentVersion` one up).
pub async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_name): Path<String>,
    bytes: Bytes,
) -> Response {
    let req: SecretUpdate = match parse(&bytes, r#"{"value": string, "metadata"?: {string: string}}"#) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let value = SecretValue::new(req.value.into_inner());
    let metadata: Option<BTreeMap<String, String>> = req.metadata;
    match state.lifecycle.store().update_secret(&caller.team_id, &id_or_name, &value, metadata.as_ref()).await {
        Ok(s) => Json(info(&s)).into_response(),
        Err(e) => failed(e),
    }
}

pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id_or_name): Path<String>,
) -> Response {
    match state.lifecycle.store().delete_secret(&caller.team_id, &id_or_name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(&id_or_name),
        Err(e) => failed(e),
    }
}
