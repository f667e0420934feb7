//! Templates SoulBox ships beyond `base` and builds when first needed (a create naming one that the node does
//! not have yet, or `soulbox template prepare NAME` ahead of that): their recipes live in this crate, their builds
//! are ordinary engine builds, cached step by step like any other.

use std::path::PathBuf;
use std::time::Duration;

use super::{BaseAccess, BuildJob, LogLevel, LogSink, Recipe};

/// The names of the templates built on first use.
pub const ON_DEMAND: &[&str] = &[super::code_interpreter::CODE_INTERPRETER_TEMPLATE, super::desktop::DESKTOP_TEMPLATE];

/// The recipe of a template SoulBox ships and builds on first use; `None` for any other name.
pub fn recipe(name: &str) -> Option<Recipe> {
    match name {
        super::code_interpreter::CODE_INTERPRETER_TEMPLATE => Some(super::code_interpreter::recipe()),
        super::desktop::DESKTOP_TEMPLATE => Some(super::desktop::recipe()),
        _ => None,
    }
}

/// The build of the shipped template `name` (registered under that name, public like `base`); `None` when
/// SoulBox ships no template of that name.
pub fn job(name: &str, files_dir: PathBuf) -> Option<BuildJob> {
    let recipe = recipe(name)?;
    let recipe_hash = super::sha256_hex(serde_json::to_string(&recipe).unwrap_or_default().as_bytes());
    Some(BuildJob {
        template_name: name.to_string(),
        // Build sandboxes are named after the build: short and stable per recipe.
        build_id: format!("builtin-{}", &recipe_hash[..12]),
        recipe,
        cpu_count: 2,
        memory_mb: 1024,
        files_dir,
        timeout: Duration::from_secs(3600),
        base_access: BaseAccess::Any,
        runtime: None,
    })
}

/// A log sink for the server's own output: `[template <name>/<step>] <message>` on stderr as each line comes
/// (a multi-line message, like a RUN step's title, is indented).
pub fn stderr_log(name: &str) -> LogSink {
    let name = name.to_string();
    std::sync::Arc::new(move |level, message, step| {
        let step = step.map(|s| format!("/{s}")).unwrap_or_default();
        let level = match level {
            LogLevel::Warn => " warning:",
            LogLevel::Error => " error:",
            _ => "",
        };
        eprintln!("[template {name}{step}]{level} {}", message.replace('\n', "\n    "));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_on_demand_template_has_a_job_named_after_it() {
        for name in ON_DEMAND {
            let job = job(name, PathBuf::from("/nonexistent")).expect("a recipe");
            assert_eq!(job.template_name, *name);
            assert!(job.build_id.starts_with("builtin-"));
        }
        assert!(job("base", PathBuf::new()).is_none(), "base is built at every start, not on demand");
        assert!(recipe("anything-else").is_none());
    }
}
