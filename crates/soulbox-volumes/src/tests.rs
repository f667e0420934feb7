//! Every operation's behaviour through the public API, on a store in a temp dir. Run as root (CI) the
//! default owner 1000:1000 is used; as another user the store's owner is that user and the assertions that
//! need chown to other ids are skipped.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crate::{CreateOptions, EntryType, MetadataChange, VolumeError, VolumeStore};

mod attacks;
mod backing;

pub(crate) struct Fixture {
    pub(crate) temp: tempfile::TempDir,
    pub(crate) store: VolumeStore,
    pub(crate) owner: (u32, u32),
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) const VOL: &str = "vol-1";

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let temp = tempfile::tempdir().expect("temp dir");
        let owner = if is_root() {
            (crate::DEFAULT_UID, crate::DEFAULT_GID)
        } else {
            (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
        };
        let store = VolumeStore::open(temp.path().join("store/volumes"))
            .expect("open store")
            .with_default_owner(owner.0, owner.1);
        store.create(VOL).expect("create volume");
        Fixture { temp, store, owner }
    }

    pub(crate) fn host(&self, path: &str) -> PathBuf {
        self.store.dir(VOL).expect("dir").join(path.trim_start_matches('/'))
    }

    pub(crate) fn upload(
        &self,
        path: &str,
        content: &[u8],
        options: CreateOptions,
    ) -> Result<crate::EntryStat, VolumeError> {
        let mut upload = self.store.write_file(VOL, path, options, None)?;
        upload.write_chunk(content)?;
        upload.finish()
    }

    pub(crate) fn read(&self, path: &str) -> Result<Vec<u8>, VolumeError> {
        let (mut file, size) = self.store.read_file(VOL, path)?;
        let mut content = Vec::new();
        file.read_to_end(&mut content).expect("read");
        assert_eq!(content.len() as u64, size);
        Ok(content)
    }

    /// Names in the volume's directory `dir` other than the ones given: upload temp files left behind.
    pub(crate) fn leftovers(&self, dir: &str) -> Vec<String> {
        std::fs::read_dir(self.host(dir))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".soulbox-upload-"))
            .collect()
    }
}

pub(crate) fn force() -> CreateOptions {
    CreateOptions { force: true, ..CreateOptions::default() }
}

#[test]
fn open_creates_a_private_root_and_volumes_with_their_owner_and_mode() {
    let f = Fixture::new();
    let root = std::fs::metadata(f.store.root()).expect("root");
    assert_eq!(root.permissions().mode() & 0o7777, 0o700);
    let vol = std::fs::metadata(f.store.dir(VOL).expect("dir")).expect("vol");
    assert_eq!(vol.permissions().mode() & 0o7777, 0o755);
    assert_eq!((vol.uid(), vol.gid()), f.owner);
    assert!(f.store.exists(VOL).expect("exists"));
    assert!(!f.store.exists("other").expect("exists"));
    assert!(matches!(f.store.create(VOL), Err(VolumeError::VolumeExists(_))));
    assert_eq!(f.store.usage(VOL).expect("usage"), 0);
}

#[test]
fn volume_ids_must_be_one_safe_component() {
    let f = Fixture::new();
    let long = "a".repeat(65);
    for bad in ["", "..", ".", "a/b", "a b", "é", long.as_str(), "../x"] {
        assert!(matches!(f.store.create(bad), Err(VolumeError::InvalidVolumeId(_))), "{bad:?}");
        assert!(matches!(f.store.dir(bad), Err(VolumeError::InvalidVolumeId(_))), "{bad:?}");
        assert!(matches!(f.store.stat(bad, "/"), Err(VolumeError::InvalidVolumeId(_))), "{bad:?}");
    }
    f.store.create(&"a".repeat(64)).expect("64 characters");
    f.store.create("A_b-9").expect("every allowed character class");
    assert!(matches!(f.store.stat("missing", "/"), Err(VolumeError::VolumeNotFound(_))));
    assert!(matches!(f.store.delete("missing"), Err(VolumeError::VolumeNotFound(_))));
}

