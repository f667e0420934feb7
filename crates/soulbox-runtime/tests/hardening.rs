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
    let spec = SandboxSpec { disk_mb: Some(32), ..SandboxSpec::new("test") };
    let a = rt.create(spec.clone()).await.unwrap();
    let ip = a.ip.unwrap();
    let (_, out) = sh(rt, &a.id, "cat /etc/hostname /etc/resolv.conf /etc/hosts").await;
    assert!(out.starts_with(&format!("{}\nnameserver 203.0.113.53\n", a.id)), "{out}");
    assert_eq!(out.matches(&format!("{ip}\t{}\t", a.id)).count(), 1, "{out}");
    // nothing of the host is mounted at these paths any more
    let (_, out) = sh(rt, &a.id, "grep -E ' /etc/(hosts|hostname|resolv.conf) ' /proc/self/mountinfo; echo end").await;
    assert_eq!(out.trim(), "end", "host files still bound: {out}");

    // the write that once landed 50 MB on the host fills the sandbox's own disk instead
    let (_, out) = sh(rt, &a.id, "dd if=/dev/zero bs=1M count=50 2>&1 >> /etc/hosts; echo rc=$?").await;
    assert!(out.contains("No space left on device") && !out.contains("rc=0"), "{out}");
    let dir = rt.sandbox_dir(&a.id);
    for (path, bytes) in host_files(&dir) {
        if path.file_name().is_some_and(|n| n == "disk.img") {
            assert!(bytes <= 33 << 20, "{} holds {bytes} bytes", path.display());
        } else {
            assert!(bytes < 3 << 20, "host file {} grew to {bytes} bytes", path.display());
        }
    }
    // records and the disk image are the runtime's alone (they hold the access token, the sandbox's files)
    for name in ["sandbox.json", "net.json", "config.json", "disk.img", "sandbox.log", "sandbox.log.fifo"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::symlink_metadata(dir.join(name)).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600), "{name}");
    }
    sh(rt, &a.id, "echo '10.9.9.9 db.internal' > /etc/hosts").await;

    // stop to disk; another sandbox is created meanwhile; start: /etc/hosts names the address the sandbox has now
    // (a new one where the pool hands a stopped sandbox's address out again, the same where it stays reserved)
    // and keeps the user's line
    rt.stop(&a.id).await.unwrap();
    let b = rt.create(spec).await.unwrap();
    let a2 = rt.start(&a.id).await.unwrap();
    let ip2 = a2.ip.unwrap();
    eprintln!("address before the stop {ip}, after the start {ip2}");
    let (_, out) = sh(rt, &a.id, "cat /etc/hosts").await;
    assert!(out.contains(&format!("{ip2}\t{}\t", a.id)), "{out}");
    if ip2 != ip {
        assert!(!out.contains(&format!("{ip}\t")), "{out}");
    }
    assert!(out.contains("10.9.9.9 db.internal") && out.matches("soulbox: this sandbox").count() == 1, "{out}");
    let (_, out) = sh(rt, &b.id, "cat /etc/hostname").await;
    assert_eq!(out.trim(), b.id);
}

