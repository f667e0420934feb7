//! Hostile volume content: symlinks that sandbox code plants to make a host-side operation act outside the
//! volume. Each operation must refuse or stay confined, and the outside must be left exactly as it was.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Fixture, VOL, is_root};
use crate::{CreateOptions, EntryType, MetadataChange, VolumeError};

const SECRET: &[u8] = b"host secret";

/// A host directory outside the volume, with a secret file, and a snapshot to compare against afterwards.
struct Outside {
    dir: PathBuf,
}

impl Outside {
    fn new(f: &Fixture) -> Outside {
        let dir = f.temp.path().join("outside");
        std::fs::create_dir(&dir).expect("outside dir");
        std::fs::write(dir.join("secret"), SECRET).expect("secret");
        std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Outside { dir }
    }

    fn secret(&self) -> PathBuf {
        self.dir.join("secret")
    }

    fn str(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    /// The outside holds exactly the secret, unchanged (content, mode, owner).
    fn assert_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.dir).expect("read").map(|e| e.expect("e").file_name()).collect();
        assert_eq!(names, ["secret"], "nothing was made or removed outside the volume");
        assert_eq!(std::fs::read(self.secret()).expect("secret"), SECRET);
        let meta = std::fs::metadata(self.secret()).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            (meta.uid(), meta.gid()),
            (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
        );
    }
}

fn plant(f: &Fixture, target: impl AsRef<Path>, name: &str) {
    symlink(target, f.host(name)).expect("plant symlink");
}

fn force() -> CreateOptions {
    CreateOptions { force: true, ..CreateOptions::default() }
}

#[test]
fn stat_through_links_stays_inside() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, &out.dir, "/escape");
    plant(&f, "../../../../../../..", "/up");
    plant(&f, "/", "/rootlink");
    let r = f.store.stat(VOL, "/escape/secret");
    assert!(matches!(r, Err(VolumeError::NotFound(_))), "{r:?}");
    let up_secret = format!("/up{}/secret", out.str());
    assert!(matches!(f.store.stat(VOL, &up_secret), Err(VolumeError::NotFound(_))));
    assert!(matches!(f.store.stat(VOL, "/rootlink/etc/passwd"), Err(VolumeError::NotFound(_))));
    let link = f.store.stat(VOL, "/escape").expect("the link itself");
    assert_eq!((link.entry_type, link.target.as_deref()), (EntryType::Symlink, Some(out.str())));
    // a link to "/" is the volume root: what is inside the volume is reachable through it
    f.upload("/inside", b"x", CreateOptions::default()).expect("upload");
    assert_eq!(f.store.stat(VOL, "/rootlink/inside").expect("confined").size, 1);
    out.assert_untouched();
}

#[test]
fn list_through_links_stays_inside() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, &out.dir, "/escape");
    plant(&f, "../../..", "/up");
    assert!(matches!(f.store.list(VOL, "/escape", 1), Err(VolumeError::NotFound(_))));
    let listed: Vec<_> = f.store.list(VOL, "/up", 2).expect("the volume root").into_iter().map(|e| e.path).collect();
    assert_eq!(listed, ["/up/escape", "/up/up"], "'..' above the volume stays at the volume root");
    let deep: Vec<_> = f.store.list(VOL, "/", 10).expect("list").into_iter().map(|e| e.entry_type).collect();
    assert_eq!(deep, [EntryType::Symlink, EntryType::Symlink], "symlinks are listed, never entered");
    out.assert_untouched();
}

#[test]
fn read_of_host_files_through_links_is_refused() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, "/etc/passwd", "/pw");
    plant(&f, out.secret(), "/s");
    plant(&f, "/", "/rootlink");
    assert!(matches!(f.read("/pw"), Err(VolumeError::IsSymlink(_))));
    assert!(matches!(f.read("/s"), Err(VolumeError::IsSymlink(_))));
    assert!(matches!(f.read("/rootlink/etc/passwd"), Err(VolumeError::NotFound(_))));
    let via_root = format!("/rootlink{}", out.secret().display());
    assert!(matches!(f.read(&via_root), Err(VolumeError::NotFound(_))));
    out.assert_untouched();
}

#[test]
fn upload_through_a_dangling_link_replaces_the_link() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, out.dir.join("planted"), "/dangling");
    plant(&f, out.secret(), "/over-secret");
    plant(&f, &out.dir, "/escape");
    assert!(matches!(f.upload("/dangling", b"x", CreateOptions::default()), Err(VolumeError::AlreadyExists(_))));
    let stat = f.upload("/dangling", b"mine", force()).expect("replaces the link");
    assert_eq!((stat.entry_type, stat.size), (EntryType::File, 4));
    f.upload("/over-secret", b"mine", force()).expect("replaces the link");
    assert!(!f.host("/over-secret").is_symlink());
    assert!(matches!(f.upload("/escape/new", b"x", CreateOptions::default()), Err(VolumeError::NotFound(_))));
    assert!(matches!(f.upload("/escape/new", b"x", force()), Err(VolumeError::NotADirectory(_))));
    out.assert_untouched();
}

