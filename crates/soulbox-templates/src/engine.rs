//! The build engine on a node: resolve the base, then one build sandbox per layer-producing step (RUN, COPY,
//! WORKDIR of a missing directory), each snapshotted into a new content-addressed layer; ENV/USER and an
//! existing WORKDIR only change metadata. Every layer-producing step is cached under
//! `<store>/cache/<key>` → layer digest, where the key chains the parent key, the step's content and the
//! user/workdir/env it runs with ([`super::step_cache_key`]). A cache entry is written only after its layer
//! was committed, so a failed step never poisons the cache; the template is registered only at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use soulbox_runtime::{Runtime, SandboxSpec, TemplateMeta};

use super::bootstrap::{BootstrapConfig, BootstrapPlan};
use super::dockerfile::shell_quote;
use super::host_path::{HostSourceDirs, OpenedPath};
use super::registry::RegistrySettings;
use super::source::{BaseSource, HostSource, Origin, Rewrites};
use super::start::shell_of;
use super::{BuildFailure, BuildJob, LogLevel, LogSink, StepContext, base_cache_key, envd, step_cache_key};

/// How many output lines a failed step's error message carries.
const FAILURE_TAIL: usize = 20;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Image references rewritten to local sources (`e2bdev/base` → `template:base`, a registry host → a
    /// mirror): hosts without a registry still build the recipes users bring.
    pub image_rewrites: Rewrites,
    /// Insecure (plain HTTP) registry hosts and credentials per registry host.
    pub registries: RegistrySettings,
    /// Mirrors, variant and packages of `bootstrap:` bases.
    pub bootstrap: BootstrapConfig,
    /// Where host-path bases a caller names (`rootfs:`, `oci-archive:`) may be; none by default.
    pub host_source_dirs: HostSourceDirs,
}

impl EngineConfig {
    /// `image_rewrites` (the defaults plus the config's own) completed with the default bootstrap rewrites
    /// (`debian:bookworm` → `bootstrap:debian:bookworm`, which yield to configured registries).
    pub fn new(mut image_rewrites: Rewrites, registries: RegistrySettings, bootstrap: BootstrapConfig) -> EngineConfig {
        super::bootstrap::add_default_rewrites(&mut image_rewrites, &bootstrap);
        EngineConfig { image_rewrites, registries, bootstrap, host_source_dirs: HostSourceDirs::default() }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::new(Rewrites::with_defaults(), RegistrySettings::default(), BootstrapConfig::default())
    }
}

/// Where the steps start: the base's layers and the context its config gives them.
struct Base {
    layers: Vec<String>,
    ctx: StepContext,
    /// The image's Entrypoint + Cmd, used when the recipe sets no start command.
    start_cmd: Option<String>,
    /// The base template's name (`None` for an image).
    parent: Option<String>,
    disk_mb: Option<u64>,
    /// The base template's OCI runtime (`TemplateMeta::runtime`): a template built on it keeps it.
    runtime: Option<String>,
}

/// What must be undone whatever happens (also after a timeout dropped the build future).
#[derive(Default)]
struct Tracker {
    sandbox: Option<String>,
    temp_templates: Vec<String>,
    step: Option<String>,
}

/// Undoes what a build left (its [`Tracker`]): at its end, or from `Drop` when the build future is dropped.
struct Cleanup {
    runtime: Runtime,
    tracker: Arc<Mutex<Tracker>>,
}

impl Cleanup {
    fn take(&self) -> (Option<String>, Vec<String>) {
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        (t.sandbox.take(), std::mem::take(&mut t.temp_templates))
    }

    async fn now(&mut self) {
        let (sandbox, temps) = self.take();
        remove(&self.runtime, sandbox, temps).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (sandbox, temps) = self.take();
        if sandbox.is_none() && temps.is_empty() {
            return;
        }
        let runtime = self.runtime.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { remove(&runtime, sandbox, temps).await });
            }
            Err(_) => tracing::warn!(sandbox = ?sandbox, "a cancelled build's sandbox is left for the next open"),
        }
    }
}

