//! The runtime on gVisor (`runtime_bin = "runsc"`): the same `Runtime` API and the real envd, on runsc.
//! Root only; without runsc they skip with a message, unless `SOULBOX_REQUIRE_RUNSC=1` (scripts/test.sh), which
//! makes a missing runsc a failure.
//!
//! Network rule: traffic only to sandbox addresses, a listener on the host's gateway address, and the fake
//! outside world this file builds itself (netns `sbns-rsc<n>` on 203.0.113.200/29, routed to its own veth before
//! any packet is sent).
mod common;
use common::*;
use soulbox_runtime::{NetworkPolicy, Runtime, RuntimeConfig, SandboxInfo, SandboxSpec, Status};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Skips (returns) without root, or without runsc unless `SOULBOX_REQUIRE_RUNSC=1`.
macro_rules! runsc_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) || skip_unless_runsc($name) {
            return;
        }
    };
}

fn skip_unless_runsc(name: &str) -> bool {
    let found = std::process::Command::new("runsc").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return false;
    }
    if std::env::var("SOULBOX_REQUIRE_RUNSC").is_ok_and(|v| v == "1") {
        panic!("{name}: SOULBOX_REQUIRE_RUNSC=1 but runsc is not installed (scripts/install-deps.sh installs it)");
    }
    eprintln!("SKIP {name}: runsc (gVisor) is not installed");
    true
}

/// [`config`] on runsc.
fn runsc_config(n: u8) -> RuntimeConfig {
    let mut cfg = config(n);
    cfg.runtime_bin = "runsc".into();
    // gVisor's first boot on the ptrace platform of a loaded 2-core machine is slow.
    cfg.ready_timeout_ms = 30_000;
    cfg
}

/// Runs `cmd` as root through envd's process API.
async fn root_sh(info: &SandboxInfo, cmd: &str) -> (i64, String) {
    let (code, out, err) = envd_run_as(info, Some("root"), cmd).await.expect("envd process API");
    (code, out + &err)
}

/// The fake outside world: netns `sbns-rsc<n>` behind host link `sbnsrsc<n>`, answering `outside-ok` on TCP 8080
/// (`http-ok` on 80, `tls-ok` on 443) and echoing on 7, at 203.0.113.(202+4n) (a /30 of 203.0.113.200/29 per test).
struct Outside {
    ns: String,
    link: String,
    ip: Ipv4Addr,
    children: Vec<std::process::Child>,
}