#[test]
fn delete_removes_the_volume_and_its_content() {
    let f = Fixture::new();
    f.upload("/a/b/c.txt", b"x", force()).expect("upload");
    std::os::unix::fs::symlink("/", f.host("/root-link")).expect("symlink");
    f.store.delete(VOL).expect("delete");
    assert!(!f.store.exists(VOL).expect("exists"));
    assert!(std::path::Path::new("/etc/passwd").exists());
}

#[test]
fn paths_are_absolute_without_nul_or_dotdot() {
    let f = Fixture::new();
    for bad in ["", "a", "a/b", "/a/../b", "/..", "/a\0b"] {
        assert!(matches!(f.store.stat(VOL, bad), Err(VolumeError::InvalidPath { .. })), "{bad:?}");
    }
    f.upload("/a", b"1", CreateOptions::default()).expect("upload");
    assert_eq!(f.store.stat(VOL, "//a/./").expect("stat").path, "/a");
}

#[test]
fn upload_then_stat_read_and_list() {
    let f = Fixture::new();
    let stat = f.upload("/hello.txt", b"hello", CreateOptions::default()).expect("upload");
    assert_eq!((stat.name.as_str(), stat.path.as_str(), stat.size), ("hello.txt", "/hello.txt", 5));
    assert_eq!(stat.entry_type, EntryType::File);
    assert_eq!(stat.mode, 0o666, "E2B's default file mode, not masked by the umask");
    assert_eq!((stat.uid, stat.gid), f.owner);
    assert_eq!(stat.target, None);
    assert_eq!(f.store.stat(VOL, "/hello.txt").expect("stat"), stat);
    assert_eq!(f.read("/hello.txt").expect("read"), b"hello");
    let root = f.store.stat(VOL, "/").expect("stat root");
    assert_eq!((root.name.as_str(), root.path.as_str(), root.entry_type), ("/", "/", EntryType::Directory));
    assert_eq!(f.store.usage(VOL).expect("usage"), 5);
    assert!(f.leftovers("/").is_empty());
}

#[test]
fn upload_without_force_conflicts_and_needs_the_parent() {
    let f = Fixture::new();
    f.upload("/f", b"one", CreateOptions::default()).expect("upload");
    assert!(matches!(f.upload("/f", b"two", CreateOptions::default()), Err(VolumeError::AlreadyExists(_))));
    assert_eq!(f.read("/f").expect("read"), b"one");
    assert!(matches!(f.upload("/no/such/f", b"x", CreateOptions::default()), Err(VolumeError::NotFound(_))));
    assert!(matches!(f.upload("/f/under-a-file", b"x", force()), Err(VolumeError::NotADirectory(_))));
    assert!(!f.host("/no").exists());
    assert!(f.leftovers("/").is_empty());
}

#[test]
fn upload_with_force_overwrites_and_makes_parents() {
    let f = Fixture::new();
    f.upload("/f", b"one", CreateOptions::default()).expect("upload");
    let stat = f.upload("/f", b"second", force()).expect("overwrite");
    assert_eq!(stat.size, 6);
    assert_eq!(f.read("/f").expect("read"), b"second");
    let stat = f.upload("/x/y/z.bin", b"deep", CreateOptions { mode: Some(0o640), ..force() }).expect("upload");
    assert_eq!(stat.mode, 0o640);
    let parent = f.store.stat(VOL, "/x/y").expect("parent");
    assert_eq!((parent.entry_type, parent.mode), (EntryType::Directory, 0o777));
    f.store.make_dir(VOL, "/d", CreateOptions::default()).expect("mkdir");
    assert!(matches!(f.upload("/d", b"x", force()), Err(VolumeError::AlreadyExists(_))), "never over a directory");
    assert!(matches!(f.upload("/", b"x", force()), Err(VolumeError::InvalidPath { .. })));
}

