//! Integration tests of the strict default profile (issue 11): no host file writable from inside, host-side
//! mounts nosuid/nodev, the sandbox log capped on the host, records 0600 (root only; they skip otherwise).
//! Test numbers 61–69 (prefix `tq<n>`, pool 10.77.<n>.0/24).
mod common;
use common::*;
use soulbox_runtime::SandboxSpec;
use std::path::Path;

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

fn image_config(n: u8, pool: usize) -> soulbox_runtime::RuntimeConfig {
    let mut cfg = config(n);
    cfg.disk_backend = soulbox_runtime::disk::DiskBackend::Image;
    cfg.disk_quota = soulbox_runtime::quota::DiskQuotaMode::Required;
    cfg.pool_size = pool;
    cfg
}

/// Regular files below `dir` on the host, not descending into mounts (the sandbox's rootfs and disk), with
/// their allocated sizes.
fn host_files(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, dev: u64, out: &mut Vec<(std::path::PathBuf, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(md) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if md.dev() != dev {
                continue;
            }
            if md.is_dir() {
                walk(&e.path(), dev, out);
            } else if md.is_file() {
                out.push((e.path(), md.blocks() * 512));
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(md) = std::fs::metadata(dir) {
        walk(dir, md.dev(), &mut out);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etc_files_live_in_the_sandbox_and_follow_its_address() {
    root_or_skip!("etc_files_live_in_the_sandbox_and_follow_its_address");
    let mut cfg = image_config(61, 0);
    cfg.dns = vec!["203.0.113.53".parse().unwrap()];
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let spec = SandboxSpec {
        disk_mb: Some(32),
        ..SandboxSpec::new("test")
    };
    let a = rt.create(spec.clone()).await.unwrap();
    let ip = a.ip.unwrap();
    let (_, out) = sh(rt, &a.id, "cat /etc/hostname /etc/resolv.conf /etc/hosts").await;
    assert!(
        out.starts_with(&format!("{}\nnameserver 203.0.113.53\n", a.id)),
        "{out}"
    );
    assert_eq!(
        out.matches(&format!("{ip}\t{}\t", a.id)).count(),
        1,
        "{out}"
    );
    // nothing of the host is mounted at these paths any more
    let (_, out) = sh(
        rt,
        &a.id,
        "grep -E ' /etc/(hosts|hostname|resolv.conf) ' /proc/self/mountinfo; echo end",
    )
    .await;
    assert_eq!(out.trim(), "end", "host files still bound: {out}");

    // the write that once landed 50 MB on the host fills the sandbox's own disk instead
    let (_, out) = sh(
        rt,
        &a.id,
        "dd if=/dev/zero bs=1M count=50 2>&1 >> /etc/hosts; echo rc=$?",
    )
    .await;
    assert!(
        out.contains("No space left on device") && !out.contains("rc=0"),
        "{out}"
    );
    let dir = rt.sandbox_dir(&a.id);
    for (path, bytes) in host_files(&dir) {
        if path.file_name().is_some_and(|n| n == "disk.img") {
            assert!(bytes <= 33 << 20, "{} holds {bytes} bytes", path.display());
        } else {
            assert!(
                bytes < 3 << 20,
                "host file {} grew to {bytes} bytes",
                path.display()
            );
        }
    }
    sh(rt, &a.id, "echo '10.9.9.9 db.internal' > /etc/hosts").await;

    // stop to disk; another sandbox takes the address; start: new address, hosts follows, user lines kept
    rt.stop(&a.id).await.unwrap();
    let b = rt.create(spec).await.unwrap();
    assert_eq!(
        b.ip,
        Some(ip),
        "the pool should hand out the lowest free address"
    );
    let a2 = rt.start(&a.id).await.unwrap();
    let ip2 = a2.ip.unwrap();
    assert_ne!(ip2, ip);
    let (_, out) = sh(rt, &a.id, "cat /etc/hosts").await;
    assert!(
        out.contains(&format!("{ip2}\t{}\t", a.id)) && !out.contains(&format!("{ip}\t")),
        "{out}"
    );
    assert!(
        out.contains("10.9.9.9 db.internal") && out.matches("soulbox: this sandbox").count() == 1,
        "{out}"
    );
    let (_, out) = sh(rt, &b.id, "cat /etc/hostname").await;
    assert_eq!(out.trim(), b.id);
}
