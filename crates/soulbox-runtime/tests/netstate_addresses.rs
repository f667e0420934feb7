//! Addresses and the node's own objects (root only; skipped with a message otherwise): a dead
//! sandbox's address is never handed to another, addresses a control plane's records name are
//! reserved, a failed open and a close leave nothing behind.
//!
//! Network rule: no traffic leaves the host; only the runtime's own objects are inspected.
mod common;
use common::*;
use soulbox_runtime::{Runtime, SandboxSpec, Status};
use std::net::Ipv4Addr;
use std::time::Duration;

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

/// SIGKILL every process of the sandbox from the host (its PID 1 dies, the pid namespace with it),
/// and wait for that death through a pidfd.
async fn kill_sandbox_processes(rt: &Runtime, id: &str) {
    let pid = rt.driver().state(id).await.unwrap().expect("container state").pid as libc::pid_t;
    assert!(pid > 0);
    // SAFETY: pidfd_open on a pid we just read; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: kill(2) of the sandbox's init, which this test owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let died = tokio::task::spawn_blocking(move || {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 30_000) };
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        n == 1
    })
    .await
    .unwrap();
    assert!(died, "the sandbox's init did not die");
}

/// A dropped runtime lets go of its data dir once its background work (a warm-pool refill) ends:
/// wait for its instance lock, blocking on it (bounded).
async fn wait_instance_gone(cfg: &soulbox_runtime::RuntimeConfig) {
    let path = cfg.data_dir.join("runtime.lock");
    let wait = tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    });
    tokio::time::timeout(Duration::from_secs(60), wait).await.expect("the old instance kept its lock").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_sandbox_address_is_not_handed_out() {
    root_or_skip!("dead_sandbox_address_is_not_handed_out");
    let mut cfg = config(74);
    cfg.pool_size = 2;
    let mut h = harness_with(cfg).await;
    let dead = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    let dead_ip = dead.ip.unwrap();
    assert_eq!(h.rt().address(&dead.id), Some(dead_ip));
    kill_sandbox_processes(h.rt(), &dead.id).await;
    // The node "crashes" and comes back (no cleanup in between).
    drop(h.rt.take());
    wait_instance_gone(&h.cfg).await;
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    let rt = h.rt();
    let info = rt.info(&dead.id).await.unwrap();
    assert_eq!(info.status, Status::Stopped, "a dead sandbox is kept as stopped");
    assert_eq!(rt.address(&dead.id), None, "no traffic is routed to a dead sandbox");
    let mut others = Vec::new();
    for _ in 0..6 {
        let s = rt.create(SandboxSpec::new("test")).await.unwrap();
        assert_ne!(s.ip, Some(dead_ip), "the dead sandbox's address was handed to {}", s.id);
        others.push(s);
    }
    // It keeps its address across start, and it is a sandbox again.
    let restarted = rt.start(&dead.id).await.unwrap();
    assert_eq!(restarted.ip, Some(dead_ip));
    assert_eq!(rt.address(&dead.id), Some(dead_ip));
    // Stop keeps it too; only delete gives it back.
    rt.stop(&dead.id).await.unwrap();
    assert_eq!(rt.address(&dead.id), None);
    let s = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert_ne!(s.ip, Some(dead_ip), "a stopped sandbox's address was handed out");
    rt.delete(&dead.id).await.unwrap();
    // Deleted, it is free again: a node without a warm pool hands out the lowest free address.
    drop(h.rt.take());
    wait_instance_gone(&h.cfg).await;
    let mut no_pool = h.cfg.clone();
    no_pool.pool_size = 0;
    h.rt = Some(Runtime::open(no_pool).await.unwrap());
    let s = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    assert_eq!(s.ip, Some(dead_ip), "a deleted sandbox's address is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_named_by_records_are_reserved() {
    root_or_skip!("addresses_named_by_records_are_reserved");
    let mut cfg = config(75);
    cfg.pool_size = 2;
    let store = soulbox_runtime::Store::new(cfg.store_dir()).unwrap();
    store.ensure_test_template(std::path::Path::new("/bin/busybox")).unwrap();
    // The lowest addresses of the pool, as a control plane's stale records would name them.
    let stale: Vec<(String, Ipv4Addr)> =
        [2u8, 3].iter().map(|i| (format!("gone{i}"), Ipv4Addr::new(10, 77, 75, *i))).collect();
    let rt = Runtime::open_reserving(cfg.clone(), &stale).await.unwrap();
    let h = Harness { rt: Some(rt), cfg };
    let rt = h.rt();
    for _ in 0..3 {
        let s = rt.create(SandboxSpec::new("test")).await.unwrap();
        assert!(!stale.iter().any(|(_, ip)| Some(*ip) == s.ip), "{:?} was reserved", s.ip);
    }
    let s = rt.create(SandboxSpec::new("test")).await.unwrap();
    // A reservation of an address another sandbox holds is a conflict, reported back.
    let conflicts = rt.set_reserved_addresses(&[("someone-else".into(), s.ip.unwrap())]);
    assert_eq!(conflicts, vec![("someone-else".to_string(), s.ip.unwrap())]);
    assert!(rt.set_reserved_addresses(&[(s.id.clone(), s.ip.unwrap())]).is_empty(), "its own record names it");
}

fn table_exists(table: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_open_and_close_leave_nothing() {
    root_or_skip!("failed_open_and_close_leave_nothing");
    let mut cfg = config(76);
    let store = soulbox_runtime::Store::new(cfg.store_dir()).unwrap();
    store.ensure_test_template(std::path::Path::new("/bin/busybox")).unwrap();
    // A pool of one address and a warm pool of three: open fails after making a slot.
    cfg.pool_prefix_len = 30;
    cfg.pool_net = Ipv4Addr::new(10, 77, 76, 0);
    cfg.pool_size = 3;
    let err = Runtime::open(cfg.clone()).await.err().expect("open must fail");
    assert!(matches!(err, soulbox_runtime::Error::PoolExhausted), "{err}");
    assert_eq!(leftovers(&cfg).await, Vec::<String>::new());
    assert!(!table_exists(&cfg.nft_table()), "the firewall table stayed");
    assert!(soulbox_runtime::cgroup::children(&cfg.cgroup_parent()).is_empty());

    // A runtime binary that does not work fails before anything is made.
    let mut bad = config(76);
    bad.runtime_bin = "/nonexistent/runc".into();
    bad.pool_size = 2;
    let err = Runtime::open(bad.clone()).await.err().expect("open must fail");
    assert!(err.to_string().contains("/nonexistent/runc"), "{err}");
    assert_eq!(leftovers(&bad).await, Vec::<String>::new());
    assert!(!table_exists(&bad.nft_table()));

    // close() of a runtime with no sandboxes gives back pool, table and cgroup parent; with a
    // sandbox running it keeps the table (the sandbox needs it).
    let mut ok = config(76);
    ok.pool_size = 2;
    let rt = Runtime::open(ok.clone()).await.unwrap();
    let s = rt.create(SandboxSpec::new("test")).await.unwrap();
    rt.close().await.unwrap();
    assert!(table_exists(&ok.nft_table()), "closing with a running sandbox removed its firewall");
    assert_eq!(sh(&rt, &s.id, "echo alive").await.1.trim(), "alive", "the sandbox keeps running");
    rt.delete(&s.id).await.unwrap();
    rt.close().await.unwrap();
    assert_eq!(leftovers(&ok).await, Vec::<String>::new());
    assert!(!table_exists(&ok.nft_table()));
    drop(rt);
    let _ = std::fs::remove_dir_all(&ok.data_dir);
}
