//! Runtime configuration and the names derived from it.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use soulbox_protocol::ENVD_PORT;
/// Where the envd binary is bind-mounted inside the sandbox.
pub const ENVD_MOUNT: &str = "/.soulbox/envd";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// Sandboxes, runtime state and (by default) the template store live here.
    pub data_dir: PathBuf,
    /// Template store (layers/ + templates/); defaults to `data_dir`.
    pub store_dir: Option<PathBuf>,
    /// runc-compatible OCI runtime binary (runc, runsc, crun, or a path).
    pub runtime_bin: String,
    /// Extra global flags for the runtime binary (e.g. `--platform=systrap` for runsc).
    pub runtime_args: Vec<String>,
    /// More OCI runtimes (binaries or paths) that templates may ask for by name (`TemplateMeta::runtime`): a
    /// `runc` node with `runsc` here runs the templates that ask for gVisor on gVisor and the rest on runc. Each
    /// keeps its own state root (`runtime_root_of`). `runtime_args` are for `runtime_bin` only.
    pub extra_runtimes: Vec<String>,
    /// Static envd binary on the host.
    pub envd_path: PathBuf,
    /// Replace envd as PID 1 (plumbing tests only); readiness is then "runtime start returned".
    pub init_override: Option<Vec<String>>,
    /// Name prefix of everything this instance creates on the host (netns `<prefix>-<id>`,
    /// veth `<prefix><id…>`, nft table, cgroup parent). 2–5 chars [a-z0-9], must start with a letter.
    pub prefix: String,
    /// IPv4 pool for sandboxes: network address and prefix length (default 10.77.0.0/16).
    pub pool_net: Ipv4Addr,
    pub pool_prefix_len: u8,
    /// DNS servers written to the sandbox's resolv.conf (and allowed through the firewall).
    pub dns: Vec<Ipv4Addr>,
    /// TCP ports on the host that sandboxes may reach (deliberately exposed node services).
    pub host_allowed_tcp_ports: Vec<u16>,
    /// The port of the egress gateway on the pool's gateway address (`gateway.rs`): sandboxes with host-name
    /// rules have their HTTP and TLS redirected there. Reachable only through that redirect.
    pub egress_gateway_port: u16,
    /// The installation's egress CA (`egress_ca.rs`): sandboxes trust its certificate (envd installs it), the
    /// egress gateway signs with it to terminate TLS to hosts with header rules. `None`: no interception of TLS.
    #[serde(default)]
    pub egress_ca: Option<crate::egress_ca::CaPem>,
    /// Extra CA certificates (a PEM file) the egress gateway trusts, besides the node's trust store, when it
    /// re-makes intercepted TLS to a destination (internal services with their own CA).
    #[serde(default)]
    pub egress_trusted_ca: Option<PathBuf>,
    /// Network slots (netns + veth + IP) prepared ahead of time.
    pub pool_size: usize,
    /// Sandboxes booted ahead per template name, at most this many each (`lifecycle/booted.rs`): a create of
    /// the template's default sandbox takes one. Empty: none.
    #[serde(default)]
    pub booted_pool: std::collections::BTreeMap<String, usize>,
    /// The most memory (MiB, the sum of their memory limits) booted pooled sandboxes may hold; 0: no bound.
    #[serde(default)]
    pub booted_pool_memory_mb: u64,
    /// Time to wait for envd readiness.
    pub ready_timeout_ms: u64,
    /// Set no_new_privs on sandbox processes. Off by default: E2B users need `sudo` (setuid).
    pub no_new_privileges: bool,
    /// Start containers with one `run --detach` instead of `create` + `start` (same effect, one
    /// runtime process less on the hot path).
    pub run_detached: bool,
    /// Pause/resume by writing the cgroup freezer directly (what `runc pause` does, minus a
    /// process start). Only for runtimes whose pause *is* the cgroup freezer (runc, crun:
    /// `RuntimeKind::pause_is_cgroup_freezer`); others (runsc) always pause through their CLI.
    pub cgroup_freezer: bool,
    /// runsc: pause saves the sandbox's memory to its dir and frees it (`lifecycle/checkpoint.rs`), so that a
    /// paused sandbox costs no RAM and survives restarts of the runtime and the host; false keeps it in memory
    /// (`runsc pause`: a faster resume, lost with the host). False here, as every feature of the library is
    /// off until asked for; the server turns it on unless its config says `runsc_pause_to_disk = false`.
    pub pause_to_disk: bool,
    /// oom_score_adj of PID 1 (envd). None = inherit. Safe to lower: envd gives each process it starts
    /// its own score (100) before exec.
    pub envd_oom_score_adj: Option<i32>,
    /// Disk size limit of the writable layer (see `disk.rs`): `auto` (default: use the mechanism
    /// `disk_backend` picks when possible, otherwise warn once and run without limits),
    /// `required` (fail `Runtime::open` without one), `off`.
    #[serde(default)]
    pub disk_quota: DiskQuotaMode,
    /// How the limit is enforced: `auto` (default: project quotas when the filesystem enforces
    /// them, else one ext4 image per sandbox), `project-quota`, `image`.
    #[serde(default)]
    pub disk_backend: DiskBackend,
    /// Size of the sparse XFS image made when the data dir's filesystem has no project quotas, in
    /// GiB. None: half of the free space at creation time, between 1 and 64 GiB.
    #[serde(default)]
    pub disk_image_gb: Option<u64>,
    /// Disk limit (MiB) when neither the sandbox spec nor the template sets one; 0 = none.
    #[serde(default = "default_disk_mb")]
    pub default_disk_mb: u64,
    /// Let `allowOut` open private, link-local (incl. the cloud metadata service 169.254.169.254),
    /// CGNAT, loopback and multicast ranges (the server setting `allow_private_egress`). Off
    /// (default): every sandbox chain drops those before its allow rules, so only the runtime's own
    /// DNS servers (port 53) stay reachable there.
    #[serde(default)]
    pub allow_private_egress: bool,
    /// Run every sandbox in its own user namespace (`userns.rs`): root inside is an unprivileged
    /// host uid. Default on; `userns_mode` says whose ids those are.
    #[serde(default = "default_true")]
    pub user_namespaces: bool,
    /// `auto` (default): one id range per sandbox where overlayfs on idmapped layers works (the
    /// probe at open), else one range shared by every sandbox, with a warning; `per-sandbox` or
    /// `shared` force one (`per-sandbox` fails `Runtime::open` where it cannot work). Shared mode
    /// keeps its layers in their own store (`<store_dir>/shifted-<base>/`, files owned by the
    /// range's ids).
    #[serde(default)]
    pub userns_mode: UsernsMode,
    /// First host id of the user namespace ranges (65536 ids per sandbox).
    #[serde(default = "default_userns_base")]
    pub userns_base: u32,
    /// Number of ranges (the most sandboxes, stopped ones included, this instance can hold).
    #[serde(default = "default_userns_ranges")]
    pub userns_ranges: u32,
    /// Host-wide directory of range claims, shared by every runtime instance on the host.
    #[serde(default = "default_userns_claims_dir")]
    pub userns_claims_dir: PathBuf,
    /// Cap of a sandbox's log on the host (`sandbox.log`; one rotated file of at most the same size beside
    /// it). At least 64 KiB.
    #[serde(default = "default_sandbox_log_max_bytes")]
    pub sandbox_log_max_bytes: u64,
    /// Host disk writes per second of one sandbox's log; past it the runtime stops reading until the next
    /// second (envd's lines are then dropped, never waited for).
    #[serde(default = "default_sandbox_log_bytes_per_sec")]
    pub sandbox_log_bytes_per_sec: u64,
    /// Where persistent volumes live (`<dir>/<volume id>/`, made by the server's volume store); `None`: sandboxes
    /// of this node cannot mount volumes. May be a shared filesystem mounted on every node.
    #[serde(default)]
    pub volumes_dir: Option<PathBuf>,
    /// Show runc/crun sandboxes their own memory, CPUs, uptime and boot id in `/proc` (`procview.rs`): a FUSE
    /// filesystem served by the runtime at `<data_dir>/procview`. Off: they see the host's.
    #[serde(default = "default_true")]
    pub proc_view: bool,
}

