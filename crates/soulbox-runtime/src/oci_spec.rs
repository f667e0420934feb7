//! OCI runtime bundle (`config.json`) built with the `oci-spec` crate.
use crate::config::{ENVD_MOUNT, RuntimeConfig};
use crate::error::{Error, Result};
use crate::seccomp;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder, get_default_mounts,
};
use soulbox_protocol::envd_init;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Capabilities granted to sandbox processes (bounding/effective/permitted; no ambient).
///
/// Docker's default set minus `NET_RAW` (ping works through `ping_group_range`), `MKNOD` (device cgroup allows
/// only the standard devices anyway) and `SETFCAP`: enough for root-in-sandbox to run apt/dpkg (CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID), sudo/su (SETUID, SETGID, SETPCAP, AUDIT_WRITE), chroot builds (SYS_CHROOT),
/// killing its own processes (KILL) and binding low ports (NET_BIND_SERVICE). No SYS_ADMIN, SYS_MODULE,
/// SYS_PTRACE, NET_ADMIN, SYS_RESOURCE, …
///
/// Why no SETFCAP: a file capability outside the bounding set makes the binary unusable (execve fails with
/// EPERM when a file's effective capabilities cannot all be granted) — `apt-get install iputils-ping` set
/// `cap_net_raw+ep` on ping, and ping then failed for everyone. Without SETFCAP `setcap` fails and Debian's
/// maintainer scripts fall back to setuid, with which ping works through ICMP datagram sockets. It also takes
/// away a way to craft privileged binaries inside.
pub const CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::AuditWrite,
];

/// Masked (a file under /dev/null, a directory under an empty read-only tmpfs): runc's and
/// Docker's current defaults — the kernel's memory image, key and timer lists, hardware and
/// interrupt counters (side channels), firmware, power capping (RAPL energy counters leak what
/// other tenants compute) — plus, per CPU, `thermal_throttle` ([`masked_paths`]).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// [`MASKED_PATHS`] plus `/sys/devices/system/cpu/cpu<N>/thermal_throttle` of every CPU the host
/// has (Docker masks them since 28: their counters are a side channel). runc skips paths that do
/// not exist inside the container.
pub fn masked_paths() -> Vec<String> {
    let mut paths: Vec<String> = MASKED_PATHS.iter().map(|s| s.to_string()).collect();
    let Ok(cpus) = std::fs::read_dir("/sys/devices/system/cpu") else { return paths };
    let mut throttle: Vec<String> = cpus
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("thermal_throttle"))
        .filter(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    throttle.sort();
    paths.extend(throttle);
    paths
}

/// Read-only: runc's and Docker's list, plus `/sys/fs/cgroup`. The cgroup mount is asked for read-only, but on a
/// cgroup v1 host runc (1.1, with a cgroup namespace) mounts the hierarchies read-only on a *writable* tmpfs there,
/// where the sandbox could create files.
pub const READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/sys/fs/cgroup"];

pub struct BundleParams<'a> {
    pub id: &'a str,
    pub sandbox_dir: &'a Path,
    pub netns_path: PathBuf,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub pids_limit: i64,
    /// envd's start configuration: an [`envd_init::InitRequest`] as JSON, for [`envd_init::INIT_ENV`].
    pub envd_init: String,
    /// The sandbox's user namespace range; None = no user namespace.
    pub id_range: Option<crate::userns::IdRange>,
    /// The OCI runtime that runs the bundle (the ready pipe's descriptor, whether seccomp applies).
    pub runtime: &'a crate::runtime_kind::RuntimeKind,
    /// Persistent volumes: (host directory to bind, path inside), prepared by `volumes::prepare`.
    pub volumes: &'a [(PathBuf, String)],
    /// Host files bound read-only over `/proc` files (gVisor's boot id, `lifecycle/proc_view.rs`).
    pub proc_view: &'a [(PathBuf, &'static str)],
}

fn oci<E: std::fmt::Display>(e: E) -> Error {
    Error::Oci(e.to_string())
}

