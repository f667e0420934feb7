//! `process.Process`: start, attach to, signal and feed processes.

pub mod registry;

use axum::Router;
use soulbox_protocol::connect::RpcError;
use soulbox_protocol::process as pb;

use crate::rpc::{self, RpcContext, RpcStream};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/process.Process/List", rpc::unary(list))
        .route("/process.Process/Start", rpc::server_stream(start))
}

async fn list(_state: AppState, _ctx: RpcContext, _req: pb::ListRequest) -> Result<pb::ListResponse, RpcError> {
    Ok(pb::ListResponse { processes: vec![] })
}

async fn start(_state: AppState, _ctx: RpcContext, _req: pb::StartRequest) -> Result<RpcStream<pb::StartResponse>, RpcError> {
    Err(RpcError::unimplemented("not yet"))
}