/// Polls `f` (every 50 ms, up to `secs`) until it returns Some.
async fn eventually<T>(secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    for _ in 0..secs * 20 {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_log_is_capped_on_the_host_and_drained_again_after_a_restart() {
    root_or_skip!("sandbox_log_is_capped_on_the_host_and_drained_again_after_a_restart");
    let mut cfg = config(62);
    cfg.sandbox_log_max_bytes = 64 * 1024;
    cfg.sandbox_log_bytes_per_sec = 1 << 30;
    let mut h = harness_with(cfg).await;
    let a = h.rt().create(SandboxSpec::new("test")).await.unwrap();
    let listening = eventually(10, async || {
        let lines = h.rt().logs(&a.id, 0, 100).await.unwrap();
        lines.iter().any(|l| l.line.contains("envd listening")).then_some(lines)
    })
    .await
    .expect("envd's first line in the log");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(listening.iter().all(|l| (now - 60_000..=now).contains(&l.unix_ms)), "{listening:?}");
    // start/limit: nothing from the future, at most `limit`
    assert!(h.rt().logs(&a.id, now + 60_000, 100).await.unwrap().is_empty());
    assert!(h.rt().logs(&a.id, 0, 1).await.unwrap().len() == 1);

    // 20 MB into envd's stdout/stderr — through a second writer on the FIFO, as envd itself would write them (root
    // inside may not reach envd's descriptors at all): the host keeps at most twice the cap
    let dir = h.rt().sandbox_dir(&a.id);
    let fifo = dir.join(soulbox_runtime::sandbox_log::FIFO_FILE);
    let flood = fifo.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(&flood).unwrap();
        let line = [b"0123456789abcdef".repeat(4).as_slice(), b"\n"].concat();
        for _ in 0..(20_000_000 / line.len()) {
            w.write_all(&line).unwrap();
        }
        w.write_all(b"flood-done\n").unwrap();
    })
    .await
    .unwrap();
    // once the last line is in the log, the drainer is done with the flood (no rotation in flight)
    let done = eventually(10, async || {
        let lines = h.rt().logs(&a.id, 0, 100_000).await.unwrap();
        lines.iter().any(|l| l.line == "flood-done").then_some(())
    })
    .await;
    assert!(done.is_some(), "the flood's last line never reached the log");
    // (the disk image is the sandbox's own disk, limited by its size)
    let total: u64 = host_files(&dir).iter().filter(|(p, _)| !p.ends_with("disk.img")).map(|(_, b)| b).sum();
    assert!(total < 512 * 1024, "the sandbox dir holds {total} bytes: {:?}", host_files(&dir));
    for name in [soulbox_runtime::sandbox_log::LOG_FILE, soulbox_runtime::sandbox_log::ROTATED_FILE] {
        let len = std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 64 * 1024, "{name}: {len} bytes");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
    }
    assert!(health(&a, std::time::Duration::from_secs(2)).await.is_some(), "envd stopped answering");

    // the runtime restarts ("crash" without cleanup): the re-adopted sandbox's log is drained again
    drop(h.rt.take());
    h.rt = Some(open_after_drop(h.cfg.clone()).await.unwrap());
    {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(b"marker-after-restart\n").unwrap();
    }
    let found = eventually(10, async || {
        let lines = h.rt().logs(&a.id, 0, 100_000).await.unwrap();
        lines.iter().any(|l| l.line == "marker-after-restart").then_some(())
    })
    .await;
    assert!(found.is_some(), "a line written after the restart never reached the log");
    assert!(matches!(h.rt().logs("nosuchsandbox", 0, 10).await, Err(soulbox_runtime::Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_side_mounts_are_nosuid_nodev_and_setuid_still_works_inside() {
    root_or_skip!("host_side_mounts_are_nosuid_nodev_and_setuid_still_works_inside");
    use rustix::fs::StatVfsMountFlags as F;
    let h = harness_with(image_config(63, 0)).await;
    h.base().await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec { disk_mb: Some(256), ..SandboxSpec::new("base") }).await.unwrap();
    let dir = rt.sandbox_dir(&a.id);
    let flags = |p: &Path| rustix::fs::statvfs(p).unwrap().f_flag;
    let disk = flags(&soulbox_runtime::disk_image::mount_dir(&dir));
    assert!(disk.contains(F::NOSUID | F::NODEV), "the sandbox's disk is mounted {disk:?} on the host");
    let root = flags(&dir.join("rootfs"));
    assert!(root.contains(F::NODEV), "the overlay is mounted {root:?} on the host");
    // A setuid binary written into the sandbox's own disk (a copy-up into the nosuid image) still works inside:
    // the sandbox executes it through the overlay, whose flags are the ones that count.
    let (code, out) =
        sh(rt, &a.id, "cp -p /usr/bin/sudo /usr/local/bin/sudo-copy && chmod 4755 /usr/local/bin/sudo-copy && echo ok")
            .await;
    assert_eq!((code, out.trim()), (0, "ok"));
    let (code, out, err) = run_user(rt, &a, "sudo -n id -u; /usr/local/bin/sudo-copy -n id -u").await;
    assert_eq!((code, out.as_str()), (0, "0\n0\n"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_inode_exhaustion_stay_inside_the_sandbox() {
    root_or_skip!("disk_and_inode_exhaustion_stay_inside_the_sandbox");
    let h = harness_with(image_config(64, 0)).await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec { disk_mb: Some(32), ..SandboxSpec::new("test") }).await.unwrap();
    let b = rt.create(SandboxSpec { disk_mb: Some(32), ..SandboxSpec::new("test") }).await.unwrap();
    // every inode of its disk: creating files stops with ENOSPC inside
    let (_, out) = sh(rt, &a.id, "mkdir /var/many; i=0; while touch /var/many/f$i 2>/dev/null; do i=$((i+1)); done; echo files=$i; touch /var/one 2>&1").await;
    let files: u64 =
        out.split("files=").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!((1000..4096).contains(&files) && out.contains("No space left on device"), "{out}");
    // then every block
    let (_, out) = sh(rt, &a.id, "rm -rf /var/many; dd if=/dev/zero of=/var/big bs=1M count=64 2>&1; echo rc=$?").await;
    assert!(out.contains("No space left on device") && !out.contains("rc=0"), "{out}");
    // the sandbox's agent, its neighbour and the host are unaffected
    assert!(health(&a, std::time::Duration::from_secs(2)).await.is_some(), "envd of the full sandbox");
    let (code, out) = sh(rt, &b.id, "mkdir /var/many && for i in 1 2 3 4 5 6 7 8 9 10; do touch /var/many/f$i; done && dd if=/dev/zero of=/var/big bs=1M count=8 2>&1; echo rc=$?").await;
    assert!(code == 0 && out.contains("rc=0"), "the neighbour: {out}");
    let probe = h.cfg.data_dir.join("host-probe");
    std::fs::write(&probe, vec![1u8; 1 << 20]).expect("the host's filesystem has room");
    std::fs::remove_file(&probe).unwrap();
}

/// A command through envd's process API as `user` (Basic auth names the user, as the SDKs do): what a user's
/// or root's command goes through, with envd's per-user no_new_privs. Returns (exit code, stdout + stderr).
async fn envd_as(info: &soulbox_runtime::SandboxInfo, user: &str, cmd: &str, timeout_s: u64) -> (i64, String) {
    let ip = info.ip.unwrap();
    let (secret_name, secret) = secret_header(info);
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::to_vec(&serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-lc", cmd]}})).unwrap();
    let mut envelope = vec![0u8];
    envelope.extend_from_slice(&(body.len() as u32).to_be_bytes());
    envelope.extend_from_slice(&body);
    let head = format!(
        "POST /process.Process/Start HTTP/1.1\r\nHost: {ip}\r\nContent-Type: application/connect+json\r\nAuthorization: Basic {}\r\n{secret_name}: {secret}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        b64.encode(format!("{user}:")),
        envelope.len()
    );
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect((ip, 49983)).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&envelope).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw =
        tokio::time::timeout(std::time::Duration::from_secs(timeout_s), exchange).await.expect("command timed out");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("http response") + 4;
    let (headers, mut body) = (String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase(), raw[split..].to_vec());
    if headers.contains("transfer-encoding: chunked") {
        let (mut out, mut i) = (Vec::new(), 0);
        while let Some(p) = body[i..].windows(2).position(|w| w == b"\r\n") {
            let len = usize::from_str_radix(String::from_utf8_lossy(&body[i..i + p]).trim(), 16).unwrap();
            i += p + 2;
            if len == 0 {
                break;
            }
            out.extend_from_slice(&body[i..i + len]);
            i += len + 2;
        }
        body = out;
    }
    let (mut out, mut code, mut i) = (Vec::new(), -1i64, 0);
    while i + 5 <= body.len() {
        let len = u32::from_be_bytes(body[i + 1..i + 5].try_into().unwrap()) as usize;
        let msg: serde_json::Value = serde_json::from_slice(&body[i + 5..i + 5 + len]).unwrap_or_default();
        i += 5 + len;
        let ev = &msg["event"];
        for stream in ["stdout", "stderr"] {
            if let Some(s) = ev["data"][stream].as_str() {
                out.extend(b64.decode(s).unwrap_or_default());
            }
        }
        if ev.get("end").is_some() {
            code = ev["end"]["exitCode"].as_i64().unwrap_or(0);
        }
    }
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// What users run must keep working under the profile: apt/dpkg (as root, with no_new_privs), ping, sudo, su,
/// gcc, git, python + pip, node + npm. Needs the Debian mirror (package installs, like the base template).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_tools_work_under_the_profile() {
    root_or_skip!("everyday_tools_work_under_the_profile");
    let mut cfg = image_config(65, 0);
    cfg.dns = soulbox_runtime::RuntimeConfig::new("/").dns; // the host's resolvers, for apt
    let h = harness_with(cfg).await;
    h.base().await;
    let rt = h.rt();
    let a = rt.create(SandboxSpec::new("base")).await.unwrap();
    let install = "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
        apt-get install -y -qq --no-install-recommends iputils-ping gcc libc6-dev nodejs npm >/tmp/apt.log 2>&1; \
        rc=$?; tail -5 /tmp/apt.log; echo apt-rc=$rc";
    let (_, out) = envd_as(&a, "root", install, 900).await;
    assert!(out.contains("apt-rc=0"), "apt-get as root: {out}");
    let (code, out) = envd_as(&a, "root", "sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status", 30).await;
    assert_eq!((code, out.trim()), (0, "1"), "root's commands run with no_new_privs");
    let script = r#"set -e
        cd /tmp
        ping -c1 -W5 127.0.0.1 >/dev/null && echo ping-ok
        sudo -n id -u
        su -s /bin/sh root -c 'echo su-ok $(id -u)'
        printf '#include <stdio.h>\nint main(void){printf("gcc-ok\\n");return 0;}\n' > hello.c && gcc -o hello hello.c && ./hello
        git init -q repo && cd repo && git -c user.email=u@x -c user.name=u commit -q --allow-empty -m x && echo git-ok && cd ..
        mkdir -p pypkg && printf 'from setuptools import setup\nsetup(name="sbprobe", version="1.0", py_modules=["sbprobe"])\n' > pypkg/setup.py
        echo 'X = 42' > pypkg/sbprobe.py
        python3 -m pip install -q --user --break-system-packages --no-index --no-build-isolation ./pypkg
        python3 -c 'import sbprobe; print("pip-ok", sbprobe.X)'
        node -e 'console.log("node-ok", 6*7)'
        mkdir -p npmpkg app && printf '{"name":"sbprobe","version":"1.0.0","main":"index.js"}' > npmpkg/package.json
        echo 'module.exports = 42' > npmpkg/index.js
        cd app && npm init -y >/dev/null && npm install --offline --no-audit --no-fund ../npmpkg >/dev/null && node -e 'console.log("npm-ok", require("sbprobe"))'
    "#;
    let (code, out) = envd_as(&a, "user", script, 300).await;
    assert_eq!(code, 0, "{out}");
    for want in ["ping-ok", "\n0\n", "su-ok 0", "gcc-ok", "git-ok", "pip-ok 42", "node-ok 42", "npm-ok 42"] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }
}
