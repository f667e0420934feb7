//! The HTTP side of templates: E2B's template endpoints plus the live log stream ([`api`]), who may see which
//! template ([`access`]), a build's stored log ([`build_log`]) and COPY context uploads ([`uploads`]). The build
//! engine itself is the `soulbox-templates` crate (see its TEMPLATES.md).

pub mod access;
#[cfg(test)]
mod access_tests;
pub mod api;
pub mod build_log;
pub mod uploads;

/// The engine's types the modules above name as `super::…`.
pub(crate) use soulbox_templates::{
    BaseAccess, BuildFailure, BuildJob, LogLevel, LogSink, Recipe, sha256_hex, unpack,
};