async fn remove(runtime: &Runtime, sandbox: Option<String>, temps: Vec<String>) {
    if let Some(id) = sandbox
        && let Err(e) = runtime.delete(&id).await
    {
        tracing::warn!(sandbox = %id, error = %e, "could not delete a build sandbox");
    }
    for t in temps {
        let _ = runtime.store().delete(&t);
    }
}

/// The state of the image being built.
struct State {
    layers: Vec<String>,
    ctx: StepContext,
    key: String,
    /// The runtime the template will run on, and its build steps run on (hostile RUN steps get the same boundary).
    runtime: Option<String>,
}

enum Action {
    Run { cmd: String, user: String },
    Copy { files: PathBuf, src: String, dest: String, owner: String, mode: String },
    Mkdir { dir: String, owner: String },
}

pub struct Engine {
    runtime: Runtime,
    config: EngineConfig,
}

fn fail(step: &str) -> impl Fn(String) -> BuildFailure + '_ {
    move |m| BuildFailure::new(m, Some(step))
}

impl Engine {
    pub fn new(runtime: Runtime, config: EngineConfig) -> Engine {
        Engine { runtime, config }
    }

    fn cache_dir(&self) -> PathBuf {
        self.runtime.store().root().join("cache")
    }

    fn cached_layer(&self, key: &str) -> Option<String> {
        let digest = std::fs::read_to_string(self.cache_dir().join(key)).ok()?;
        let digest = digest.trim().to_string();
        self.runtime.store().layer_dir(&digest).is_dir().then_some(digest)
    }

