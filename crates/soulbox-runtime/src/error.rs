//! Typed errors of the runtime.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("command `{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("could not spawn `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("template {0} not found")]
    TemplateNotFound(String),
    #[error("sandbox {id} is {state}, operation needs {wanted}")]
    WrongState { id: String, state: String, wanted: String },
    #[error("ip pool exhausted")]
    PoolExhausted,
    #[error("envd in sandbox {id} did not become ready: {reason}; log tail:\n{log_tail}")]
    NotReady { id: String, reason: String, log_tail: String },
    #[error("data dir {0} is locked by another runtime instance")]
    Locked(PathBuf),
    #[error("json error in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("oci spec: {0}")]
    Oci(String),
    #[error("template build failed: {0}")]
    TemplateBuild(String),
    #[error("not running as root: {0}")]
    NotRoot(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attach a path to an io error.
pub trait IoCtx<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoCtx<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.into(), source })
    }
}