impl Outside {
    fn new(n: u8) -> Outside {
        let (ns, link) = (format!("sbns-rsc{n}"), format!("sbnsrsc{n}"));
        Outside::cleanup(&ns, &link);
        let run = |a: &[&str]| {
            let st = std::process::Command::new("ip").args(a).status().unwrap();
            assert!(st.success(), "ip {a:?}");
        };
        let host = Ipv4Addr::new(203, 0, 113, 201 + 4 * n);
        let ip = Ipv4Addr::new(203, 0, 113, 202 + 4 * n);
        run(&["netns", "add", &ns]);
        run(&["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        run(&["addr", "add", &format!("{host}/30"), "dev", &link]);
        run(&["link", "set", &link, "up"]);
        run(&["-n", &ns, "addr", "add", &format!("{ip}/30"), "dev", "eth0"]);
        run(&["-n", &ns, "link", "set", "eth0", "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        run(&["-n", &ns, "route", "add", "default", "via", &host.to_string()]);
        let children = [
            ("8080", ["/bin/echo", "outside-ok"]),
            ("7", ["/bin/cat", "-u"]),
            ("80", ["/bin/echo", "http-ok"]),
            ("443", ["/bin/echo", "tls-ok"]),
        ]
        .map(|(port, program)| {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "busybox", "nc", "-ll", "-p", port, "-e", program[0], program[1]])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .into();
        let o = Outside { ns, link, ip, children };
        for _ in 0..500 {
            let out = std::process::Command::new("ip").args(["netns", "exec", &o.ns, "ss", "-ltnH"]).output().unwrap();
            let listening = String::from_utf8_lossy(&out.stdout).into_owned();
            if [":8080", ":7 ", ":80 ", ":443 "].iter().all(|p| listening.contains(p)) {
                return o;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fake outside world's listener did not start");
    }

    fn cleanup(ns: &str, link: &str) {
        let quiet = |a: &[&str]| {
            let _ = std::process::Command::new("ip").args(a).stderr(std::process::Stdio::null()).status();
        };
        // The services' per-connection children (an echo whose client vanished) end with the netns.
        if let Ok(out) = std::process::Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("kill").args(["-9", pid]).status();
            }
        }
        quiet(&["link", "del", link]);
        quiet(&["netns", "del", ns]);
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        Outside::cleanup(&self.ns, &self.link);
    }
}

async fn reaches(info: &SandboxInfo, ip: Ipv4Addr, port: u16) -> bool {
    let (_, out) = root_sh(info, &format!("nc -w 3 {ip} {port} </dev/null")).await;
    out.contains("outside-ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_sandbox_boots_runs_commands_and_leaves_nothing() {
    runsc_or_skip!("runsc_sandbox_boots_runs_commands_and_leaves_nothing");
    let h = harness_with(runsc_config(81)).await;
    let rt = h.rt();
    assert_eq!(rt.driver().kind().family, soulbox_runtime::runtime_kind::Family::Runsc);
    assert!(!rt.user_namespaces(), "runsc runs without our user namespaces");
    let t = Instant::now();
    let info = rt.create(SandboxSpec::new("test")).await.expect("create on runsc");
    eprintln!("runsc create->ready: {:?}", t.elapsed());
    assert_eq!(health(&info, Duration::from_secs(5)).await.map(|s| s == 200 || s == 204), Some(true));
    let (code, out, _) = run_user(rt, &info, "id -un; pwd").await;
    assert_eq!((code, out.as_str()), (0, "user\n/home/user\n"));
    // It is gVisor's kernel that answers, not the host's.
    let (_, out) = root_sh(&info, "dmesg 2>&1 | head -3; uname -r").await;
    assert!(out.contains("gVisor") || out.contains("Starting gVisor"), "not gVisor: {out}");
    // gVisor's netstack carries the sandbox's address; the netns's eth0 gave it up.
    let (_, out) = root_sh(&info, "ip addr").await;
    assert!(out.contains(&format!("{}/32", info.ip.unwrap())), "{out}");
    let st = rt.stats(&info.id).await.unwrap();
    assert!(st.memory_bytes > 0 && st.cpu_usage_ns > 0, "{st:?}");
    envd_apis_work(&info).await;
    rt.delete(&info.id).await.unwrap();
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
    assert!(!rt.sandbox_dir(&info.id).exists());
}

/// A unary Connect call (JSON) to envd as its default user: (HTTP status, answer).
async fn unary(info: &SandboxInfo, method: &str, req: serde_json::Value) -> (u16, serde_json::Value) {
    let addr = format!("{}:49983", info.ip.unwrap());
    let headers = [("Content-Type", "application/json"), secret_header(info)];
    let body = serde_json::to_vec(&req).unwrap();
    let (status, resp) =
        http_with(&addr, "POST", &format!("/{method}"), &headers, &body, Duration::from_secs(30)).await.expect(method);
    (status, serde_json::from_slice(&resp).unwrap_or_default())
}

/// A server-streaming Connect call (JSON envelopes) to envd: every message of the answer.
async fn streaming(info: &SandboxInfo, method: &str, req: serde_json::Value) -> Vec<serde_json::Value> {
    let addr = format!("{}:49983", info.ip.unwrap());
    let headers = [("Content-Type", "application/connect+json"), secret_header(info)];
    let body = serde_json::to_vec(&req).unwrap();
    let mut env = vec![0u8];
    env.extend_from_slice(&(body.len() as u32).to_be_bytes());
    env.extend_from_slice(&body);
    let (status, resp) =
        http_with(&addr, "POST", &format!("/{method}"), &headers, &env, Duration::from_secs(30)).await.expect(method);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let (mut i, mut msgs) = (0, Vec::new());
    while i + 5 <= resp.len() {
        let len = u32::from_be_bytes(resp[i + 1..i + 5].try_into().unwrap()) as usize;
        msgs.push(serde_json::from_slice(&resp[i + 5..i + 5 + len]).unwrap_or_default());
        i += 5 + len;
    }
    msgs
}

/// envd's filesystem (make, list, download), watcher and PTY APIs on gVisor's kernel.
async fn envd_apis_work(info: &SandboxInfo) {
    use base64::Engine;
    let (status, _) = unary(info, "filesystem.Filesystem/MakeDir", serde_json::json!({"path": "/home/user/w"})).await;
    assert_eq!(status, 200);
    let (status, w) = unary(
        info,
        "filesystem.Filesystem/CreateWatcher",
        serde_json::json!({"path": "/home/user/w", "recursive": false}),
    )
    .await;
    assert_eq!(status, 200, "{w}");
    let watcher = w["watcherId"].as_str().expect("watcher id").to_string();
    let (code, _, _) = envd_run(info, "echo hello > /home/user/w/hello.txt").await.unwrap();
    assert_eq!(code, 0);
    let (_, list) = unary(info, "filesystem.Filesystem/ListDir", serde_json::json!({"path": "/home/user/w"})).await;
    assert!(list.to_string().contains("hello.txt"), "{list}");
    // inotify inside gVisor: the watcher saw the file made by another process
    let mut seen = String::new();
    for _ in 0..50 {
        let (_, ev) =
            unary(info, "filesystem.Filesystem/GetWatcherEvents", serde_json::json!({"watcherId": watcher})).await;
        seen.push_str(&ev.to_string());
        if seen.contains("hello.txt") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("hello.txt"), "watcher events: {seen}");
    let addr = format!("{}:49983", info.ip.unwrap());
    let (status, body) = http_with(
        &addr,
        "GET",
        "/files?path=/home/user/w/hello.txt",
        &[secret_header(info)],
        b"",
        Duration::from_secs(10),
    )
    .await
    .expect("download");
    assert_eq!((status, body.as_slice()), (200, &b"hello\n"[..]));
    // a PTY: gVisor's devpts
    let msgs = streaming(
        info,
        "process.Process/Start",
        serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", "tty; stty size"]},
            "pty": {"size": {"cols": 91, "rows": 17}}}),
    )
    .await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pty: Vec<u8> = msgs
        .iter()
        .filter_map(|m| m["event"]["data"]["pty"].as_str())
        .flat_map(|s| b64.decode(s).unwrap_or_default())
        .collect();
    let pty = String::from_utf8_lossy(&pty);
    assert!(pty.contains("/dev/pts/") && pty.contains("17 91"), "pty output: {pty:?} ({msgs:?})");
}

/// [`leftovers`] once they are gone, or after 5 s. On runsc the disk image's loop device outlives `stop`/`delete`
/// by a moment (measured ~26 ms on an idle machine): the gofer's mount namespace, which holds the rootfs, is
/// torn down after its process has left the cgroup, and the loop device's autoclear runs after that.
async fn settled_leftovers(cfg: &RuntimeConfig) -> Vec<String> {
    let t = Instant::now();
    loop {
        let left = leftovers(cfg).await;
        if left.is_empty() || t.elapsed() > Duration::from_secs(5) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host pids/memory/cpu cgroup of a sandbox, v1 (this host) or v2.
fn cgroup_file(cfg: &RuntimeConfig, id: &str, controller: &str, file: &str) -> Option<String> {
    let v1 = format!("/sys/fs/cgroup/{controller}/{}/{id}/{file}", cfg.cgroup_parent());
    let v2 = format!("/sys/fs/cgroup/{}/{id}/{file}", cfg.cgroup_parent());
    std::fs::read_to_string(v1).or_else(|_| std::fs::read_to_string(v2)).ok().map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_network_is_fenced_by_the_host_chain() {
    runsc_or_skip!("runsc_network_is_fenced_by_the_host_chain");
    let h = harness_with(runsc_config(82)).await;
    let out = Outside::new(0);
    let rt = h.rt();
    let open = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert!(reaches(&open, out.ip, 8080).await, "an open sandbox does not reach the outside world");
    let offline = rt
        .create(SandboxSpec {
            network: NetworkPolicy { allow_internet: false, ..Default::default() },
            ..SandboxSpec::new("test")
        })
        .await
        .unwrap();
    assert!(!reaches(&offline, out.ip, 8080).await, "internet-off sandbox reached the outside");
    let denied = rt
        .create(SandboxSpec {
            network: NetworkPolicy {
                allow_internet: true,
                deny_out: vec![format!("{}/32", out.ip)],
                ..Default::default()
            },
            ..SandboxSpec::new("test")
        })
        .await
        .unwrap();
    assert!(!reaches(&denied, out.ip, 8080).await, "denyOut did not hold");
    // Neighbours and host services: the in-netns guard does not see gVisor's packets (netstack sends through a
    // packet socket), so this is the host table alone.
    let (code, o) = root_sh(&open, &format!("echo x | nc -w 2 {} 49983", denied.ip.unwrap())).await;
    assert_ne!(code, 0, "a sandbox reached another sandbox: {o}");
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (code, o) = root_sh(&open, &format!("echo x | nc -w 2 {} {port}", h.cfg.gateway())).await;
    assert_ne!(code, 0, "a sandbox reached a host service: {o}");
    // Root inside cannot take another address or open raw sockets (no NET_ADMIN/NET_RAW; runsc's --net-raw off).
    let (_, o) = root_sh(&open, &format!("ip addr add {}/32 dev eth0 2>&1; ip addr", denied.ip.unwrap())).await;
    assert!(!o.contains(&format!("{}/32", denied.ip.unwrap())), "root took a neighbour's address: {o}");
    let (_, o) = root_sh(&open, &format!("ping -c 1 -W 1 {} 2>&1", out.ip)).await;
    assert!(!o.contains("bytes from"), "a raw ICMP socket worked: {o}");
    // The host kernel inside the netns has no address any more: gVisor owns it.
    let ns = h.cfg.netns_name(&open.id);
    let o = std::process::Command::new("ip").args(["-n", &ns, "-4", "addr", "show", "eth0"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("inet "), "{}", String::from_utf8_lossy(&o.stdout));
    // A port opened inside is reachable from the host at the sandbox's address.
    root_sh(&open, "nc -ll -p 8000 -e /bin/echo port-ok >/dev/null 2>&1 </dev/null &").await;
    let got = banner_from(open.ip.unwrap(), 8000, 100).await;
    assert!(got.contains("port-ok"), "got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_sandbox_reaches_no_host_kernel_interface() {
    runsc_or_skip!("runsc_sandbox_reaches_no_host_kernel_interface");
    let h = harness_with(runsc_config(83)).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    std::fs::write("/tmp/soulbox-runsc-host-secret", "TOPSECRET42").unwrap();
    for (script, what) in [
        ("mount -t tmpfs none /mnt", "mount"),
        ("echo x > /tmp/m.ko; insmod /tmp/m.ko", "insmod"),
        ("echo 1 > /proc/sys/kernel/sysrq", "/proc/sys write"),
        ("echo 1 > /proc/sysrq-trigger", "sysrq-trigger"),
        ("mknod /sda b 8 0", "mknod on the disk"),
        // /tmp is gVisor's own tmpfs (runsc mounts one over an empty /tmp): a node can be made there, but gVisor
        // has no host devices behind it
        ("mknod /tmp/sda b 8 0 && head -c 1 /tmp/sda | wc -c | grep -qx 1", "a block device"),
        ("mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem | wc -c | grep -qx 1", "/dev/mem"),
        ("cat /tmp/soulbox-runsc-host-secret", "host file"),
        ("cat /proc/kcore | head -c 1 | wc -c | grep -qx 1", "kcore"),
    ] {
        let (code, out) = root_sh(&a, script).await;
        let denied = code != 0 || out.contains("denied") || out.contains("not permitted");
        assert!(denied && !out.contains("TOPSECRET42"), "{what} was allowed: {code} {out}");
    }
    let _ = std::fs::remove_file("/tmp/soulbox-runsc-host-secret");
    // Only the sandbox's own processes, under gVisor's kernel.
    let (_, out) =
        root_sh(&a, "ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; cat /proc/version").await;
    let mut lines = out.lines();
    assert!(lines.next().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n < 10), "{out}");
    assert!(out.contains("/.soulbox/envd"), "{out}");
    assert!(!out.contains(&std::fs::read_to_string("/proc/version").unwrap().trim().to_string()), "host kernel: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_disk_limit_gives_enospc_inside() {
    runsc_or_skip!("runsc_disk_limit_gives_enospc_inside");
    let mut cfg = image_config(84, 0);
    cfg.runtime_bin = "runsc".into();
    cfg.ready_timeout_ms = 30_000;
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let spec = SandboxSpec { disk_mb: Some(48), ..SandboxSpec::new("test") };
    let a = rt.create(spec).await.unwrap();
    let (code, _, _) = run_user(rt, &a, "echo kept > /home/user/file").await;
    assert_eq!(code, 0);
    let (_, out, err) = run_user(rt, &a, "dd if=/dev/zero of=/home/user/big bs=1M count=100 2>&1; echo rc=$?").await;
    let all = format!("{out}{err}");
    assert!(all.contains("No space left on device") && !all.contains("rc=0"), "{all}");
    let (_, out, _) = run_user(rt, &a, "df -m / | tail -1").await;
    let size_mb: u64 = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!((40..=48).contains(&size_mb), "df / inside: {out}");
    assert!(health(&a, Duration::from_secs(3)).await.is_some(), "envd stopped answering");
    let (code, out, _) = run_user(rt, &a, "rm /home/user/big; echo alive; cat /home/user/file").await;
    assert_eq!((code, out.as_str()), (0, "alive\nkept\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_memory_and_pids_limits_hold_on_the_host() {
    runsc_or_skip!("runsc_memory_and_pids_limits_hold_on_the_host");
    let h = harness_with(runsc_config(85)).await;
    let rt = h.rt();
    let spec =
        SandboxSpec { memory_mb: Some(128), pids_limit: Some(64), cpu_count: Some(1), ..SandboxSpec::new("test") };
    let a = rt.create(spec).await.unwrap();
    let other = rt.create(SandboxSpec::new("test")).await.unwrap();
    // The limits are on the host cgroup of gVisor's processes (cgroupsPath); pids scaled (RuntimeKind).
    assert_eq!(cgroup_file(&h.cfg, &a.id, "memory", "memory.limit_in_bytes").as_deref(), Some("134217728"));
    assert_eq!(cgroup_file(&h.cfg, &a.id, "cpu", "cpu.cfs_quota_us").as_deref(), Some("100000"));
    let pids_max: i64 = cgroup_file(&h.cfg, &a.id, "pids", "pids.max").unwrap().parse().unwrap();
    assert_eq!(pids_max, rt.driver().kind().host_pids_limit(64));
    // gVisor sizes its memory by the limit.
    let (_, out) = root_sh(&a, "grep MemTotal /proc/meminfo").await;
    assert!(out.contains("131072 kB"), "{out}");
    // Memory bomb: gVisor has no OOM killer of its own; the host's kills the sentry in the sandbox's cgroup,
    // so the whole sandbox ends (on runc only the bomb does). The limit held, nothing else is touched.
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        envd_run_as(&a, Some("root"), "dd if=/dev/zero of=/dev/null bs=512M count=1"),
    )
    .await;
    let mut state = None;
    for _ in 0..100 {
        state = rt.driver().state(&a.id).await.unwrap().map(|s| s.status);
        if state.as_deref() == Some("stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state.as_deref(), Some("stopped"), "the bombed sandbox still runs?");
    let st = rt.stats(&a.id).await.unwrap();
    assert!(st.oom_kills >= 1, "{st:?}");
    let max: u64 = cgroup_file(&h.cfg, &a.id, "memory", "memory.max_usage_in_bytes").map_or(0, |s| s.parse().unwrap());
    // The kernel may force-charge a few pages past the limit (an OOM victim's exit, __GFP_NOFAIL allocations):
    // a page over is the limit holding; the bomb asked for 512 MiB.
    assert!(max <= (128 << 20) + (2 << 20), "the cgroup went past its limit: {max}");
    assert!(health(&other, Duration::from_secs(3)).await.is_some(), "the other sandbox suffered");
    rt.delete(&a.id).await.unwrap();
    // Fork bomb: the host cgroup caps gVisor's tasks; the other sandbox and the host keep working.
    let b = rt.create(SandboxSpec { pids_limit: Some(32), ..SandboxSpec::new("test") }).await.unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        envd_run_as(
            &b,
            Some("root"),
            "i=0; while [ $i -lt 300 ]; do sleep 60 </dev/null >/dev/null 2>&1 & i=$((i+1)); done",
        ),
    )
    .await;
    let max: i64 = cgroup_file(&h.cfg, &b.id, "pids", "pids.max").unwrap().parse().unwrap();
    let cur: i64 = cgroup_file(&h.cfg, &b.id, "pids", "pids.current").map_or(0, |s| s.parse().unwrap());
    assert!(cur <= max, "{cur} > {max}");
    assert!(health(&other, Duration::from_secs(3)).await.is_some(), "the other sandbox suffered");
    let (code, out, _) = run_user(rt, &other, "echo alive").await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
    eprintln!(
        "fork bomb: {cur}/{max} host tasks; the bombed sandbox answers: {:?}",
        health(&b, Duration::from_secs(2)).await
    );
}

/// A counter inside `info` that a background loop bumps every 20 ms in `/tmp/c`, read through envd.
async fn start_counter(info: &SandboxInfo) {
    let (code, _) = root_sh(info, "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c.tmp; mv /tmp/c.tmp /tmp/c; usleep 20000; done) >/dev/null 2>&1 </dev/null &").await;
    assert_eq!(code, 0);
}

async fn counter(info: &SandboxInfo) -> u64 {
    let (_, out) = root_sh(info, "cat /tmp/c").await;
    out.trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_pause_resume_stop_start_and_reopen() {
    runsc_or_skip!("runsc_pause_resume_stop_start_and_reopen");
    let mut h = harness_with(runsc_config(86)).await;
    let a = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    start_counter(&a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    h.rt().pause(&a.id).await.unwrap();
    eprintln!("runsc pause took {:?}", t.elapsed());
    assert_eq!(h.rt().info(&a.id).await.unwrap().status, Status::Paused);
    assert!(health(&a, Duration::from_millis(500)).await.is_none(), "envd answered while paused");
    // A paused sandbox is deleted (a kill while paused): runsc cannot force-delete a paused container itself.
    let p = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    h.rt().pause(&p.id).await.unwrap();
    h.rt().delete(&p.id).await.expect("deleting a paused runsc sandbox");
    assert!(h.rt().info(&p.id).await.is_err(), "the paused sandbox is gone");
    // Reopen (a server restart) while paused: it stays paused.
    drop(h.rt.take());
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    assert_eq!(h.rt().info(&a.id).await.unwrap().status, Status::Paused);
    let t = Instant::now();
    h.rt().resume(&a.id).await.unwrap();
    eprintln!("runsc resume took {:?}", t.elapsed());
    let v1 = counter(&a).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(counter(&a).await > v1, "counter did not continue");
    // Reopen while running: re-adopted, envd answers, same secret.
    drop(h.rt.take());
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    let rt = h.rt();
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Running);
    assert!(health(&a, Duration::from_secs(3)).await.is_some());
    // Stop keeps the files and the address; nothing else stays on the host.
    run_user(rt, &a, "echo kept > /home/user/file").await;
    rt.stop(&a.id).await.unwrap();
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "stopped sandbox holds {left:?}");
    let b = rt.start(&a.id).await.unwrap();
    assert_eq!(b.ip, a.ip, "start took another address");
    let (_, out, _) = run_user(rt, &b, "cat /home/user/file").await;
    assert_eq!(out, "kept\n");
    // Died while the runtime was away: kept as stopped, files and address kept.
    drop(h.rt.take());
    rt_kill_all_runsc(&h.cfg);
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    let rt = h.rt();
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Stopped);
    let c = rt.start(&a.id).await.unwrap();
    assert_eq!(c.ip, a.ip);
    let (_, out, _) = run_user(rt, &c, "cat /home/user/file").await;
    assert_eq!(out, "kept\n");
}

/// Pause to disk (`lifecycle/checkpoint.rs`): the paused sandbox holds nothing on the host but its dir (its
/// memory image there), so a host that lost every process and mount still resumes it — the process inside goes on
/// counting from where it stopped, at the same address. A sandbox with TCP connections of its own,
/// which this gVisor cannot save, is paused in memory instead and thaws as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_pause_saves_memory_to_disk_and_resumes_after_the_host_lost_everything() {
    runsc_or_skip!("runsc_pause_saves_memory_to_disk_and_resumes_after_the_host_lost_everything");
    trace_runtime();
    let mut h = harness_with(RuntimeConfig { pause_to_disk: true, ..runsc_config(92) }).await;
    // Every restore must continue from memory: before envd kept its I/O registrations out of reuse
    // (`soulbox-envd/src/io_memory.rs`), about one image in ten faulted on every restore of it on this gVisor.
    // Three rounds on one sandbox: without that change this one sandbox faulted in about half of its restores.
    let a = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    for round in 1..=3 {
        let continued = pause_to_disk_and_back(&mut h, &a).await;
        assert!(continued, "round {round}: the sandbox booted cold instead of continuing from memory");
    }
    let rt = h.rt();
    let dir = rt.sandbox_dir(&a.id);

    // A loopback connection held inside: gVisor cannot save it, so the pause stays in memory.
    let (code, out) = root_sh(
        &a,
        "(sleep 1000 | nc -l -p 7777 >/dev/null 2>&1 &); sleep 0.3; (sleep 1000 | nc 127.0.0.1 7777 >/dev/null 2>&1 &); sleep 0.3; cat /proc/net/tcp",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 01 "), "no established connection inside: {out}");
    rt.pause(&a.id).await.unwrap();
    assert!(!dir.join("memory").exists(), "a sandbox with connections was saved to disk: {out}");
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Paused);
    rt.resume(&a.id).await.unwrap();
    let v2 = counter(&a).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&a).await <= v2 {
        assert!(Instant::now() < deadline, "the counter stopped after a pause in memory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rt.delete(&a.id).await.unwrap();
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
}

/// A pause to disk answers once the image is whole, and a stop once the processes are killed; both release the
/// rest (the Sentry's teardown) in the background, under the sandbox's lock (`lifecycle/settle.rs`): a resume, a
/// start and a kill made the instant they answer wait for it, and each finds the sandbox as a finished release
/// left it — the resume continues from memory, the start boots from the files, the kill leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_what_follows_a_pause_to_disk_or_a_stop_at_once_waits_for_its_release() {
    runsc_or_skip!("runsc_what_follows_a_pause_to_disk_or_a_stop_at_once_waits_for_its_release");
    trace_runtime();
    let h = harness_with(RuntimeConfig { pause_to_disk: true, ..runsc_config(94) }).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    start_counter(&a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_pause = counter(&a).await;
    assert!(at_pause > 0);
    rt.pause(&a.id).await.unwrap();
    rt.resume(&a.id).await.unwrap();
    assert!(!rt.sandbox_dir(&a.id).join("memory").exists(), "it booted from a pause that had not finished");
    let v = counter(&a).await;
    assert!(v >= at_pause, "the counter went back or the sandbox booted cold: {v} < {at_pause}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&a).await <= v {
        assert!(Instant::now() < deadline, "the counting process did not survive the pause to disk");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = root_sh(&a, "echo kept > /home/user/file").await;
    assert_eq!(code, 0);
    let t = Instant::now();
    rt.stop(&a.id).await.unwrap();
    eprintln!("runsc stop answered in {:?}", t.elapsed());
    let a = rt.start(&a.id).await.unwrap();
    let (code, out) = root_sh(&a, "cat /home/user/file; cat /tmp/c 2>/dev/null || echo cold").await;
    assert_eq!((code, out.as_str()), (0, "kept\ncold\n"), "a start after a stop boots from the files");
    rt.pause(&a.id).await.unwrap();
    rt.delete(&a.id).await.unwrap();
    assert!(!rt.sandbox_dir(&a.id).exists(), "the killed sandbox's dir (and image) is left");
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
}

/// Pauses `a` (counting in `/tmp`, which is the Sentry's memory; the counter starts on the first call) to disk,
/// kills every runsc process of the instance, reopens the runtime and resumes `a`: true when the counter goes on
/// from its value at the pause, false when `a` booted cold (no counter: the restore failed). Panics otherwise.
async fn pause_to_disk_and_back(h: &mut Harness, a: &SandboxInfo) -> bool {
    if counter(a).await == 0 {
        start_counter(a).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let at_pause = counter(a).await;
    assert!(at_pause > 0);
    let t = Instant::now();
    h.rt().pause(&a.id).await.unwrap();
    eprintln!("runsc pause to disk took {:?}", t.elapsed());
    let dir = h.rt().sandbox_dir(&a.id);
    assert!(dir.join("memory/checkpoint.img").is_file(), "no memory image in {}", dir.display());
    assert_eq!(h.rt().info(&a.id).await.unwrap().status, Status::Paused);
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "a sandbox paused to disk still holds {left:?}");
    // The host loses everything but the disk: every runsc process of this instance killed, the runtime reopened.
    drop(h.rt.take());
    rt_kill_all_runsc(&h.cfg);
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    let rt = h.rt();
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Paused, "still paused after the reopen");
    let t = Instant::now();
    rt.resume(&a.id).await.unwrap();
    eprintln!("runsc resume from disk took {:?}", t.elapsed());
    let info = rt.info(&a.id).await.unwrap();
    assert_eq!((info.status, info.ip), (Status::Running, a.ip), "resumed at its address");
    assert!(!dir.join("memory").exists(), "the used image stays behind");
    let (code, out) = root_sh(a, "cat /tmp/c").await;
    if code != 0 {
        assert!(out.contains("No such file"), "neither memory nor a cold boot: {out}");
        return false;
    }
    let v1: u64 = out.trim().parse().unwrap_or(0);
    assert!(v1 >= at_pause, "the counter went back: {v1} < {at_pause}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(a).await <= v1 {
        assert!(Instant::now() < deadline, "the counting process did not survive the pause to disk");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A memory image that cannot be restored (damaged here; in the wild, a restored agent that faults at once) costs
/// the sandbox its memory, never the sandbox: resume boots it cold from its files, at its address, and it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_an_unusable_memory_image_boots_the_sandbox_cold_from_its_files() {
    runsc_or_skip!("runsc_an_unusable_memory_image_boots_the_sandbox_cold_from_its_files");
    trace_runtime();
    let h = harness_with(RuntimeConfig { pause_to_disk: true, ..runsc_config(93) }).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let (code, _) = root_sh(&a, "echo kept > /home/user/file").await;
    assert_eq!(code, 0);
    rt.pause(&a.id).await.unwrap();
    let image = rt.sandbox_dir(&a.id).join("memory/checkpoint.img");
    assert!(image.is_file(), "no memory image at {}", image.display());
    std::fs::write(&image, b"not a checkpoint").unwrap();
    rt.resume(&a.id).await.unwrap();
    let info = rt.info(&a.id).await.unwrap();
    assert_eq!((info.status, info.ip), (Status::Running, a.ip));
    let (code, out) = root_sh(&a, "cat /home/user/file; cat /tmp/c 2>/dev/null || echo no-memory").await;
    assert_eq!((code, out.as_str()), (0, "kept\nno-memory\n"));
    rt.delete(&a.id).await.unwrap();
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
}

/// SIGKILL every runsc sandbox and gofer process of this instance (a host crash, as far as they go).
fn rt_kill_all_runsc(cfg: &RuntimeConfig) {
    let root = cfg.runtime_root().canonicalize().unwrap_or(cfg.runtime_root());
    let flag = format!("--root={}", root.display());
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if cmd.split(|b| *b == 0).any(|a| a == flag.as_bytes()) {
            // SAFETY: kill(2) of a process whose command line names this test's runtime root.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_envd_dying_before_ready_is_an_error_with_log_tail() {
    runsc_or_skip!("runsc_envd_dying_before_ready_is_an_error_with_log_tail");
    trace_runtime();
    let dir = std::path::PathBuf::from("/var/tmp/soulbox-test/fake-envd-runsc");
    std::fs::create_dir_all(&dir).unwrap();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let fake = dir.join("envd.sh");
    std::fs::write(&fake, "#!/bin/sh\necho envd-is-dying >&2\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = runsc_config(87);
    cfg.envd_path = fake;
    let store = soulbox_runtime::Store::new(cfg.store_dir()).unwrap();
    store.ensure_test_template(std::path::Path::new("/bin/busybox")).unwrap();
    let limit = Duration::from_secs(150);
    let h = Harness { rt: Some(within(limit, "Runtime::open", Runtime::open(cfg.clone())).await.unwrap()), cfg };
    let t = Instant::now();
    let err = within(limit, "create", h.rt().create(SandboxSpec::new("test"))).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "waited for the timeout instead of the pipe's EOF: {err}");
    assert!(err.to_string().contains("envd-is-dying"), "{err}");
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
}

/// A runsc sandbox killed outside SoulBox (its Sentry OOM-killed, or killed from the host) never resets its
/// connections: the runtime stops routing to it as soon as the process exits (also after a pause and resume),
/// instead of at the next open. Every start is a new boot of its endpoint (the proxy pools connections per boot);
/// a thaw is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_a_sandbox_killed_outside_soulbox_is_no_longer_routed() {
    runsc_or_skip!("runsc_a_sandbox_killed_outside_soulbox_is_no_longer_routed");
    let h = harness_with(runsc_config(88)).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let first = rt.endpoint(&a.id).expect("a running sandbox has an endpoint");
    rt.stop(&a.id).await.unwrap();
    assert_eq!(rt.endpoint(&a.id), None, "a stopped sandbox is not routed");
    rt.start(&a.id).await.unwrap();
    let second = rt.endpoint(&a.id).unwrap();
    assert_eq!(second.ip, first.ip);
    assert_ne!(second.boot, first.boot, "a start is a new boot");
    rt.pause(&a.id).await.unwrap();
    assert_eq!(rt.endpoint(&a.id), None, "a paused sandbox is not routed");
    rt.resume(&a.id).await.unwrap();
    assert_eq!(rt.endpoint(&a.id), Some(second), "a thaw keeps the boot (its connections stay good)");
    let pid: i32 = std::fs::read_to_string(rt.sandbox_dir(&a.id).join("init.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of the sandbox process this test's runtime started (its pid file).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.endpoint(&a.id).is_some() {
        assert!(Instant::now() < deadline, "the dead sandbox is still routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Deleting it still cleans up everything.
    rt.delete(&a.id).await.unwrap();
}

/// One runtime, two OCI runtimes: a runc node with runsc as an extra runtime runs the templates that ask for
/// gVisor on gVisor (no user namespace of ours, its own netstack) and the rest on runc, through every verb and a
/// restart; a runtime the node does not have is refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_node_runs_templates_that_ask_for_runsc_on_runsc() {
    runsc_or_skip!("runc_node_runs_templates_that_ask_for_runsc_on_runsc");
    let mut cfg = config(89);
    cfg.extra_runtimes = vec!["runsc".into()];
    cfg.ready_timeout_ms = 30_000;
    let mut h = harness_with(cfg).await;
    let mut meta = h.rt().store().get("test").unwrap();
    meta.name = "test-gvisor".into();
    meta.runtime = Some("runsc".into());
    h.rt().store().put(&meta).unwrap();
    let rt = h.rt();
    assert_eq!(rt.driver().kind().family, soulbox_runtime::runtime_kind::Family::Runc);
    let plain = rt.create(SandboxSpec::new("test")).await.unwrap();
    let gv = rt.create(SandboxSpec::new("test-gvisor")).await.expect("a runsc template on a runc node");
    let kernel = |s: &str| s.contains("gVisor");
    let (_, out) = root_sh(&gv, "dmesg 2>&1 | head -3").await;
    assert!(kernel(&out), "the runsc template's sandbox is not on gVisor: {out}");
    let (_, out) = root_sh(&plain, "dmesg 2>&1 | head -3").await;
    assert!(!kernel(&out), "the runc template's sandbox is on gVisor: {out}");
    let (_, out) = root_sh(&gv, "ip addr").await;
    assert!(out.contains(&format!("{}/32", gv.ip.unwrap())), "gVisor's netstack holds the address: {out}");
    // Root inside the runc sandbox is a mapped uid on the host; gVisor's sentry makes its own namespaces.
    let (_, out) = root_sh(&plain, "cat /proc/self/uid_map").await;
    assert!(!out.split_whitespace().eq(["0", "0", "4294967295"]), "the runc sandbox is unmapped: {out}");
    // A runtime the node does not have: refused, nothing made.
    let err = rt
        .create(SandboxSpec { runtime: Some("kata".into()), ..SandboxSpec::new("test") })
        .await
        .expect_err("an unknown runtime");
    assert!(err.to_string().contains("not available on this node"), "{err}");
    assert_eq!(rt.list().await.len(), 2);
    // Every verb finds the sandbox's own runtime.
    rt.pause(&gv.id).await.unwrap();
    assert!(health(&gv, Duration::from_millis(500)).await.is_none(), "envd answered while paused");
    rt.resume(&gv.id).await.unwrap();
    run_user(rt, &gv, "echo kept > /home/user/file").await;
    rt.stop(&gv.id).await.unwrap();
    let gv = rt.start(&gv.id).await.unwrap();
    let (_, out, _) = run_user(rt, &gv, "cat /home/user/file").await;
    assert_eq!(out, "kept\n");
    // A restart re-adopts both from their own runtimes' state.
    drop(h.rt.take());
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    let rt = h.rt();
    for s in [&plain, &gv] {
        assert_eq!(rt.info(&s.id).await.unwrap().status, Status::Running, "{} after the restart", s.id);
        assert!(health(s, Duration::from_secs(3)).await.is_some(), "{} does not answer after the restart", s.id);
    }
    rt.delete(&gv.id).await.unwrap();
    rt.delete(&plain.id).await.unwrap();
    let left = settled_leftovers(&h.cfg).await;
    assert!(left.is_empty(), "{left:?}");
    let runsc = soulbox_runtime::driver::Driver::new("runsc", &[], &h.cfg.runtime_root_of("runsc"));
    assert!(runsc.list().await.unwrap().is_empty(), "a runsc container is left");
}

/// A live network update on runsc: gVisor holds its sockets in its own stack (nothing for the host to destroy),
/// so the host chain's reset is the cut — an open connection's next send ends it, nothing more gets through —
/// and new connections follow the new policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_a_live_network_update_cuts_an_open_connection() {
    runsc_or_skip!("runsc_a_live_network_update_cuts_an_open_connection");
    let h = harness_with(runsc_config(90)).await;
    let out = Outside::new(2);
    let rt = h.rt();
    let s = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert!(reaches(&s, out.ip, 8080).await);
    let ip = out.ip;
    let writer = format!(
        "(echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second; sleep 600) | (nc {ip} 7 > /tmp/writer 2>&1; echo exit=$? >> /tmp/writer)"
    );
    root_sh(&s, &format!("setsid sh -c '{writer}' </dev/null >/dev/null 2>&1 &")).await;
    let holds = |needle: &'static str| {
        let s = s.clone();
        async move {
            let mut last = String::new();
            for _ in 0..600 {
                let (_, o) = root_sh(&s, "cat /tmp/writer 2>/dev/null").await;
                if o.contains(needle) {
                    return o;
                }
                last = o;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("/tmp/writer never held {needle:?}: {last:?}");
        }
    };
    holds("first").await;
    let tight = NetworkPolicy {
        allow_internet: true,
        allow_out: vec![],
        deny_out: vec![format!("{ip}/32")],
        ..Default::default()
    };
    rt.update_network(&s.id, tight).await.unwrap();
    root_sh(&s, "touch /tmp/go").await;
    let written = holds("exit=").await;
    assert!(!written.contains("second"), "an open connection outlived the update: {written:?}");
    assert!(!reaches(&s, ip, 8080).await, "a new connection ignored the update");
    rt.update_network(&s.id, NetworkPolicy::open()).await.unwrap();
    assert!(reaches(&s, ip, 8080).await, "loosening did not open it again");
}

/// Host rules on runsc: gVisor's packets leave through the same veth, so the host redirects them to the egress
/// gateway like runc's; named HTTP and TLS pass or not by name, a forged SNI does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_host_rules_go_through_the_egress_gateway() {
    runsc_or_skip!("runsc_host_rules_go_through_the_egress_gateway");
    let out = Outside::new(1);
    let _dns = FakeDns::start(
        &out.ns,
        vec![("good.test", out.ip), ("bad.test", out.ip), ("elsewhere.test", Ipv4Addr::new(203, 0, 113, 99))],
    );
    let mut cfg = runsc_config(91);
    cfg.dns = vec![out.ip];
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let policy = NetworkPolicy {
        allow_internet: true,
        deny_out: vec!["0.0.0.0/0".into()],
        allow_hosts: vec!["good.test".into(), "elsewhere.test".into()],
        ..Default::default()
    };
    let s = rt.create(SandboxSpec { network: policy, ..SandboxSpec::new("test") }).await.unwrap();
    let ip = out.ip;
    let http = |host: &str| format!("printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 {ip} 80");
    let got = |script: String, answer: &'static str| {
        let s = s.clone();
        async move { root_sh(&s, &script).await.1.contains(answer) }
    };
    assert!(got(http("good.test"), "http-ok").await, "an allowed Host");
    assert!(!got(http("bad.test"), "http-ok").await, "a Host not allowed");
    let tls = |name: &str| format!("printf '{}' | nc -w 3 {ip} 443", client_hello_escaped(name));
    assert!(got(tls("good.test"), "tls-ok").await, "an allowed SNI");
    assert!(!got(tls("elsewhere.test"), "tls-ok").await, "an allowed name that resolves elsewhere");
    assert!(!reaches(&s, ip, 8080).await, "other ports follow the address rules");
}
