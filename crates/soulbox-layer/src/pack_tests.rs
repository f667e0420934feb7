//! `pack` then `unpack_with(keep_privileges)`: a layer SoulBox made moves to another node unchanged.

use super::*;
use crate::{UnpackOptions, UnpackStats, unpack, unpack_with};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Everything a layer's digest sees (type, mode, owner, content, link target, device) plus the opaque mark.
fn describe(dir: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let what = if ft.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("{:?} links={}", std::fs::read(&p).unwrap(), md.nlink())
            } else if ft.is_char_device() {
                format!("chr {}", md.rdev())
            } else if ft.is_fifo() {
                "fifo".into()
            } else {
                let opaque = rustix::fs::lgetxattr(&p, OVERLAY_OPAQUE_XATTR, &mut [0u8; 4]).is_ok();
                format!("dir opaque={opaque}")
            };
            out.push(format!(
                "{} {:o} {}:{} {what}",
                p.strip_prefix(base).unwrap().display(),
                md.mode(),
                md.uid(),
                md.gid()
            ));
            if ft.is_dir() {
                go(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out
}

fn roundtrip(src: &Path) -> (tempfile::TempDir, PackStats, UnpackStats) {
    let mut tar = Vec::new();
    let packed = pack(src, &mut tar).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let opts = UnpackOptions { keep_privileges: true, ..Default::default() };
    let unpacked = unpack_with(tar.as_slice(), dest.path(), &opts).unwrap();
    (dest, packed, unpacked)
}

#[test]
fn a_packed_layer_unpacks_to_the_same_tree_with_its_privileges_whiteouts_and_opaque_dirs() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("home/user/deep")).unwrap();
    std::fs::write(s.join("home/user/file"), b"kept").unwrap();
    std::fs::write(s.join("home/user/tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(s.join("home/user/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(s.join("home/user/file"), s.join("home/user/deep/again")).unwrap();
    std::os::unix::fs::symlink("../file", s.join("home/user/deep/up")).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, s.join("home/fifo"), rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
    rustix::fs::lsetxattr(s.join("home/user/file"), "user.note", b"hi", rustix::fs::XattrFlags::empty()).unwrap();
    let long = "n".repeat(150);
    std::fs::write(s.join("home/user/deep").join(&long), b"long name").unwrap();
    if root() {
        std::os::unix::fs::lchown(s.join("home/user"), Some(1000), Some(1000)).unwrap();
        // overlayfs' own forms: a whiteout and an opaque directory.
        rustix::fs::mknodat(rustix::fs::CWD, s.join("home/gone"), rustix::fs::FileType::CharacterDevice, 0.into(), 0)
            .unwrap();
        std::fs::create_dir(s.join("etc")).unwrap();
        rustix::fs::lsetxattr(s.join("etc"), OVERLAY_OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty()).unwrap();
    }
    let (dest, packed, unpacked) = roundtrip(s);
    assert_eq!(describe(dest.path()), describe(s));
    assert_eq!(unpacked.privileges_dropped, 0);
    let mut note = [0u8; 8];
    let n = rustix::fs::lgetxattr(dest.path().join("home/user/file"), "user.note", &mut note).unwrap();
    assert_eq!(&note[..n], b"hi");
    if root() {
        assert_eq!((packed.whiteouts, packed.opaque_dirs), (1, 1));
        assert_eq!((unpacked.whiteouts, unpacked.opaque_dirs), (1, 1));
    }
}

#[test]
fn without_keep_privileges_the_same_tar_loses_its_setuid_bit() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("tool"), b"x").unwrap();
    std::fs::set_permissions(src.path().join("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mut tar = Vec::new();
    pack(src.path(), &mut tar).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let stats = unpack(tar.as_slice(), dest.path()).unwrap();
    assert_eq!(stats.privileges_dropped, 1);
    assert_eq!(std::fs::metadata(dest.path().join("tool")).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn a_device_node_or_overlay_redirect_is_refused_not_lost() {
    if !root() {
        eprintln!("SKIP: needs root (mknod, trusted xattrs)");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.path().join("null"),
        rustix::fs::FileType::CharacterDevice,
        0o666.into(),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    assert!(matches!(pack(src.path(), std::io::sink()), Err(PackError::Refused { .. })));
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("moved")).unwrap();
    let set = rustix::fs::lsetxattr(
        src.path().join("moved"),
        "trusted.overlay.redirect",
        b"/old",
        rustix::fs::XattrFlags::empty(),
    );
    set.unwrap();
    assert!(matches!(pack(src.path(), std::io::sink()), Err(PackError::Refused { .. })));
}
