//! Persistent volumes in sandboxes (root only; they skip with a message otherwise). No network traffic.
mod common;
use common::*;
use soulbox_runtime::{SandboxSpec, VolumeMount};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

fn with_volume(id: &str, path: &str) -> SandboxSpec {
    SandboxSpec { volumes: vec![VolumeMount { volume_id: id.into(), path: path.into() }], ..SandboxSpec::new("test") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_volume_in_two_sandboxes_with_the_ids_each_sees_and_no_setuid() {
    root_or_skip!("one_volume_in_two_sandboxes_with_the_ids_each_sees_and_no_setuid");
    let mut cfg = config(30);
    let volumes = cfg.data_dir.join("volumes");
    let volume = volumes.join("vol-one");
    std::fs::create_dir_all(&volume).unwrap();
    std::os::unix::fs::chown(&volume, Some(1000), Some(1000)).unwrap();
    cfg.volumes_dir = Some(volumes.clone());
    let h = harness_with(cfg).await;
    let rt = h.rt();

    // Sandboxes of different id ranges (per-sandbox user namespaces where the host has them) share it.
    let a = rt.create(with_volume("vol-one", "/data")).await.expect("create a");
    let b = rt.create(with_volume("vol-one", "/mnt/shared")).await.expect("create b");
    let (code, out, err) = run_user(rt, &a, "echo from-a > /data/f && stat -c %u:%g /data/f").await;
    assert_eq!((code, out.trim()), (0, "1000:1000"), "{err}");
    let (code, out, _) = run_user(rt, &b, "cat /mnt/shared/f; stat -c %u:%g /mnt/shared/f; id -u").await;
    assert_eq!((code, out.as_str()), (0, "from-a\n1000:1000\n1000\n"));
    let (_, out) = sh(rt, &b.id, "echo from-root > /mnt/shared/r && stat -c %u /mnt/shared/r").await;
    assert_eq!(out.trim(), "0");
    // Stored unshifted: on the host the files are owned by the ids the sandboxes saw.
    assert_eq!(std::fs::metadata(volume.join("f")).unwrap().uid(), 1000);
    assert_eq!(std::fs::metadata(volume.join("r")).unwrap().uid(), 0);
    // The helper mounts are gone once the containers run.
    for s in [&a, &b] {
        let helper = rt.sandbox_dir(&s.id).join("idmap/vol-0");
        assert!(!soulbox_runtime::mounts::is_mounted(&helper), "{} still mounted", helper.display());
    }

    // A set-uid file a sandbox's root leaves there means nothing in a sandbox (nosuid), and devices do not work.
    let (_, out) = sh(
        rt,
        &a.id,
        "mkdir /data/b && cp /bin/busybox /data/b/id && chmod 4755 /data/b/id && grep ' /data ' /proc/mounts",
    )
    .await;
    assert!(out.contains("nosuid") && out.contains("nodev"), "volume mount options: {out}");
    let md = std::fs::metadata(volume.join("b/id")).unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o4000), (0, 0o4000), "precondition: a set-uid root file on disk");
    let (_, out, _) = run_user(rt, &b, "/mnt/shared/b/id -u").await;
    assert_eq!(out.trim(), "1000", "a set-uid file from a volume ran as root");

    // Stop and start: the volume is mounted again; the data outlives a sandbox.
    rt.stop(&a.id).await.unwrap();
    let a = rt.start(&a.id).await.unwrap();
    let (_, out, _) = run_user(rt, &a, "cat /data/f /data/r").await;
    assert_eq!(out, "from-a\nfrom-root\n");
    rt.delete(&a.id).await.unwrap();
    rt.delete(&b.id).await.unwrap();
    assert!(volume.join("f").exists(), "deleting the sandboxes took the volume's files");
    assert!(leftovers(&h.cfg).await.is_empty(), "{:?}", leftovers(&h.cfg).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_volume_mounts_are_refused_before_anything_is_made() {
    root_or_skip!("bad_volume_mounts_are_refused_before_anything_is_made");
    let mut cfg = config(31);
    let volumes = cfg.data_dir.join("volumes");
    std::fs::create_dir_all(volumes.join("vol-ok")).unwrap();
    std::os::unix::fs::symlink("/etc", volumes.join("vol-link")).unwrap();
    cfg.volumes_dir = Some(volumes);
    let h = harness_with(cfg).await;
    let rt = h.rt();
    for (id, path) in [
        ("vol-none", "/data"),
        ("vol-link", "/data"),
        ("../../..", "/data"),
        ("vol-ok", "/proc/x"),
        ("vol-ok", "/"),
        ("vol-ok", "relative"),
        ("vol-ok", "/a/../etc"),
    ] {
        let got = rt.create(with_volume(id, path)).await;
        assert!(got.is_err(), "{id} at {path} was mounted");
    }
    assert!(rt.list().await.is_empty());
    assert!(leftovers(&h.cfg).await.is_empty(), "{:?}", leftovers(&h.cfg).await);
    // A node without a volumes directory refuses any.
    let h2 = harness(32).await;
    assert!(h2.rt().create(with_volume("vol-ok", "/data")).await.is_err());
}

/// A volume with an image of its own: its size bounds writes from sandboxes and from the content API alike, and
/// the host mount comes back after the runtime let it go, as the same filesystem while a sandbox still holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_image_bounds_every_writer() {
    root_or_skip!("a_volume_image_bounds_every_writer");
    let mut cfg = config(33);
    let volumes = cfg.data_dir.join("volumes");
    cfg.volumes_dir = Some(volumes.clone());
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let store = soulbox_volumes::VolumeStore::open(volumes.clone())
        .expect("open the volume store")
        .with_backing(Some(rt.volume_backing().expect("this host has loop devices, ext4 and e2fsprogs")));
    let volume = store.create_sized("vol-img", Some(32 << 20)).expect("create a 32 MiB volume");
    let image = soulbox_runtime::volume_images::image_path(&volumes, "vol-img");
    assert!(soulbox_runtime::mounts::is_mounted(&volume), "the image is mounted on the volume's directory");
    assert!(std::fs::read_dir(&volume).unwrap().next().is_none(), "a new volume is empty (no lost+found)");
    assert_eq!(std::fs::metadata(&volume).unwrap().uid(), 1000, "the root is user's, as a plain volume's");

    // From inside a sandbox: the write stops at the volume's size, and df shows that size.
    let a = rt.create(with_volume("vol-img", "/data")).await.expect("create");
    let (_, out, err) = run_user(rt, &a, "dd if=/dev/zero of=/data/big bs=1M count=64; df -k /data | tail -1").await;
    assert!(err.contains("No space left on device"), "dd past the limit: {err}");
    let size_kib: u64 = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("df size");
    assert!((16 * 1024..=32 * 1024).contains(&size_kib), "df /data: {out}");

    // From the content API: a full volume is VolumeFull, and the upload leaves nothing behind.
    let mut upload = store.write_file("vol-img", "/api.bin", Default::default(), None).expect("start");
    let chunk = vec![1u8; 1 << 20];
    let failed = (0..40).map(|_| upload.write_chunk(&chunk)).find_map(|r| r.err());
    assert!(matches!(failed, Some(soulbox_volumes::VolumeError::VolumeFull { .. })), "{failed:?}");
    drop(upload);
    let names: Vec<_> = std::fs::read_dir(&volume).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["big"], "only the sandbox's file is left");

    // The runtime lets the host mount go while the sandbox runs; the next use mounts the same filesystem again.
    soulbox_runtime::volume_images::VolumeImages::open().expect("images").unmount_all(&volumes);
    assert!(!soulbox_runtime::mounts::is_mounted(&volume), "unmounted on the host side");
    let (_, out, _) = run_user(rt, &a, "rm /data/big && echo kept > /data/after && echo ok").await;
    assert_eq!(out.trim(), "ok", "the sandbox kept its volume");
    let stat = store.stat("vol-img", "/after").expect("the content API mounts it again");
    assert_eq!(stat.size, 5);
    assert_eq!(soulbox_runtime::loopdev::devices_for(&image).len(), 1, "one loop device: one filesystem");

    rt.delete(&a.id).await.unwrap();
    store.delete("vol-img").expect("delete the volume");
    assert!(!image.exists() && !volume.exists(), "the image and the directory are gone");
    assert!(leftovers(&h.cfg).await.is_empty(), "{:?}", leftovers(&h.cfg).await);
}
