//! The store's side of a [`VolumeBacking`]: when it calls the backing, what it leaves when the backing fails, and
//! that a volume bounded by its own storage is not walked against the store's limit.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::tests::force;
use crate::{VolumeBacking, VolumeError, VolumeStore};

#[derive(Debug, Default)]
struct Recording {
    calls: Mutex<Vec<String>>,
    fail_create: bool,
    size: Option<u64>,
}

impl VolumeBacking for Recording {
    fn create(&self, root: &Path, id: &str, size: Option<u64>) -> std::io::Result<()> {
        assert!(root.join(id).is_dir(), "the store makes the mount point first");
        self.calls.lock().unwrap().push(format!("create {id} {size:?}"));
        if self.fail_create { Err(std::io::Error::other("no loop devices")) } else { Ok(()) }
    }
    fn attach(&self, _root: &Path, id: &str) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(format!("attach {id}"));
        Ok(())
    }
    fn delete(&self, _root: &Path, id: &str) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(format!("delete {id}"));
        Ok(())
    }
    fn size(&self, _root: &Path, _id: &str) -> Option<u64> {
        self.size
    }
}

fn backed_store(backing: &Arc<Recording>) -> (tempfile::TempDir, VolumeStore) {
    let temp = tempfile::tempdir().expect("temp dir");
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let store = VolumeStore::open(temp.path().join("volumes"))
        .expect("open")
        .with_default_owner(uid, gid)
        .with_size_limit(Some(8))
        .with_backing(Some(backing.clone() as Arc<dyn VolumeBacking>));
    (temp, store)
}

#[test]
fn the_backing_is_called_around_create_use_and_delete() {
    let backing = Arc::new(Recording { size: Some(1 << 20), ..Default::default() });
    let (_temp, store) = backed_store(&backing);
    store.create("v").expect("create");
    store.create_sized("w", Some(4096)).expect("create sized");
    store.stat("v", "/").expect("stat");
    store.delete("v").expect("delete");
    assert_eq!(
        *backing.calls.lock().unwrap(),
        ["create v Some(8)", "create w Some(4096)", "attach v", "delete v"],
        "the store's limit sizes a plain create; every content operation attaches first; delete unmounts first"
    );
}

#[test]
fn a_backing_that_fails_leaves_no_volume() {
    let backing = Arc::new(Recording { fail_create: true, ..Default::default() });
    let (_temp, store) = backed_store(&backing);
    let err = store.create("v").expect_err("the backing failed");
    assert!(matches!(err, VolumeError::Io { op: "create volume storage", .. }), "{err}");
    assert!(!store.exists("v").expect("exists"), "no directory without its storage");
}

#[test]
fn a_volume_bounded_by_its_storage_is_not_walked_against_the_store_limit() {
    // The store's limit is 8 bytes; the backing says the volume's own storage bounds it.
    let backing = Arc::new(Recording { size: Some(1 << 20), ..Default::default() });
    let (_temp, store) = backed_store(&backing);
    store.create("v").expect("create");
    let mut upload = store.write_file("v", "/f", force(), None).expect("start");
    upload.write_chunk(&[7u8; 64]).expect("past the store's limit, inside the storage");
    upload.finish().expect("finish");
    // Without storage of its own the same upload is refused.
    let plain = Arc::new(Recording::default());
    let (_temp2, store) = backed_store(&plain);
    store.create("v").expect("create");
    let mut upload = store.write_file("v", "/f", force(), None).expect("start");
    assert!(matches!(upload.write_chunk(&[7u8; 64]), Err(VolumeError::QuotaExceeded { .. })));
}

#[test]
fn a_full_filesystem_is_reported_as_a_full_volume() {
    let full =
        VolumeError::from_io("write", "/f", std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()));
    assert!(matches!(full, VolumeError::VolumeFull { .. }), "{full}");
    let other =
        VolumeError::from_io("write", "/f", std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()));
    assert!(matches!(other, VolumeError::Io { .. }), "{other}");
}
