//! Boot-time reconcile: re-adopt sandboxes the OCI runtime still runs and collect everything a
//! crashed instance may have leaked (runtime CLI processes, containers, runtime state, cgroups,
//! mounts, netns, veths, nft rules, IP leases, temp layers).
use super::Inner;
use crate::cgroup;
use crate::error::Result;
use crate::network::{self, NetLease};
use crate::record::Record;
use crate::rootfs;
use crate::spec::Status;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

pub(crate) async fn reconcile(inner: &Arc<Inner>) -> Result<()> {
    let cfg = &inner.cfg;
    // 0. runtime CLI invocations of a crashed instance (e.g. a `runc create` in flight) would race
    //    with the cleanup below: kill them first. They are recognised by our `--root` argument.
    let roots = inner.drivers.roots(cfg);
    for root in &roots {
        kill_stray_cli(&root.to_string_lossy());
    }

    // Every runtime's containers, with the runtime that holds each.
    let mut containers: HashMap<String, String> = HashMap::new();
    let mut holder: HashMap<String, &crate::driver::Driver> = HashMap::new();
    for driver in inner.drivers.all() {
        for c in driver.list().await.unwrap_or_default() {
            holder.insert(c.id.clone(), driver);
            containers.insert(c.id, c.status);
        }
    }

    let mut adopted: HashSet<String> = HashSet::new();
    let mut live_fw = Vec::new();
    // Stopped sandboxes keep their address until deleted; marked after the loop so that a running
    // sandbox wins if two lease files ever name one address.
    let mut kept_leases: Vec<(String, NetLease)> = Vec::new();
    let entries: Vec<_> = std::fs::read_dir(cfg.sandboxes_dir()).map(|rd| rd.flatten().collect()).unwrap_or_default();
    for e in entries {
        let id = e.file_name().to_string_lossy().into_owned();
        if crate::config::check_id(&id).is_err() {
            continue;
        }
        let dir = e.path();
        let rec = Record::load(&dir).ok();
        let cstate = containers.get(&id).map(|s| s.as_str());
        match rec {
            Some(mut rec)
                if matches!(rec.status, Status::Running | Status::Paused)
                    && matches!(cstate, Some("running") | Some("paused")) =>
            {
                rec.status = if cstate == Some("paused") { Status::Paused } else { Status::Running };
                let lease = NetLease::load(&dir);
                if let Some(l) = &lease {
                    if !inner.ips.mark_used(l.ip, &id) {
                        tracing::error!(sandbox = %id, ip = %l.ip, "two running sandboxes have the same address");
                    }
                    if rec.status == Status::Running {
                        inner.serve(&id, l.ip, inner.drivers.for_record(&rec).unwrap_or(inner.drivers.default()));
                    }
                    if let Some(spec) = &rec.spec {
                        live_fw.push((id.clone(), l.veth.clone(), spec.network.clone()));
                    }
                }
                let _ = rec.save(&dir);
                if crate::disk_image::has_image(&dir) && rootfs::is_mounted(&crate::disk_image::mount_dir(&dir)) {
                    rootfs::harden_mount(&crate::disk_image::mount_dir(&dir)); // mounted by an older runtime
                }
                match inner.logs.reattach(&id, &dir) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(sandbox = %id, "no log FIFO (started by an older runtime): its log is not capped until it restarts")
                    }
                    Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not drain the sandbox log again"),
                }
                keep_id_range(inner, &id, &dir, true);
                tracing::info!(sandbox = %id, status = %rec.status, "re-adopted");
                adopted.insert(id.clone());
                inner.remember(&rec);
                inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(AsyncMutex::new(rec)));
            }
            Some(mut rec)
                if matches!(rec.status, Status::Running | Status::Paused | Status::Stopped)
                    && rec.template.is_some() =>
            {
                // Died while we were away (or was stopped): keep its files as a stopped sandbox.
                if let Err(e) = inner.release(&id, true).await {
                    tracing::warn!(sandbox = %id, error = %e, "release of dead sandbox failed");
                }
                if rec.status != Status::Stopped {
                    tracing::warn!(sandbox = %id, "sandbox died while the runtime was down; now stopped (files and address kept)");
                }
                if let Some(l) = NetLease::load(&dir) {
                    kept_leases.push((id.clone(), l));
                }
                rec.status = Status::Stopped;
                let _ = rec.save(&dir);
                keep_id_range(inner, &id, &dir, false);
                adopted.insert(id.clone());
                inner.remember(&rec);
                inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(AsyncMutex::new(rec)));
            }
            _ => {
                // Pooled, Creating, Deleting, unreadable: collect all of it.
                tracing::info!(sandbox = %id, "collecting leftovers of an unfinished sandbox");
                if let Err(e) = inner.release(&id, false).await {
                    tracing::warn!(sandbox = %id, error = %e, "collect failed");
                }
            }
        }
    }

    for (id, lease) in kept_leases {
        if !inner.ips.mark_used(lease.ip, &id) {
            // Another sandbox runs on it: this one gets a new address when it starts.
            tracing::warn!(sandbox = %id, ip = %lease.ip, "stopped sandbox's address is taken; it gets a new one at start");
            let _ = crate::util::remove_file_idem(&NetLease::file(&inner.dir(&id)));
        }
    }
    // Containers with no sandbox dir.
    for id in containers.keys() {
        if !adopted.contains(id) {
            tracing::info!(container = %id, "deleting unknown container");
            if let Some(driver) = holder.get(id) {
                let _ = driver.delete_force(id).await;
            }
        }
    }
    // Runtime state dirs nobody owns.
    for root in &roots {
        let Ok(rd) = std::fs::read_dir(root) else { continue };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !adopted.contains(&n) && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    // Mounts below the sandboxes dir that belong to no adopted running sandbox.
    let live_mounts: HashSet<_> = adopted
        .iter()
        .flat_map(|id| {
            let dir = inner.dir(id);
            [rootfs::paths(&dir).mountpoint, crate::disk_image::mount_dir(&dir), crate::userns::userns_path(&dir)]
        })
        .collect();
    for m in rootfs::mounts_under(&cfg.sandboxes_dir()) {
        if !live_mounts.contains(&m) {
            tracing::info!(mount = %m.display(), "unmounting leaked mount");
            let _ = rootfs::umount_path(&m);
        }
    }
    // Disk limits: project ids in use from the sandboxes kept above, leaked limits cleared;
    // loop devices of sandbox images that lost their mount detached.
    inner.disk.reconcile(&cfg.sandboxes_dir());
    if let Some(userns) = &inner.userns
        && let Err(e) = userns.collect_stale(&cfg.sandboxes_dir())
    {
        tracing::warn!(error = %e, "collecting stale user namespace range claims");
    }
    // netns and veths with our prefix that belong to nobody.
    let live_ns: HashSet<String> = adopted.iter().map(|id| cfg.netns_name(id)).collect();
    for ns in network::netns_list(&cfg.prefix) {
        if !live_ns.contains(&ns) {
            tracing::info!(netns = %ns, "deleting leaked netns");
            if let Err(e) = network::teardown(&ns, "").await {
                tracing::warn!(netns = %ns, error = %e, "deleting a leaked netns failed");
            }
        }
    }
    let live_veth: HashSet<String> = adopted.iter().map(|id| cfg.veth_name(id)).collect();
    for l in network::host_links(&cfg.prefix) {
        if !live_veth.contains(&l) {
            tracing::info!(link = %l, "deleting leaked link");
            if let Err(e) = crate::util::run("ip", &["link", "del", &l]).await {
                tracing::warn!(link = %l, error = %e, "deleting a leaked link failed");
            }
        }
    }
    // cgroups
    let parent = cfg.cgroup_parent();
    for c in cgroup::children(&parent) {
        if !adopted.contains(&c) {
            let p = parent.clone();
            let _ = tokio::task::spawn_blocking(move || cgroup::remove(&p, &c)).await;
        }
    }
    // Firewall: rebuild the table atomically from the live sandboxes (drops leaked chains).
    inner.fw.rebuild(&live_fw).await?;
    inner.store.gc_temp();
    Ok(())
}