#[test]
fn upload_sets_the_owner_and_mode_given() {
    let f = Fixture::new();
    let (uid, gid) = if is_root() { (1234, 5678) } else { f.owner };
    let options = CreateOptions { uid: Some(uid), gid: Some(gid), mode: Some(0o4750), force: false };
    let stat = f.upload("/owned", b"x", options).expect("upload");
    assert_eq!((stat.uid, stat.gid, stat.mode), (uid, gid, 0o750));
    let host = std::fs::metadata(f.host("/owned")).expect("host");
    assert_eq!(host.permissions().mode() & 0o7777, 0o4750, "setuid is kept: chown happens before chmod");
    assert!(matches!(
        f.upload("/m", b"x", CreateOptions { mode: Some(0o10000), ..CreateOptions::default() }),
        Err(VolumeError::InvalidMode(_))
    ));
    assert!(matches!(
        f.upload("/m", b"x", CreateOptions { uid: Some(u32::MAX), ..CreateOptions::default() }),
        Err(VolumeError::InvalidOwner(_))
    ));
}

#[test]
fn an_abandoned_or_failed_upload_leaves_nothing() {
    let f = Fixture::new();
    f.upload("/keep", b"original", CreateOptions::default()).expect("upload");
    {
        let mut upload = f.store.write_file(VOL, "/keep", force(), None).expect("start");
        upload.write_chunk(b"partial").expect("write");
        // dropped without finish
    }
    {
        let mut upload = f.store.write_file(VOL, "/new", force(), None).expect("start");
        let failing = FailingReader { left: 3 };
        assert!(upload.copy_from(failing).is_err());
        assert!(upload.finish().is_err(), "an upload whose write failed cannot be finished");
    }
    assert_eq!(f.read("/keep").expect("read"), b"original");
    assert!(!f.host("/new").exists());
    assert!(f.leftovers("/").is_empty());
}

struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("client went away"));
        }
        self.left -= 1;
        buf[0] = b'x';
        Ok(1)
    }
}

#[test]
fn quota_exceeded_leaves_no_file() {
    let temp = tempfile::tempdir().expect("temp");
    let f = Fixture::new();
    let store = VolumeStore::open(temp.path().join("v")).expect("open").with_default_owner(f.owner.0, f.owner.1);
    let store = store.with_size_limit(Some(10));
    store.create(VOL).expect("create");
    let write = |path: &str, content: &[u8], options: CreateOptions, limit: Option<u64>| {
        let mut upload = store.write_file(VOL, path, options, limit)?;
        upload.write_chunk(content)?;
        upload.finish()
    };
    write("/a", b"123456", CreateOptions::default(), None).expect("within the limit");
    let err = write("/b", b"12345", CreateOptions::default(), None).expect_err("over the limit");
    assert!(matches!(err, VolumeError::QuotaExceeded { limit: 10, needed: 11, .. }), "{err:?}");
    assert!(!store.dir(VOL).expect("dir").join("b").exists());
    write("/b", b"1234", CreateOptions::default(), None).expect("exactly at the limit");
    write("/a", b"12", force(), None).expect("an overwrite counts the old file out");
    assert_eq!(store.usage(VOL).expect("usage"), 6);
    // a per-volume limit overrides the store's
    write("/c", b"12345678", CreateOptions::default(), Some(100)).expect("per-volume limit");
    assert!(matches!(write("/d", b"1", CreateOptions::default(), Some(14)), Err(VolumeError::QuotaExceeded { .. })));
    let names: Vec<_> = std::fs::read_dir(store.dir(VOL).expect("dir"))
        .expect("read")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "no temp file and no partial file");
}

