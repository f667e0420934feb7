//! # soulbox — the Rust SDK for SoulBox (and any E2B-compatible server)
//!
//! ```no_run
//! # async fn demo() -> soulbox::Result<()> {
//! use std::time::Duration;
//! use soulbox::Sandbox;
//!
//! // E2B_API_KEY / E2B_API_URL / E2B_SANDBOX_URL (or SOULBOX_*) come from the environment.
//! let sbx = Sandbox::builder("base").timeout(Duration::from_secs(120)).metadata("owner", "me").create().await?;
//! let out = sbx.commands().run("echo hello").await?;
//! assert_eq!(out.stdout, "hello\n");
//! sbx.files().write("/tmp/a.txt", "data").await?;
//! let handle = sbx.commands().spawn("sleep 1; echo done").await?;
//! println!("so far: {:?}, finished: {}", handle.stdout(), handle.is_finished());
//! handle.wait().await?;
//! sbx.kill().await?;
//! # Ok(()) }
//! ```
//!
//! See the crate README for the full tour: configuration, errors, version gates and signed URLs.

mod client;
mod commands;
mod config;
mod envd;
mod error;
mod files;
mod pty;
mod sandbox;
mod template;
mod tls;

pub use client::{
    Client, ListQuery, ListedSandbox, LogLine, NodeInfo, Order, Page, SandboxInfo, SandboxMetric, SandboxState,
};
pub use commands::{
    CommandHandle, CommandOptions, CommandResult, Commands, DEFAULT_COMMAND_TIMEOUT, DataCallback, OutputCallback,
    ProcessInfo,
};
pub use config::{
    ConnectionConfig, DEFAULT_DOMAIN, DEFAULT_MAX_REDIRECTS, DEFAULT_REQUEST_TIMEOUT, Redirects, SignatureScheme,
};
pub use error::{Error, Result};
pub use files::{EntryInfo, EntryType, EventKind, Filesystem, FilesystemEvent, SignedUrlOptions, WriteInfo};
pub use pty::{Pty, PtyOptions, PtySize};
pub use sandbox::{DirectEnvd, Sandbox, SandboxBuilder, TimeoutBehavior};
/// The wire types and version gates this SDK is built on.
pub use soulbox_protocol as protocol;
pub use soulbox_protocol::version::{Feature, VersionError};
pub use template::{
    AssignedTags, BASE_IMAGE, BuildHandle, BuildLogEntry, BuildOptions, BuildReason, BuildStatus, BuildStatusPage,
    LogLevel, Template, TemplateStep, TemplateSummary, TemplateTag, files_hash,
};
