//! The `base` template (what `Sandbox.create()` without a template and E2B's `from_base_image()` get) is an
//! ordinary recipe of the build engine: a Debian 12 bootstrap with the tools E2B's base has — `python` and
//! `pip` (Python 3.11), `node` and `npm` (Debian's Node.js 18.20), `yarn` (Debian's yarnpkg 1.22),
//! `build-essential`, `git`, `curl`, `gh`, `sudo` — then one RUN step that adds the user `user` (uid 1000,
//! home `/home/user`, passwordless sudo), umask 022 for login shells, an /etc/profile that takes the uid from
//! bash's `$EUID` rather than forking `id -u` (the SDKs run every command in a login shell), a world-writable
//! `/code` and `/usr/local` (so `pip install` and `npm install -g` work as `user`), then USER/WORKDIR.
//!
//! Every tool comes from Debian packages in the bootstrap itself (no registry, no network in a build step).
//! The extra packages are base's alone ([`BASE_PACKAGES`], a `bootstrap:debian:bookworm:<pkg>,…` base), so
//! a plain `FROM debian:bookworm` stays the lean [`super::bootstrap::DEFAULT_PACKAGES`] set.
//!
//! The server builds it at every start; the engine's caches (bootstrap layer, step layers) make that a few
//! milliseconds once built, and a changed recipe rebuilds only what changed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::{BuildFailure, BuildJob, LogSink, Recipe, TemplateStep};

pub const BASE_TEMPLATE: &str = "base";
/// What base has beyond a plain Debian bootstrap (Debian 12's versions: Python 3.11, Node.js 18, yarn 1.22,
/// gh 2.23). `python-is-python3` makes `python` Python 3.
pub const BASE_PACKAGES: &[&str] = &["build-essential", "gh", "nodejs", "npm", "python-is-python3", "yarnpkg"];

/// `bootstrap:debian:bookworm:<BASE_PACKAGES>`.
pub fn base_from() -> String {
    format!("bootstrap:debian:bookworm:{}", BASE_PACKAGES.join(","))
}

/// Run as root in the bootstrapped system; every line keeps a property the SDKs and tests rely on.
const SETUP: &str = r#"set -e
useradd -m -s /bin/bash -u 1000 user
usermod -aG sudo user
echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
chmod 0440 /etc/sudoers.d/user
passwd -d root
sed -i 's/^UMASK.*/UMASK 022/' /etc/login.defs
echo 'umask 022' > /etc/profile.d/umask.sh
# Every SDK command is `bash -l -c`: Debian's /etc/profile forks `id -u` for the uid, a third of a login shell's
# start-up. bash knows it ($EUID); other shells (dash, for `sh -l`) still ask id. Same environment either way
# (tests/e2e/test_login_env.py); the count check fails the build if Debian's file ever changes shape.
sed -i -e '/^# and Bourne compatible shells/a\
if [ -n "${BASH_VERSION-}" ]; then __profile_uid=$EUID; else __profile_uid=$(id -u); fi' \
  -e 's/^\( *if \[ \)"$(id -u)"/\1"$__profile_uid"/' -e '$a unset __profile_uid' /etc/profile
test "$(grep -c 'id -u' /etc/profile)" = 1
mkdir -p /code && chmod 777 /code && chmod -R 777 /usr/local
# Debian's pip refuses to install outside a venv (PEP 668); E2B's base (python:3.11) lets `pip install x` work.
# pip.conf rather than deleting EXTERNALLY-MANAGED: it is our own file, so a python3 upgrade keeps it.
printf '[global]\nbreak-system-packages = true\n' > /etc/pip.conf
# Debian calls yarn `yarnpkg` (the name `yarn` is cmdtest's there).
ln -s /usr/bin/yarnpkg /usr/bin/yarn
chown -R user:user /home/user"#;

/// The recipe of `base`. Packages come with the bootstrap ([`super::bootstrap::DEFAULT_PACKAGES`] and
/// [`BASE_PACKAGES`]), so no step needs the network.
pub fn recipe() -> Recipe {
    Recipe {
        from_image: Some(base_from()),
        steps: vec![
            TemplateStep::new("RUN", vec![SETUP.to_string(), "root".to_string()]),
            TemplateStep::new("USER", vec!["user".to_string()]),
            TemplateStep::new("WORKDIR", vec!["/home/user".to_string()]),
        ],
        ..Recipe::default()
    }
}

/// Builds (or, when every layer is cached, just re-registers) `base`, each log line to `log`.
pub async fn ensure_base(engine: &Engine, files_dir: PathBuf, log: LogSink) -> Result<Duration, BuildFailure> {
    let recipe = recipe();
    let recipe_hash = super::sha256_hex(serde_json::to_string(&recipe).unwrap_or_default().as_bytes());
    let job = BuildJob {
        template_name: BASE_TEMPLATE.to_string(),
        // Build sandboxes are named after the build: keep it short and stable per recipe.
        build_id: format!("base-{}", &recipe_hash[..12]),
        recipe,
        cpu_count: 2,
        memory_mb: 512,
        files_dir,
        timeout: Duration::from_secs(3600),
        base_access: super::BaseAccess::Any,
        runtime: None,
    };
    let started = Instant::now();
    engine.build(job, log).await?;
    Ok(started.elapsed())
}

/// A log sink for the server's own output: `[template base/<step>] <message>` on stderr as each line comes.
pub fn stderr_log() -> LogSink {
    super::builtin::stderr_log(BASE_TEMPLATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_recipe_keeps_the_e2b_properties() {
        let r = recipe();
        assert_eq!(
            r.from_image.as_deref(),
            Some("bootstrap:debian:bookworm:build-essential,gh,nodejs,npm,python-is-python3,yarnpkg")
        );
        let run = &r.steps[0];
        assert_eq!((run.kind.as_str(), run.args[1].as_str()), ("RUN", "root"));
        for needed in [
            "useradd -m -s /bin/bash -u 1000 user",
            "NOPASSWD: ALL",
            "umask 022",
            "__profile_uid=$EUID",
            "chmod 777 /code",
            "break-system-packages = true",
            "/usr/bin/yarn",
        ] {
            assert!(run.args[0].contains(needed), "{needed}");
        }
        assert_eq!(r.steps[1], TemplateStep::new("USER", vec!["user".into()]));
        assert_eq!(r.steps[2], TemplateStep::new("WORKDIR", vec!["/home/user".into()]));
    }
}