#[test]
fn a_concurrent_write_is_counted_before_the_rename() {
    let f = Fixture::new();
    let store = VolumeStore::open(f.temp.path().join("q")).expect("open").with_default_owner(f.owner.0, f.owner.1);
    store.create(VOL).expect("create");
    let mut upload = store.write_file(VOL, "/late", CreateOptions::default(), Some(10)).expect("start");
    upload.write_chunk(b"12345").expect("within budget at the start");
    // sandbox code writes meanwhile
    std::fs::write(store.dir(VOL).expect("dir").join("from-sandbox"), b"123456").expect("write");
    assert!(matches!(upload.finish(), Err(VolumeError::QuotaExceeded { .. })));
    assert!(!store.dir(VOL).expect("dir").join("late").exists());
}

#[test]
fn make_dir_conflicts_force_and_parents() {
    let f = Fixture::new();
    let stat = f.store.make_dir(VOL, "/d", CreateOptions::default()).expect("mkdir");
    assert_eq!((stat.entry_type, stat.mode, stat.path.as_str()), (EntryType::Directory, 0o777, "/d"));
    assert_eq!((stat.uid, stat.gid), f.owner);
    assert!(matches!(f.store.make_dir(VOL, "/d", CreateOptions::default()), Err(VolumeError::AlreadyExists(_))));
    assert_eq!(f.store.make_dir(VOL, "/d", force()).expect("force accepts a dir").path, "/d");
    assert!(matches!(f.store.make_dir(VOL, "/p/q", CreateOptions::default()), Err(VolumeError::NotFound(_))));
    let stat = f.store.make_dir(VOL, "/p/q", CreateOptions { mode: Some(0o700), ..force() }).expect("mkdir -p");
    assert_eq!(stat.mode, 0o700);
    assert_eq!(f.store.stat(VOL, "/p").expect("parent").mode, 0o777);
    f.upload("/file", b"x", CreateOptions::default()).expect("upload");
    assert!(matches!(f.store.make_dir(VOL, "/file", force()), Err(VolumeError::AlreadyExists(_))));
    assert!(matches!(f.store.make_dir(VOL, "/", CreateOptions::default()), Err(VolumeError::AlreadyExists(_))));
    assert_eq!(f.store.make_dir(VOL, "/", force()).expect("root with force").path, "/");
}

#[test]
fn list_depths() {
    let f = Fixture::new();
    f.upload("/a/b/c/d.txt", b"x", force()).expect("upload");
    f.upload("/z.txt", b"x", force()).expect("upload");
    std::os::unix::fs::symlink("a", f.host("/link")).expect("symlink");
    let paths =
        |depth| -> Vec<String> { f.store.list(VOL, "/", depth).expect("list").into_iter().map(|e| e.path).collect() };
    assert_eq!(paths(1), ["/a", "/link", "/z.txt"]);
    assert_eq!(paths(2), ["/a", "/a/b", "/link", "/z.txt"]);
    assert_eq!(paths(10), ["/a", "/a/b", "/a/b/c", "/a/b/c/d.txt", "/link", "/z.txt"]);
    let link = f.store.list(VOL, "/", 1).expect("list").into_iter().find(|e| e.name == "link").expect("link");
    assert_eq!((link.entry_type, link.target.as_deref()), (EntryType::Symlink, Some("a")));
    let under: Vec<_> = f.store.list(VOL, "/a/b", 1).expect("list").into_iter().map(|e| e.path).collect();
    assert_eq!(under, ["/a/b/c"]);
    let through_link: Vec<_> = f.store.list(VOL, "/link", 1).expect("list").into_iter().map(|e| e.path).collect();
    assert_eq!(through_link, ["/link/b"], "a symlinked directory inside the volume lists");
    for depth in [0, 11, u32::MAX] {
        assert!(matches!(f.store.list(VOL, "/", depth), Err(VolumeError::InvalidDepth(_))), "{depth}");
    }
    assert!(matches!(f.store.list(VOL, "/z.txt", 1), Err(VolumeError::NotADirectory(_))));
    assert!(matches!(f.store.list(VOL, "/nope", 1), Err(VolumeError::NotFound(_))));
}

