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
use crate::error::{IoCtx, Result};
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
