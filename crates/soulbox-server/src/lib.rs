//! The SoulBox control plane: E2B-compatible REST API, sandbox proxy, lifecycle, store and the `soulbox` command.

pub mod access_log;
pub mod admin_key;
pub mod api;
pub mod builds;
pub mod client_socket;
pub mod cluster;
pub mod cluster_control;
pub mod config;
pub mod deadlines;
pub mod egress;
pub mod egress_secrets;
/// The log setting the envd of every sandbox started by this process gets (set by the binary's logging setup).
pub use soulbox_runtime::envd_log;
pub mod forwarded;
pub mod ids;
pub mod ingress;
pub mod keys;
pub mod lifecycle;
pub mod listing;
pub mod local_node;
mod local_transfer;
pub mod metrics;
pub mod names;
pub mod node;
pub mod node_agent;
pub mod node_identity;
pub mod node_setup;
#[cfg(test)]
mod observability_tests;
pub mod prom;
pub mod proxy;
#[cfg(test)]
mod proxy_cache_tests;
#[cfg(test)]
mod proxy_ingress_tests;
#[cfg(test)]
mod proxy_secret_tests;
#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod replica_tests;
pub mod reply;
pub mod route_cache;
pub mod secret_box;
pub mod serve;
#[cfg(test)]
mod serve_tests;
#[cfg(test)]
mod serve_tls_tests;
pub mod server;
pub mod signed_routing;
pub mod store;
pub mod stream_cut;
#[cfg(test)]
pub(crate) mod testing;
pub mod time;
pub mod tls;
pub mod upstream;
