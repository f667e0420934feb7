//! `code-interpreter-v1`, the template E2B's Code Interpreter SDKs (`e2b_code_interpreter`,
//! `@e2b/code-interpreter`) start by default: `base` plus Jupyter kernels and SoulBox's own execution service on
//! port 49999 (`recipes/code-interpreter/server/`, Python on tornado and jupyter_client), which speaks the
//! SDKs' `/execute` (NDJSON), `/contexts` and `/health`.
//!
//! The Python stack comes from Debian 12's packages, not PyPI: apt reaches the distribution's mirror over
//! plain HTTP from a build sandbox wherever `base` could be bootstrapped, while PyPI needs HTTPS that a build
//! sandbox may not verify (a TLS-intercepting proxy's CA is the host's, not the sandbox's). Users add PyPI
//! packages on top with `pip install` (base's pip installs system-wide).
//!
//! Two RUN steps so that changing the service rebuilds only its small layer, never the packages.
//! The server builds it on first use (a create naming it) or at start (`soulbox server --prepare-template
//! code-interpreter-v1`); the step cache makes later builds instant.

use super::{Recipe, TemplateStep};

pub const CODE_INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";
/// The port E2B's SDKs send `/execute` and `/contexts` to.
pub const PORT: u16 = 49999;
/// Where the service's files are in the template.
pub const SERVICE_DIR: &str = "/opt/soulbox/code-interpreter";

/// Debian 12's packages for the kernels and the usual data stack (ipykernel 6.17, jupyter_client 7.4,
/// tornado 6.2, numpy 1.24, pandas 1.5, matplotlib 3.6, requests 2.28).
pub const PACKAGES: &[&str] = &[
    "python3-ipykernel",
    "python3-jupyter-client",
    "python3-tornado",
    "python3-numpy",
    "python3-pandas",
    "python3-matplotlib",
    "python3-requests",
];

/// The service's source files, as they are in the repository (`recipes/code-interpreter/server/`).
pub const SERVICE_FILES: &[(&str, &str)] = &[
    ("main.py", include_str!("../recipes/code-interpreter/server/main.py")),
    ("access.py", include_str!("../recipes/code-interpreter/server/access.py")),
    ("contexts.py", include_str!("../recipes/code-interpreter/server/contexts.py")),
    ("languages.py", include_str!("../recipes/code-interpreter/server/languages.py")),
    ("outputs.py", include_str!("../recipes/code-interpreter/server/outputs.py")),
];

const HEREDOC_END: &str = "SOULBOX_CODE_INTERPRETER_FILE_END";

fn install_packages() -> String {
    format!(
        "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update\n\
         apt-get install -y --no-install-recommends {}\n\
         apt-get clean\nrm -rf /var/lib/apt/lists/*\n\
         # byte-compile once here rather than at every kernel start in every sandbox\n\
         python3 -m compileall -q /usr/lib/python3/dist-packages >/dev/null || true",
        PACKAGES.join(" ")
    )
}

fn install_service() -> String {
    let mut script = format!("set -e\nmkdir -p {SERVICE_DIR}\n");
    for (name, content) in SERVICE_FILES {
        script.push_str(&format!("cat > {SERVICE_DIR}/{name} <<'{HEREDOC_END}'\n{content}"));
        if !content.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(HEREDOC_END);
        script.push('\n');
    }
    script.push_str(&format!("python3 -m compileall -q {SERVICE_DIR}\nchmod -R a+rX {SERVICE_DIR}"));
    script
}

/// The recipe of `code-interpreter-v1`.
pub fn recipe() -> Recipe {
    Recipe {
        from_template: Some(super::base::BASE_TEMPLATE.to_string()),
        steps: vec![
            TemplateStep::new("RUN", vec![install_packages(), "root".to_string()]),
            TemplateStep::new("RUN", vec![install_service(), "root".to_string()]),
        ],
        start_cmd: Some(format!("python3 {SERVICE_DIR}/main.py")),
        ready_cmd: Some(format!("curl -sf http://127.0.0.1:{PORT}/health")),
        ..Recipe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_files_are_written_whole() {
        let script = install_service();
        for (name, content) in SERVICE_FILES {
            assert!(!content.contains(HEREDOC_END), "{name} contains the heredoc delimiter");
            assert!(script.contains(&format!("cat > {SERVICE_DIR}/{name} <<'{HEREDOC_END}'\n{content}")), "{name}");
        }
    }

    #[test]
    fn the_recipe_starts_from_base_and_waits_for_the_service() {
        let r = recipe();
        assert_eq!(r.from_template.as_deref(), Some("base"));
        assert_eq!(r.ready_cmd.as_deref(), Some("curl -sf http://127.0.0.1:49999/health"));
        assert!(r.steps[0].args[0].contains("python3-ipykernel"));
        assert!(r.steps.iter().all(|s| s.kind == "RUN" && s.args[1] == "root"));
    }
}