fn default_true() -> bool {
    true
}
fn default_userns_base() -> u32 {
    DEFAULT_BASE
}
fn default_userns_ranges() -> u32 {
    DEFAULT_RANGES
}
fn default_userns_claims_dir() -> PathBuf {
    PathBuf::from(DEFAULT_CLAIMS_DIR)
}

fn default_sandbox_log_max_bytes() -> u64 {
    1 << 20
}

fn default_sandbox_log_bytes_per_sec() -> u64 {
    256 << 10
}

fn default_disk_mb() -> u64 {
    DEFAULT_DISK_MB
}

/// 10 GiB: E2B's default sandbox disk.
pub const DEFAULT_DISK_MB: u64 = 10 * 1024;

impl RuntimeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            data_dir: data_dir.into(),
            store_dir: None,
            runtime_bin: "runc".into(),
            runtime_args: vec![],
            extra_runtimes: vec![],
            envd_path: PathBuf::from("target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"),
            init_override: None,
            prefix: "sbx".into(),
            pool_net: Ipv4Addr::new(10, 77, 0, 0),
            pool_prefix_len: 16,
            dns: host_dns(),
            host_allowed_tcp_ports: vec![],
            egress_gateway_port: DEFAULT_EGRESS_GATEWAY_PORT,
            egress_ca: None,
            egress_trusted_ca: None,
            pool_size: 0,
            booted_pool: Default::default(),
            booted_pool_memory_mb: 4096,
            ready_timeout_ms: 10_000,
            no_new_privileges: false,
            // envd sets every process it starts to oom_score_adj 100 before exec, so an OOM inside the
            // sandbox kills user code and leaves the agent alive to report it. (`Runtime::open` drops it when
            // the process lacks CAP_SYS_RESOURCE, which lowering a score needs.)
            envd_oom_score_adj: Some(-900),
            run_detached: true,
            cgroup_freezer: true,
            pause_to_disk: false,
            disk_quota: Default::default(),
            disk_backend: Default::default(),
            disk_image_gb: None,
            default_disk_mb: DEFAULT_DISK_MB,
            allow_private_egress: false,
            user_namespaces: true,
            userns_mode: Default::default(),
            userns_base: DEFAULT_BASE,
            userns_ranges: DEFAULT_RANGES,
            userns_claims_dir: default_userns_claims_dir(),
            sandbox_log_max_bytes: default_sandbox_log_max_bytes(),
            sandbox_log_bytes_per_sec: default_sandbox_log_bytes_per_sec(),
            volumes_dir: None,
            proc_view: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let p = &self.prefix;
        if p.len() < 2
            || p.len() > 5
            || !p.starts_with(|c: char| c.is_ascii_lowercase())
            || !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(Error::Invalid(format!("prefix {p:?} must be 2-5 chars [a-z0-9]")));
        }
        if !(8..=30).contains(&self.pool_prefix_len) {
            return Err(Error::Invalid("pool prefix length must be within 8..=30".into()));
        }
        if self.user_namespaces {
            validate(self.userns_base, ranges_needed(self))?;
        }
        Ok(())
    }

    pub fn sandbox_log_limits(&self) -> LogLimits {
        LogLimits { max_bytes: self.sandbox_log_max_bytes, bytes_per_sec: self.sandbox_log_bytes_per_sec }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.store_dir.clone().unwrap_or_else(|| self.data_dir.clone())
    }
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }
    /// Where the proc view's filesystem is mounted (`procview.rs`).
    pub fn proc_view_dir(&self) -> PathBuf {
        self.data_dir.join("procview")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.data_dir.join("oci")
    }
    /// The state root of an extra runtime (`extra_runtimes`), by its name (`runsc`): beside the default's.
    pub fn runtime_root_of(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("oci-{name}"))
    }
    pub fn nft_table(&self) -> String {
        if self.prefix == "sbx" { "soulbox".into() } else { format!("soulbox_{}", self.prefix) }
    }
    pub fn cgroup_parent(&self) -> String {
        if self.prefix == "sbx" { "soulbox".into() } else { format!("soulbox_{}", self.prefix) }
    }
    pub fn netns_name(&self, id: &str) -> String {
        format!("{}-{}", self.prefix, id)
    }
    pub fn veth_name(&self, id: &str) -> String {
        let room = 15 - self.prefix.len();
        format!("{}{}", self.prefix, &id[..room.min(id.len())])
    }
    pub fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{}", self.cgroup_parent(), id)
    }
    pub fn pool_mask(&self) -> u32 {
        u32::MAX << (32 - self.pool_prefix_len as u32)
    }
    pub fn pool_cidr(&self) -> String {
        format!("{}/{}", self.pool_net, self.pool_prefix_len)
    }
    /// Gateway address (first host of the pool) used on every host-side veth.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.pool_net) & self.pool_mask()) + 1)
    }
}

