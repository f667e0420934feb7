//! A template's start and ready commands, run at every sandbox create from the template (by the node that
//! starts the sandbox), not only at build time: E2B's `setStartCmd(start, ready)`.

use std::collections::BTreeMap;

use soulbox_runtime::Runtime;

use crate::envd;

/// The shell a template's commands run with: bash when one of its layers has it, else sh.
pub(crate) fn shell_of(store: &soulbox_runtime::Store, layers: &[String]) -> &'static str {
    let has_bash = layers.iter().any(|l| {
        let d = store.layer_dir(l);
        std::fs::symlink_metadata(d.join("usr/bin/bash")).is_ok()
            || std::fs::symlink_metadata(d.join("bin/bash")).is_ok()
    });
    if has_bash { "/bin/bash" } else { "/bin/sh" }
}

/// E2B's start/ready semantics for a sandbox of a built template: the start command is started (in the
/// background, as the template's user in its workdir) and the sandbox counts as created once the ready
/// command exits 0 (tried every 200 ms, up to `SOULBOX_READY_TIMEOUT_S`, default 120 s).
pub async fn start_and_wait_ready(runtime: &Runtime, info: &soulbox_runtime::SandboxInfo) -> Result<(), String> {
    let Ok(meta) = runtime.store().get(&info.template) else {
        return Ok(());
    };
    if meta.start_cmd.is_none() && meta.ready_cmd.is_none() {
        return Ok(());
    }
    let addr = envd::Endpoint::of(info)?;
    let shell = shell_of(runtime.store(), &meta.layers);
    let no_env = BTreeMap::new();
    if let Some(cmd) = meta.start_cmd.clone() {
        let (addr, user, cwd, id) =
            (addr.clone(), meta.default_user.clone(), meta.default_workdir.clone(), info.id.clone());
        tokio::spawn(async move {
            let r = envd::run(&addr, shell, &user, &cmd, &BTreeMap::new(), &cwd, |_, line| {
                tracing::debug!(sandbox = %id, line = %line, "start command output");
            })
            .await;
            tracing::info!(sandbox = %id, result = ?r, "start command ended");
        });
    }
    if let Some(ready) = meta.ready_cmd.clone() {
        let limit = std::env::var("SOULBOX_READY_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(120u64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(limit);
        loop {
            let code =
                envd::run(&addr, shell, &meta.default_user, &ready, &no_env, &meta.default_workdir, |_, _| {}).await?;
            if code == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the template's ready command did not succeed within {limit} s (last exit code {code})"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
