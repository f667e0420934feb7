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
//! Three RUN steps (Python's packages, the other languages' packages, the service) so that changing the service
//! rebuilds only its small layer, never the packages.
//! The server builds it on first use (a create naming it) or ahead (`soulbox template prepare
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

/// Debian 12's packages for the other languages, in a step of their own (after Python's, so adding a language
/// leaves Python's cached layer alone): Node.js 18 and TypeScript 4.8 for SoulBox's JavaScript/TypeScript
/// driver (`node_driver.cjs`), R 4.2 with IRkernel (its kernelspec `ir` comes with the package). Bash is base's.
pub const LANGUAGE_PACKAGES: &[&str] = &["nodejs", "node-typescript", "r-cran-irkernel"];

/// SoulBox's own kernels (`process_kernel.py` under each): kernelspec name, display name, language, entry
/// file, and the language the node driver runs.
const KERNELS: &[(&str, &str, &str, &str, Option<&str>)] = &[
    ("soulbox-bash", "Bash", "bash", "kernel_bash.py", None),
    ("soulbox-javascript", "JavaScript (Node.js)", "javascript", "kernel_node.py", Some("javascript")),
    ("soulbox-typescript", "TypeScript (Node.js)", "typescript", "kernel_node.py", Some("typescript")),
];

/// The service's source files, as they are in the repository (`recipes/code-interpreter/server/`).
pub const SERVICE_FILES: &[(&str, &str)] = &[
    ("main.py", include_str!("../recipes/code-interpreter/server/main.py")),
    ("access.py", include_str!("../recipes/code-interpreter/server/access.py")),
    ("contexts.py", include_str!("../recipes/code-interpreter/server/contexts.py")),
    ("languages.py", include_str!("../recipes/code-interpreter/server/languages.py")),
    ("outputs.py", include_str!("../recipes/code-interpreter/server/outputs.py")),
    ("process_kernel.py", include_str!("../recipes/code-interpreter/server/process_kernel.py")),
    ("kernel_bash.py", include_str!("../recipes/code-interpreter/server/kernel_bash.py")),
    ("kernel_node.py", include_str!("../recipes/code-interpreter/server/kernel_node.py")),
    ("node_driver.cjs", include_str!("../recipes/code-interpreter/server/node_driver.cjs")),
    ("charts.py", include_str!("../recipes/code-interpreter/server/charts.py")),
    ("python_startup.py", include_str!("../recipes/code-interpreter/server/python_startup.py")),
];

/// The Python kernelspec the service runs: Debian's ipykernel, plus `python_startup.py` run at every kernel
/// start (it registers the `e2b/chart` formatter that gives matplotlib figures their chart data).
pub const PYTHON_KERNEL: &str = "soulbox-python";

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

fn install_language_packages() -> String {
    format!(
        "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update\n\
         apt-get install -y --no-install-recommends {}\n\
         apt-get clean\nrm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*\n\
         test -f /usr/share/jupyter/kernels/ir/kernel.json",
        LANGUAGE_PACKAGES.join(" ")
    )
}

/// The kernelspecs of SoulBox's own kernels, where jupyter_client looks (`/usr/local/share/jupyter/kernels`).
fn kernelspecs() -> String {
    let mut script = String::new();
    let python = serde_json::json!({
        "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 format!("--InteractiveShellApp.exec_files={SERVICE_DIR}/python_startup.py")],
        "display_name": "Python 3",
        "language": "python",
    });
    let dir = format!("/usr/local/share/jupyter/kernels/{PYTHON_KERNEL}");
    script.push_str(&format!("mkdir -p {dir}\ncat > {dir}/kernel.json <<'{HEREDOC_END}'\n{python}\n{HEREDOC_END}\n"));
    for (name, display, language, entry, node_language) in KERNELS {
        let mut spec = serde_json::json!({
            "argv": ["python3", format!("{SERVICE_DIR}/{entry}"), "-f", "{connection_file}"],
            "display_name": display,
            "language": language,
        });
        if let Some(node_language) = node_language {
            spec["env"] = serde_json::json!({ "SOULBOX_NODE_LANGUAGE": node_language });
        }
        let dir = format!("/usr/local/share/jupyter/kernels/{name}");
        script.push_str(&format!("mkdir -p {dir}\ncat > {dir}/kernel.json <<'{HEREDOC_END}'\n{spec}\n{HEREDOC_END}\n"));
    }
    script
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
    script.push_str(&kernelspecs());
    script.push_str(&format!(
        "python3 -m compileall -q {SERVICE_DIR}\nchmod -R a+rX {SERVICE_DIR} /usr/local/share/jupyter"
    ));
    script
}

/// The recipe of `code-interpreter-v1`.
pub fn recipe() -> Recipe {
    Recipe {
        from_template: Some(super::base::BASE_TEMPLATE.to_string()),
        steps: vec![
            TemplateStep::new("RUN", vec![install_packages(), "root".to_string()]),
            TemplateStep::new("RUN", vec![install_language_packages(), "root".to_string()]),
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
    fn every_own_kernel_has_a_kernelspec_naming_its_entry_file() {
        let script = install_service();
        for (name, _, _, entry, _) in KERNELS {
            assert!(script.contains(&format!("/usr/local/share/jupyter/kernels/{name}/kernel.json")), "{name}");
            assert!(SERVICE_FILES.iter().any(|(file, _)| file == entry), "{entry} is not installed");
        }
        assert!(script.contains(r#""env":{"SOULBOX_NODE_LANGUAGE":"typescript"}"#), "{script}");
        let python = format!("/usr/local/share/jupyter/kernels/{PYTHON_KERNEL}/kernel.json");
        assert!(script.contains(&python), "{script}");
        assert!(script.contains(&format!("--InteractiveShellApp.exec_files={SERVICE_DIR}/python_startup.py")));
    }

    #[test]
    fn the_recipe_starts_from_base_and_waits_for_the_service() {
        let r = recipe();
        assert_eq!(r.from_template.as_deref(), Some("base"));
        assert_eq!(r.ready_cmd.as_deref(), Some("curl -sf http://127.0.0.1:49999/health"));
        assert!(r.steps[0].args[0].contains("python3-ipykernel"));
        assert!(r.steps[1].args[0].contains("r-cran-irkernel"));
        assert!(r.steps.iter().all(|s| s.kind == "RUN" && s.args[1] == "root"));
    }
}
