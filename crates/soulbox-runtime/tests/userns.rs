//! User namespaces (issue 11, item 1): root in a sandbox is an unprivileged host uid of the
//! sandbox's own range; files keep their owners, stored unshifted; ranges are held while any
//! sandbox dir names them and released on delete. Root only (skips with a message otherwise).
mod common;
use common::*;
use soulbox_runtime::userns::{IdRange, RANGE_SIZE};
use soulbox_runtime::{RuntimeConfig, SandboxSpec, Status};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

/// A config whose ranges and claims are the test's own (a small space it can exhaust).
fn private_ranges(mut cfg: RuntimeConfig, base: u32, ranges: u32) -> RuntimeConfig {
    cfg.userns_base = base;
    cfg.userns_ranges = ranges;
    // inside the data dir: the harness removes it with everything else
    cfg.userns_claims_dir = cfg.data_dir.join("userns-claims");
    let _ = std::fs::remove_dir_all(&cfg.userns_claims_dir);
    cfg
}

fn range_of(rt: &soulbox_runtime::Runtime, id: &str) -> IdRange {
    IdRange::load(&rt.sandbox_dir(id)).expect("userns.json")
}

/// Host pids in the sandbox's cgroups.
fn sandbox_pids(cfg: &RuntimeConfig, id: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = soulbox_runtime::cgroup::dirs(&cfg.cgroup_parent(), id)
        .into_iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// (real, effective, saved, fs) uids of a host pid.
fn host_uids(pid: u32) -> Option<Vec<u32>> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = st.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    Some(line.split_whitespace().filter_map(|v| v.parse().ok()).collect())
}

