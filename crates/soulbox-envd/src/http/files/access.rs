//! Who may use `/files` and as whom: the access-token / signed-URL gate (spec §2.7, §3), then the user and the
//! resolved path.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use soulbox_protocol::signature::{self, Operation, SignatureError};

use crate::auth::{self, ACCESS_TOKEN_HEADER};
use crate::errors::json_error;
use crate::paths;
use crate::state::AppState;
use crate::users::User;
use soulbox_protocol::signature::SignedQuery as FilesQuery;

/// An authorized `/files` request: the user it acts for and the absolute target path.
pub struct FileAccess {
    pub user: User,
    pub path: PathBuf,
}

/// Checks the caller's right to do `operation`, then resolves the user and (when `path` is given) the path.
/// `path` may be absent for multipart uploads, whose parts name their own targets; `path` is then the user's
/// default directory and is not used.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &FilesQuery,
    operation: Operation,
) -> Result<FileAccess, Response> {
    let config = state.config();
    if let Some(token) = config.access_token.as_deref() {
        check_token_or_signature(headers, query, operation, token)?;
    }
    let user = auth::files_user(state, query.username.as_deref())?;
    let path = resolve(query.path.as_deref().unwrap_or_default(), &user, config.default_workdir.as_deref())?;
    Ok(FileAccess { user, path })
}

/// Resolves a client-given path for `user` with E2B's rules; a bad path is a 400.
pub fn resolve(raw: &str, user: &User, default_workdir: Option<&str>) -> Result<PathBuf, Response> {
    paths::expand_and_resolve(raw, user, default_workdir).map_err(|e| json_error(StatusCode::BAD_REQUEST, &e.message))
}

/// A present `X-Access-Token` must match (and then no signature is needed); otherwise the URL must carry a
/// valid signature over the raw query values. The signature is verified before its expiry, as E2B's envd does.
fn check_token_or_signature(
    headers: &HeaderMap,
    query: &FilesQuery,
    operation: Operation,
    token: &str,
) -> Result<(), Response> {
    if headers.contains_key(ACCESS_TOKEN_HEADER) {
        return if auth::token_matches(headers, token) {
            Ok(())
        } else {
            Err(json_error(StatusCode::UNAUTHORIZED, "access token present in header but does not match"))
        };
    }
    let Some(sig) = query.signature.as_deref() else {
        return Err(json_error(StatusCode::UNAUTHORIZED, "missing signature query parameter"));
    };
    let claims = query.claims(operation).map_err(|e| json_error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    match signature::verify(sig, &claims, token, now) {
        Ok(_) => Ok(()),
        Err(e @ (SignatureError::Invalid | SignatureError::Expired)) => {
            Err(json_error(StatusCode::UNAUTHORIZED, &e.to_string()))
        }
    }
}

/// The response for a failed filesystem call on `path` made as `user`.
pub fn io_failure(err: &std::io::Error, path: &Path, user: &User) -> Response {
    use std::io::ErrorKind;
    let shown = path.display();
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => {
            json_error(StatusCode::NOT_FOUND, &format!("path '{shown}' does not exist"))
        }
        ErrorKind::IsADirectory => json_error(StatusCode::BAD_REQUEST, &format!("path '{shown}' is a directory")),
        ErrorKind::PermissionDenied => json_error(
            StatusCode::FORBIDDEN,
            &format!("permission denied: user '{}' cannot access path '{shown}'", user.name),
        ),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            json_error(StatusCode::INSUFFICIENT_STORAGE, "not enough disk space available")
        }
        ErrorKind::ReadOnlyFilesystem => {
            json_error(StatusCode::FORBIDDEN, &format!("path '{shown}' is on a read-only filesystem"))
        }
        _ => {
            tracing::warn!(path = %shown, error = %err, "file operation failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("error accessing path '{shown}': {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_e2b_statuses() {
        let user = User { name: "u".into(), uid: 1, gid: 1, home: "/h".into(), shell: String::new(), groups: vec![] };
        let status =
            |errno: i32| io_failure(&std::io::Error::from_raw_os_error(errno), Path::new("/p"), &user).status();
        assert_eq!(status(28), StatusCode::INSUFFICIENT_STORAGE); // ENOSPC
        assert_eq!(status(122), StatusCode::INSUFFICIENT_STORAGE); // EDQUOT
        assert_eq!(status(2), StatusCode::NOT_FOUND); // ENOENT
        assert_eq!(status(21), StatusCode::BAD_REQUEST); // EISDIR
        assert_eq!(status(13), StatusCode::FORBIDDEN); // EACCES
        assert_eq!(status(5), StatusCode::INTERNAL_SERVER_ERROR); // EIO
    }
}