#[test]
fn set_metadata_changes_owner_and_mode() {
    let f = Fixture::new();
    f.upload("/f", b"x", CreateOptions::default()).expect("upload");
    let stat = f.store.set_metadata(VOL, "/f", MetadataChange { mode: Some(0o600), ..Default::default() });
    assert_eq!(stat.expect("chmod").mode, 0o600);
    if is_root() {
        let change = MetadataChange { uid: Some(4242), ..Default::default() };
        let stat = f.store.set_metadata(VOL, "/f", change).expect("chown uid only");
        assert_eq!((stat.uid, stat.gid), (4242, f.owner.1));
        let change = MetadataChange { uid: Some(7), gid: Some(8), mode: Some(0o2755) };
        let stat = f.store.set_metadata(VOL, "/", change).expect("the root too");
        assert_eq!((stat.uid, stat.gid, stat.mode), (7, 8, 0o755));
    }
    let missing = f.store.set_metadata(VOL, "/missing", MetadataChange { mode: Some(0o600), ..Default::default() });
    assert!(matches!(missing, Err(VolumeError::NotFound(_))));
    let bad = f.store.set_metadata(VOL, "/f", MetadataChange { mode: Some(0o20000), ..Default::default() });
    assert!(matches!(bad, Err(VolumeError::InvalidMode(_))));
}

#[test]
fn remove_files_trees_and_never_the_root() {
    let f = Fixture::new();
    f.upload("/t/a/b/c", b"x", force()).expect("upload");
    f.upload("/t/a/other", b"x", force()).expect("upload");
    f.upload("/single", b"x", force()).expect("upload");
    f.store.remove(VOL, "/single").expect("remove file");
    f.store.remove(VOL, "/t").expect("remove tree");
    assert!(!f.host("/t").exists() && !f.host("/single").exists());
    assert!(matches!(f.store.remove(VOL, "/t"), Err(VolumeError::NotFound(_))));
    assert!(matches!(f.store.remove(VOL, "/"), Err(VolumeError::CannotDeleteRoot)));
    assert!(matches!(f.store.remove(VOL, "//./"), Err(VolumeError::CannotDeleteRoot)));
    assert!(f.store.exists(VOL).expect("exists"));
}

#[test]
fn remove_survives_a_deep_tree() {
    let f = Fixture::new();
    let dir = f.host("/deep");
    std::fs::create_dir(&dir).expect("mkdir");
    // deeper than a recursive walk would like, through relative steps (a host path would pass PATH_MAX)
    let base = std::fs::File::open(&dir).expect("open");
    let mut current: std::os::fd::OwnedFd = base.into();
    for _ in 0..2000 {
        rustix::fs::mkdirat(&current, "d", rustix::fs::Mode::from_raw_mode(0o755)).expect("mkdirat");
        current =
            rustix::fs::openat(&current, "d", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).expect("open");
    }
    drop(current);
    f.store.remove(VOL, "/deep").expect("remove");
    assert!(!f.host("/deep").exists());
}

#[test]
fn read_refuses_directories_and_missing_files() {
    let f = Fixture::new();
    f.store.make_dir(VOL, "/d", CreateOptions::default()).expect("mkdir");
    assert!(matches!(f.read("/d"), Err(VolumeError::NotAFile(_))));
    assert!(matches!(f.read("/"), Err(VolumeError::NotAFile(_))));
    assert!(matches!(f.read("/missing"), Err(VolumeError::NotFound(_))));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        f.host("/fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    assert!(matches!(f.read("/fifo"), Err(VolumeError::NotAFile(_))), "a fifo is never opened (it would block)");
    assert_eq!(f.store.stat(VOL, "/fifo").expect("stat").entry_type, EntryType::Unknown);
}
