//! SoulBox node runtime: turns a template into a running, isolated sandbox with `soulbox-envd` as
//! PID 1, and takes it apart again without leaving anything behind. See README.md.
pub mod cgroup;
pub mod config;
pub mod disk;
pub mod disk_image;
pub mod driver;
pub mod egress_ca;
pub mod egress_secrets;
pub mod envd_secret;
pub mod envd_start;
pub mod error;
pub mod firewall;
mod gateway;
pub mod idmap;
pub mod lifecycle;
pub mod loopdev;
pub mod mounts;
pub mod network;
pub mod oci_spec;
pub mod perms;
pub mod quota;
pub mod record;
pub mod rootfs;
pub mod runtime_kind;
pub mod sandbox_log;
pub mod seccomp;
pub mod spec;
pub mod template;
pub mod userns;
pub mod util;
pub mod volumes;

pub use config::RuntimeConfig;
pub use envd_secret::EnvdSecret;
pub use error::{Error, Result};
pub use lifecycle::{Endpoint, Runtime};
pub use spec::{NetworkPolicy, SandboxInfo, SandboxSpec, SocksProxy, Stats, Status, VolumeMount};
pub use template::{Store, TemplateMeta};
