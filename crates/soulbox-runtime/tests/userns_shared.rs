//! The shared user namespace mode (issue 11, item 1's fallback where overlayfs on idmapped layers
//! is missing): every sandbox in one unprivileged range R, files stored shifted into R in a store
//! of their own, layers still shared. Forced with `userns_mode = shared` (this kernel has idmapped
//! layers). Root only (skips with a message otherwise).
mod common;
use common::*;
use soulbox_runtime::userns::{IdRange, RANGE_SIZE, UsernsMode};
use soulbox_runtime::{RuntimeConfig, SandboxSpec, Status};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

/// A shared-mode config on the test's own range and claims.
fn shared(n: u8, base: u32) -> RuntimeConfig {
    let mut cfg = config(n);
    cfg.userns_mode = UsernsMode::Shared;
    cfg.userns_base = base;
    cfg.userns_ranges = 2;
    cfg.userns_claims_dir = cfg.data_dir.join("userns-claims");
    let _ = std::fs::remove_dir_all(&cfg.userns_claims_dir);
    cfg
}

fn range_of(rt: &soulbox_runtime::Runtime, id: &str) -> IdRange {
    IdRange::load(&rt.sandbox_dir(id)).expect("userns.json")
}

fn owners(p: &Path) -> (u32, u32) {
    std::fs::symlink_metadata(p).map(|m| (m.uid(), m.gid())).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `lowerdir=` of the overlay mounted at `mountpoint` (from the host's mount table).
fn lowerdirs(mountpoint: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mountpoint.to_string_lossy().into_owned();
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(mp.as_str()) && l.contains(" - overlay "))
        .unwrap_or_else(|| panic!("no overlay at {mp}"));
    let opts = line.rsplit(' ').next().unwrap();
    let lower = opts.split(',').find_map(|o| o.strip_prefix("lowerdir=")).unwrap();
    lower.split(':').map(PathBuf::from).collect()
}

/// Host uids (real, effective, saved, fs) of every process in the sandbox's cgroups.
fn sandbox_uids(cfg: &RuntimeConfig, id: &str) -> Vec<Vec<u32>> {
    soulbox_runtime::cgroup::dirs(&cfg.cgroup_parent(), id)
        .into_iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| {
            let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = st.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(line.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        })
        .collect()
}

/// Upload `body` to `path` through envd's `/files` as `user`.
async fn upload_as(info: &soulbox_runtime::SandboxInfo, user: &str, path: &str, body: &[u8]) {
    let addr = info.envd_addr.clone().expect("envd address");
    let (name, secret) = secret_header(info);
    let url = format!("/files?path={path}&username={user}");
    let headers = [("Content-Type", "application/octet-stream"), (name, secret)];
    let res = http_with(&addr, "POST", &url, &headers, body, Duration::from_secs(30)).await;
    let (status, answer) = res.expect("envd answers");
    assert_eq!(status, 200, "upload: {}", String::from_utf8_lossy(&answer));
}

/// Close `h`'s runtime (as a crash would) and open `cfg` on it instead. Should that fail, the harness gets
/// its own runtime back first, so that its drop still removes everything.
async fn reopen(h: &mut Harness, cfg: RuntimeConfig) {
    drop(h.rt.take());
    match open_after_drop(cfg).await {
        Ok(rt) => h.rt = Some(rt),
        Err(e) => {
            h.rt = open_after_drop(h.cfg.clone()).await.ok();
            panic!("reopening the runtime: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_range_files_stored_shifted_layers_shared() {
    root_or_skip!("one_shared_range_files_stored_shifted_layers_shared");
    let base = 0x6200_0000;
    let h = harness_with(shared(230, base)).await;
    let rt = h.rt();
    assert_eq!(rt.userns_mode(), Some(UsernsMode::Shared));
    let store_root = soulbox_runtime::Store::shifted_root(&h.cfg.store_dir(), base);
    assert_eq!(rt.store().root(), store_root, "shared mode has a store of its own");
    // the test template's layer: shifted on disk (root's files B, user's home B+1000)
    let test_layer = rt.store().layer_dir(&rt.store().get("test").unwrap().layers[0]);
    assert_eq!(owners(&test_layer.join("bin/busybox")), (base, base));
    assert_eq!(owners(&test_layer.join("home/user")), (base + 1000, base + 1000));

    let a = rt.create(SandboxSpec::new("test")).await.unwrap();
    let b = rt.create(SandboxSpec::new("test")).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(range_of(rt, &s.id), IdRange::shared_at(base));
        let (code, out) = sh(rt, &s.id, "cat /proc/self/uid_map /proc/self/gid_map").await;
        assert_eq!(code, 0, "{out}");
        let maps: Vec<Vec<u64>> =
            out.lines().map(|l| l.split_whitespace().filter_map(|v| v.parse().ok()).collect()).collect();
        assert_eq!(maps, vec![vec![0, base as u64, RANGE_SIZE as u64]; 2], "uid_map/gid_map: {out}");
        // one layer dir, used by both sandboxes (no per-sandbox copy)
        let lower = lowerdirs(&soulbox_runtime::rootfs::paths(&rt.sandbox_dir(&s.id)).mountpoint);
        assert_eq!(lower, vec![test_layer.clone()], "{}'s lower layers", s.id);
        // the sandbox dir is the range root's, as in per-sandbox mode
        assert_eq!(owners(&rt.sandbox_dir(&s.id)), (base, base));
    }

    // files made inside are stored shifted, and look as usual inside
    let (code, out) = sh(rt, &a.id, "echo r > /root-file").await;
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run_user(rt, &a, "echo u > /home/user/user-file; sleep 30 >/dev/null 2>&1 </dev/null &").await;
    assert_eq!(code, 0, "{err}");
    upload_as(&a, "user", "/home/user/uploaded", b"up").await;
    upload_as(&a, "root", "/root/uploaded", b"up").await;
    let stat = "stat -c '%n %u:%g %U:%G' / /root-file /home/user/user-file /home/user/uploaded /root/uploaded";
    let want = "/ 0:0 root:root\n/root-file 0:0 root:root\n/home/user/user-file 1000:1000 user:user\n\
                /home/user/uploaded 1000:1000 user:user\n/root/uploaded 0:0 root:root\n";
    let dir = rt.sandbox_dir(&a.id);
    let check_upper = |dir: &Path| {
        let upper = soulbox_runtime::rootfs::paths(dir).upper;
        assert_eq!(owners(&upper), (base, base), "the writable layer's root");
        assert_eq!(owners(&upper.join("root-file")), (base, base), "root's file on disk");
        assert_eq!(owners(&upper.join("home/user/user-file")), (base + 1000, base + 1000), "user's file on disk");
        assert_eq!(owners(&upper.join("home/user/uploaded")), (base + 1000, base + 1000), "upload as user");
        assert_eq!(owners(&upper.join("root/uploaded")), (base, base), "upload as root");
    };
    let (_, out) = sh(rt, &a.id, stat).await;
    assert_eq!(out, want);
    check_upper(&dir);
    // every process runs as an id of R: envd as B, the user's sleep as B + 1000
    let uids = sandbox_uids(&h.cfg, &a.id);
    let range = IdRange::shared_at(base);
    assert!(uids.iter().flatten().all(|u| range.contains(*u)), "{uids:?}");
    assert!(uids.iter().any(|u| u[1] == base + 1000), "no process runs as B+1000: {uids:?}");
    assert!(uids.iter().any(|u| u[1] == base), "no process runs as B: {uids:?}");

    // pause/resume, stop/start keep everything
    rt.pause(&a.id).await.unwrap();
    rt.resume(&a.id).await.unwrap();
    rt.stop(&a.id).await.unwrap();
    assert_eq!(range_of(rt, &a.id), range, "stop keeps the record");
    let a = rt.start(&a.id).await.unwrap();
    let (_, out) = sh(rt, &a.id, stat).await;
    assert_eq!(out, want, "after stop/start");
    check_upper(&dir);

    // snapshot: the layer is committed as it is (already shifted), and a sandbox of it sees the owners
    let name = format!("ssnap-{}", std::process::id());
    let meta = rt.snapshot(&a.id, &name).await.unwrap();
    let layer = rt.store().layer_dir(meta.layers.last().unwrap());
    assert!(layer.starts_with(&store_root), "{}", layer.display());
    assert_eq!(owners(&layer.join("root-file")), (base, base), "snapshot layer");
    assert_eq!(owners(&layer.join("home/user/user-file")), (base + 1000, base + 1000), "snapshot layer");
    let c = rt.create(SandboxSpec::new(&name)).await.unwrap();
    let (_, out) = sh(rt, &c.id, stat).await;
    assert_eq!(out, want, "in a sandbox of the snapshot");
    let (code, _, err) = run_user(rt, &c, "echo more >> /home/user/user-file && cat /home/user/user-file").await;
    assert_eq!(code, 0, "user cannot write its own file in the snapshot: {err}");
    let _ = std::fs::remove_dir_all(store_root.join("templates").join(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_base_template_is_shifted_and_sudo_works() {
    root_or_skip!("shared_mode_base_template_is_shifted_and_sudo_works");
    let base = 0x6300_0000;
    let h = harness_with(shared(231, base)).await;
    h.base().await;
    let rt = h.rt();
    let layer = rt.store().layer_dir(&rt.store().get("base").unwrap().layers[0]);
    assert!(layer.starts_with(soulbox_runtime::Store::shifted_root(&h.cfg.store_dir(), base)));
    // mmdebstrap's tree, shifted before commit: setuid sudo kept, owned by R's root
    let sudo = std::fs::metadata(layer.join("usr/bin/sudo")).unwrap();
    assert_eq!((sudo.uid(), sudo.gid(), sudo.mode() & 0o7777), (base, base, 0o4755));
    assert_eq!(owners(&layer.join("home/user")), (base + 1000, base + 1000));
    let a = rt.create(SandboxSpec::new("base")).await.unwrap();
    let (code, out, err) = run_user(
        rt,
        &a,
        "sudo -n id -u && sudo -n sh -c 'echo s > /etc/made-by-sudo' && stat -c %U /etc/made-by-sudo /home/user",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "0\nroot\nuser\n"), "{err}");
    let upper = soulbox_runtime::rootfs::paths(&rt.sandbox_dir(&a.id)).upper;
    assert_eq!(owners(&upper.join("etc/made-by-sudo")), (base, base));
    let range = IdRange::shared_at(base);
    assert!(sandbox_uids(&h.cfg, &a.id).iter().flatten().all(|u| range.contains(*u)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_and_sandboxes_of_the_two_modes_are_never_mixed() {
    root_or_skip!("stores_and_sandboxes_of_the_two_modes_are_never_mixed");
    let base = 0x6400_0000;
    let cfg_shared = shared(232, base);
    // a per-sandbox runtime on the same range space and claims
    let mut cfg_per = config(233);
    (cfg_per.userns_mode, cfg_per.userns_base, cfg_per.userns_ranges) = (UsernsMode::PerSandbox, base, 2);
    cfg_per.userns_claims_dir = cfg_shared.userns_claims_dir.clone();

    let mut hs = harness_with(cfg_shared.clone()).await;
    let mut hp = harness_with(cfg_per.clone()).await;
    assert_eq!(hp.rt().userns_mode(), Some(UsernsMode::PerSandbox));
    // two stores, the `test` template built in each: different layers, each stored its way
    assert_ne!(hs.rt().store().root(), hp.rt().store().root());
    let (ls, lp) = (hs.rt().store().get("test").unwrap().layers, hp.rt().store().get("test").unwrap().layers);
    assert_ne!(ls, lp, "one layer in both stores");
    assert!(!hs.rt().store().layer_dir(&lp[0]).exists(), "the per-sandbox layer is in the shared store");
    assert!(!hp.rt().store().layer_dir(&ls[0]).exists(), "the shared layer is in the per-sandbox store");
    assert_eq!(owners(&hp.rt().store().layer_dir(&lp[0]).join("bin/busybox")), (0, 0));

    // the per-sandbox runtime never hands out the shared range to one sandbox
    let p = hp.rt().create(SandboxSpec::new("test")).await.unwrap();
    assert_eq!(range_of(hp.rt(), &p.id), IdRange::at(base + RANGE_SIZE));
    let s = hs.rt().create(SandboxSpec::new("test")).await.unwrap();
    hp.rt().stop(&p.id).await.unwrap();
    hs.rt().stop(&s.id).await.unwrap();

    // swap the modes over the same data dirs (a kernel upgrade, a config change): stopped sandboxes
    // of the other mode are refused with the reason, their records and files untouched
    let mut swapped_shared = cfg_per.clone();
    (swapped_shared.userns_mode, swapped_shared.userns_base) = (UsernsMode::Shared, base + 2 * RANGE_SIZE);
    let mut swapped_per = cfg_shared.clone();
    swapped_per.userns_mode = UsernsMode::PerSandbox;
    let swapped_store = soulbox_runtime::Store::shifted_root(&cfg_per.store_dir(), swapped_shared.userns_base);
    reopen(&mut hp, swapped_shared).await;
    reopen(&mut hs, swapped_per).await;
    for (h, id, how) in [(&hp, &p.id, "stored unshifted"), (&hs, &s.id, "shifted into the shared user namespace range")]
    {
        let before = IdRange::load(&h.rt().sandbox_dir(id));
        let err = h.rt().start(id).await.expect_err("a sandbox of the other mode started").to_string();
        assert!(err.contains(how) && err.contains("userns_mode"), "{err}");
        let err = h.rt().snapshot(id, "never").await.expect_err("snapshot of the other mode").to_string();
        assert!(err.contains(how), "{err}");
        assert_eq!(IdRange::load(&h.rt().sandbox_dir(id)), before, "the record changed");
        assert_eq!(h.rt().info(id).await.unwrap().status, Status::Stopped);
    }
    // back to their own modes: both start, owners as before
    reopen(&mut hs, cfg_shared).await;
    reopen(&mut hp, cfg_per).await;
    for (h, id) in [(&hs, &s.id), (&hp, &p.id)] {
        let info = h.rt().start(id).await.unwrap();
        let (code, _, err) = run_user(h.rt(), &info, "touch /home/user/again && stat -c %U /home/user/again").await;
        assert_eq!(code, 0, "{err}");
    }
    // (the swapped runtime's empty shifted store)
    let _ = std::fs::remove_dir_all(swapped_store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_reconcile_readopts_and_keeps_stopped_sandboxes() {
    root_or_skip!("shared_mode_reconcile_readopts_and_keeps_stopped_sandboxes");
    let base = 0x6500_0000;
    let cfg = shared(234, base);
    let mut h = harness_with(cfg.clone()).await;
    let a = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    let b = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    sh(h.rt(), &b.id, "echo kept > /root/kept").await;
    h.rt().stop(&b.id).await.unwrap();
    drop(h.rt.take()); // crash
    // as after a reboot (claims on tmpfs)
    std::fs::remove_dir_all(&cfg.userns_claims_dir).unwrap();
    h.rt = Some(soulbox_runtime::Runtime::open(cfg.clone()).await.unwrap());
    let rt = h.rt();
    assert_eq!(rt.info(&a.id).await.unwrap().status, Status::Running);
    let claim = std::fs::read_to_string(cfg.userns_claims_dir.join(format!("{base:08x}"))).expect("claim re-made");
    assert!(claim.starts_with("shared\n") && claim.contains(&*cfg.sandboxes_dir().to_string_lossy()), "{claim}");
    let (code, out) = sh(rt, &a.id, "cat /proc/self/uid_map").await;
    assert_eq!((code, out.split_whitespace().nth(1)), (0, Some(base.to_string().as_str())), "{out}");
    let b = rt.start(&b.id).await.unwrap();
    assert_eq!(range_of(rt, &b.id), IdRange::shared_at(base));
    let (code, out) = sh(rt, &b.id, "stat -c '%U %s' /root/kept").await;
    assert_eq!((code, out.as_str()), (0, "root 5\n"));
}
