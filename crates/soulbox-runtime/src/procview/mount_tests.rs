//! The filesystem itself, mounted (root only): what a reader gets, and what it cannot do.
use super::*;

#[test]
fn the_mounted_view_serves_known_sandboxes_read_only() {
    if !crate::util::is_root() {
        eprintln!("SKIP the_mounted_view_serves_known_sandboxes_read_only: needs root (FUSE mount)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let sandboxes = t.path().join("sandboxes");
    std::fs::create_dir_all(sandboxes.join("sbxone")).unwrap();
    let record = BootRecord::new();
    record.write(&sandboxes.join("sbxone")).unwrap();
    let mnt = t.path().join("procview");
    let view = ProcView::mount(&mnt, &sandboxes, "soulbox-test-no-such-parent").unwrap();

    let read = |name: &str| std::fs::read_to_string(mnt.join("sbxone").join(name));
    assert_eq!(read("boot_id").unwrap(), format!("{}\n", record.boot_id));
    let meminfo = read("meminfo").unwrap();
    assert!(meminfo.starts_with("MemTotal:"), "{meminfo}");
    let up: f64 = read("uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&up), "{up}");
    assert!(read("cpuinfo").unwrap().contains("processor"));
    assert!(read("stat").unwrap().starts_with("cpu "));
    assert!(read("swaps").unwrap().starts_with("Filename"));
    // Big reads in small pieces are one consistent text.
    let mut f = std::fs::File::open(mnt.join("sbxone/meminfo")).unwrap();
    let mut pieces = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        pieces.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8(pieces).unwrap().lines().count(), meminfo.lines().count());

    // sendfile/splice readers (busybox cat) get the text too.
    let cat = std::process::Command::new("/bin/busybox").arg("cat").arg(mnt.join("sbxone/meminfo")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout).lines().count(), meminfo.lines().count(), "busybox cat: {cat:?}");
    let uptime_cat = || {
        let o = std::process::Command::new("/bin/busybox").arg("cat").arg(mnt.join("sbxone/uptime")).output().unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    // After a short text, a longer one is read whole (each read asks the size again).
    assert!(uptime_cat().ends_with('\n'));
    let cat = std::process::Command::new("/bin/busybox").arg("cat").arg(mnt.join("sbxone/meminfo")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout).lines().count(), meminfo.lines().count(), "again: {cat:?}");
    assert_eq!(read("meminfo").unwrap().lines().count(), meminfo.lines().count());

    assert_eq!(read("nothing").unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(std::fs::read_to_string(mnt.join("sbxtwo/meminfo")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(std::fs::read_to_string(mnt.join("..bad/meminfo")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert!(std::fs::OpenOptions::new().write(true).open(mnt.join("sbxone/meminfo")).is_err());
    assert!(std::fs::write(mnt.join("sbxone/new"), "x").is_err());
    let mut names: Vec<String> =
        std::fs::read_dir(mnt.join("sbxone")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["boot_id", "cpu_online", "cpuinfo", "meminfo", "stat", "swaps", "uptime"]);

    // A sandbox holding files open holds at most OPEN_PER_SANDBOX texts; closing them gives the room back.
    // (Releases of the files read above reach the server asynchronously: a few may still count.)
    let mut held = Vec::new();
    let refused = loop {
        match std::fs::File::open(mnt.join("sbxone/uptime")) {
            Ok(f) if held.len() <= fs::OPEN_PER_SANDBOX => held.push(f),
            Ok(_) => panic!("more than {} files open", fs::OPEN_PER_SANDBOX),
            Err(e) => break e,
        }
    };
    assert_eq!(refused.raw_os_error(), Some(libc::ENFILE), "{refused}");
    assert!(held.len() + 64 >= fs::OPEN_PER_SANDBOX, "refused after {}", held.len());
    // Another sandbox is not held up by one that holds files open without reading them.
    std::fs::create_dir_all(sandboxes.join("sbxtwo")).unwrap();
    assert!(std::fs::read_to_string(mnt.join("sbxtwo/meminfo")).unwrap().starts_with("MemTotal:"));
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // (release reaches the server asynchronously after close)
    while read("uptime").is_err() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(read("uptime").is_ok());

    view.close();
    assert!(read("meminfo").is_err(), "closed: nothing is served");
    assert!(!crate::rootfs::mounts_under(t.path()).iter().any(|m| m.starts_with(&mnt)), "unmounted");
}

#[test]
fn attach_never_mounts_into_a_process_outside_the_sandbox() {
    if !crate::util::is_root() {
        eprintln!("SKIP attach_never_mounts_into_a_process_outside_the_sandbox: needs root");
        return;
    }
    let me = std::process::id() as i32;
    let files = [(PathBuf::from("/proc/uptime"), "/proc/uptime")];
    let err = attach(me, "/soulbox_none/sbxone", &files).unwrap_err().to_string();
    assert!(err.contains("is not in cgroup"), "{err}");
    // Even in the expected cgroup: never into the runtime's own mount namespace (a reused pid of the host).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let cgroup = own.lines().next().and_then(|l| l.splitn(3, ':').nth(2)).unwrap().to_string();
    let err = attach(me, &cgroup, &files).unwrap_err().to_string();
    assert!(err.contains("shares the runtime's mount namespace"), "{err}");
    assert!(!crate::rootfs::mounts_under(Path::new("/proc")).iter().any(|m| m == Path::new("/proc/uptime")));
}
