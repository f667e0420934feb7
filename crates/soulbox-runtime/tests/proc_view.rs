//! A sandbox sees its own machine (`procview.rs`): `/proc/meminfo`, `free`, `nproc`, `/proc/cpuinfo`,
//! `/proc/stat`, `/proc/uptime` and `/proc/sys/kernel/random/boot_id` show its limits, its own uptime and boot,
//! read as the sandbox's `user` through envd; with the view off they show the host's (so these checks can fail);
//! a runtime restart (a close, or SIGKILL) re-attaches running sandboxes to the new runtime's view. Root only;
//! harnesses 40–44.
//! Network: only the sandboxes' own addresses (envd).
mod common;
use common::*;
use soulbox_runtime::{Runtime, SandboxInfo, SandboxSpec};
use std::time::{Duration, Instant};

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

fn spec(memory_mb: u64, cpus: u32) -> SandboxSpec {
    SandboxSpec { memory_mb: Some(memory_mb), cpu_count: Some(cpus), ..SandboxSpec::new("test") }
}

/// `cmd`'s output as the sandbox's `user`; panics unless it exits 0.
async fn user_out(rt: &Runtime, info: &SandboxInfo, cmd: &str) -> String {
    let (code, out, err) = run_user(rt, info, cmd).await;
    assert_eq!(code, 0, "{cmd}: {out}{err}");
    out
}

fn kb(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).and_then(|r| r.split_whitespace().next()?.parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in {meminfo}"))
}

fn uptime_of(text: &str) -> f64 {
    text.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("uptime {text:?}"))
}

/// Reads `/proc/uptime` until it is past `after` (it grows with time; bounded, never a fixed wait).
async fn uptime_past(rt: &Runtime, info: &SandboxInfo, after: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = uptime_of(&user_out(rt, info, "cat /proc/uptime").await);
        if up > after || Instant::now() > deadline {
            return up;
        }
    }
}

fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_sees_its_own_memory_cpus_uptime_and_boot() {
    root_or_skip!("a_sandbox_sees_its_own_memory_cpus_uptime_and_boot");
    let h = harness(40).await;
    let rt = h.rt();
    let a = rt.create(spec(256, 1)).await.expect("create a");
    let b = rt.create(spec(512, 1)).await.expect("create b");

    let meminfo = user_out(rt, &a, "cat /proc/meminfo").await;
    assert_eq!(kb(&meminfo, "MemTotal"), 256 * 1024, "{meminfo}");
    assert!(kb(&meminfo, "MemFree") < 256 * 1024 && kb(&meminfo, "MemAvailable") <= 256 * 1024);
    assert_eq!(kb(&meminfo, "SwapTotal"), 0);
    // (procps `free` reads /proc/meminfo: the e2e test checks it in `base`; busybox `free` here asks sysinfo(2).)
    assert_eq!(kb(&user_out(rt, &b, "cat /proc/meminfo").await, "MemTotal"), 512 * 1024, "b sees its own limit");

    assert_eq!(user_out(rt, &a, "nproc").await.trim(), "1");
    assert_eq!(user_out(rt, &a, "grep -c ^processor /proc/cpuinfo").await.trim(), "1");
    assert_eq!(user_out(rt, &a, "cat /sys/devices/system/cpu/online").await.trim(), "0");
    let stat = user_out(rt, &a, "grep ^cpu /proc/stat").await;
    assert_eq!(stat.lines().count(), 2, "the aggregate and cpu0: {stat}");
    assert!(stat.starts_with("cpu ") && stat.lines().nth(1).is_some_and(|l| l.starts_with("cpu0 ")), "{stat}");

    let up = uptime_of(&user_out(rt, &a, "cat /proc/uptime").await);
    let host_up = uptime_of(&std::fs::read_to_string("/proc/uptime").unwrap());
    assert!(up < 60.0 && up < host_up, "uptime {up} (host {host_up})");
    assert!(uptime_past(rt, &a, up).await > up, "uptime grows");
    assert!(user_out(rt, &a, "uptime").await.contains("up "), "busybox uptime reads it");

    // `df /`: the disk limit (project quota or image, whichever this node uses), not the host's filesystem.
    let df = user_out(rt, &a, "df -k / | tail -1").await;
    let size_kb: u64 = df.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit_kb = h.cfg.default_disk_mb * 1024;
    assert!(limit_kb * 9 / 10 <= size_kb && size_kb <= limit_kb, "df / {df:?}, limit {limit_kb} kB");

    let boot_a = user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim().to_string();
    let boot_b = user_out(rt, &b, "cat /proc/sys/kernel/random/boot_id").await.trim().to_string();
    assert_eq!(boot_a.len(), 36, "{boot_a:?}");
    assert_ne!(boot_a, boot_b);
    assert_ne!(boot_a, host_boot_id());
    // The files cannot be written, not even by the sandbox's root.
    let (code, _, _) = envd_run_as(&a, Some("root"), "echo x > /proc/meminfo").await.expect("envd");
    assert_ne!(code, 0);

    // A pause is the same boot; a stop to disk and start is a new one, its uptime from zero again.
    rt.pause(&a.id).await.expect("pause");
    rt.resume(&a.id).await.expect("resume");
    assert_eq!(user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim(), boot_a);
    let before_stop = uptime_past(rt, &a, up).await;
    rt.stop(&a.id).await.expect("stop");
    let a = rt.start(&a.id).await.expect("start");
    let boot_again = user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim().to_string();
    assert!(boot_again.len() == 36 && boot_again != boot_a, "{boot_again:?} after a cold boot, was {boot_a:?}");
    assert!(uptime_of(&user_out(rt, &a, "cat /proc/uptime").await) < before_stop + 60.0);

    for s in [&a, &b] {
        rt.delete(&s.id).await.unwrap();
    }
}

