//! Integration tests of the runtime (root only; they skip with a message otherwise).
//! Network rule: traffic only to loopback, sandbox veths and the fake outside world
//! (203.0.113.0/24) that the internet test builds itself.
mod common;
use common::*;
use soulbox_runtime::{NetworkPolicy, SandboxSpec, Status};
use std::time::Duration;

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_ready_envd_and_delete_leaves_nothing() {
    root_or_skip!("create_ready_envd_and_delete_leaves_nothing");
    let h = harness(11).await;
    let rt = h.rt();
    let info = rt.create(SandboxSpec::new("test")).await.expect("create");
    assert_eq!(health(&info, Duration::from_secs(2)).await.map(|s| s == 200 || s == 204), Some(true));
    let (code, out, _) = run_user(rt, &info, "id -un; pwd").await;
    assert_eq!(code, 0);
    assert!(out.starts_with("user\n/home/user\n"), "got {out:?}");
    // the sandbox's log file exists
    assert!(rt.sandbox_dir(&info.id).join("sandbox.log").exists());
    let st = rt.stats(&info.id).await.unwrap();
    assert!(st.pids >= 1 && st.memory_bytes > 0 && st.cpu_usage_ns > 0, "{st:?}");
    rt.delete(&info.id).await.unwrap();
    assert!(leftovers(&h.cfg).await.is_empty(), "{:?}", leftovers(&h.cfg).await);
    assert!(!rt.sandbox_dir(&info.id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cannot_see_host_or_other_sandboxes() {
    root_or_skip!("sandbox_cannot_see_host_or_other_sandboxes");
    let h = harness(12).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let b = rt.create(SandboxSpec::new("test")).await.unwrap();
    // processes: only the sandbox's own
    let (_, out) = sh(rt, &a.id, "ls /proc | grep -c '^[0-9]'").await;
    let n: u32 = out.trim().parse().unwrap_or(999);
    assert!(n < 10, "sandbox sees {n} processes");
    let (_, out) = sh(rt, &a.id, "cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert!(out.contains("/.soulbox/envd"), "pid 1 is {out:?}");
    // files: host files are not there; another sandbox's files are not there
    std::fs::write("/tmp/soulbox-host-secret", "TOPSECRET42").unwrap();
    let (_, out) = sh(rt, &a.id, "cat /tmp/soulbox-host-secret 2>&1; ls /var/tmp/soulbox-test 2>&1").await;
    assert!(!out.contains("TOPSECRET42") && out.contains("No such file"), "{out}");
    let _ = std::fs::remove_file("/tmp/soulbox-host-secret");
    sh(rt, &b.id, "echo only-b > /tmp/bfile").await;
    let (code, _) = sh(rt, &a.id, "test -e /tmp/bfile").await;
    assert_ne!(code, 0);
    // network: A cannot reach B (envd port), the host can
    let (code, out) = sh(rt, &a.id, &format!("echo x | nc -w 2 {} 49983", b.ip.unwrap())).await;
    assert_ne!(code, 0, "A reached B: {out}");
    assert!(health(&b, Duration::from_secs(2)).await.is_some());
    // host services: a listener on the host is not reachable from the sandbox
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let gw = h.cfg.gateway();
    let (code, out) = sh(rt, &a.id, &format!("echo x | nc -w 2 {gw} {port}")).await;
    assert_ne!(code, 0, "sandbox reached host service: {out}");
    // a port opened inside is reachable from the host at the sandbox address
    sh(rt, &a.id, "nc -ll -p 8000 -e /bin/echo port-ok >/dev/null 2>&1 </dev/null &").await;
    let got = banner_from(a.ip.unwrap(), 8000, 50).await;
    assert!(got.contains("port-ok"), "got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cannot_mount_load_modules_or_write_proc_sys() {
    root_or_skip!("sandbox_cannot_mount_load_modules_or_write_proc_sys");
    let h = harness(13).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    for (script, what) in [
        ("mount -t tmpfs none /mnt", "mount"),
        ("echo x > /tmp/m.ko; insmod /tmp/m.ko", "insmod"),
        ("echo 1 > /proc/sys/kernel/sysrq", "/proc/sys write"),
        ("echo 1 > /proc/sysrq-trigger", "sysrq-trigger"),
        ("touch /sys/kernel/x", "/sys write"),
        ("unshare -U true", "user namespace"),
        ("unshare -m true", "mount namespace"),
        ("mknod /tmp/sda b 8 0", "mknod"),
    ] {
        let (code, out) = sh(rt, &a.id, script).await;
        let denied = code != 0 || out.contains("denied") || out.contains("not permitted");
        assert!(denied, "{what} was allowed: {code} {out}");
    }
    // masked /proc files read empty
    let (_, out) = sh(rt, &a.id, "cat /proc/timer_list /proc/keys 2>/dev/null | wc -c").await;
    assert_eq!(out.trim(), "0", "masked paths readable");
    let (_, out) = sh(rt, &a.id, "grep -E 'Seccomp:|CapBnd' /proc/self/status").await;
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_and_memory_bomb_stay_inside() {
    root_or_skip!("fork_bomb_and_memory_bomb_stay_inside");
    let h = harness(14).await;
    let rt = h.rt();
    let mut spec = SandboxSpec::new("test");
    spec.pids_limit = Some(64);
    spec.memory_mb = Some(64);
    let a = rt.create(spec).await.unwrap();
    let other = rt.create(SandboxSpec::new("test")).await.unwrap();
    // fork bomb: many sleepers; the pids limit caps them
    let (_, out) = sh(rt, &a.id, "i=0; while [ $i -lt 200 ]; do sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); done 2>&1 | head -3; echo done").await;
    let st = rt.stats(&a.id).await.unwrap();
    assert!(st.pids <= 64, "pids {} > 64 ({out})", st.pids);
    sh(rt, &a.id, "killall sleep").await;
    // memory bomb: a 256 MiB buffer in a 64 MiB sandbox is OOM-killed inside its cgroup
    let (code, out) = sh(rt, &a.id, "dd if=/dev/zero of=/dev/null bs=256M count=1").await;
    assert_ne!(code, 0, "memory bomb survived: {out}");
    let st = rt.stats(&a.id).await.unwrap();
    assert!(st.oom_kills >= 1, "{st:?}");
    // envd of that sandbox, the other sandbox and the host keep working
    assert!(health(&a, Duration::from_secs(3)).await.is_some(), "envd died with the bomb");
    let (code, out, _) = run_user(rt, &a, "echo alive").await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
    assert!(health(&other, Duration::from_secs(3)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_and_resume_continues() {
    root_or_skip!("pause_freezes_and_resume_continues");
    let h = harness(15).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    sh(rt, &a.id, "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c.tmp; mv /tmp/c.tmp /tmp/c; usleep 20000; done) >/dev/null 2>&1 </dev/null &").await;
    // the writable layer: `upper/`, or `disk/upper/` inside the sandbox's own disk image
    let counter = soulbox_runtime::rootfs::paths(&rt.sandbox_dir(&a.id)).upper.join("tmp/c");
    let read = || std::fs::read_to_string(&counter).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read() > 0);
    let t = std::time::Instant::now();
    rt.pause(&a.id).await.unwrap();
    eprintln!("pause took {:?}", t.elapsed());
    let v1 = read();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read(), v1, "counter moved while paused");
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Paused);
    assert!(health(&a, Duration::from_millis(500)).await.is_none(), "envd answered while paused");
    rt.resume(&a.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read() > v1, "counter did not continue");
    assert!(health(&a, Duration::from_secs(2)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_keeps_files_and_snapshot_copies_them() {
    root_or_skip!("stop_start_keeps_files_and_snapshot_copies_them");
    let h = harness(16).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let (code, _, _) =
        run_user(rt, &a, "echo kept > /home/user/file && setfattr -n user.k -v v /home/user/file 2>/dev/null; true")
            .await;
    assert_eq!(code, 0);
    rt.stop(&a.id).await.unwrap();
    let info = rt.info(&a.id).await.unwrap();
    assert_eq!(info.status, Status::Stopped);
    assert!(info.ip.is_none());
    assert!(leftovers(&h.cfg).await.is_empty(), "stopped sandbox holds {:?}", leftovers(&h.cfg).await);
    let info = rt.start(&a.id).await.unwrap();
    let (_, out, _) = run_user(rt, &info, "cat /home/user/file").await;
    assert_eq!(out, "kept\n");
    // snapshot: a new sandbox from it has the file
    let name = format!("snap-{}", std::process::id());
    let meta = rt.snapshot(&a.id, &name).await.unwrap();
    assert_eq!(meta.layers.len(), 2);
    let b = rt.create(SandboxSpec::new(&name)).await.unwrap();
    let (_, out, _) = run_user(rt, &b, "cat /home/user/file; echo new > /home/user/file").await;
    assert_eq!(out, "kept\n");
    // and the original is unaffected by the copy's writes
    let (_, out, _) = run_user(rt, &info, "cat /home/user/file").await;
    assert_eq!(out, "kept\n");
}

/// The fake "outside world": a netns on 203.0.113.0/30 routed from the host, with a TCP echo. Only a /30: on this
/// machine the package registries resolve to 203.0.113.80, which a wider route would take away from every other
/// test and build while this one runs.
struct Outside {
    child: std::process::Child,
}
const OUT_NS: &str = "soulbox-outside";
const OUT_LINK: &str = "sbo-out0";
impl Outside {
    fn new() -> Outside {
        Outside::cleanup();
        let run = |a: &[&str]| {
            let st = std::process::Command::new("ip").args(a).status().unwrap();
            assert!(st.success(), "ip {a:?}");
        };
        run(&["netns", "add", OUT_NS]);
        run(&["link", "add", OUT_LINK, "type", "veth", "peer", "name", "eth0", "netns", OUT_NS]);
        run(&["addr", "add", "203.0.113.1/30", "dev", OUT_LINK]);
        run(&["link", "set", OUT_LINK, "up"]);
        run(&["-n", OUT_NS, "addr", "add", "203.0.113.2/30", "dev", "eth0"]);
        run(&["-n", OUT_NS, "link", "set", "eth0", "up"]);
        run(&["-n", OUT_NS, "link", "set", "lo", "up"]);
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", OUT_NS, "busybox", "nc", "-ll", "-p", "8080", "-e", "/bin/echo", "outside-ok"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Outside { child }
    }
    fn cleanup() {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", OUT_LINK])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", OUT_NS])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Outside::cleanup();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_access_on_off_and_cidr_lists() {
    root_or_skip!("internet_access_on_off_and_cidr_lists");
    let h = harness(17).await;
    let _outside = Outside::new();
    let rt = h.rt();
    let probe = "nc -w 2 203.0.113.2 8080 </dev/null";
    let cases = [
        (NetworkPolicy { allow_internet: true, ..Default::default() }, true),
        (NetworkPolicy { allow_internet: false, ..Default::default() }, false),
        (
            NetworkPolicy {
                allow_internet: false,
                allow_out: vec!["203.0.113.2/32".into()],
                deny_out: vec![],
                ..Default::default()
            },
            true,
        ),
        (
            NetworkPolicy {
                allow_internet: true,
                allow_out: vec![],
                deny_out: vec!["203.0.113.0/24".into()],
                ..Default::default()
            },
            false,
        ),
    ];
    for (policy, reachable) in cases {
        let mut spec = SandboxSpec::new("test");
        spec.network = policy.clone();
        let s = rt.create(spec).await.unwrap();
        let (_, out) = sh(rt, &s.id, probe).await;
        assert_eq!(out.contains("outside-ok"), reachable, "policy {policy:?}: {out}");
        rt.delete(&s.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envd_dying_before_ready_is_an_error_with_log_tail() {
    root_or_skip!("envd_dying_before_ready_is_an_error_with_log_tail");
    trace_runtime();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::path::PathBuf::from("/var/tmp/soulbox-test/fake-envd");
    std::fs::create_dir_all(&dir).unwrap();
    let _rm = RmDir(dir.clone());
    let fake = dir.join("envd.sh");
    std::fs::write(&fake, "#!/bin/sh\necho envd-is-dying >&2\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = config(18);
    cfg.envd_path = fake;
    let store = soulbox_runtime::Store::new(cfg.store_dir()).unwrap();
    // Past the runtime's own deadline for its CLI (120 s), so that deadline's error is what a hang shows.
    let limit = Duration::from_secs(150);
    let template =
        tokio::task::spawn_blocking(move || store.ensure_test_template(std::path::Path::new("/bin/busybox")));
    within(limit, "the test template", template).await.unwrap().unwrap();
    let rt = within(limit, "Runtime::open", soulbox_runtime::Runtime::open(cfg.clone())).await.unwrap();
    let h = Harness { rt: Some(rt), cfg };
    let t = std::time::Instant::now();
    let err = within(limit, "create", h.rt().create(SandboxSpec::new("test"))).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "waited for a timeout instead of the pipe EOF");
    let msg = err.to_string();
    assert!(msg.contains("envd-is-dying"), "{msg}");
    let left = within(limit, "leftovers", leftovers(&h.cfg)).await;
    assert!(left.is_empty(), "{left:?}");
    assert!(h.rt().list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_runtime_readopts_running_sandboxes() {
    root_or_skip!("new_runtime_readopts_running_sandboxes");
    let mut h = harness(19).await;
    let a = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    drop(h.rt.take()); // "crash" without cleanup
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    let info = h.rt().info(&a.id).await.unwrap();
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.ip, a.ip);
    assert!(health(&a, Duration::from_secs(2)).await.is_some());
    h.rt().pause(&a.id).await.unwrap();
    h.rt().resume(&a.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_runtime_mid_create_leaks_nothing() {
    root_or_skip!("killing_the_runtime_mid_create_leaks_nothing");
    let cfg = config(20);
    let store = soulbox_runtime::Store::new(cfg.store_dir()).unwrap();
    store.ensure_test_template(std::path::Path::new("/bin/busybox")).unwrap();
    // make sure the table etc. exist and nothing is left from earlier runs
    drop(soulbox_runtime::Runtime::open(cfg.clone()).await.unwrap());
    let bin = env!("CARGO_BIN_EXE_soulbox-runtime");
    let mut mid_create = 0;
    for delay_ms in [0u64, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 120, 150, 200, 300] {
        let mut child = std::process::Command::new(bin)
            .env("SOULBOX_DATA_DIR", &cfg.data_dir)
            .env("RUST_LOG", "error")
            .args(["--envd", &cfg.envd_path.to_string_lossy(), "--prefix", &cfg.prefix, "--pool", "10.77.20.0/24"])
            .args(["--store", &cfg.store_dir().to_string_lossy(), "create"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let pre = leftovers(&cfg).await;
        // a new instance reconciles: whatever is left must belong to a re-adopted sandbox
        let rt = soulbox_runtime::Runtime::open(cfg.clone()).await.unwrap();
        let live: Vec<String> = rt.list().await.into_iter().map(|i| i.id).collect();
        let dirs = std::fs::read_dir(cfg.sandboxes_dir()).map(|d| d.count()).unwrap_or(0);
        eprintln!(
            "killed at {delay_ms} ms: {} resources held before reconcile {pre:?}; {} re-adopted, {dirs} sandbox dirs after",
            pre.len(),
            live.len()
        );
        if live.is_empty() && !pre.is_empty() {
            mid_create += 1;
        }
        for l in leftovers(&cfg).await {
            assert!(
                live.iter().any(|id| l.contains(&id[..8])),
                "after kill at {delay_ms} ms: leaked {l} (live {live:?})"
            );
        }
        rt.destroy_all().await.unwrap();
        assert!(leftovers(&cfg).await.is_empty(), "{:?}", leftovers(&cfg).await);
        let node = wait_no_node_leftovers(&cfg).await;
        assert!(node.is_empty(), "{node:?}");
        drop(rt);
    }
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    assert!(mid_create > 0, "no kill landed in the middle of a create; adjust the delays");
}

/// A netns and a veth of the runtime's prefix that no sandbox directory names (a process killed between making
/// them and recording them, or a data dir wiped while they stayed) go when a runtime opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_deletes_netns_and_links_that_no_sandbox_owns() {
    root_or_skip!("a_new_runtime_deletes_netns_and_links_that_no_sandbox_owns");
    let cfg = config(23);
    let store = soulbox_runtime::Store::new(cfg.store_dir()).unwrap();
    store.ensure_test_template(std::path::Path::new("/bin/busybox")).unwrap();
    let orphan_ns = cfg.netns_name("orphan0netns0000000");
    let orphan_link = cfg.veth_name("orphan0link00000000");
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let cleanup = |ns: &str, link: &str| {
        let _ = std::process::Command::new("ip").args(["netns", "del", ns]).output();
        let _ = std::process::Command::new("ip").args(["link", "del", link]).output();
    };
    cleanup(&orphan_ns, &orphan_link);
    ip(&["netns", "add", &orphan_ns]);
    ip(&["link", "add", &orphan_link, "type", "veth", "peer", "name", "eth0", "netns", &orphan_ns]);
    let opened = soulbox_runtime::Runtime::open(cfg.clone()).await;
    let left = leftovers(&cfg).await;
    cleanup(&orphan_ns, &orphan_link);
    let rt = opened.unwrap();
    rt.destroy_all().await.unwrap();
    drop(rt);
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    assert!(left.is_empty(), "left after a runtime opened: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_template_user_sudo_python() {
    root_or_skip!("base_template_user_sudo_python");
    let h = harness(21).await;
    h.base().await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("base")).await.unwrap();
    assert!(a.ip.is_some());
    let (code, out, err) = run_user(rt, &a, "id -un; pwd; umask; sudo -n id -u; python3 -c 'print(6*7)'; git --version >/dev/null && echo git; curl --version >/dev/null && echo curl; touch x && setfattr -n user.t -v 1 x && getfattr -n user.t --only-values x").await;
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out, "user\n/home/user\n0022\n0\n42\ngit\ncurl\n1", "stderr: {err}");
}

/// A sandbox moved from another node keeps its id (`SandboxSpec::sandbox_id`): it gets it, a second sandbox of
/// that id is refused, a malformed id never becomes a path, and neither refusal leaves anything behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_can_be_created_under_the_id_it_had_elsewhere_once() {
    root_or_skip!("a_sandbox_can_be_created_under_the_id_it_had_elsewhere_once");
    let h = harness(25).await;
    let rt = h.rt();
    let wanted = |id: &str| SandboxSpec { sandbox_id: Some(id.into()), ..SandboxSpec::new("test") };
    let a = rt.create(wanted("movedhere1")).await.unwrap();
    assert_eq!(a.id, "movedhere1");
    assert!(health(&a, Duration::from_secs(3)).await.is_some());
    let err = rt.create(wanted("movedhere1")).await.expect_err("the same id twice");
    assert!(err.to_string().contains("already exists"), "{err}");
    for bad in ["../escape", "UPPER", ""] {
        assert!(rt.create(wanted(bad)).await.is_err(), "{bad:?}");
    }
    assert_eq!(rt.list().await.len(), 1);
    rt.delete(&a.id).await.unwrap();
    let left = leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
}