    fn remember(&self, key: &str, digest: &str) {
        let dir = self.cache_dir();
        let _ = std::fs::create_dir_all(&dir);
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        if std::fs::write(&tmp, digest).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(key));
        }
    }

    /// Where a recipe starts from: `fromTemplate`, else `fromImage` (default `e2bdev/base`) after rewrites. A
    /// plain Docker Hub name that is also a local template (`FROM mytemplate` in a Dockerfile) is that template.
    pub fn resolve_base(&self, recipe: &super::Recipe) -> Result<BaseSource, BuildFailure> {
        if let Some(t) = &recipe.from_template {
            return Ok(BaseSource::Template(t.strip_suffix(":default").unwrap_or(t).to_string()));
        }
        let image = recipe.from_image.as_deref().unwrap_or("e2bdev/base");
        let source =
            self.config.image_rewrites.resolve(image).map_err(|e| BuildFailure::new(e.to_string(), Some("base")))?;
        if let BaseSource::Registry(r) = &source {
            let local = r.repository.strip_prefix("library/").filter(|_| r.registry == super::source::DOCKER_HUB);
            if let Some(name) = local.filter(|_| r.tag.as_deref() == Some("latest") && r.digest.is_none())
                && soulbox_runtime::template::check_name(name).is_ok()
                && self.runtime.store().get(name).is_ok()
            {
                return Ok(BaseSource::Template(name.to_string()));
            }
        }
        Ok(source)
    }

    /// Refuses a recipe whose base the caller may not use, before anything runs: a host path outside
    /// `[templates] host_source_dirs` (or escaping it), or a base string that does not parse.
    pub fn check_recipe(&self, recipe: &super::Recipe) -> Result<(), String> {
        match self.resolve_base(recipe).map_err(|f| f.message)? {
            BaseSource::OciArchive(host) | BaseSource::RootfsTarball(host) => self.open_host(&host).map(drop),
            _ => Ok(()),
        }
    }

    /// Opens a host-path base: a caller's beneath the allowed directories, the config's as written.
    fn open_host(&self, host: &HostSource) -> Result<OpenedPath, String> {
        let opened = match host.origin {
            Origin::Caller => self.config.host_source_dirs.open(&host.path),
            Origin::Config => OpenedPath::open_trusted(&host.path),
        };
        opened.map_err(|e| e.to_string())
    }

    /// Makes the base available locally: a template as it is; a registry image, a local OCI layout or a rootfs
    /// tarball imported into the layer store (layers cached by OCI digest). Logs at step `base`.
    async fn load_base(&self, source: BaseSource, log: &LogSink) -> Result<Base, BuildFailure> {
        let base_fail = |m: String| BuildFailure::new(m, Some("base"));
        let progress = |m: String| log(LogLevel::Info, m, Some("base".into()));
        let store = self.runtime.store();
        let imported = match source {
            BaseSource::Template(name) => {
                let t = store.get(&name).map_err(|e| base_fail(format!("base template '{name}': {e}")))?;
                progress(format!("Using template '{name}' as the base ({} layers)", t.layers.len()));
                return Ok(Base {
                    layers: t.layers,
                    ctx: StepContext { user: t.default_user, workdir: t.default_workdir, env: t.env },
                    start_cmd: None,
                    parent: Some(name),
                    disk_mb: t.disk_mb,
                    runtime: t.runtime,
                });
            }
            BaseSource::Registry(image) => {
                let r = super::registry::pull(store, &self.config.registries, &image, &progress).await;
                r.map_err(|e| base_fail(format!("pulling {image}: {e}")))?
            }
            BaseSource::OciArchive(host) => {
                let opened = self.open_host(&host).map_err(base_fail)?;
                super::image::import_oci_archive(store, &opened, &progress)
                    .await
                    .map_err(|e| base_fail(format!("oci-archive:{}: {e}", host.path.display())))?
            }
            BaseSource::RootfsTarball(host) => {
                let opened = self.open_host(&host).map_err(base_fail)?;
                super::image::import_rootfs(store, &opened, &progress)
                    .await
                    .map_err(|e| base_fail(format!("rootfs:{}: {e}", host.path.display())))?
            }
            BaseSource::Bootstrap { distro, suite, packages } => {
                let failed = |e: super::bootstrap::BootstrapError| base_fail(e.to_string());
                let plan = BootstrapPlan::new(&self.config.bootstrap, distro, &suite, &packages).map_err(failed)?;
                let layer = super::bootstrap::bootstrap_layer(store, &plan, log).await.map_err(failed)?;
                let ctx = StepContext { user: "root".into(), workdir: "/".into(), env: BTreeMap::new() };
                return Ok(Base {
                    layers: vec![layer],
                    ctx,
                    start_cmd: None,
                    parent: None,
                    disk_mb: None,
                    runtime: None,
                });
            }
        };
        let config = imported.config;
        // Docker's `USER uid:gid` / `name:group`: builds run as the user part.
        let user =
            config.user.as_deref().map(|u| u.split(':').next().unwrap_or(u).to_string()).filter(|u| !u.is_empty());
        let ctx = StepContext {
            user: user.unwrap_or_else(|| "root".into()),
            workdir: config.workdir.unwrap_or_else(|| "/".into()),
            env: config.env,
        };
        progress(format!("image ready: {} layers, user {}, workdir {}", imported.layers.len(), ctx.user, ctx.workdir));
        Ok(Base {
            layers: imported.layers,
            ctx,
            start_cmd: config.start_cmd,
            parent: None,
            disk_mb: None,
            runtime: None,
        })
    }

    /// Runs a build; on success the template `job.template_name` is registered and returned. Dropping the
    /// returned future cancels the build (an admin's cancel, a node agent whose control plane hung up): its
    /// build sandbox and temporary templates are removed all the same, in the background.
    pub async fn build(&self, job: BuildJob, log: LogSink) -> Result<TemplateMeta, BuildFailure> {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let mut cleanup = Cleanup { runtime: self.runtime.clone(), tracker: tracker.clone() };
        let res = match tokio::time::timeout(job.timeout, self.build_inner(&job, &log, &tracker)).await {
            Ok(r) => r,
            Err(_) => {
                let step = tracker.lock().unwrap_or_else(|e| e.into_inner()).step.clone();
                Err(BuildFailure { message: format!("the build timed out after {} s", job.timeout.as_secs()), step })
            }
        };
        cleanup.now().await;
        res
    }

    async fn build_inner(
        &self,
        job: &BuildJob,
        log: &LogSink,
        tracker: &Arc<Mutex<Tracker>>,
    ) -> Result<TemplateMeta, BuildFailure> {
        let set_step = |s: &str| tracker.lock().unwrap_or_else(|e| e.into_inner()).step = Some(s.to_string());
        set_step("base");
        let source = self.resolve_base(&job.recipe)?;
        if let BaseSource::Template(name) = &source
            && !job.base_access.permits(name)
        {
            // Exactly what a missing template says: another team's template is not confirmed to exist.
            return Err(BuildFailure::new(format!("base template '{name}' not found"), Some("base")));
        }
        let base = self.load_base(source, log).await?;
        let mut st = State {
            key: base_cache_key(&base.layers),
            layers: base.layers.clone(),
            ctx: base.ctx.clone(),
            runtime: job.runtime.clone().or(base.runtime.clone()),
        };
        let total = job.recipe.steps.len();
        let mut forced = job.recipe.force;
        for (i, step) in job.recipe.steps.iter().enumerate() {
            let n = (i + 1).to_string();
            set_step(&n);
            let title = format!("[{n}/{total}] {} {}", step.kind, step.args.join(" "));
            let arg = |k: usize| step.args.get(k).cloned().unwrap_or_default();
            let action = match step.kind.as_str() {
                "ENV" => {
                    if step.args.len() % 2 != 0 {
                        return Err(BuildFailure::new("ENV needs key/value pairs", Some(&n)));
                    }
                    for kv in step.args.chunks(2) {
                        st.ctx.env.insert(kv[0].clone(), kv[1].clone());
                    }
                    log(LogLevel::Info, title, Some(n.clone()));
                    continue;
                }
                "USER" => {
                    st.ctx.user = arg(0);
                    if st.ctx.user != super::provision::E2B_USER || self.has_e2b_user(&st.layers) {
                        log(LogLevel::Info, title, Some(n.clone()));
                        continue;
                    }
                    Action::Run { cmd: super::provision::CREATE_E2B_USER.to_string(), user: "root".into() }
                }
                "WORKDIR" => {
                    let dir = absolute(&st.ctx.workdir, &arg(0));
                    st.ctx.workdir = dir.clone();
                    if self.exists_in_layers(&st.layers, &dir) {
                        log(LogLevel::Info, title, Some(n.clone()));
                        continue;
                    }
                    Action::Mkdir { dir, owner: st.ctx.user.clone() }
                }
                "RUN" => {
                    let user =
                        step.args.get(1).filter(|u| !u.is_empty()).cloned().unwrap_or_else(|| st.ctx.user.clone());
                    Action::Run { cmd: arg(0), user }
                }
                "COPY" => {
                    let Some(hash) = step.files_hash.clone().filter(|h| crate::is_valid_files_hash(h)) else {
                        return Err(BuildFailure::new("COPY step without a valid filesHash", Some(&n)));
                    };
                    let files = job.files_dir.join(&hash);
                    if !files.is_file() {
                        return Err(BuildFailure::new(
                            format!("the files of COPY step {n} ({hash}) were not uploaded"),
                            Some(&n),
                        ));
                    }
                    let owner = Some(arg(2)).filter(|u| !u.is_empty()).unwrap_or_else(|| st.ctx.user.clone());
                    Action::Copy { files, src: arg(0), dest: absolute(&st.ctx.workdir, &arg(1)), owner, mode: arg(3) }
                }
                other => return Err(BuildFailure::new(format!("unsupported step type {other}"), Some(&n))),
            };
            let key = step_cache_key(&st.key, step, &st.ctx);
            if step.force == Some(true) {
                forced = true;
            }
            if !forced && let Some(digest) = self.cached_layer(&key) {
                log(LogLevel::Info, format!("CACHED {title}"), Some(n.clone()));
                st.layers.push(digest);
                st.key = key;
                continue;
            }
            log(LogLevel::Info, title, Some(n.clone()));
            let started = std::time::Instant::now();
            let digest = self.layer_step(job, &st, &n, action, log, tracker).await?;
            log(
                LogLevel::Info,
                format!("step {n} done in {:.1} s, layer {}", started.elapsed().as_secs_f64(), &digest[..12]),
                Some(n.clone()),
            );
            self.remember(&key, &digest);
            st.layers.push(digest);
            st.key = key;
        }
        set_step("finalize");
        let meta = TemplateMeta {
            name: job.template_name.clone(),
            layers: st.layers.clone(),
            default_user: st.ctx.user.clone(),
            default_workdir: st.ctx.workdir.clone(),
            env: st.ctx.env.clone(),
            start_cmd: job.recipe.start_cmd.clone().filter(|c| !c.is_empty()).or(base.start_cmd.clone()),
            ready_cmd: job.recipe.ready_cmd.clone().filter(|c| !c.is_empty()),
            cpu_count: job.cpu_count.max(1),
            memory_mb: u64::from(job.memory_mb.max(128)),
            disk_mb: base.disk_mb,
            recipe_hash: st.key.clone(),
            parent: base.parent.clone(),
            runtime: st.runtime.clone(),
        };
        self.runtime
            .store()
            .put(&meta)
            .map_err(|e| BuildFailure::new(format!("registering the template: {e}"), Some("finalize")))?;
        log(
            LogLevel::Info,
            format!(
                "Template '{}' registered: {} layers, user {}, workdir {}",
                meta.name,
                meta.layers.len(),
                meta.default_user,
                meta.default_workdir
            ),
            Some("finalize".into()),
        );
        Ok(meta)
    }

    /// Whether `path` exists in one of the layers (a quick check; whiteouts are not followed).
    fn exists_in_layers(&self, layers: &[String], path: &str) -> bool {
        let rel = path.trim_start_matches('/');
        layers
            .iter()
            .rev()
            .any(|l| std::fs::symlink_metadata(self.runtime.store().layer_dir(l).join(rel)).is_ok_and(|m| m.is_dir()))
    }

    /// Whether the layers have E2B's `user` account (see [`super::provision`]).
    fn has_e2b_user(&self, layers: &[String]) -> bool {
        let dirs: Vec<_> = layers.iter().map(|l| self.runtime.store().layer_dir(l)).collect();
        super::provision::passwd_has_user(&dirs, super::provision::E2B_USER)
    }

    fn shell(&self, layers: &[String]) -> &'static str {
        shell_of(self.runtime.store(), layers)
    }

    /// One build sandbox on the current layers: do `action`, snapshot the writable layer, return its digest.
    async fn layer_step(
        &self,
        job: &BuildJob,
        st: &State,
        n: &str,
        action: Action,
        log: &LogSink,
        tracker: &Arc<Mutex<Tracker>>,
    ) -> Result<String, BuildFailure> {
        let f = fail(n);
        let store = self.runtime.store();
        let name = format!("sbbuild-{}-{n}", job.build_id);
        let meta = TemplateMeta {
            name: name.clone(),
            layers: st.layers.clone(),
            default_user: "root".into(),
            default_workdir: "/".into(),
            env: st.ctx.env.clone(),
            start_cmd: None,
            ready_cmd: None,
            cpu_count: job.cpu_count.max(1),
            memory_mb: u64::from(job.memory_mb.max(128)),
            disk_mb: None,
            recipe_hash: "build".into(),
            parent: None,
            runtime: st.runtime.clone(),
        };
        tracker.lock().unwrap_or_else(|e| e.into_inner()).temp_templates.extend([name.clone(), format!("{name}-s")]);
        store.put(&meta).map_err(|e| f(format!("preparing the build sandbox: {e}")))?;
        let mut spec = SandboxSpec::new(&name);
        spec.cpu_count = Some(meta.cpu_count);
        spec.memory_mb = Some(meta.memory_mb);
        let info = self.runtime.create(spec).await.map_err(|e| f(format!("starting the build sandbox: {e}")))?;
        tracker.lock().unwrap_or_else(|e| e.into_inner()).sandbox = Some(info.id.clone());
        // The build sandbox's envd answers only its node (this engine): the endpoint carries the secret.
        let addr = envd::Endpoint::of(&info).map_err(|e| f(format!("the build sandbox: {e}")))?;
        let shell = self.shell(&st.layers);
        let mut tail: Vec<String> = Vec::new();
        let mut on_line = |is_err: bool, line: String| {
            log(if is_err { LogLevel::Warn } else { LogLevel::Info }, line.clone(), Some(n.to_string()));
            tail.push(line);
            if tail.len() > FAILURE_TAIL {
                tail.remove(0);
            }
        };
        let (user, cmd, cwd) = match action {
            Action::Run { cmd, user } => (user, cmd, st.ctx.workdir.clone()),
            Action::Mkdir { dir, owner } => {
                let d = shell_quote(&dir);
                (
                    "root".to_string(),
                    format!(
                        "[ -d {d} ] || {{ mkdir -p {d} && {{ chown {o}: {d} 2>/dev/null || chown {o} {d}; }}; }}",
                        o = shell_quote(&owner)
                    ),
                    "/".to_string(),
                )
            }
            Action::Copy { files, src, dest, owner, mode } => {
                // Streamed from disk: an upload may be gigabytes.
                let archive = format!("/tmp/.soulbox-copy-{}-{n}.tar", job.build_id);
                envd::upload_file(&addr, "root", &archive, &files)
                    .await
                    .map_err(|e| f(format!("uploading the COPY files: {e}")))?;
                ("root".to_string(), copy_script(&archive, &src, &dest, &owner, &mode), "/".to_string())
            }
        };
        let code = envd::run(&addr, shell, &user, &cmd, &st.ctx.env, &cwd, &mut on_line)
            .await
            .map_err(|e| f(format!("step {n}: {e}")))?;
        if code != 0 {
            let mut m = format!("step {n} failed: the command exited with code {code}");
            if !tail.is_empty() {
                m.push_str("; last output:\n");
                m.push_str(&tail.join("\n"));
            }
            return Err(f(m));
        }
        let snap = self
            .runtime
            .snapshot(&info.id, &format!("{name}-s"))
            .await
            .map_err(|e| f(format!("saving the layer: {e}")))?;
        let digest = snap.layers.last().cloned().ok_or_else(|| f("snapshot has no layer".into()))?;
        if let Err(e) = self.runtime.delete(&info.id).await {
            tracing::warn!(sandbox = %info.id, error = %e, "could not delete a build sandbox");
        } else {
            tracker.lock().unwrap_or_else(|e| e.into_inner()).sandbox = None;
        }
        let _ = store.delete(&name);
        let _ = store.delete(&format!("{name}-s"));
        Ok(digest)
    }
}

