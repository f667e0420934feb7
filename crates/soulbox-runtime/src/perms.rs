//! Who may read what under the data dir.
//!
//! The writable layers and the template layers are stored unshifted: a setuid-root file made in a
//! sandbox (or by a template build) is a setuid-root file on the host's disk. No host user but
//! root may reach them. Without user namespaces everything is root's: the data dir and
//! `sandboxes/` are 0700. With user namespaces runc's init runs as the sandbox's mapped root and
//! must walk to the rootfs mount point and to every bind-mount source, so (as Docker's
//! userns-remap does):
//!
//! - the data dir and `sandboxes/` are 0711 (traversable, not listable);
//! - each sandbox dir is 0700 and owned by its range's root, so only host root and that sandbox's
//!   mapped root get in (its `upper/`, `disk/`, `rootfs/`, `sys/` are below it);
//! - envd is copied to `<data_dir>/envd` (0755) at open, instead of being bound from wherever it
//!   was built (e.g. under a 0700 home directory);
//! - the template store's `layers/` and `templates/` are 0700 (the overlay reads layers with the
//!   mounter's credentials, runc never walks there); the OCI runtime's state dir is 0700;
//! - records (`sandbox.json`, `net.json`, `userns.json`, `disk.json`, `config.json`) are 0600
//!   (`util::write_atomic`).
use crate::config::RuntimeConfig;
use crate::error::{Error, IoCtx, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ctx(path)
}

/// Modes of the node-level directories (after the disk limit mechanism mounted its image on
/// `sandboxes/`, whose root then gets the mode).
pub fn secure_data_dir(cfg: &RuntimeConfig, user_namespaces: bool) -> Result<()> {
    let shared = if user_namespaces { 0o711 } else { 0o700 };
    set_mode(&cfg.data_dir, shared)?;
    set_mode(&cfg.sandboxes_dir(), shared)?;
    set_mode(&cfg.runtime_root(), 0o700)
}

/// Copy the envd binary to `<data_dir>/envd` (0755, replaced atomically; running sandboxes keep
/// the file they had). Returns the copy's path.
pub fn install_envd(cfg: &RuntimeConfig) -> Result<PathBuf> {
    let dst = cfg.data_dir.join("envd");
    let tmp = cfg.data_dir.join("envd.tmp");
    std::fs::copy(&cfg.envd_path, &tmp).ctx(&cfg.envd_path)?;
    set_mode(&tmp, 0o755)?;
    std::fs::rename(&tmp, &dst).ctx(&dst)?;
    Ok(dst)
}

/// A sandbox dir: 0700, owned by the root of its user namespace range (or host root).
pub fn secure_sandbox_dir(dir: &Path, owner: u32) -> Result<()> {
    std::os::unix::fs::chown(dir, Some(owner), Some(owner)).ctx(dir)?;
    set_mode(dir, 0o700)
}

/// With user namespaces runc's init walks to the rootfs as the sandbox's mapped root: every
/// directory above the data dir must let it through (`o+x`). Docker refuses to start in the same
/// case; so do we, naming the directory, instead of failing every create with "permission denied".
pub fn check_traversable(data_dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for dir in data_dir.ancestors().skip(1) {
        let md = std::fs::metadata(dir).ctx(dir)?;
        let mode = md.mode();
        let ok = if md.uid() == uid {
            mode & 0o100 != 0
        } else if md.gid() == uid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(Error::Invalid(format!(
                "{} (mode {:o}) above the data dir {} does not let the sandboxes' mapped root users through: \
                 allow o+x on it (chmod o+x), move the data dir, or turn user namespaces off",
                dir.display(),
                mode & 0o7777,
                data_dir.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_without_o_x_is_named() {
        let root = std::env::temp_dir().join(format!("soulbox-perms-{}", std::process::id()));
        let data = root.join("closed/data");
        std::fs::create_dir_all(&data).unwrap();
        set_mode(&root, 0o755).unwrap();
        set_mode(&root.join("closed"), 0o755).unwrap();
        assert!(check_traversable(&data, 0x1000_0000).is_ok());
        set_mode(&root.join("closed"), 0o700).unwrap();
        let err = check_traversable(&data, 0x1000_0000).unwrap_err().to_string();
        assert!(err.contains("closed (mode 700)"), "{err}");
        set_mode(&root.join("closed"), 0o711).unwrap();
        assert!(check_traversable(&data, 0x1000_0000).is_ok());
        let _ = std::fs::remove_dir_all(&root);
    }
}
