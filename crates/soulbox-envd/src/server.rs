//! The HTTP server: routes, middleware, and a listener that speaks HTTP/1.1 and h2c with `TCP_NODELAY`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tower_http::cors::{Any, CorsLayer};

use crate::quiesce::{BlockingAcceptListener, ConnectionId, Connections};
use crate::state::AppState;
use crate::{auth, filesystem, http, process, request_log};

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new().allow_origin(Any).allow_headers(Any).allow_methods(Any).expose_headers(Any);
    Router::new()
        .route("/health", get(http::health))
        .route("/init", axum::routing::post(http::init))
        .route(soulbox_protocol::envd_init::CLAIM_PATH, axum::routing::post(http::claim::claim))
        .route(soulbox_protocol::envd_init::QUIESCE_PATH, axum::routing::post(http::quiesce::quiesce))
        .route("/envs", get(http::envs))
        .route("/metrics", get(http::metrics))
        .route("/files", get(http::files::download).post(http::files::upload))
        .merge(process::routes())
        .merge(filesystem::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_access_token))
        .layer(cors)
        // Outermost, so that nothing (not even a CORS preflight or a 404) answers a caller without the secret.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_node_secret))
        // Outside even that: a refused request still runs in its request id's span.
        .layer(axum::middleware::from_fn(request_log::log_request))
        // A refused caller still streaming its body (the SDK sends a Connect call's body after its head) must
        // read the 401 rather than a broken pipe.
        .layer(axum::middleware::from_fn(soulbox_http::linger_on_unread_body))
        .with_state(state)
}

/// Binds `addr`, reports readiness through `ready` (see `main`), then serves until the process ends. Accepts on a
/// thread of its own and keeps each connection closable, so that gVisor can checkpoint the agent (`quiesce.rs`).
pub async fn serve(state: AppState, addr: SocketAddr, ready: impl FnOnce()) -> anyhow::Result<()> {
    let connections = Arc::new(Connections::default());
    let listener = BlockingAcceptListener::bind(addr, connections.clone())?;
    tracing::info!(%addr, "envd listening");
    ready();
    let app = router(state).layer(axum::Extension(connections));
    axum::serve(listener, app.into_make_service_with_connect_info::<ConnectionId>()).await?;
    Ok(())
}