/// gVisor is its own kernel: its `/proc` shows its memory limit and its own uptime by itself, its CPU count from
/// the quota (`--cpu-num-from-quota`: at least 2, at most the host's), and the boot id is bound from the sandbox's
/// boot record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gvisor_sandbox_sees_its_own_machine() {
    root_or_skip!("a_gvisor_sandbox_sees_its_own_machine");
    if !std::process::Command::new("runsc").arg("--version").output().is_ok_and(|o| o.status.success()) {
        assert!(
            !std::env::var("SOULBOX_REQUIRE_RUNSC").is_ok_and(|v| v == "1"),
            "SOULBOX_REQUIRE_RUNSC=1 but no runsc"
        );
        eprintln!("SKIP a_gvisor_sandbox_sees_its_own_machine: runsc (gVisor) is not installed");
        return;
    }
    let mut cfg = config(44);
    cfg.runtime_bin = "runsc".into();
    // gVisor's first boot on the ptrace platform of a loaded 2-core machine is slow.
    cfg.ready_timeout_ms = 30_000;
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let a = rt.create(spec(256, 1)).await.expect("create a");
    let b = rt.create(spec(512, 3)).await.expect("create b");
    assert_eq!(kb(&user_out(rt, &a, "cat /proc/meminfo").await, "MemTotal"), 256 * 1024);
    assert_eq!(kb(&user_out(rt, &b, "cat /proc/meminfo").await, "MemTotal"), 512 * 1024);
    // The quota's CPUs, at least gVisor's 2, at most the host's (on a 2-CPU host all of these are 2).
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (want_a, want_b) = (host.min(2), host.min(3));
    assert_eq!(user_out(rt, &a, "nproc").await.trim(), want_a.to_string());
    assert_eq!(user_out(rt, &b, "nproc").await.trim(), want_b.to_string());
    assert_eq!(user_out(rt, &b, "grep -c ^processor /proc/cpuinfo").await.trim(), want_b.to_string());
    assert_eq!(user_out(rt, &b, "grep -c ^cpu /proc/stat").await.trim(), (want_b + 1).to_string());
    let up = uptime_of(&user_out(rt, &a, "cat /proc/uptime").await);
    assert!(up < 60.0, "{up}");
    assert!(uptime_past(rt, &a, up).await > up);
    let boot_a = user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim().to_string();
    let boot_b = user_out(rt, &b, "cat /proc/sys/kernel/random/boot_id").await.trim().to_string();
    assert!(boot_a.len() == 36 && boot_a != boot_b && boot_a != host_boot_id(), "{boot_a:?} {boot_b:?}");
    rt.pause(&a.id).await.expect("pause");
    rt.resume(&a.id).await.expect("resume");
    assert_eq!(user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim(), boot_a);
    for s in [&a, &b] {
        rt.delete(&s.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_serves_the_sandboxes_it_adopts() {
    root_or_skip!("a_restarted_runtime_serves_the_sandboxes_it_adopts");
    let mut h = harness(42).await;
    let a = h.rt().create(spec(256, 1)).await.expect("create");
    let boot_id = user_out(h.rt(), &a, "cat /proc/sys/kernel/random/boot_id").await;
    let up = uptime_of(&user_out(h.rt(), &a, "cat /proc/uptime").await);
    let paused = h.rt().create(spec(512, 1)).await.expect("create");
    let paused_boot = user_out(h.rt(), &paused, "cat /proc/sys/kernel/random/boot_id").await;
    h.rt().pause(&paused.id).await.expect("pause");

    // The runtime goes (its filesystem with it): the sandbox's mounts of it are dead, not the host's numbers.
    let old = h.rt.take().unwrap();
    old.close().await.expect("close");
    let (code, out, err) = run_user(&old, &a, "cat /proc/meminfo").await;
    assert_ne!(code, 0, "a dead view must not answer: {out}");
    assert!(err.contains("not connected"), "{err}");
    drop(old);

    h.rt = Some(open_after_drop(h.cfg.clone()).await.expect("reopen"));
    let rt = h.rt();
    assert_eq!(kb(&user_out(rt, &a, "cat /proc/meminfo").await, "MemTotal"), 256 * 1024);
    assert_eq!(user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await, boot_id, "the same boot");
    assert!(uptime_of(&user_out(rt, &a, "cat /proc/uptime").await) >= up, "uptime goes on");
    assert_eq!(user_out(rt, &a, "nproc").await.trim(), "1");
    // A sandbox paused across the restart was re-attached too.
    rt.resume(&paused.id).await.expect("resume");
    assert_eq!(kb(&user_out(rt, &paused, "cat /proc/meminfo").await, "MemTotal"), 512 * 1024);
    assert_eq!(user_out(rt, &paused, "cat /proc/sys/kernel/random/boot_id").await, paused_boot);
    rt.delete(&a.id).await.unwrap();
    rt.delete(&paused.id).await.unwrap();
}

/// 20 creates with the view and 20 without, one at a time, in four batches of 10 (with, without, without, with: the
/// same harness reopened each time, so drift in the machine's load falls on both alike); their p50s are printed
/// (`--no-capture`), and the view may not make a create twice as slow. Without the view a sandbox sees the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_keeps_creates_fast() {
    root_or_skip!("the_view_keeps_creates_fast");
    let mut h = harness(43).await;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for (batch, view) in [true, false, false, true].into_iter().enumerate() {
        if h.cfg.proc_view != view {
            let old = h.rt.take().unwrap();
            old.destroy_all().await.expect("destroy");
            drop(old);
            h.cfg.proc_view = view;
            h.rt = Some(open_after_drop(h.cfg.clone()).await.expect("reopen"));
        }
        let rt = h.rt();
        if batch == 1 {
            // Without the view a sandbox sees the host's files: what the other tests check can fail.
            let a = rt.create(spec(256, 1)).await.expect("create");
            let host = std::fs::read_to_string("/proc/meminfo").unwrap();
            assert_eq!(kb(&user_out(rt, &a, "cat /proc/meminfo").await, "MemTotal"), kb(&host, "MemTotal"));
            assert_eq!(user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim(), host_boot_id());
            let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert_eq!(user_out(rt, &a, "nproc").await.trim(), host_cpus.to_string());
            rt.delete(&a.id).await.unwrap();
        }
        for _ in 0..10 {
            let t = Instant::now();
            let s = rt.create(spec(256, 1)).await.expect("create");
            if view {
                with.push(t.elapsed())
            } else {
                without.push(t.elapsed())
            }
            rt.delete(&s.id).await.unwrap();
        }
    }
    with.sort();
    without.sort();
    eprintln!("create p50 with the view: {:?} (min {:?}, max {:?})", with[10], with[0], with[19]);
    eprintln!("create p50 without the view: {:?} (min {:?}, max {:?})", without[10], without[0], without[19]);
    assert!(with[10] < without[10] * 2, "with the view {:?}, without {:?}", with[10], without[10]);
}

/// Where the killed runtime's child process says what it made: `<sandbox id> <boot id>`.
const CRASH_STATE_ENV: &str = "SOULBOX_PROC_VIEW_CRASH_STATE";

/// Not a test of its own: the runtime process [`a_killed_runtime_leaves_dead_views_that_the_next_one_revives`]
/// starts (this test binary again, filtered to this function) and kills with SIGKILL. Returns at once otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_runtime_process_to_kill() {
    let Some(state) = std::env::var_os(CRASH_STATE_ENV) else { return };
    let h = harness_with(image_config(41, 0)).await;
    let a = h.rt().create(spec(256, 1)).await.expect("create");
    let boot = user_out(h.rt(), &a, "cat /proc/sys/kernel/random/boot_id").await;
    std::fs::write(&state, format!("{} {}", a.id, boot.trim())).unwrap();
    std::mem::forget(h);
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runtime_leaves_dead_views_that_the_next_one_revives() {
    root_or_skip!("a_killed_runtime_leaves_dead_views_that_the_next_one_revives");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_runtime_process_to_kill", "--nocapture"])
        .env(CRASH_STATE_ENV, &state)
        .spawn()
        .expect("start the runtime process");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !state.exists() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever happened, the next runtime on that data dir cleans up (the harness deletes everything it has).
    // A disk image per sandbox here (the other tests: whichever backend this host picks).
    let cfg = image_config(41, 0);
    let h = Harness { rt: Some(open_after_drop(cfg.clone()).await.expect("open after the kill")), cfg };
    let text = std::fs::read_to_string(&state).expect("the killed runtime made a sandbox");
    let (id, boot) = text.split_once(' ').unwrap();
    let rt = h.rt();
    let a = rt.info(id).await.expect("adopted");
    assert_eq!(kb(&user_out(rt, &a, "cat /proc/meminfo").await, "MemTotal"), 256 * 1024, "re-attached");
    assert_eq!(user_out(rt, &a, "cat /proc/sys/kernel/random/boot_id").await.trim(), boot);
    assert_eq!(user_out(rt, &a, "nproc").await.trim(), "1");
    let df = user_out(rt, &a, "df -k / | tail -1").await;
    let size_kb: u64 = df.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit_kb = h.cfg.default_disk_mb * 1024;
    assert!(limit_kb * 9 / 10 <= size_kb && size_kb <= limit_kb, "df / {df:?} on its image, limit {limit_kb} kB");
    rt.delete(id).await.unwrap();
}
