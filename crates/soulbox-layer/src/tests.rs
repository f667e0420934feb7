//! The unpacker against tarballs built byte by byte ([`crate::testing::Tar`]), benign and hostile.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::testing::{MTIME, Tar};

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                go(base, &p, out);
            }
        }
    }
    go(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_benign_layer_keeps_owner_mode_mtime_links_and_xattrs() {
    let dest = tempfile::tempdir().unwrap();
    let data = Tar::new()
        .dir("./etc/")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .file_as("usr/bin/tool", b"#!/bin/sh\n", 0o4755, (1000, 1001))
        .symlink("bin", "usr/bin")
        .symlink("etc/mtab", "/proc/self/mounts")
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .fifo("run/ctl")
        .pax(&[("SCHILY.xattr.user.note", b"hi"), ("SCHILY.xattr.trusted.overlay.redirect", b"/x")])
        .file("etc/noted", b"x")
        .bytes();
    let stats = unpack(&data[..], dest.path()).unwrap();
    let d = dest.path();
    assert_eq!(
        stats.diff_id,
        format!("sha256:{}", hex(&Sha256::digest(&data))),
        "diff_id is the sha256 of the whole tar stream"
    );
    assert_eq!(stats.tar_bytes, data.len() as u64);
    assert_eq!(std::fs::read_to_string(d.join("etc/hosts")).unwrap(), "127.0.0.1 localhost\n");
    let tool = std::fs::symlink_metadata(d.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755, "setuid of an image's file dropped");
    if root() {
        assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
    }
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(tool.nlink(), 2, "hardlink shares the inode");
    assert_eq!(std::fs::read_link(d.join("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!(
        std::fs::read_link(d.join("etc/mtab")).unwrap(),
        Path::new("/proc/self/mounts"),
        "absolute symlink targets are fine"
    );
    assert!(std::fs::symlink_metadata(d.join("run/ctl")).unwrap().file_type().is_fifo());
    assert_eq!(
        std::fs::symlink_metadata(d.join("etc")).unwrap().mtime(),
        MTIME as i64,
        "dir mtime set after its children"
    );
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(d.join("etc/noted"), "user.note", &mut buf[..]);
    if let Ok(n) = n {
        assert_eq!(&buf[..n], b"hi");
    }
    assert!(
        rustix::fs::lgetxattr(d.join("etc/noted"), "trusted.overlay.redirect", &mut buf[..]).is_err(),
        "trusted.* xattrs are dropped"
    );
    assert_eq!(stats.dropped_xattrs, 1);
    assert_eq!(stats.privileges_dropped, 1);
}

/// A layer from outside brings no setuid/setgid binaries and no file capabilities; a setgid directory and the
/// sticky bit stay (they grant nothing).
#[test]
fn privileges_of_an_images_files_are_dropped() {
    let dest = tempfile::tempdir().unwrap();
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let data = Tar::new()
        .file_as("usr/bin/su", b"elf", 0o4755, (0, 0))
        .file_as("usr/bin/wall", b"elf", 0o2755, (0, 5))
        .pax(&[("SCHILY.xattr.security.capability", &cap[..]), ("SCHILY.xattr.user.keep", b"1")])
        .file_as("usr/bin/ping", b"elf", 0o755, (0, 0))
        .raw(tar::EntryType::Directory, "srv/shared/", "", b"", 0o2775, (0, 0))
        .raw(tar::EntryType::Directory, "tmp/", "", b"", 0o1777, (0, 0))
        .hardlink("usr/bin/su2", "usr/bin/su")
        .bytes();
    let stats = unpack(&data[..], dest.path()).unwrap();
    let d = dest.path();
    let mode = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap().mode() & 0o7777;
    assert_eq!((mode("usr/bin/su"), mode("usr/bin/su2"), mode("usr/bin/wall")), (0o755, 0o755, 0o755));
    assert_eq!((mode("srv/shared"), mode("tmp")), (0o2775, 0o1777));
    let mut buf = [0u8; 64];
    assert!(
        rustix::fs::lgetxattr(d.join("usr/bin/ping"), "security.capability", &mut buf[..]).is_err(),
        "file capabilities dropped"
    );
    if let Ok(n) = rustix::fs::lgetxattr(d.join("usr/bin/ping"), "user.keep", &mut buf[..]) {
        assert_eq!(&buf[..n], b"1");
    }
    assert_eq!(stats.privileges_dropped, 3);
}

/// Each hostile tarball is refused, and writes nothing outside the destination.
#[test]
fn hostile_layers_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path().display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", Tar::new().file("../escape", b"x").bytes(), "`..` component"),
        ("dotdot deep", Tar::new().dir("a/").file("a/../../escape", b"x").bytes(), "`..` component"),
        ("absolute", Tar::new().file(&format!("{o}/abs"), b"x").bytes(), "absolute path"),
        (
            "absolute symlink then write",
            Tar::new().symlink("etc", "/").file("etc/passwd", b"root::0:0::/:/bin/sh\n").bytes(),
            "through a symlink",
        ),
        (
            "symlink to outside then write",
            Tar::new().symlink("out", &o).file("out/pwned", b"x").bytes(),
            "through a symlink",
        ),
        (
            "relative symlink up then write",
            Tar::new().dir("a/").symlink("a/up", "../..").file("a/up/pwned", b"x").bytes(),
            "through a symlink",
        ),
        ("hardlink out", Tar::new().hardlink("passwd", "/etc/passwd").bytes(), "outside the layer"),
        ("hardlink dotdot", Tar::new().hardlink("passwd", "../../etc/passwd").bytes(), "outside the layer"),
        (
            "hardlink via symlink",
            Tar::new().symlink("e", "/etc").hardlink("passwd", "e/passwd").bytes(),
            "outside the layer",
        ),
        ("hardlink missing", Tar::new().hardlink("x", "not/here").bytes(), "outside the layer"),
        ("char device", Tar::new().device("dev/mem", tar::EntryType::Char).bytes(), "device node"),
        ("block device", Tar::new().device("dev/sda", tar::EntryType::Block).bytes(), "device node"),
        ("whiteout of ..", Tar::new().dir("a/").file("a/.wh...", b"").bytes(), "invalid name"),
    ];
    for (name, data, expect) in cases {
        let dest = tempfile::tempdir().unwrap();
        match unpack(&data[..], dest.path()) {
            Err(e @ UnpackError::Refused { .. }) => assert!(e.to_string().contains(expect), "{name}: {e}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        assert!(walk(outside.path()).is_empty(), "{name}: wrote outside: {:?}", walk(outside.path()));
        assert!(!Path::new("/etc/passwd-soulbox-test").exists());
    }
}

#[test]
fn compression_by_media_type_and_magic() {
    assert_eq!(Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(), Compression::Zstd);
    assert_eq!(
        Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
        Compression::Gzip
    );
    assert_eq!(Compression::from_media_type("application/vnd.oci.image.layer.v1.tar").unwrap(), Compression::None);
    assert!(Compression::from_media_type("application/vnd.wasm.content.layer.v1+wasm").is_err());
    let data = Tar::new().file("a", b"1").bytes();
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &data).unwrap();
    let gz_path = dir.path().join("l.tgz");
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    assert_eq!(Compression::sniff(&gz_path).unwrap(), Compression::Gzip);
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let stats = unpack(Compression::Gzip.decoder(std::fs::File::open(&gz_path).unwrap()).unwrap(), &dest).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");
    assert_eq!(
        stats.diff_id,
        format!("sha256:{}", hex(&Sha256::digest(&data))),
        "diff_id is of the uncompressed stream"
    );
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `.wh.<name>` and `.wh..wh..opq` become overlay whiteouts that hide the lower layer's entries in a real
/// overlay mount (root: mknod and trusted.* xattrs).
#[test]
fn whiteouts_and_opaque_dirs_hide_lower_entries_in_an_overlay() {
    if !root() {
        eprintln!(
            "SKIP whiteouts_and_opaque_dirs_hide_lower_entries_in_an_overlay: needs root (mknod 0:0, trusted.* xattrs, mount)"
        );
        return;
    }
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    unpack(&Tar::new().file("a/x", b"x").file("a/y", b"y").file("b", b"b").file("c/z", b"z").file("keep", b"k").bytes()[..], lower.path()).unwrap();
    let stats = unpack(
        &Tar::new().file("a/.wh.x", b"").file(".wh.b", b"").file("c/.wh..wh..opq", b"").file("c/new", b"n").bytes()[..],
        upper.path(),
    )
    .unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (2, 1));
    // The produced layer itself.
    for w in ["a/x", "b"] {
        let md = std::fs::symlink_metadata(upper.path().join(w)).unwrap();
        assert!(md.file_type().is_char_device() && md.rdev() == 0, "{w} is a 0:0 whiteout");
    }
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(upper.path().join("c"), "trusted.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!upper.path().join(".wh.b").exists() && !upper.path().join("c/.wh..wh..opq").exists());
    // The merged view.
    let work = tempfile::tempdir().unwrap();
    let merged = work.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let opts = format!("lowerdir={}:{}", upper.path().display(), lower.path().display());
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success(), "mount overlay");
    let _guard = Mount(merged.clone());
    assert_eq!(walk(&merged), vec!["a", "a/y", "c", "c/new", "keep"]);
}

/// With an id shift (a store of the runtime's shared user namespace mode) every owner lands in the range: tar
/// ids below 65536 moved by the range's base, larger ones as its `nobody`, and parents the tar does not list
/// owned by the range's root. Without a shift the same tar keeps its ids.
#[test]
fn an_id_shift_moves_every_owner_into_the_range() {
    let base = 0x3000_0000u32;
    let opts = UnpackOptions { id_shift: Some(base), ..Default::default() };
    assert_eq!((opts.host_id(0), opts.host_id(1000), opts.host_id(65535)), (base, base + 1000, base + 65535));
    assert_eq!(
        (opts.host_id(65536), opts.host_id(100_000), opts.host_id(u64::MAX)),
        (base + OVERFLOW_ID, base + OVERFLOW_ID, base + OVERFLOW_ID)
    );
    assert_eq!(UnpackOptions::default().host_id(1000), 1000);
    if !root() {
        eprintln!("SKIP an_id_shift_moves_every_owner_into_the_range (on disk): needs root (chown)");
        return;
    }
    let data = Tar::new()
        .file_as("usr/bin/tool", b"elf", 0o755, (0, 0))
        .file_as("home/user/notes", b"n", 0o644, (1000, 1000))
        .file_as("srv/odd", b"o", 0o644, (100_000, 5))
        .symlink("bin", "usr/bin")
        .dir("etc/")
        .file(".wh.gone", b"")
        .bytes();
    let owners = |d: &Path, p: &str| {
        let md = std::fs::symlink_metadata(d.join(p)).unwrap();
        (md.uid(), md.gid())
    };
    let shifted = tempfile::tempdir().unwrap();
    unpack_with(&data[..], shifted.path(), &opts).unwrap();
    let s = shifted.path();
    assert_eq!(owners(s, "usr/bin/tool"), (base, base));
    assert_eq!(owners(s, "home/user/notes"), (base + 1000, base + 1000));
    assert_eq!(owners(s, "srv/odd"), (base + OVERFLOW_ID, base + 5), "an id past the range is its nobody");
    assert_eq!(owners(s, "bin"), (base, base), "symlinks are shifted themselves");
    assert_eq!(owners(s, "etc"), (base, base));
    for parent in ["usr", "usr/bin", "home", "home/user", "srv"] {
        assert_eq!(owners(s, parent), (base, base), "parent {parent} not in the tar belongs to the range's root");
    }
    let md = std::fs::symlink_metadata(s.join("gone")).unwrap();
    assert!(md.file_type().is_char_device() && (md.uid(), md.gid()) == (0, 0), "whiteouts stay 0:0");
    let plain = tempfile::tempdir().unwrap();
    unpack(&data[..], plain.path()).unwrap();
    assert_eq!(owners(plain.path(), "home/user/notes"), (1000, 1000));
    assert_eq!(owners(plain.path(), "usr"), (0, 0));
}
