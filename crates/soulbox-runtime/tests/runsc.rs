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
/// at 203.0.113.(202+4n) (a /30 of 203.0.113.200/29 per test).
struct Outside {
    ns: String,
    link: String,
    ip: Ipv4Addr,
    child: std::process::Child,
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
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "busybox", "nc", "-ll", "-p", "8080", "-e", "/bin/echo", "outside-ok"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let o = Outside { ns, link, ip, child };
        for _ in 0..500 {
            let out = std::process::Command::new("ip").args(["netns", "exec", &o.ns, "ss", "-ltnH"]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(":8080") {
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
        quiet(&["link", "del", link]);
        quiet(&["netns", "del", ns]);
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    rt.delete(&info.id).await.unwrap();
    assert!(leftovers(&h.cfg).await.is_empty(), "{:?}", leftovers(&h.cfg).await);
    assert!(!rt.sandbox_dir(&info.id).exists());
}
