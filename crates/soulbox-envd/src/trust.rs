//! The installation's egress CA certificate, added by envd to the sandbox's trust stores at every start.
//!
//! The node's egress gateway intercepts HTTPS for header rules, so programs in the sandbox must trust its CA.
//! The node passes the certificate (`egress_ca` in `SOULBOX_ENVD_INIT`, never its key) and envd installs it
//! inside the sandbox, into its own root filesystem: a host-side writer would have to follow paths inside a tree
//! the sandbox controls (system bundles are often symlinks, e.g. RHEL's into `/etc/pki/ca-trust/extracted`).
//! envd runs inside the sandbox's own mount namespace, so following such links here reaches nothing but the
//! sandbox itself — and every file is replaced by a rename, never written through a link.
//!
//! Three places, each one independently: [`EGRESS_CA_FILE`] (where `update-ca-certificates` looks, so a later
//! rebuild of the bundle keeps it), each system bundle that exists (SoulBox's block between [`BEGIN`] and
//! [`END`] replaced or appended: the CA may have changed since the last start), and [`EGRESS_CA_BUNDLE_FILE`],
//! a copy of the system bundle with the block, for the variables the node sets (`SSL_CERT_FILE` and the like).

use crate::etc_files::replace;
use soulbox_protocol::envd_init::{EGRESS_CA_BUNDLE_FILE, EGRESS_CA_FILE};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The line before SoulBox's block in a system bundle.
pub const BEGIN: &str = "# BEGIN soulbox egress CA";
/// The line after SoulBox's block in a system bundle.
pub const END: &str = "# END soulbox egress CA";

/// The system bundles of the common distributions (the first one found is copied to [`EGRESS_CA_BUNDLE_FILE`]).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // RHEL, Fedora
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine
];

/// A bundle larger than this is not a CA bundle envd should rewrite.
const MAX_BUNDLE: u64 = 16 << 20;

