//! E2B's template endpoints (spec §1.4, §6.1) plus SoulBox's live build log stream.
//!
//! - `POST /v3/templates` → 202 `{templateID, buildID, public, names, tags, aliases}` (the template's id is its
//!   name; `name:tag` is accepted, only the default tag exists so far)
//! - `GET /templates/{id}/files/{hash}` → 201 `{present, url?}`; the URL is `PUT /templates/{id}/files/{hash}?token=`
//!   on this server (no API key: the token is an HMAC of the template and hash under a per-process secret)
//! - `POST /v2/templates/{id}/builds/{buildID}` → 202, the build runs in the background
//! - `GET /templates/{id}/builds/{buildID}/status?logsOffset=&limit=` → `TemplateBuildInfo`
//! - `GET /templates/{id}/builds/{buildID}/logs/stream` → NDJSON, one log entry per line as it is produced
//!   (replayed from the start), then `{"status": "ready"|"error", "reason"?}`; no polling: a broadcast per build
//! - `GET /templates/aliases/{alias}` → 200/404, `DELETE /templates/{id}` → 204/404
//! - `GET /templates`, `GET /v2/templates`, `PATCH /templates/{id}`, `PATCH /v2/templates/{id}`: `list.rs`
//! - `GET /templates/{id}/builds/{buildID}/logs` (E2B's paged build log): `build_logs.rs`
//! - `POST /templates/{name}/prepare` (SoulBox's own): builds a template SoulBox ships now, answering with its
//!   live log in the stream's NDJSON shape (`prepare.rs`)
//! - E2B's deprecated build flows (`POST /templates`, `POST /v2/templates`, `POST /templates/{id}`,
//!   `POST /templates/{id}/builds/{buildID}`): 501 with what to use (`api/unsupported.rs`)
//! - tags: `POST /templates/tags` `{target: "name:tag", tags}` → 201 `{buildID, tags}`, `DELETE /templates/tags`
//!   `{name, tags}` → 204, `GET /templates/{id}/tags` → 200 `[{tag, buildID, createdAt}]`
//!
//! Tags: every successful build is registered on the node as its own runtime template `sbb-<buildID>`; the store
//! maps `(template, tag)` → build, and the `default` tag is also the runtime template `<name>` (a copy of the
//! build's metadata: same layers), so `Sandbox.create("name")` needs no lookup.

mod access;
#[cfg(test)]
mod access_tests;
mod build_logs;
mod builds;
mod files;
mod list;
mod prepare;
#[cfg(test)]
mod prepare_tests;
mod tags;
#[cfg(test)]
pub(crate) mod tests;

use axum::Json;
use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use http::StatusCode;
use serde::Deserialize;
use soulbox_protocol::api::{TemplateAlias, TemplateBuildRequested};

use self::access::template_not_found;
use crate::api::{ApiState, error};
use crate::builds::uploads::Uploads;
use crate::lifecycle::LifecycleError;
use crate::names::{build_template_name, is_internal_template, is_valid_tag, is_valid_template_name, split_tag};
use crate::store::Caller;

/// Defaults of E2B's build request.
const DEFAULT_CPU: i32 = 2;
const DEFAULT_MEMORY_MB: i32 = 1024;

/// Largest upload of a COPY context (`[http] max_upload_mb`), set on the router by `server::app_with`.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimit(pub u64);

impl Default for UploadLimit {
    fn default() -> Self {
        UploadLimit(crate::serve::DEFAULT_MAX_UPLOAD_BYTES)
    }
}

