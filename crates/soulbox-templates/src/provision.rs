//! E2B's `user` in every template: E2B's build system creates the account `user` in any image, and its SDKs
//! (a Dockerfile's conversion ends with `USER user` unless the Dockerfile set one; `set_user("user")` on
//! `from_image(...)`) rely on it. The engine does the same, lazily: a USER step naming `user` on layers whose
//! `/etc/passwd` has no such account becomes a layer-producing step that creates it (home `/home/user`, bash
//! when the image has it, passwordless sudo when the image has sudo), so templates that already have it — `base`
//! and everything built on it — are untouched.

use std::io::BufRead;

/// The account E2B's templates run as.
pub const E2B_USER: &str = "user";

/// Run as root in the build sandbox: `useradd` (Debian, Ubuntu, Fedora, …) or busybox `adduser` (Alpine).
pub const CREATE_E2B_USER: &str = r#"set -e
if command -v useradd >/dev/null 2>&1; then
  if command -v bash >/dev/null 2>&1; then useradd -m -s "$(command -v bash)" user; else useradd -m user; fi
else
  adduser -D user
fi
if [ -d /etc/sudoers.d ]; then
  echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
  chmod 0440 /etc/sudoers.d/user
fi"#;

/// Whether the topmost `/etc/passwd` of `layer_dirs` (lowest first) names `user`. A whiteout or anything that
/// is not a regular file hides the layers below it, as in the sandbox's overlay.
pub fn passwd_has_user(layer_dirs: &[std::path::PathBuf], user: &str) -> bool {
    for dir in layer_dirs.iter().rev() {
        let path = dir.join("etc/passwd");
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_file() {
            return false;
        }
        let Ok(file) = std::fs::File::open(&path) else { return false };
        return std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.split(':').next() == Some(user));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topmost_passwd_decides() {
        let root = tempfile::tempdir().unwrap();
        let layer = |name: &str, passwd: Option<&str>| {
            let d = root.path().join(name);
            std::fs::create_dir_all(d.join("etc")).unwrap();
            if let Some(p) = passwd {
                std::fs::write(d.join("etc/passwd"), p).unwrap();
            }
            d
        };
        let without = layer("a", Some("root:x:0:0:root:/root:/bin/bash\nusers:x:5:5::/:/bin/sh\n"));
        let with = layer("b", Some("root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n"));
        let untouched = layer("c", None);
        assert!(!passwd_has_user(std::slice::from_ref(&without), "user"), "`users` is not `user`");
        assert!(passwd_has_user(&[without.clone(), with.clone(), untouched.clone()], "user"));
        assert!(!passwd_has_user(&[with.clone(), without.clone()], "user"), "the upper passwd wins");
        let deleted = root.path().join("d");
        std::fs::create_dir_all(deleted.join("etc/passwd")).unwrap(); // not a regular file: hides the lower ones
        assert!(!passwd_has_user(&[with, deleted], "user"));
        assert!(!passwd_has_user(&[untouched], "user"));
    }
}