/// Installs `ca_pem` below `root` (`/` in a sandbox). A failure (a full disk, a read-only bundle directory) is
/// reported and the other steps still run.
pub fn install(root: &Path, ca_pem: &str) -> Vec<(String, std::io::Error)> {
    let pem = format!("{}\n", ca_pem.trim_end());
    let mut failures = Vec::new();
    if let Err(e) = write_new(root, EGRESS_CA_FILE, pem.as_bytes(), 0o644) {
        failures.push((EGRESS_CA_FILE.to_string(), e));
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut combined = None;
    for bundle in SYSTEM_BUNDLES {
        let resolved = match resolve(root, bundle) {
            Ok(Some(p)) if !seen.contains(&p) => p,
            Ok(_) => continue,
            Err(e) => {
                failures.push((bundle.to_string(), e));
                continue;
            }
        };
        seen.push(resolved.clone());
        let md = match std::fs::symlink_metadata(&resolved) {
            Ok(md) if md.is_file() && md.len() <= MAX_BUNDLE => md,
            Ok(_) => continue,
            Err(e) => {
                failures.push((bundle.to_string(), e));
                continue;
            }
        };
        let (content, unchanged) = match std::fs::read(&resolved) {
            Ok(c) => {
                let content = with_block(&String::from_utf8_lossy(&c), &pem);
                let unchanged = content.as_bytes() == c.as_slice();
                (content, unchanged)
            }
            Err(e) => {
                failures.push((bundle.to_string(), e));
                continue;
            }
        };
        // Every start after the first finds the block in place: no copy-up, no write on the start path.
        let (Some(dir), Some(name)) = (resolved.parent(), resolved.file_name()) else { continue };
        if !unchanged
            && let Err(e) = replace(dir, &name.to_string_lossy(), content.as_bytes(), md.permissions().mode() & 0o7777)
        {
            failures.push((bundle.to_string(), e));
        }
        combined.get_or_insert(content);
    }
    let combined = combined.unwrap_or_else(|| with_block("", &pem));
    if let Err(e) = write_new(root, EGRESS_CA_BUNDLE_FILE, combined.as_bytes(), 0o644) {
        failures.push((EGRESS_CA_BUNDLE_FILE.to_string(), e));
    }
    failures
}

/// `bundle` without any SoulBox block, then the block holding `pem` (which ends with one newline).
pub fn with_block(bundle: &str, pem: &str) -> String {
    let mut out = String::with_capacity(bundle.len() + pem.len() + 64);
    let mut inside = false;
    for line in bundle.split_inclusive('\n') {
        match line.trim_end() {
            BEGIN => inside = true,
            END if inside => inside = false,
            _ if !inside => out.push_str(line),
            _ => {}
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{BEGIN}\n{pem}{END}\n"));
    out
}

/// Where the sandbox path `path` leads inside `root`, following every symlink; `None` if it does not exist or
/// leads out of `root` (only possible in tests: in a sandbox `root` is `/`).
fn resolve(root: &Path, path: &str) -> std::io::Result<Option<PathBuf>> {
    let root = root.canonicalize()?;
    match root.join(path.trim_start_matches('/')).canonicalize() {
        Ok(p) if p.starts_with(&root) => Ok(Some(p)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the sandbox path `path` below `root`, creating its directories (mode 0755), unless it already is a
/// regular file with exactly `content`.
fn write_new(root: &Path, path: &str, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let full = root.join(path.trim_start_matches('/'));
    if std::fs::symlink_metadata(&full).is_ok_and(|md| md.is_file() && md.len() == content.len() as u64)
        && std::fs::read(&full).is_ok_and(|c| c == content)
    {
        return Ok(());
    }
    let (Some(dir), Some(name)) = (full.parent(), full.file_name()) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"));
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    replace(dir, &name.to_string_lossy(), content, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA1: &str = "-----BEGIN CERTIFICATE-----\nMIIBsoulboxone\n-----END CERTIFICATE-----";
    const CA2: &str = "-----BEGIN CERTIFICATE-----\nMIIBsoulboxtwo\n-----END CERTIFICATE-----\n\n";
    const SYSTEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBrootA\n-----END CERTIFICATE-----\n\
                          -----BEGIN CERTIFICATE-----\nMIIBrootB\n-----END CERTIFICATE-----\n";

    fn put(root: &Path, path: &str, content: &str) -> PathBuf {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        full
    }

    fn read(root: &Path, path: &str) -> String {
        std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap()
    }

    #[test]
    fn debian_bundle_gets_the_block_once_and_it_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let bundle = put(root.path(), "etc/ssl/certs/ca-certificates.crt", SYSTEM);
        std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o640)).unwrap();
        // Alpine's second name for the same bundle: written once, not twice
        std::os::unix::fs::symlink("certs/ca-certificates.crt", root.path().join("etc/ssl/cert.pem")).unwrap();
        assert!(install(root.path(), CA1).is_empty());
        assert_eq!(read(root.path(), EGRESS_CA_FILE), format!("{CA1}\n"));
        let first = std::fs::read_to_string(&bundle).unwrap();
        assert!(first.starts_with(SYSTEM));
        assert!(first.ends_with(&format!("{BEGIN}\n{CA1}\n{END}\n")));
        assert_eq!(first.matches(BEGIN).count(), 1);
        assert_eq!(read(root.path(), EGRESS_CA_BUNDLE_FILE), first);
        assert_eq!(std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o7777, 0o640);
        // idempotent
        assert!(install(root.path(), CA1).is_empty());
        assert_eq!(std::fs::read_to_string(&bundle).unwrap(), first);
        // a new CA replaces the old block
        assert!(install(root.path(), CA2).is_empty());
        let second = std::fs::read_to_string(&bundle).unwrap();
        assert!(!second.contains("soulboxone") && second.contains("soulboxtwo") && second.starts_with(SYSTEM));
        assert_eq!(second.matches(BEGIN).count(), 1);
        assert!(second.ends_with(&format!("{BEGIN}\n{}\n{END}\n", CA2.trim_end())));
        assert_eq!(read(root.path(), EGRESS_CA_BUNDLE_FILE), second);
    }

    #[test]
    fn rhel_symlinked_bundle_updates_the_target_and_keeps_the_link() {
        let root = tempfile::tempdir().unwrap();
        let target = put(root.path(), "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", SYSTEM);
        let link = root.path().join("etc/pki/tls/certs/ca-bundle.crt");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("../../ca-trust/extracted/pem/tls-ca-bundle.pem", &link).unwrap();
        assert!(install(root.path(), CA1).is_empty());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        let content = std::fs::read_to_string(&target).unwrap();
        assert!(content.starts_with(SYSTEM) && content.ends_with(&format!("{CA1}\n{END}\n")));
        assert_eq!(read(root.path(), EGRESS_CA_BUNDLE_FILE), content);
    }

    #[test]
    fn without_a_system_bundle_only_soulbox_files_are_written() {
        let root = tempfile::tempdir().unwrap();
        assert!(install(root.path(), CA1).is_empty());
        assert_eq!(read(root.path(), EGRESS_CA_FILE), format!("{CA1}\n"));
        assert_eq!(read(root.path(), EGRESS_CA_BUNDLE_FILE), format!("{BEGIN}\n{CA1}\n{END}\n"));
        for bundle in SYSTEM_BUNDLES {
            assert!(std::fs::symlink_metadata(root.path().join(&bundle[1..])).is_err(), "{bundle}");
        }
    }

    #[test]
    fn a_bundle_linking_out_of_root_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = put(outside.path(), "victim.pem", SYSTEM);
        let link = root.path().join("etc/ssl/certs/ca-certificates.crt");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(install(root.path(), CA1).is_empty());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), SYSTEM);
        assert_eq!(read(root.path(), EGRESS_CA_BUNDLE_FILE), format!("{BEGIN}\n{CA1}\n{END}\n"));
    }
}
