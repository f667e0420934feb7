//! The wire contract every SoulBox component shares.
//!
//! - [`process`] and [`filesystem`]: envd's protobuf messages (prost) with ProtoJSON serde impls (pbjson).
//! - [`api`]: the E2B control-plane REST JSON models.
//! - [`connect`]: Connect protocol framing, codecs and error codes.
//! - [`envd_init`]: how a node starts envd (port, flags, environment variable) and the `/init` JSON that
//!   configures it.
//! - [`envd_secret`]: the header and init field by which only a sandbox's node may talk to its envd.
//! - [`network`]: a sandbox's egress policy as a node applies it.
//! - [`signature`]: signed file URLs (E2B's `v1_` scheme and SoulBox's HMAC scheme).
//! - [`version`]: agent versions and the SDK feature gates tied to them.

pub mod access_token_file;
pub mod api;
pub mod connect;
pub mod envd_init;
pub mod envd_secret;
pub mod hosts;
pub mod network;
pub mod signature;
pub mod template;
pub mod timestamp;
pub mod version;

/// `process.Process` messages (package `process`).
#[allow(clippy::all, missing_docs)]
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// `filesystem.Filesystem` messages (package `filesystem`).
#[allow(clippy::all, missing_docs)]
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

pub use envd_init::ENVD_PORT;
pub use network::{HeaderRule, NetworkPolicy, SocksProxy};
