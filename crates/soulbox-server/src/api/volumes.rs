//! E2B's volumes: `POST /volumes`, `GET /volumes`, `GET|DELETE /volumes/{volumeID}`, scoped to the caller's team
//! (another team's volume is a 404, like an unknown one). The token a create or get answers with is the bearer
//! token of the volume's content API (`volume_content.rs`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use soulbox_protocol::api::{NewVolume, Volume, VolumeAndToken};

use super::{ApiState, error};
use crate::store::{Caller, SecretValue, VolumeRecord};

fn with_token(v: VolumeRecord, token: SecretValue) -> VolumeAndToken {
    VolumeAndToken { volume_id: v.id, name: v.name, token: token.expose().to_owned() }
}

pub async fn create(State(state): State<ApiState>, Extension(caller): Extension<Caller>, bytes: Bytes) -> Response {
    let req: NewVolume = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(_) => return error(StatusCode::BAD_REQUEST, r#"invalid request body: expected {"name": string}"#),
    };
    match state.lifecycle.create_volume(&caller.team_id, &req.name).await {
        Ok((volume, token)) => (StatusCode::CREATED, Json(with_token(volume, token))).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn list(State(state): State<ApiState>, Extension(caller): Extension<Caller>) -> Response {
    match state.lifecycle.list_volumes(&caller.team_id).await {
        Ok(volumes) => {
            let items: Vec<Volume> = volumes.into_iter().map(|v| Volume { volume_id: v.id, name: v.name }).collect();
            Json(items).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.lifecycle.team_volume(&caller.team_id, &id).await {
        Ok((volume, token)) => Json(with_token(volume, token)).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.lifecycle.delete_volume(&caller.team_id, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
