//! Path resolution rules of E2B envd (`permissions/path.go:ExpandAndResolve`).

use std::path::{Component, Path, PathBuf};

use soulbox_protocol::connect::RpcError;

use crate::users::User;

/// Empty → default workdir (if any, else home); `~` and `~/x` → the user's home; other relative paths are joined
/// to the user's *home* (not the workdir); the result is lexically cleaned (`..` cannot climb above `/`).
pub fn expand_and_resolve(path: &str, user: &User, default_workdir: Option<&str>) -> Result<PathBuf, RpcError> {
    if path.contains('\0') {
        return Err(RpcError::invalid_argument("path contains a NUL byte"));
    }
    let raw = if path.is_empty() {
        match default_workdir {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => user.home.clone(),
        }
    } else if path == "~" {
        user.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        user.home.join(rest)
    } else if path.starts_with('~') {
        return Err(RpcError::invalid_argument(format!("path '{path}' uses an unsupported ~user form")));
    } else if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        user.home.join(path)
    };
    let absolute = if raw.is_absolute() { raw } else { Path::new("/").join(raw) };
    Ok(clean(&absolute))
}

/// Lexical cleaning like Go's `filepath.Clean` for absolute paths.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            shell: "/bin/bash".into(),
            groups: vec![1000],
        }
    }

    #[test]
    fn e2b_rules() {
        let u = user();
        let r = |p: &str, wd: Option<&str>| expand_and_resolve(p, &u, wd).unwrap();
        assert_eq!(r("", None), PathBuf::from("/home/user"));
        assert_eq!(r("", Some("/app")), PathBuf::from("/app"));
        assert_eq!(r("a.txt", Some("/app")), PathBuf::from("/home/user/a.txt"));
        assert_eq!(r("~", None), PathBuf::from("/home/user"));
        assert_eq!(r("~/x/../y", None), PathBuf::from("/home/user/y"));
        assert_eq!(r("/../../etc//passwd", None), PathBuf::from("/etc/passwd"));
        assert!(expand_and_resolve("a\0b", &u, None).is_err());
    }
}