/// Below envd's port (49983), in the range the kernel does not hand out for outgoing connections by default.
pub const DEFAULT_EGRESS_GATEWAY_PORT: u16 = 49980;

/// Non-loopback nameservers of the host's resolv.conf.
fn host_dns() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

/// Generate a sandbox id: 20 chars [a-z0-9], starting with a letter (E2B-like).
pub fn new_sandbox_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(20);
    s.push((b'a' + rng.random_range(0..26u8)) as char);
    for _ in 0..19 {
        s.push(CHARS[rng.random_range(0..CHARS.len())] as char);
    }
    s
}

/// Validate an id coming from outside before it is used in paths or names.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(Error::Invalid(format!("bad sandbox id {id:?}")));
    }
    Ok(())
}

// Types and limits of the settings above, owned here (the modules that act on them re-export them).

/// `RuntimeConfig::disk_quota`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskQuotaMode {
    /// No disk limit.
    Off,
    /// Use project quotas when possible; otherwise warn once and run without a limit.
    #[default]
    Auto,
    /// `Runtime::open` fails when the mechanism is unavailable.
    Required,
}

/// `RuntimeConfig::disk_backend`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBackend {
    /// Project quotas when the filesystem enforces them, else per-sandbox images.
    #[default]
    Auto,
    ProjectQuota,
    Image,
}