pub fn build(cfg: &RuntimeConfig, p: &BundleParams) -> Result<Spec> {
    let caps: HashSet<Capability> = CAPABILITIES.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(oci)?;

    let args = match &cfg.init_override {
        Some(a) => a.clone(),
        None => envd_init::command_line(ENVD_MOUNT, p.runtime.ready_fd()),
    };
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).umask(0o022u32).build().map_err(oci)?)
        .args(args)
        .env(
            [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                format!("{}={}", envd_init::INIT_ENV, p.envd_init),
            ]
            .into_iter()
            .chain(crate::envd_log::env_entries())
            .collect::<Vec<_>>(),
        )
        .cwd("/")
        .capabilities(capabilities)
        .no_new_privileges(cfg.no_new_privileges)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(nofile_limit())
                .hard(nofile_limit())
                .build()
                .map_err(oci)?,
        ])
        .build()
        .map_err(oci)?;
    if let Some(adj) = cfg.envd_oom_score_adj {
        process.set_oom_score_adj(Some(adj));
    }

    let mut mounts = get_default_mounts();
    // Size-limit /dev/shm and keep it nosuid/nodev.
    for m in mounts.iter_mut() {
        if m.destination() == Path::new("/dev/shm") {
            m.set_options(Some(vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                "size=65536k".into(),
            ]));
        }
    }
    // The only host file inside a sandbox is the envd binary, read-only (and the volumes it was created with,
    // below). /etc/hosts and friends are the sandbox's own files (envd writes them at start).
    if cfg.init_override.is_none() {
        let options = vec!["rbind".to_string(), "nosuid".into(), "nodev".into(), "ro".into()];
        mounts.push(
            MountBuilder::default()
                .destination(ENVD_MOUNT)
                .typ("bind")
                .source(cfg.envd_path.clone())
                .options(options)
                .build()
                .map_err(oci)?,
        );
    }

    // Not `rbind`: nothing mounted below a volume's directory on the host comes along.
    for (source, destination) in p.volumes {
        crate::rootfs::refuse_links(p.sandbox_dir, destination)?;
        mounts.push(
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(vec!["bind".to_string(), "nosuid".into(), "nodev".into(), "rw".into()])
                .build()
                .map_err(oci)?,
        );
    }

    // Read-only, and only this sandbox's own files.
    for (source, destination) in p.proc_view {
        mounts.push(
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(vec!["bind".to_string(), "nosuid".into(), "nodev".into(), "noexec".into(), "ro".into()])
                .build()
                .map_err(oci)?,
        );
    }

    let ns = |t: LinuxNamespaceType| LinuxNamespaceBuilder::default().typ(t).build().map_err(oci);
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid)?,
        ns(LinuxNamespaceType::Ipc)?,
        ns(LinuxNamespaceType::Uts)?,
        ns(LinuxNamespaceType::Mount)?,
        ns(LinuxNamespaceType::Cgroup)?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(p.netns_path.clone())
            .build()
            .map_err(oci)?,
    ];

    let mem = (p.memory_mb as i64).saturating_mul(1024 * 1024);
    let period: u64 = 100_000;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().map_err(oci)?])
        // swap == limit: memory+swap total equals memory, i.e. no swap.
        .memory(LinuxMemoryBuilder::default().limit(mem).swap(mem).build().map_err(oci)?)
        .cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(period as i64 * p.cpu_count.max(1) as i64)
                .build()
                .map_err(oci)?,
        )
        .pids(LinuxPidsBuilder::default().limit(p.runtime.host_pids_limit(p.pids_limit)).build().map_err(oci)?)
        .build()
        .map_err(oci)?;

    let mut sysctl = HashMap::new();
    // ping without CAP_NET_RAW for every group the sandbox has (the value is read in the user
    // namespace of the writer: runc's init, inside the sandbox's when there is one).
    let max_gid = p.id_range.map_or(2147483647, |r| r.size - 1);
    sysctl.insert("net.ipv4.ping_group_range".to_string(), format!("0 {max_gid}"));
    if Path::new("/proc/sys/net/ipv6").exists() {
        sysctl.insert("net.ipv6.conf.all.disable_ipv6".to_string(), "1".to_string());
    }

    let mut linux = LinuxBuilder::default();
    if let Some(range) = p.id_range {
        // Joined by path: the user namespace made with the network namespace, which it owns
        // (`userns.rs`). runc wants the mappings too (it does not write them for a joined one).
        namespaces.insert(
            0,
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(crate::userns::userns_path(p.sandbox_dir))
                .build()
                .map_err(oci)?,
        );
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(range.host_base)
            .size(range.size)
            .build()
            .map_err(oci)?;
        linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }

    if p.runtime.applies_spec_seccomp() {
        linux = linux.seccomp(seccomp::default_profile()?);
    }
    let linux = linux
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(cfg.cgroups_path(p.id)))
        .masked_paths(masked_paths())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .sysctl(sysctl)
        .rootfs_propagation("private")
        .build()
        .map_err(oci)?;

    let mut annotations = HashMap::new();
    annotations.insert("io.soulbox.sandbox-id".to_string(), p.id.to_string());

    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path("rootfs").readonly(false).build().map_err(oci)?)
        .hostname(p.id.to_string())
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(oci)
}

/// Write `config.json` into the bundle (sandbox) dir, created 0600 (it carries the access token and the envd
/// secret).
pub fn write(bundle: &Path, spec: &Spec) -> Result<()> {
    let data = serde_json::to_vec(spec).map_err(|source| Error::Json { path: bundle.join("config.json"), source })?;
    crate::util::write_atomic_private(&bundle.join("config.json"), &data)
}

/// 65536, or the host's hard limit if lower (raising it needs CAP_SYS_RESOURCE, which runc has
/// already dropped when it applies rlimits).
fn nofile_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        return r.rlim_max.min(65536);
    }
    1024
}
