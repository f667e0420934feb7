//! `filesystem.Filesystem`: stat, list, create, move, remove and watch.

pub mod watch;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