impl std::str::FromStr for DiskBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.into()))
            .map_err(|_| Error::Invalid(format!("disk backend {s:?}: expected auto, project-quota or image")))
    }
}

/// Size and pace of one sandbox's log on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Cap of `sandbox.log` (the rotated file holds at most as much again).
    pub max_bytes: u64,
    /// Host disk writes per second per sandbox.
    pub bytes_per_sec: u64,
}

// User namespaces (`userns.rs`).

/// Ids per sandbox: uid/gid 0..65535 inside.
pub const RANGE_SIZE: u32 = 65536;
/// Default first host id of the first range.
pub const DEFAULT_BASE: u32 = 0x1000_0000;
/// Default number of ranges (0x10000000..0x30000000).
pub const DEFAULT_RANGES: u32 = 8192;
/// Default host-wide claims directory.
pub const DEFAULT_CLAIMS_DIR: &str = "/run/soulbox/userns";
/// Highest host id a range may reach (signed 32-bit; `ping_group_range` is written up to it).
const MAX_HOST_ID: u64 = 0x7FFF_FFFF;
/// Lowest allowed base: never host root or the system's own accounts.
const MIN_BASE: u32 = 0x0008_0000;

/// `RuntimeConfig::userns_mode`: whose host ids sandboxes run as (`userns.rs` module docs).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UsernsMode {
    /// per-sandbox where the kernel and filesystems allow it, else shared (with a warning).
    #[default]
    Auto,
    /// Every sandbox its own range (idmapped layers); `Runtime::open` fails where that cannot work.
    PerSandbox,
    /// One range for every sandbox, files stored shifted (no idmapped mounts).
    Shared,
}

impl UsernsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            UsernsMode::Auto => "auto",
            UsernsMode::PerSandbox => "per-sandbox",
            UsernsMode::Shared => "shared",
        }
    }
}

impl std::fmt::Display for UsernsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UsernsMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(UsernsMode::Auto),
            "per-sandbox" => Ok(UsernsMode::PerSandbox),
            "shared" => Ok(UsernsMode::Shared),
            other => Err(format!("unknown user namespace mode {other:?} (auto, per-sandbox, shared)")),
        }
    }
}

/// Check the configured range space.
pub fn validate(base: u32, ranges: u32) -> Result<()> {
    if base < MIN_BASE || !base.is_multiple_of(RANGE_SIZE) {
        return Err(Error::Invalid(format!(
            "userns base {base:#x} must be a multiple of 65536 and at least {MIN_BASE:#x}"
        )));
    }
    let end = base as u64 + ranges as u64 * RANGE_SIZE as u64;
    if ranges == 0 || end - 1 > MAX_HOST_ID {
        return Err(Error::Invalid(format!(
            "userns ranges: {ranges} ranges of 65536 from {base:#x} must fit below 2^31"
        )));
    }
    Ok(())
}

/// How many ranges from `userns_base` the configured mode may use: one when forced shared.
pub fn ranges_needed(cfg: &RuntimeConfig) -> u32 {
    match cfg.userns_mode {
        UsernsMode::Shared => 1,
        _ => cfg.userns_ranges,
    }
}
