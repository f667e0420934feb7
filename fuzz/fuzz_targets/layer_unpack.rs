//! A layer tar stream from an image anyone can publish, applied to a directory (`soulbox-layer`). Any bytes,
//! plain or compressed, give a layer or a refusal — never a panic — and nothing is ever written outside the
//! layer's directory: the layer sits next to an `outside/` sentinel directory that must stay empty.
//!
//! Run as root (CI), the fuzzer first moves into a private mount namespace where every mount is read-only but
//! its own scratch directory (`SOULBOX_FUZZ_SCRATCH`, which scripts/fuzz.sh sets and where the corpus and
//! artifacts live too): a bug that escaped the layer through an absolute path could then not touch the host.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use soulbox_layer::{Compression, unpack};

fuzz_target!(
    init: {
        if let Some(scratch) = std::env::var_os("SOULBOX_FUZZ_SCRATCH") {
            let scratch = Path::new(&scratch);
            confine(scratch);
            let tmp = scratch.join("tmp");
            std::fs::create_dir_all(&tmp).expect("scratch tmp dir");
            // SAFETY: single-threaded here, before the fuzzing loop.
            unsafe { std::env::set_var("TMPDIR", &tmp) };
        }
    },
    |data: &[u8]| {
        let Some((&selector, stream)) = data.split_first() else { return };
        let compression = match selector % 3 {
            0 => Compression::None,
            1 => Compression::Gzip,
            _ => Compression::Zstd,
        };
        let root = tempfile::tempdir().expect("a scratch directory");
        let layer = root.path().join("layer");
        let outside = root.path().join("outside");
        std::fs::create_dir(&layer).expect("layer dir");
        std::fs::create_dir(&outside).expect("sentinel dir");
        if let Ok(reader) = compression.decoder(stream) {
            let _ = unpack(reader, &layer);
        }
        let mut beside: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        beside.sort();
        assert_eq!(beside, ["layer", "outside"], "the unpacker wrote next to the layer");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "the unpacker wrote outside the layer");
    }
);

/// A private mount namespace in which every mount is read-only except `scratch` (root only; elsewhere the
/// process cannot write much outside its own files anyway).
fn confine(scratch: &Path) {
    use rustix::mount::{MountFlags, MountPropagationFlags, mount_bind_recursive, mount_change, mount_remount};
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // SAFETY: only this (the fuzzing) thread moves into the new mount namespace, which is the point: libFuzzer
    // runs every input on the thread that ran `init`.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.expect("unshare a mount namespace");
    mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE).expect("private mounts");
    // Its own mount, so remounting its parent read-only leaves it writable.
    mount_bind_recursive(scratch, scratch).expect("bind the scratch dir");
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let scratch = scratch.to_string_lossy().into_owned();
    for point in info.lines().filter_map(|l| l.split(' ').nth(4)) {
        let writable = point == scratch || point.starts_with(&format!("{scratch}/")) || point.starts_with("/proc");
        if !writable {
            let _ = mount_remount(point, MountFlags::BIND | MountFlags::RDONLY, "");
        }
    }
}