fn claim_file(cfg: &RuntimeConfig, r: IdRange) -> PathBuf {
    cfg.userns_claims_dir.join(format!("{:08x}", r.host_base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_is_an_unprivileged_host_uid_of_its_own_range() {
    root_or_skip!("root_inside_is_an_unprivileged_host_uid_of_its_own_range");
    let h = harness(221).await;
    let rt = h.rt();
    assert!(rt.user_namespaces(), "user namespaces are unavailable on this host (see the log)");
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let b = rt.create(SandboxSpec::new("test")).await.unwrap();
    let mut bases = Vec::new();
    for s in [&a, &b] {
        let range = range_of(rt, &s.id);
        assert!(range.host_base >= h.cfg.userns_base && range.size == RANGE_SIZE, "{range:?}");
        // inside: uid 0 is the range's first id, not host 0, and nothing else is mapped
        let (code, out) = sh(rt, &s.id, "cat /proc/self/uid_map /proc/self/gid_map").await;
        assert_eq!(code, 0, "{out}");
        let maps: Vec<Vec<u64>> =
            out.lines().map(|l| l.split_whitespace().filter_map(|v| v.parse().ok()).collect()).collect();
        assert_eq!(maps, vec![vec![0, range.host_base as u64, RANGE_SIZE as u64]; 2], "uid_map/gid_map: {out}");
        // the default user's processes too, through envd
        let (code, out, _) = run_user(rt, s, "id -u; sleep 30 >/dev/null 2>&1 </dev/null & echo started").await;
        assert_eq!((code, out.as_str()), (0, "1000\nstarted\n"));
        // on the host every process of the sandbox runs as an id of its range: envd (root inside)
        // as the range's first id, the user's sleep as base + 1000
        let pids = sandbox_pids(&h.cfg, &s.id);
        assert!(pids.len() >= 2, "{pids:?}");
        let init: u32 =
            std::fs::read_to_string(rt.sandbox_dir(&s.id).join("init.pid")).unwrap().trim().parse().unwrap();
        assert_eq!(host_uids(init), Some(vec![range.host_base; 4]), "envd's host uids");
        let mut seen_user = false;
        for pid in pids {
            let Some(uids) = host_uids(pid) else { continue };
            assert!(uids.iter().all(|u| range.contains(*u)), "pid {pid} runs as host uids {uids:?}, outside {range:?}");
            seen_user |= uids[1] == range.host_base + 1000;
        }
        assert!(seen_user, "no process of the sandbox runs as host uid base+1000");
        bases.push(range.host_base);
    }
    assert_ne!(bases[0], bases[1], "two sandboxes share a range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_stored_unshifted_and_survive_stop_start_and_snapshot() {
    root_or_skip!("owners_are_stored_unshifted_and_survive_stop_start_and_snapshot");
    let h = harness(222).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let (code, out) = sh(rt, &a.id, "echo r > /root-file").await;
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run_user(rt, &a, "echo u > /home/user/user-file").await;
    assert_eq!(code, 0, "{err}");
    let stat = "stat -c '%n %u:%g %U:%G' /root-file /home/user/user-file";
    let want = "/root-file 0:0 root:root\n/home/user/user-file 1000:1000 user:user\n";
    let owners = |p: PathBuf| {
        std::fs::metadata(&p).map(|m| (m.uid(), m.gid())).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let dir = rt.sandbox_dir(&a.id);
    let check_upper = |dir: &Path| {
        let upper = soulbox_runtime::rootfs::paths(dir).upper;
        assert_eq!(owners(upper.join("root-file")), (0, 0), "root's file on disk");
        assert_eq!(owners(upper.join("home/user/user-file")), (1000, 1000), "user's file on disk");
    };
    let (_, out) = sh(rt, &a.id, stat).await;
    assert_eq!(out, want);
    check_upper(&dir);
    // the host's view of the merged rootfs is shifted
    let base = range_of(rt, &a.id).host_base;
    assert_eq!(owners(soulbox_runtime::rootfs::paths(&dir).mountpoint.join("root-file")), (base, base));

    rt.stop(&a.id).await.unwrap();
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Stopped);
    let a = rt.start(&a.id).await.unwrap();
    let (_, out) = sh(rt, &a.id, stat).await;
    assert_eq!(out, want, "after stop/start");
    check_upper(&dir);

    let name = format!("usnap-{}", std::process::id());
    let meta = rt.snapshot(&a.id, &name).await.unwrap();
    let layer = rt.store().layer_dir(meta.layers.last().unwrap());
    assert_eq!(owners(layer.join("root-file")), (0, 0), "snapshot layer");
    assert_eq!(owners(layer.join("home/user/user-file")), (1000, 1000), "snapshot layer");
    let b = rt.create(SandboxSpec::new(&name)).await.unwrap();
    assert_ne!(range_of(rt, &b.id), range_of(rt, &a.id));
    let (_, out) = sh(rt, &b.id, stat).await;
    assert_eq!(out, want, "in a sandbox of the snapshot");
    let (code, _, err) = run_user(rt, &b, "echo more >> /home/user/user-file && cat /home/user/user-file").await;
    assert_eq!(code, 0, "user cannot write its own file in the snapshot: {err}");
    let _ = std::fs::remove_dir_all(h.cfg.store_dir().join("templates").join(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_is_held_while_a_sandbox_dir_names_it_and_released_on_delete() {
    root_or_skip!("a_range_is_held_while_a_sandbox_dir_names_it_and_released_on_delete");
    let base = 0x6000_0000;
    let h = harness_with(private_ranges(config(223), base, 2)).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let ra = range_of(rt, &a.id);
    rt.stop(&a.id).await.unwrap();
    assert_eq!(range_of(rt, &a.id), ra, "stop keeps the range");
    assert!(claim_file(&h.cfg, ra).exists());
    let b = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert_ne!(range_of(rt, &b.id), ra, "a stopped sandbox's range was handed out");
    // both ranges are held: a third create fails cleanly
    let err = rt.create(SandboxSpec::new("test")).await.unwrap_err();
    assert!(err.to_string().contains("id ranges are in use"), "{err}");
    assert_eq!(std::fs::read_dir(h.cfg.sandboxes_dir()).unwrap().count(), 2, "the failed create left its directory");
    // another instance on the same host (same claims) cannot take them either
    let mut cfg2 = config(224);
    (cfg2.userns_base, cfg2.userns_ranges, cfg2.userns_claims_dir) = (base, 2, h.cfg.userns_claims_dir.clone());
    let h2 = harness_with(cfg2).await;
    assert!(
        h2.rt().create(SandboxSpec::new("test")).await.is_err(),
        "a range named by another instance's sandbox was handed out"
    );
    // the stopped sandbox starts with its range
    let a2 = rt.start(&a.id).await.unwrap();
    assert_eq!(range_of(rt, &a2.id), ra);
    // delete: the range, its claim, the pinned namespaces and mounts go
    rt.delete(&a.id).await.unwrap();
    assert!(!claim_file(&h.cfg, ra).exists(), "claim left after delete");
    let left = leftovers(&h.cfg).await;
    assert!(left.iter().all(|l| l.contains(&b.id[..8])), "after deleting a: {left:?}");
    let c = h2.rt().create(SandboxSpec::new("test")).await.expect("the freed range is usable by the other instance");
    assert_eq!(range_of(h2.rt(), &c.id), ra);
    let (_, out) = sh(h2.rt(), &c.id, "cat /proc/self/uid_map").await;
    assert_eq!(out.split_whitespace().nth(1), Some(ra.host_base.to_string().as_str()));
    h2.rt().destroy_all().await.unwrap();
    rt.destroy_all().await.unwrap();
    let claims: Vec<_> = std::fs::read_dir(&h.cfg.userns_claims_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(claims.is_empty(), "claims left: {claims:?}");
    assert!(leftovers(&h.cfg).await.is_empty() && leftovers(&h2.cfg).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_keeps_the_ranges_of_running_and_stopped_sandboxes() {
    root_or_skip!("reconcile_keeps_the_ranges_of_running_and_stopped_sandboxes");
    let cfg = private_ranges(config(225), 0x6100_0000, 4);
    let mut h = harness_with(cfg.clone()).await;
    let a = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    let b = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    h.rt().stop(&b.id).await.unwrap();
    let (ra, rb) = (range_of(h.rt(), &a.id), range_of(h.rt(), &b.id));
    drop(h.rt.take()); // crash
    // as after a reboot (claims on tmpfs): the host-wide claims are gone
    for r in [ra, rb] {
        std::fs::remove_file(claim_file(&cfg, r)).unwrap();
    }
    h.rt = Some(soulbox_runtime::Runtime::open(cfg.clone()).await.unwrap());
    let rt = h.rt();
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Running);
    for (r, s) in [(ra, &a), (rb, &b)] {
        let named = std::fs::read_to_string(claim_file(&cfg, r)).expect("claim re-made");
        assert_eq!(named.trim(), rt.sandbox_dir(&s.id).to_string_lossy());
    }
    let c = rt.create(SandboxSpec::new("test")).await.unwrap();
    let rc = range_of(rt, &c.id);
    assert!(rc != ra && rc != rb, "{rc:?} was handed out twice");
    // the re-adopted sandbox still works (runc exec joins its user namespace, then its netns)
    let (code, out) = sh(rt, &a.id, "cat /proc/self/uid_map").await;
    assert_eq!(code, 0, "{out}");
    let b2 = rt.start(&b.id).await.unwrap();
    assert_eq!(range_of(rt, &b2.id), rb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_users_cannot_reach_files_planted_in_a_sandbox() {
    root_or_skip!("host_users_cannot_reach_files_planted_in_a_sandbox");
    use std::os::unix::process::CommandExt;
    let h = harness(226).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    // root inside makes a setuid-root shell: on the host's disk it is one (stored unshifted)
    let (code, out) = sh(rt, &a.id, "cp /bin/busybox /tmp/sb && chmod 4755 /tmp/sb").await;
    assert_eq!(code, 0, "{out}");
    let dir = rt.sandbox_dir(&a.id);
    let planted = soulbox_runtime::rootfs::paths(&dir).upper.join("tmp/sb");
    let md = std::fs::metadata(&planted).unwrap();
    assert!(md.uid() == 0 && md.mode() & 0o4000 != 0, "{:o} {}", md.mode(), md.uid());
    let merged = soulbox_runtime::rootfs::paths(&dir).mountpoint.join("tmp/sb");
    let layer = rt.store().layer_dir(&rt.store().get("test").unwrap().layers[0]).join("bin/busybox");
    for path in [&planted, &merged, &layer] {
        // SAFETY of the attempt: if the defence failed this runs our own busybox's `id -u`.
        let res = std::process::Command::new(path).args(["id", "-u"]).uid(65534).gid(65534).output();
        match res {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{}: {e}", path.display()),
            Ok(o) => panic!(
                "host user nobody ran {}: {} {}",
                path.display(),
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }
    }
    // the modes that make it so
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&h.cfg.data_dir), 0o711);
    assert_eq!(mode(&h.cfg.sandboxes_dir()), 0o711);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), range_of(rt, &a.id).host_base, "sandbox dir owner");
    assert_eq!(mode(&h.cfg.store_dir().join("layers")), 0o700);
    for f in ["sandbox.json", "net.json", "userns.json", "config.json"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_in_the_base_template_is_root_of_the_sandbox_only() {
    root_or_skip!("sudo_in_the_base_template_is_root_of_the_sandbox_only");
    let h = harness(227).await;
    h.base().await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("base")).await.unwrap();
    let (code, out, err) = run_user(rt, &a, "sudo -n id -u && sudo -n sh -c 'echo s > /etc/made-by-sudo; sleep 30 >/dev/null 2>&1 </dev/null &' && stat -c %U /etc/made-by-sudo").await;
    assert_eq!((code, out.as_str()), (0, "0\nroot\n"), "{err}");
    let upper = soulbox_runtime::rootfs::paths(&rt.sandbox_dir(&a.id)).upper;
    assert_eq!(std::fs::metadata(upper.join("etc/made-by-sudo")).unwrap().uid(), 0);
    let range = range_of(rt, &a.id);
    for pid in sandbox_pids(&h.cfg, &a.id) {
        if let Some(uids) = host_uids(pid) {
            assert!(uids.iter().all(|u| range.contains(*u)), "pid {pid}: {uids:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_namespaces_root_is_host_root() {
    root_or_skip!("without_user_namespaces_root_is_host_root");
    let mut cfg = config(228);
    cfg.user_namespaces = false;
    let h = harness_with(cfg).await;
    let rt = h.rt();
    assert!(!rt.user_namespaces());
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let (_, out) = sh(rt, &a.id, "cat /proc/self/uid_map").await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
    assert!(IdRange::load(&rt.sandbox_dir(&a.id)).is_none());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&h.cfg.data_dir), 0o700);
    assert_eq!(mode(&rt.sandbox_dir(&a.id)), 0o700);
    let (code, _, _) = run_user(rt, &a, "id -u").await;
    assert_eq!(code, 0);
}

/// Unmounts (lazily) and removes a directory when dropped.
struct MountGuard(PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = soulbox_runtime::rootfs::umount_path(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idmapped_layers_the_runtime_falls_back_to_one_shared_range() {
    root_or_skip!("without_idmapped_layers_the_runtime_falls_back_to_one_shared_range");
    // ramfs has no idmapped mounts: a template store there cannot be mounted through idmapped layers
    let store = PathBuf::from("/var/tmp/soulbox-test/t229-ramfs-store");
    std::fs::create_dir_all(&store).unwrap();
    let _unmount = MountGuard(store.clone());
    rustix::mount::mount("ramfs", &store, "ramfs", rustix::mount::MountFlags::empty(), None::<&std::ffi::CStr>)
        .unwrap();
    let mut cfg = private_ranges(config(229), 0x6600_0000, 2);
    cfg.store_dir = Some(store.clone());
    // forced per-sandbox: refused at open, naming what is missing
    let mut forced = cfg.clone();
    forced.userns_mode = soulbox_runtime::userns::UsernsMode::PerSandbox;
    let err =
        soulbox_runtime::Runtime::open(forced).await.err().expect("per-sandbox mode opened without idmapped layers");
    assert!(err.to_string().contains("idmapped"), "{err}");
    let h = harness_with(cfg).await;
    let rt = h.rt();
    assert_eq!(
        rt.userns_mode(),
        Some(soulbox_runtime::userns::UsernsMode::Shared),
        "the probe accepted a store without idmapped mounts, or gave up user namespaces"
    );
    assert!(rt.store().root().starts_with(&store) && rt.store().id_shift() == Some(0x6600_0000));
    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let (_, out) = sh(rt, &a.id, "cat /proc/self/uid_map").await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "1711276032", "65536"]);
    assert_eq!(std::fs::metadata(&h.cfg.data_dir).unwrap().mode() & 0o777, 0o711);
}
