//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, written by envd inside the sandbox at every start.
//!
//! They live in the sandbox's own root filesystem (its writable layer, under its disk limit), not as host files
//! bound in: a bound host file is a place where the sandbox can write outside its disk, and a host-side writer
//! would have to follow paths inside a tree the sandbox controls (a template can make `/etc/hosts` a symlink to
//! anywhere). envd runs inside the sandbox's own mount namespace, so following such a symlink here reaches
//! nothing but the sandbox itself — and the files are replaced by a rename, never written through a link.
//!
//! The node passes the values in the start configuration (`network` in `SOULBOX_ENVD_INIT`), so they are right
//! again after a stop-to-disk and start with a new address. In `/etc/hosts` the localhost lines and the line
//! naming this sandbox (marked [`MARKER`]) are envd's; every other line (a user's or a template build's own
//! entries) is kept.

use std::io::Write;
use std::path::Path;

/// Marks the `/etc/hosts` line envd owns, so the next start can replace it (the address changes).
pub const MARKER: &str = "# soulbox: this sandbox";

/// The sandbox's network identity, from the node (`network` in the start configuration).
pub use soulbox_protocol::envd_init::NetworkIdentity;

/// Writes the three files below `root` (`/` in a sandbox). Each one independently: a failure (a full disk, a
/// template whose `/etc/hosts` is a directory) is reported and the others are still written.
pub fn write_all(root: &Path, net: &NetworkIdentity) -> Vec<(String, std::io::Error)> {
    let etc = root.join("etc");
    let existing_hosts = read_regular(&etc.join("hosts"));
    let files = [
        ("hostname", format!("{}\n", net.hostname)),
        ("hosts", hosts(&existing_hosts, net)),
        ("resolv.conf", net.nameservers.iter().map(|n| format!("nameserver {n}\n")).collect()),
    ];
    let mut failures = Vec::new();
    for (name, content) in files {
        // Mode 0644, as these files always are.
        if let Err(e) = replace(&etc, name, content.as_bytes(), 0o644) {
            failures.push((format!("/etc/{name}"), e));
        }
    }
    failures
}

/// The file's text if it is a regular file of sane size (a symlink or anything else is replaced as if absent).
fn read_regular(path: &Path) -> String {
    const MAX: u64 = 1 << 20;
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_file() && md.len() <= MAX => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// `/etc/hosts`: localhost, the lines of `existing` envd does not own, and this sandbox's own line.
pub fn hosts(existing: &str, net: &NetworkIdentity) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for line in existing.lines() {
        if line.ends_with(MARKER) || is_localhost_line(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(addr) = net.address {
        out.push_str(&format!("{addr}\t{}\t{MARKER}\n", net.hostname));
    }
    out
}

/// A loopback line naming nothing but the localhost names (envd writes its own).
fn is_localhost_line(line: &str) -> bool {
    let mut fields = line.split('#').next().unwrap_or("").split_whitespace();
    let Some(addr) = fields.next() else {
        return false;
    };
    let names: Vec<&str> = fields.collect();
    matches!(addr, "127.0.0.1" | "::1")
        && !names.is_empty()
        && names.iter().all(|n| matches!(*n, "localhost" | "ip6-localhost" | "ip6-loopback" | "localhost.localdomain"))
}

/// Replaces `dir/name` by a new file of exactly `mode` (written beside it, then renamed over it: a symlink at
/// `name` is replaced, not followed). Shared with `trust.rs`.
pub(crate) fn replace(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = dir.join(format!(".{name}.soulbox-new"));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        // create_new: O_EXCL, which never follows a link at `tmp` either.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?; // exactly `mode`, whatever the umask
        f.write_all(content)?;
        drop(f);
        std::fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(addr: &str) -> NetworkIdentity {
        NetworkIdentity {
            hostname: "sbx1".into(),
            address: Some(addr.parse().unwrap()),
            nameservers: vec!["10.0.0.2".parse().unwrap()],
        }
    }

    #[test]
    fn hosts_keeps_foreign_lines_and_replaces_its_own() {
        let template = "127.0.0.1 localhost\n10.9.9.9 db.internal\n10.1.1.1\tbuildbox\t# soulbox: this sandbox\n";
        let first = hosts(template, &net("10.2.0.5"));
        assert_eq!(
            first,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.9.9.9 db.internal\n10.2.0.5\tsbx1\t# soulbox: this sandbox\n"
        );
        // a restart with a new address: still one line for this sandbox, the user's line kept
        let second = hosts(&first, &net("10.2.0.9"));
        assert_eq!(second.matches(MARKER).count(), 1);
        assert!(second.contains("10.2.0.9\tsbx1") && !second.contains("10.2.0.5") && second.contains("db.internal"));
        assert_eq!(second.matches("localhost\n").count(), 1);
    }

    #[test]
    fn files_are_replaced_never_written_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, etc.join("hosts")).unwrap();
        std::os::unix::fs::symlink(&target, etc.join("resolv.conf")).unwrap();
        let failures = write_all(root.path(), &net("10.2.0.5"));
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(etc.join("hosts")).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(etc.join("hosts")).unwrap().contains("10.2.0.5\tsbx1"));
        assert_eq!(std::fs::read_to_string(etc.join("resolv.conf")).unwrap(), "nameserver 10.0.0.2\n");
        assert_eq!(std::fs::read_to_string(etc.join("hostname")).unwrap(), "sbx1\n");
    }

    #[test]
    fn a_failing_file_does_not_stop_the_others() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("hosts")).unwrap(); // a directory where a file belongs
        std::fs::write(etc.join("hosts").join("keep"), "x").unwrap();
        let failures = write_all(root.path(), &net("10.2.0.5"));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].0, "/etc/hosts");
        assert_eq!(std::fs::read_to_string(etc.join("hostname")).unwrap(), "sbx1\n");
        assert!(!etc.join(".hosts.soulbox-new").exists());
    }
}