#[test]
fn mkdir_under_a_link_to_outside_stays_inside() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, &out.dir, "/escape");
    plant(&f, "/", "/rootlink");
    assert!(matches!(f.store.make_dir(VOL, "/escape/sub", CreateOptions::default()), Err(VolumeError::NotFound(_))));
    assert!(matches!(f.store.make_dir(VOL, "/escape/sub", force()), Err(VolumeError::NotADirectory(_))));
    assert!(matches!(f.store.make_dir(VOL, "/escape", force()), Err(VolumeError::AlreadyExists(_))));
    // through a link to "/", mkdir -p of the outside's host path is made inside the volume
    let via_root = format!("/rootlink{}/made", out.str());
    f.store.make_dir(VOL, &via_root, force()).expect("confined mkdir");
    assert!(f.host(&format!("{}/made", out.str())).is_dir());
    out.assert_untouched();
}

#[test]
fn chown_and_chmod_of_a_link_never_reach_its_target() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, out.secret(), "/link");
    plant(&f, &out.dir, "/escape");
    let chmod = MetadataChange { mode: Some(0o777), ..Default::default() };
    assert!(matches!(f.store.set_metadata(VOL, "/link", chmod), Err(VolumeError::IsSymlink(_))));
    assert!(matches!(f.store.set_metadata(VOL, "/escape/secret", chmod), Err(VolumeError::NotFound(_))));
    if is_root() {
        let chown = MetadataChange { uid: Some(4321), gid: Some(4321), mode: None };
        let stat = f.store.set_metadata(VOL, "/link", chown).expect("lchown");
        assert_eq!((stat.entry_type, stat.uid, stat.gid), (EntryType::Symlink, 4321, 4321));
        let both = MetadataChange { mode: Some(0o777), ..chown };
        assert!(matches!(f.store.set_metadata(VOL, "/escape", both), Err(VolumeError::IsSymlink(_))));
    }
    out.assert_untouched();
}

#[test]
fn delete_of_a_link_removes_only_the_link() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    plant(&f, &out.dir, "/escape");
    plant(&f, out.secret(), "/s");
    std::fs::create_dir(f.host("/tree")).expect("mkdir");
    plant(&f, &out.dir, "/tree/escape");
    plant(&f, "/", "/tree/rootlink");
    assert!(matches!(f.store.remove(VOL, "/escape/secret"), Err(VolumeError::NotFound(_))));
    f.store.remove(VOL, "/escape").expect("remove link");
    f.store.remove(VOL, "/s").expect("remove link");
    f.store.remove(VOL, "/tree").expect("remove tree with links");
    assert!(f.store.list(VOL, "/", 1).expect("list").is_empty());
    out.assert_untouched();
    assert!(Path::new("/etc/passwd").exists());
}

/// Sandbox code swapping a directory for a symlink to the outside while uploads, mkdirs, chmods and deletes
/// run: whatever interleaving happens, nothing lands outside.
#[test]
fn racing_swaps_of_a_dir_for_a_link_stay_inside() {
    let f = Fixture::new();
    let out = Outside::new(&f);
    let stop = Arc::new(AtomicBool::new(false));
    let (dir, outside) = (f.host("/d"), out.dir.clone());
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let aside = dir.with_extension("aside");
            let link = dir.with_extension("link");
            let _ = std::fs::create_dir(&dir);
            while !stop.load(Ordering::Relaxed) {
                let _ = symlink(&outside, &link);
                let _ = std::fs::rename(&dir, &aside);
                let _ = std::fs::rename(&link, &dir);
                let _ = std::fs::rename(&dir, &link);
                let _ = std::fs::rename(&aside, &dir);
            }
        })
    };
    let chmod = MetadataChange { mode: Some(0o777), ..Default::default() };
    for _ in 0..300 {
        let _ = f.upload("/d/secret", b"overwritten", force());
        let _ = f.upload("/d/new", b"x", force());
        let _ = f.store.make_dir(VOL, "/d/sub", force());
        let _ = f.store.set_metadata(VOL, "/d/secret", chmod);
        let _ = f.store.remove(VOL, "/d/secret");
        let _ = f.read("/d/secret");
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    out.assert_untouched();
}