/// Routes behind the API key.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v3/templates", post(request_build))
        .route("/templates", get(list::list_v1).post(crate::api::unsupported::create_template_v1))
        .route("/v2/templates", get(list::list_v2).post(crate::api::unsupported::create_template_v2))
        .route(
            "/templates/{id}",
            get(list::get_one)
                .delete(delete_template)
                .patch(list::update_v1)
                .post(crate::api::unsupported::rebuild_template_v1),
        )
        .route("/templates/{id}/builds/{build}", post(crate::api::unsupported::start_build_v1))
        .route("/templates/{id}/builds/{build}/logs", get(build_logs::logs))
        .route("/v2/templates/{id}", patch(list::update_v2))
        .route("/templates/aliases/{alias}", get(alias))
        .route("/templates/{id}/files/{hash}", get(files::file_link))
        .route("/v2/templates/{id}/builds/{build}", post(builds::start_build))
        .route("/templates/{id}/builds/{build}/status", get(builds::build_status))
        .route("/templates/{id}/builds/{build}/logs/stream", get(builds::stream_logs))
        .route("/templates/tags", post(tags::assign_tags).delete(tags::remove_tags))
        .route("/templates/{id}/tags", get(tags::list_tags))
        .route("/templates/{id}/prepare", post(prepare::prepare))
}

/// The upload route: authenticated by its URL token, outside the JSON body limit.
pub fn upload_routes() -> Router<ApiState> {
    Router::new().route("/templates/{id}/files/{hash}", put(files::upload))
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "template request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The runtimes a template may ask for; a node without the one asked for fails the build, saying so.
const KNOWN_RUNTIMES: [&str; 2] = ["runc", "runsc"];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BuildRequestV3 {
    name: Option<String>,
    alias: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    cpu_count: Option<i32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<i32>,
    /// Deprecated in E2B; the key decides the team, so another team's id is refused.
    #[serde(rename = "teamID")]
    team_id: Option<String>,
    /// SoulBox's own: the OCI runtime the template runs on (`runc`, `runsc`), its build steps too. Absent: the
    /// base template's, else the node's default.
    runtime: Option<String>,
}

async fn request_build(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let req: BuildRequestV3 = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if let Some(refused) = access::foreign_team_id(&caller, req.team_id.as_deref()) {
        return refused;
    }
    let Some(full) = req.name.or(req.alias) else {
        return error(StatusCode::BAD_REQUEST, "name is required");
    };
    let name = full.split_once(':').map_or(full.as_str(), |(n, _)| n).to_string();
    if !is_valid_template_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid template name '{name}': use letters, digits, '-', '_' and '.'"),
        );
    }
    // The tag in the name plus `tags`; `default` when neither names one.
    let mut tags: Vec<String> = full.split_once(':').map(|(_, t)| t.to_string()).into_iter().chain(req.tags).collect();
    if tags.is_empty() {
        tags.push("default".into());
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    if let Some(bad) = tags.iter().find(|t| !is_valid_tag(t)) {
        return error(StatusCode::BAD_REQUEST, format!("invalid tag '{bad}': use letters, digits, '-', '_' and '.'"));
    }
    let cpu = req.cpu_count.unwrap_or(DEFAULT_CPU);
    let mem = req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(1..=64).contains(&cpu) || !(128..=65536).contains(&mem) {
        return error(StatusCode::BAD_REQUEST, "cpuCount must be 1..64 and memoryMB 128..65536");
    }
    if let Some(runtime) = req.runtime.as_deref()
        && !KNOWN_RUNTIMES.contains(&runtime)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown runtime '{runtime}': use one of {}", KNOWN_RUNTIMES.join(", ")),
        );
    }
    if let Err(r) = access::check_not_a_server_template(&state, &name).await {
        return r;
    }
    let store = state.lifecycle.store();
    let created = crate::builds::create(store, &caller.team_id, &name, cpu, mem, &tags, req.runtime.as_deref()).await;
    let build_id = match created {
        Ok(id) => id,
        Err(e) => return LifecycleError::from(e).into_response(),
    };
    if let Err(e) = store.set_template_creator(&name, &caller.key_id).await {
        tracing::warn!(template = %name, error = %e, "could not record who built the template");
    }
    (
        StatusCode::ACCEPTED,
        Json(TemplateBuildRequested {
            aliases: vec![name.clone()],
            build_id,
            names: vec![name.clone()],
            public: false,
            tags,
            template_id: name,
        }),
    )
        .into_response()
}

