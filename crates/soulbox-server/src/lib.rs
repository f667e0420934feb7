//! The SoulBox control plane. This crate grows with issue 4: today it holds the store and API-key handling.

pub mod deadlines;
pub mod ids;
pub mod keys;
pub mod lifecycle;
pub mod listing;
pub mod local_node;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod store;
pub mod time;
pub mod api;
