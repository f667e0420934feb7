//! Tags: `POST /templates/tags` `{target: "name:tag", tags}` → 201 `{buildID, tags}`, `DELETE /templates/tags`
//! `{name, tags}` → 204, `GET /templates/{id}/tags` → 200 `[{tag, buildID, createdAt}]`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use soulbox_protocol::api::{AssignedTags, TemplateTag};

use super::access::{own_template, template_not_found};
use super::internal;
use crate::api::{ApiState, error};
use crate::builds;
use crate::names::{is_valid_tag, split_tag};
use crate::store::Caller;
use crate::time::rfc3339;

#[derive(Deserialize)]
struct AssignTags {
    target: String,
    tags: Vec<String>,
}

/// `POST /templates/tags`: points `tags` at the build `target` (`name:tag`, `name` = `name:default`) names.
pub(super) async fn assign_tags(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let req: AssignTags = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if req.tags.is_empty() {
        return error(StatusCode::BAD_REQUEST, "tags must not be empty");
    }
    if let Some(bad) = req.tags.iter().find(|t| !is_valid_tag(t)) {
        return error(StatusCode::BAD_REQUEST, format!("invalid tag '{bad}': use letters, digits, '-', '_' and '.'"));
    }
    let (name, tag) = split_tag(&req.target);
    if own_template(&state, &caller, name).await.is_err() {
        return template_not_found(&req.target);
    }
    let build = match state.lifecycle.store().tag_build(name, tag).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return error(StatusCode::NOT_FOUND, format!("template '{}' not found", req.target));
        }
        Err(e) => return internal(e),
    };
    if let Err(m) =
        builds::point_tags(state.lifecycle.store(), state.lifecycle.node().as_ref(), name, &build, &req.tags).await
    {
        return internal(m);
    }
    (StatusCode::CREATED, Json(AssignedTags { build_id: build, tags: req.tags })).into_response()
}

#[derive(Deserialize)]
struct RemoveTags {
    name: String,
    tags: Vec<String>,
}

/// `DELETE /templates/tags`: removes tags; removing `default` also removes the runtime template `<name>`.
pub(super) async fn remove_tags(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let req: RemoveTags = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let name = split_tag(&req.name).0;
    if let Err(r) = own_template(&state, &caller, name).await {
        return r;
    }
    if let Err(e) = state.lifecycle.store().remove_tags(name, &req.tags).await {
        return internal(e);
    }
    if req.tags.iter().any(|t| t == "default")
        && let Err(e) = state.lifecycle.node().delete_template(name).await
    {
        return internal(e);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /templates/{id}/tags` → `[{tag, buildID, createdAt}]`.
pub(super) async fn list_tags(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let store = state.lifecycle.store();
    if let Err(r) = own_template(&state, &caller, &id).await {
        return r;
    }
    match store.tags(&id).await {
        Ok(tags) => Json(
            tags.iter()
                .map(|t| TemplateTag {
                    build_id: t.build_id.clone(),
                    created_at: rfc3339(t.created_at_ms),
                    tag: t.tag.clone(),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}
