//! Shifting a tree made on the host into a shared user namespace range (`template.rs` "Shifted stores").
use crate::error::{Error, IoCtx, Result};
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Ids per range (uid/gid 0..65535 inside).
const RANGE_SIZE: u32 = crate::config::RANGE_SIZE;
/// What a user namespace shows for an unmapped id (`nobody`): ids past the range are stored as it,
/// as `soulbox-layer`'s shifted unpack does.
const OVERFLOW_ID: u32 = 65534;
/// chown(2) drops file capabilities: they are read before and written back after.
const CAPABILITY_XATTR: &str = "security.capability";
/// setuid/setgid: chown(2) clears them on non-directories, even for root; the mode is set again.
const SET_ID_BITS: u32 = 0o6000;

/// The host id unshifted id `id` is stored as in the range from `base`.
pub fn shifted_id(base: u32, id: u32) -> u32 {
    base + if id < RANGE_SIZE { id } else { OVERFLOW_ID }
}

/// Give every entry of `root` (itself included, symlinks not followed, other filesystems not
/// entered) the owner `base + uid` / `base + gid`, keeping setuid/setgid bits and file
/// capabilities. Each inode is shifted once (hard links). POSIX ACLs are not rewritten (nothing
/// that makes unshifted trees here writes them).
pub fn shift_tree(root: &Path, base: u32) -> Result<()> {
    let root_dev = std::fs::symlink_metadata(root).ctx(root)?.dev();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).ctx(&path)?;
        if md.dev() != root_dev {
            return Err(Error::Invalid(format!(
                "{} is another filesystem inside a layer being shifted",
                path.display()
            )));
        }
        let ft = md.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&path).ctx(&path)? {
                stack.push(e.ctx(&path)?.path());
            }
        } else if md.nlink() > 1 && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        let caps = if ft.is_file() { get_caps(&path)? } else { None };
        std::os::unix::fs::lchown(&path, Some(shifted_id(base, md.uid())), Some(shifted_id(base, md.gid())))
            .ctx(&path)?;
        if !ft.is_symlink() && !ft.is_dir() && md.mode() & SET_ID_BITS != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(md.mode() & 0o7777)).ctx(&path)?;
        }
        if let Some(caps) = caps {
            rustix::fs::lsetxattr(&path, CAPABILITY_XATTR, &caps, rustix::fs::XattrFlags::empty())
                .map_err(|e| Error::Io { path: path.clone(), source: e.into() })?;
        }
    }
    Ok(())
}

fn get_caps(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 64];
    match rustix::fs::lgetxattr(path, CAPABILITY_XATTR, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(Error::Io { path: path.to_path_buf(), source: e.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_move_into_the_range_once_and_privileges_stay() {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let root = std::env::temp_dir().join(format!("soulbox-shift-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home/user")).unwrap();
        let base = 0x2500_0000;
        let chown = |p: &str, id: u32| std::os::unix::fs::lchown(root.join(p), Some(id), Some(id)).unwrap();
        std::fs::write(root.join("sudo"), "x").unwrap();
        std::fs::set_permissions(root.join("sudo"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(root.join("home/user/file"), "x").unwrap();
        chown("home/user", 1000);
        chown("home/user/file", 1000);
        std::fs::hard_link(root.join("home/user/file"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("dangling")).unwrap();
        chown("dangling", 1000);
        std::fs::write(root.join("far"), "x").unwrap();
        chown("far", 200_000);
        std::fs::write(root.join("ping"), "x").unwrap();
        // v2 file capabilities: cap_net_raw permitted + effective
        let caps: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
        rustix::fs::lsetxattr(root.join("ping"), CAPABILITY_XATTR, &caps, rustix::fs::XattrFlags::empty()).unwrap();

        shift_tree(&root, base).unwrap();
        let owner = |p: &str| {
            let md = std::fs::symlink_metadata(root.join(p)).unwrap();
            (md.uid(), md.gid())
        };
        assert_eq!(owner(""), (base, base));
        assert_eq!(owner("sudo"), (base, base));
        assert_eq!(owner("home/user"), (base + 1000, base + 1000));
        assert_eq!(owner("home/user/file"), (base + 1000, base + 1000), "a hard link was shifted twice");
        assert_eq!(owner("dangling"), (base + 1000, base + 1000));
        assert_eq!(owner("far"), (base + OVERFLOW_ID, base + OVERFLOW_ID));
        let mode = std::fs::metadata(root.join("sudo")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o4755, "setuid lost");
        assert_eq!(get_caps(&root.join("ping")).unwrap(), Some(caps), "file capabilities lost");
        let _ = std::fs::remove_dir_all(&root);
    }
}