async fn alias(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(alias): Path<String>,
) -> Response {
    let (name, tag) = split_tag(&alias);
    let store = state.lifecycle.store();
    // A built template's `public` is its flag (`PATCH /v2/templates/{id}`).
    let public = match store.get_template_record(name).await {
        Ok(record) => record.is_some_and(|r| r.public),
        Err(e) => return internal(e),
    };
    let found = || Json(TemplateAlias { public, template_id: name.to_owned() }).into_response();
    // Another team's template is not confirmed to exist; the server's own are public.
    match state.lifecycle.template_visible(&caller.team_id, name).await {
        Ok(true) => {}
        Ok(false) => return template_not_found(&alias),
        Err(e) => return e.into_response(),
    }
    // A built template with that tag, or with any tag for a plain name (also one built only under other tags
    // than `default`); a template whose builds all failed has none.
    if alias.contains(':') && tag != "default" {
        return match store.tag_build(name, tag).await {
            Ok(Some(_)) => found(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("template '{alias}' not found")),
            Err(e) => internal(e),
        };
    }
    match store.tags(name).await {
        Ok(tags) if !tags.is_empty() => return found(),
        Ok(_) => {}
        Err(e) => return internal(e),
    }
    if is_internal_template(name) {
        return error(StatusCode::NOT_FOUND, format!("template '{alias}' not found"));
    }
    match state.lifecycle.node().templates().await {
        Ok(list) => match list.iter().find(|t| t.template_id == name || t.aliases.iter().any(|a| a == name)) {
            Some(t) => Json(TemplateAlias { public: true, template_id: t.template_id.clone() }).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("template '{alias}' not found")),
        },
        Err(e) => internal(e),
    }
}

async fn delete_template(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if id == "base" {
        return error(StatusCode::BAD_REQUEST, "the base template cannot be deleted");
    }
    // A snapshot (the SDKs' `delete_snapshot` sends its id, `name:default`) lives on the node that took it.
    match state.lifecycle.team_snapshot(&caller.team_id, &id).await {
        Ok(Some(snapshot)) => {
            return match state.lifecycle.delete_snapshot(&snapshot).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => e.into_response(),
            };
        }
        Ok(None) => {}
        Err(e) => return e.into_response(),
    }
    if !is_valid_template_name(&id) {
        return error(StatusCode::NOT_FOUND, format!("template '{id}' not found"));
    }
    // A team deletes its own templates; a server template (no record, public) only the admin.
    match state.lifecycle.store().get_template_record(&id).await {
        Ok(Some(r)) if r.team_id == caller.team_id => {}
        Ok(Some(_)) => return template_not_found(&id),
        Ok(None) if caller.is_admin() => {}
        Ok(None) => match state.lifecycle.node().templates().await {
            Ok(list) if list.iter().any(|t| t.template_id == id) => {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("template '{id}' is a server template: only an admin key may delete it"),
                );
            }
            Ok(_) => return template_not_found(&id),
            Err(e) => return internal(e),
        },
        Err(e) => return internal(e),
    }
    let on_node = match state.lifecycle.node().delete_template(&id).await {
        Ok(b) => b,
        Err(crate::node::NodeError::Invalid(_)) => false,
        Err(e) => return internal(e),
    };
    // Every build of it is a runtime template too (what its tags point at).
    let builds = match state.lifecycle.store().ready_build_ids(&id).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    for b in builds {
        if let Err(e) = state.lifecycle.node().delete_template(&build_template_name(&b)).await {
            tracing::warn!(template = %id, build = %b, error = %e, "could not delete a build's runtime template");
        }
    }
    let in_store = match state.lifecycle.store().delete_template_record(&id).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    if let Some(dir) = state.lifecycle.node().template_files_dir() {
        Uploads::for_team(&dir, &caller.team_id).remove_template(&id).await;
    }
    if on_node || in_store {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("template '{id}' not found"))
    }
}
