//! Publishes the access token's digest for services inside the sandbox (`soulbox_protocol::access_token_file`):
//! after every change of the sandbox configuration, so a service always checks against the current token.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use soulbox_protocol::access_token_file;

/// Writes the digest of `token` (empty without one) to `root` + [`access_token_file::PATH`], atomically: a
/// reader sees the old file or the new one, never a partial digest.
pub fn publish(root: &Path, token: Option<&str>) -> std::io::Result<()> {
    let path = root.join(access_token_file::PATH.trim_start_matches('/'));
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the digest path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let tmp = dir.join(format!(".access-token.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
    f.write_all(access_token_file::contents(token).as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, &path)
}

/// [`publish`], a failure logged (the services that read it refuse callers without it).
pub fn publish_logged(root: &Path, token: Option<&str>) {
    if let Err(e) = publish(root, token) {
        tracing::warn!(path = access_token_file::PATH, error = %e, "could not publish the access token's digest");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_the_token() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(access_token_file::PATH.trim_start_matches('/'));
        publish(root.path(), Some("first")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), access_token_file::contents(Some("first")));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        publish(root.path(), None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "no token: empty");
    }

    #[test]
    fn an_init_that_changes_the_token_republishes_it() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(access_token_file::PATH.trim_start_matches('/'));
        let config = crate::state::SandboxConfig { access_token: Some("at-start".into()), ..Default::default() };
        let state = crate::state::AppState::new(config).publishing_token_digest(root.path().to_owned());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), access_token_file::contents(Some("at-start")));
        let init = serde_json::from_value(serde_json::json!({"accessToken": "after-resume"})).unwrap();
        state.update_config(init);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), access_token_file::contents(Some("after-resume")));
    }
}