/// `p` against `cwd` (the WORKDIR), normalised without touching the filesystem.
pub fn absolute(cwd: &str, p: &str) -> String {
    let joined = if p.starts_with('/') { p.to_string() } else { format!("{cwd}/{p}") };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// The shell script that applies a COPY inside the build sandbox: unpack the context into a staging dir,
/// then copy each match of `src` (a path or glob relative to the context) like Docker: a directory's
/// contents go into `dest`; a file goes into `dest` when it ends in `/` or is a directory, else becomes
/// `dest`. Copied entries get `owner` and, when given, `mode`. A directory's entries come from shell globs, not
/// `ls`: coreutils' `ls` calls statx in a way gVisor of Debian 12 (runsc 2022-12) refuses with EINVAL.
///
/// Symlinks in the context stay symlinks (dangling ones too): ownership and mode go to the links themselves,
/// never through them (`chown -h`, `chmod` only on what is not a link), and an entry copied over an existing
/// non-directory replaces it rather than writing through it (`--remove-destination`, BuildKit's rule), so a
/// link copied by one COPY never redirects the next. It all runs inside the build sandbox: a link can only
/// ever name the sandbox's own files.
pub fn copy_script(archive: &str, src: &str, dest: &str, owner: &str, mode: &str) -> String {
    let src = src.trim_start_matches("./").trim_end_matches('/');
    let src = if src.is_empty() { "." } else { src };
    let q = shell_quote;
    let chmod =
        if mode.is_empty() { String::new() } else { format!("find \"$t\" ! -type l -exec chmod {} {{}} +; ", q(mode)) };
    let glob = src.replace(['"', '\\', '$', '`'], "");
    format!(
        r#"set -e
S=$(mktemp -d /tmp/.soulbox-copy.XXXXXX)
tar -xf {archive} -C "$S"
rm -f {archive}
cd "$S"
D={dest}
O={owner}
# owner plus its login group when it has one; links themselves, not their targets
own() {{ chown -hR "$O:" "$1" 2>/dev/null || chown -hR "$O" "$1"; }}
# replace what is in the way instead of writing through it (busybox cp has no --remove-destination)
cpa() {{ if [ "$RD" = 1 ]; then cp -a --remove-destination "$1" "$2"; else [ -d "$1" ] || [ ! -L "$2" ] || rm -f "$2"; cp -a "$1" "$2"; fi; }}
RD=0; cp --help 2>&1 | grep -q -- --remove-destination && RD=1
new=0; [ -e "$D" ] || new=1
found=0
IFS='
'
for f in {glob}; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  found=1
  if [ -d "$f" ] && [ ! -L "$f" ]; then
    mkdir -p "$D"
    for e in "$f"/* "$f"/.[!.]* "$f"/..?*; do
      [ -e "$e" ] || [ -L "$e" ] || continue
      t="$D/${{e##*/}}"; if [ -d "$e" ] && [ ! -L "$e" ]; then cpa "$e" "$D/"; else cpa "$e" "$t"; fi; own "$t"; {chmod}
    done
  else
    case "$D" in */) mkdir -p "$D"; t="$D$(basename "$f")";; *) if [ -d "$D" ]; then t="$D/$(basename "$f")"; else mkdir -p "$(dirname "$D")"; t="$D"; fi;; esac
    cpa "$f" "$t"; own "$t"; {chmod}
  fi