/// A kept sandbox holds on to its user namespace range (host-wide claim re-made after a reboot).
/// If another sandbox holds it now, a stopped sandbox forgets it (its next start takes a new one;
/// its files are stored unshifted, so any range fits them); a running one cannot be fixed. A
/// sandbox whose files are stored shifted into a shared range keeps the record (it says how its
/// files are stored): only a runtime of that range starts it again (`userns::check_files`).
fn keep_id_range(inner: &Inner, id: &str, dir: &std::path::Path, running: bool) {
    let (Some(userns), Some(range)) = (&inner.userns, crate::userns::IdRange::load(dir)) else { return };
    match userns.keep(dir, range) {
        Ok(true) => {}
        Ok(false) if running => {
            tracing::error!(sandbox = %id, base = range.host_base, shared = range.shared, "the sandbox's user namespace range is not this runtime's to use (claimed by another sandbox, or another mode)")
        }
        Ok(false) if userns.may_forget(range) => {
            let _ = crate::util::remove_file_idem(&crate::userns::IdRange::file(dir));
        }
        Ok(false) => {
            tracing::warn!(sandbox = %id, base = range.host_base, "stopped sandbox stored for another user namespace mode: it starts only under that mode again")
        }
        Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not re-claim the user namespace range"),
    }
}

fn kill_stray_cli(root: &str) {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else { return };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        // runsc's long-lived processes (`runsc-sandbox … boot`, `runsc-gofer … gofer`) *are* the sandboxes
        // being re-adopted, not CLI invocations (they also spell the flag `--root=<dir>`, which never matches).
        if args.first().is_some_and(|a| a.starts_with(b"runsc-")) {
            continue;
        }
        if args.contains(&root.as_bytes()) && args.iter().any(|a| *a == b"--root") {
            tracing::info!(pid, "killing stray runtime CLI process of a previous instance");
            // SAFETY: kill(2) on a pid whose cmdline names our private runtime root.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
