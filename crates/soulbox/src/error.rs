//! Typed errors: every failure the SDK reports says what happened.

use std::time::Duration;

use soulbox_protocol::connect::{Code, RpcError};
use soulbox_protocol::version::VersionError;

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sandbox, file, process or route does not exist (HTTP 404, Connect `not_found`).
    #[error("not found: {0}")]
    NotFound(String),
    /// A deadline passed: the request timeout, a command's timeout (`Connect-Timeout-Ms`) or HTTP 504.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The API key or access token is missing or wrong (HTTP 401/403, Connect `unauthenticated`).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Too many requests (HTTP 429); `retry_after` is the server's hint.
    #[error("rate limited: {message}")]
    RateLimit { message: String, retry_after: Option<Duration> },
    /// The sandbox was killed (or paused) while the call ran, or is gone: the proxy no longer finds it, or an
    /// open stream was cut.
    #[error("sandbox {0} was killed or is no longer running")]
    SandboxKilled(String),
    /// A command finished with a non-zero exit code; carries everything it printed.
    #[error("command exited with code {exit_code}{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    CommandExit { exit_code: i32, stdout: String, stderr: String, error: Option<String> },
    /// A template build failed: the step it failed at (`"base"`, the 1-based step number, or `"finalize"`), the
    /// server's reason and the last log lines.
    #[error("template {template_id} build {build_id} failed{}: {message}", step.as_ref().map(|s| format!(" at step {s}")).unwrap_or_default())]
    Build { template_id: String, build_id: String, step: Option<String>, message: String, last_logs: Vec<String> },
    /// The agent is too old, or lacks a feature (the message names the version needed).
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The request was refused as invalid (HTTP 400/409/422, Connect `invalid_argument`, `already_exists`, …),
    /// or the SDK refused it before sending.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else: transport failures, 5xx answers, unexpected bodies.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The exit code of a [`Error::CommandExit`].
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::CommandExit { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    /// An error from an HTTP status and the server's message (E2B's `{"code","message"}` body or plain text).
    pub(crate) fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> Error {
        match status {
            401 | 403 => Error::Auth(message),
            404 => Error::NotFound(message),
            408 | 504 => Error::Timeout(message),
            429 => Error::RateLimit { message, retry_after },
            400 | 409 | 413 | 422 => Error::Invalid(message),
            _ => Error::Other(format!("HTTP {status}: {message}")),
        }
    }

    pub(crate) fn from_rpc(e: RpcError) -> Error {
        let message = e.message;
        match e.code {
            Code::NotFound => Error::NotFound(message),
            Code::DeadlineExceeded => Error::Timeout(message),
            Code::Unauthenticated | Code::PermissionDenied => Error::Auth(message),
            Code::ResourceExhausted => Error::RateLimit { message, retry_after: None },
            Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
                Error::Invalid(format!("{}: {message}", e.code))
            }
            code => Error::Other(format!("{code}: {message}")),
        }
    }

    pub(crate) fn transport(e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout(e.to_string())
        } else {
            Error::Other(format!("request failed: {}", full_chain(&e)))
        }
    }
}

fn full_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