done
if [ "$new" = 1 ] && [ -d "$D" ]; then chown "$O:" "$D" 2>/dev/null || chown "$O" "$D"; fi
cd / && rm -rf "$S"
[ "$found" = 1 ] || {{ echo "COPY: no files match {srcq}" >&2; exit 1; }}
"#,
        archive = q(archive),
        dest = q(dest),
        owner = q(owner),
        glob = if glob == "." {
            ".".to_string()
        } else {
            glob.split('/')
                .map(|c| if c.contains(['*', '?', '[']) { c.to_string() } else { q(c) })
                .collect::<Vec<_>>()
                .join("/")
        },
        srcq = src.replace(['\'', '"', '\\', '$', '`'], ""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_workdir() {
        assert_eq!(absolute("/home/user", "app"), "/home/user/app");
        assert_eq!(absolute("/home/user", "/opt/x/../y/"), "/opt/y/");
        assert_eq!(absolute("/", "."), "/");
        assert_eq!(absolute("/a", "../../b"), "/b");
    }

    /// The COPY script against a real staging tree with /bin/sh (GNU/busybox tools on the host).
    #[test]
    fn copy_script_semantics() {
        let root = tempfile::tempdir().unwrap();
        let ctx = root.path().join("ctx");
        std::fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        std::fs::write(ctx.join("dir/a.txt"), "a").unwrap();
        std::fs::write(ctx.join("dir/.hidden"), "h").unwrap();
        std::fs::write(ctx.join("dir/..dots"), "d").unwrap();
        std::fs::write(ctx.join("dir/with space.txt"), "s").unwrap();
        std::fs::write(ctx.join("dir/sub/b.txt"), "b").unwrap();
        std::fs::write(ctx.join("one.txt"), "1").unwrap();
        std::fs::write(ctx.join("x.py"), "x").unwrap();
        std::fs::write(ctx.join("y.py"), "y").unwrap();
        let tar = root.path().join("ctx.tar");
        let me = format!("{}", unsafe { libc::getuid() });
        let run = |src: &str, dest: &str, mode: &str| {
            let ok =
                std::process::Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&ctx).arg(".").status().unwrap();
            assert!(ok.success());
            let script = copy_script(&tar.to_string_lossy(), src, dest, &me, mode);
            std::process::Command::new("/bin/sh").arg("-c").arg(script).output().unwrap()
        };
        let out = root.path().join("out");
        let d = |p: &str| format!("{}/{p}", out.display());
        assert!(run("dir/", &d("app"), "").status.success());
        assert_eq!(std::fs::read_to_string(out.join("app/a.txt")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(out.join("app/.hidden")).unwrap(), "h");
        assert_eq!(std::fs::read_to_string(out.join("app/..dots")).unwrap(), "d");
        assert_eq!(std::fs::read_to_string(out.join("app/with space.txt")).unwrap(), "s");
        assert_eq!(std::fs::read_to_string(out.join("app/sub/b.txt")).unwrap(), "b");
        assert!(run("one.txt", &d("file.txt"), "0600").status.success());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(out.join("file.txt")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(run("one.txt", &d("into/"), "").status.success());
        assert!(out.join("into/one.txt").is_file());
        assert!(run("*.py", &d("py/"), "").status.success());
        assert!(out.join("py/x.py").is_file() && out.join("py/y.py").is_file());
        // Symlinks stay links (relative, absolute, dangling), mode and owner never go through them, and a later
        // COPY replaces a link in its way instead of writing through it.
        let victim = root.path().join("victim.txt");
        std::fs::write(&victim, "victim").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir_all(ctx.join("links/sub")).unwrap();
        std::fs::write(ctx.join("links/sub/f"), "f").unwrap();
        let links = [
            ("rel", "sub/f".to_string()),
            ("dir", "sub".to_string()),
            ("dangling", "missing".to_string()),
            ("dangling_abs", "/nonexistent/soulbox-test".to_string()),
            ("victim", victim.display().to_string()),
        ];
        for (name, target) in &links {
            std::os::unix::fs::symlink(target, ctx.join("links").join(name)).unwrap();
        }
        let r = run("links/", &d("links"), "0750");
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        for (name, target) in &links {
            assert_eq!(std::fs::read_link(out.join("links").join(name)).unwrap().display().to_string(), *target);
        }
        assert_eq!(std::fs::metadata(out.join("links/sub/f")).unwrap().permissions().mode() & 0o777, 0o750);
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o644, "chmod went through");
        std::fs::create_dir_all(ctx.join("over")).unwrap();
        for name in ["victim", "dangling", "dangling_abs"] {
            std::fs::write(ctx.join("over").join(name), "new").unwrap();
        }
        let r = run("over/", &d("links"), "");
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        for name in ["victim", "dangling", "dangling_abs"] {
            assert_eq!(std::fs::read_to_string(out.join("links").join(name)).unwrap(), "new", "{name}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim", "a COPY wrote through a link");
        assert!(!std::path::Path::new("/nonexistent/soulbox-test").exists());
        let r = run("links/dangling", &d("single"), "");
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(std::fs::read_link(out.join("single")).unwrap().display().to_string(), "missing");

        let missing = run("nope.txt", &d("z"), "");
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("no files match nope.txt"));
    }
}
