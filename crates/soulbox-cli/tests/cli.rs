//! The client commands of the `soulbox` binary against a real server. Skipped (with a message) unless
//! `SOULBOX_TEST_API_URL` and `SOULBOX_TEST_API_KEY` are set; `crates/soulbox/tests/run.sh` sets them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    api_url: String,
    key: String,
}

fn env() -> Option<Env> {
    Some(Env { api_url: std::env::var("SOULBOX_TEST_API_URL").ok()?, key: std::env::var("SOULBOX_TEST_API_KEY").ok()? })
}

macro_rules! live {
    () => {
        match env() {
            Some(e) => e,
            None => {
                eprintln!(
                    "skipped: set SOULBOX_TEST_API_URL and SOULBOX_TEST_API_KEY (crates/soulbox/tests/run.sh does)"
                );
                return;
            }
        }
    };
}

fn cmd(e: &Env) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_soulbox"));
    for v in [
        "E2B_API_URL",
        "E2B_SANDBOX_URL",
        "E2B_API_KEY",
        "SOULBOX_API_URL",
        "SOULBOX_SANDBOX_URL",
        "SOULBOX_API_KEY",
        "E2B_DOMAIN",
    ] {
        c.env_remove(v);
    }
    c.env("SOULBOX_API_URL", &e.api_url).env("SOULBOX_API_KEY", &e.key).env("SOULBOX_LOG", "warn");
    c
}

fn run(e: &Env, args: &[&str]) -> Output {
    cmd(e).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stdout)))
}

struct Sbx<'a>(&'a Env, String);
impl Drop for Sbx<'_> {
    fn drop(&mut self) {
        let _ = run(self.0, &["sandbox", "kill", &self.1]);
    }
}

fn create<'a>(e: &'a Env, extra: &[&str]) -> Sbx<'a> {
    let mut args = vec!["sandbox", "create", "--json", "--timeout", "300"];
    args.extend_from_slice(extra);
    let v = json(&run(e, &args));
    Sbx(e, v["sandboxID"].as_str().unwrap().to_owned())
}

#[test]
fn sandbox_commands_json_and_exit_codes() {
    let e = live!();
    let tag = format!("cli{}", std::process::id());
    let s = create(&e, &["-m", &format!("suite={tag}"), "-e", "FOO=bar", "--auto-pause", "--grace", "10"]);
    let id = s.1.as_str();

    let list = json(&run(&e, &["sandbox", "list", "--json", "-m", &format!("suite={tag}")]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["sandboxID"], id);
    let table = run(&e, &["sandbox", "list", "-m", &format!("suite={tag}")]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("SANDBOX ID"), "{text}");
    assert!(text.contains(id));

    let info = json(&run(&e, &["sandbox", "info", id, "--json"]));
    assert_eq!(info["state"], "running");
    assert_eq!(info["lifecycle"]["onTimeout"], "pause");

    let t = json(&run(&e, &["sandbox", "timeout", id, "120", "--json"]));
    assert!(t["status"].as_str().unwrap().starts_with("ends at"));
    json(&run(&e, &["sandbox", "refresh", id, "200", "--json"]));
    assert_eq!(run(&e, &["sandbox", "refresh", id, "99999999"]).status.code(), Some(8), "past the max lifetime");

    assert_eq!(json(&run(&e, &["sandbox", "pause", id, "--json"]))["status"], "paused");
    assert_eq!(json(&run(&e, &["sandbox", "pause", id, "--json"]))["status"], "already paused");
    assert_eq!(json(&run(&e, &["sandbox", "info", id, "--json"]))["state"], "paused");
    let paused = run(&e, &["exec", id, "--", "true"]);
    assert_eq!(paused.status.code(), Some(8), "exec never resumes implicitly");
    assert!(String::from_utf8_lossy(&paused.stderr).contains("paused"));
    assert_eq!(json(&run(&e, &["sandbox", "resume", id, "--json"]))["status"], "running");
    let out = run(&e, &["exec", id, "--", "echo $FOO"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar\n");

    let metrics = json(&run(&e, &["sandbox", "metrics", id, "--json"]));
    assert!(metrics.is_array());
    assert!(json(&run(&e, &["sandbox", "logs", id, "--json"])).is_array());

    // exit codes: not found 3, auth 4, usage 2
    assert_eq!(run(&e, &["sandbox", "info", "nosuchsandbox"]).status.code(), Some(3));
    let bad = cmd(&e)
        .env("SOULBOX_API_KEY", "e2b_0000000000000000000000000000000000000000")
        .args(["sandbox", "list"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error: authentication failed"));
    assert_eq!(run(&e, &["sandbox", "create", "--grace", "5"]).status.code(), Some(2));

    let nodes = json(&run(&e, &["nodes", "list", "--json"]));
    assert!(nodes[0]["memoryMB"].as_u64().unwrap() > 0);

    let killed = json(&run(&e, &["sandbox", "kill", id, "--json"]));
    assert_eq!(killed[0]["killed"], true);
    assert_eq!(run(&e, &["sandbox", "kill", id]).status.code(), Some(3));
}

#[test]
fn exec_streams_output_and_passes_the_exit_code() {
    let e = live!();
    let s = create(&e, &[]);
    let id = s.1.as_str();
    let out = run(&e, &["exec", id, "--", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = run(&e, &["exec", id, "--cwd", "/tmp", "-e", "A=1 2", "--", "printf", "%s|", "$A", "a b"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "$A|a b|", "words are quoted");

    // streaming: the first line arrives while the command still runs
    let mut child =
        cmd(&e).args(["exec", id, "--", "echo first; sleep 2; echo second"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let t0 = Instant::now();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    assert!(child.try_wait().unwrap().is_none(), "first line must arrive before the command ends");
    assert!(t0.elapsed() < Duration::from_millis(1800));
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());

    // stdin forwarding
    let mut child = cmd(&e)
        .args(["exec", "-i", id, "--", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");

    // a timeout is 124
    assert_eq!(run(&e, &["exec", "--timeout", "1", id, "--", "sleep 20"]).status.code(), Some(124));
}

#[test]
fn cp_round_trip() {
    let e = live!();
    let s = create(&e, &[]);
    let id = s.1.as_str();
    let dir = std::env::temp_dir().join(format!("soulbox-cli-cp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let up = json(&run(&e, &["cp", src.to_str().unwrap(), &format!("{id}:/tmp/cp/"), "--json"]));
    assert_eq!(up["path"], "/tmp/cp/src.bin");
    assert_eq!(up["bytes"], data.len());
    let dst = dir.join("dst.bin");
    let down = run(&e, &["cp", &format!("{id}:/tmp/cp/src.bin"), dst.to_str().unwrap()]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(std::fs::read(&dst).unwrap() == data);
    assert_eq!(run(&e, &["cp", &format!("{id}:/nope"), dst.to_str().unwrap()]).status.code(), Some(3));
    assert_eq!(run(&e, &["cp", "a", "b"]).status.code(), Some(8));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_has_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_soulbox")).args(["sandbox", "create", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:") && text.contains("soulbox sandbox create"), "{text}");
    for sub in ["exec", "cp", "shell"] {
        let out = Command::new(env!("CARGO_BIN_EXE_soulbox")).args([sub, "--help"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("Example"), "{sub}");
    }
}

/// `soulbox shell` driven in tmux: type a command, read the screen, resize the window, exit with a code.
#[test]
fn shell_in_tmux() {
    let e = live!();
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let s = create(&e, &[]);
    let session = format!("sbcli{}", std::process::id());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned();
    let wait_for = |needle: &str| {
        let t0 = Instant::now();
        loop {
            let text = screen();
            if text.contains(needle) {
                return text;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "{needle:?} not on screen:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let shell = format!(
        "SOULBOX_API_URL={} SOULBOX_API_KEY={} SOULBOX_LOG=warn {} shell {}; echo SHELL-EXIT=$?; sleep 60",
        e.api_url,
        e.key,
        env!("CARGO_BIN_EXE_soulbox"),
        s.1
    );
    assert!(tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", &shell]).status.success());
    struct KillSession(String);
    impl Drop for KillSession {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
        }
    }
    let _session_guard = KillSession(session.clone());
    wait_for(":~$");
    tmux(&["send-keys", "-t", &session, "stty size; echo v=$((6*7))", "Enter"]);
    wait_for("v=42");
    assert!(screen().contains("30 100"));
    tmux(&["resize-window", "-t", &session, "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "clear; stty size", "Enter"]);
    wait_for("40 120");
    tmux(&["send-keys", "-t", &session, "exit 5", "Enter"]);
    wait_for("SHELL-EXIT=5");
}

/// `template build` from a Dockerfile (plain log lines when not on a terminal), `list` (table and JSON), a failing
/// build's exit code naming its step, `delete`.
#[test]
fn template_build_list_delete() {
    let e = live!();
    let id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let name = format!("cli-tpl-{id}");
    struct Tpl<'a>(&'a Env, String);
    impl Drop for Tpl<'_> {
        fn drop(&mut self) {
            let _ = run(self.0, &["template", "delete", &self.1, &format!("{}-fail", self.1)]);
        }
    }
    let _guard = Tpl(&e, name.clone());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("greeting.txt"), "hi from cli\n").unwrap();
    // The id in the RUN keeps the step out of the cache of earlier runs, so its output is printed.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        // Every instruction the front end supports: comments, continuations, ARG/ENV substitution, COPY and ADD with
        // --chown/--chmod, RUN in shell and exec form, WORKDIR, USER, ENTRYPOINT + CMD as the start command.
        format!(
            "# syntax is ignored\nFROM base\nUSER root\nARG WHO=world\nENV WHO=$WHO \\\n    MODE=test\nCOPY greeting.txt /opt/greeting.txt\n\
             ADD --chown=user --chmod=640 greeting.txt /opt/added.txt\nRUN echo built-for-$WHO # {id}\n\
             RUN [\"/bin/sh\", \"-c\", \"echo exec-form > /opt/exec.txt\"]\nWORKDIR /opt\nUSER user\n\
             RUN whoami > /home/user/built-as.txt\nENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
             CMD [\"echo started-as-$(whoami) > /tmp/started.txt; exec sleep infinity\"]\n"
        ),
    )
    .unwrap();
    let dockerfile = ctx.path().join("Dockerfile");
    let out = run(
        &e,
        &[
            "template",
            "build",
            "-f",
            dockerfile.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
            "--name",
            &format!("{name}:v1"),
            "--build-arg",
            "WHO=cli",
            "--cpu",
            "1",
            "--memory-mb",
            "512",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l == "[7] built-for-cli"), "plain lines `[step] message` when not a TTY:\n{stdout}");
    assert!(stdout.contains(&format!("Built {name}:v1")), "{stdout}");

    let sbx = create(&e, &[&format!("{name}:v1")]);
    let out = run(
        &e,
        &["exec", &sbx.1, "--", "cat greeting.txt; echo $WHO $MODE; pwd; whoami; cat exec.txt /home/user/built-as.txt"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from cli\ncli test\n/opt\nuser\nexec-form\nuser\n");
    let out = run(&e, &["exec", &sbx.1, "--", "stat -c '%U %a' /opt/added.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "user 640\n", "ADD --chown --chmod");
    // The start command (ENTRYPOINT + CMD) runs when the sandbox starts; create does not wait for it (no ready
    // command), so give it a bounded moment inside the sandbox.
    let out = run(
        &e,
        &[
            "exec",
            &sbx.1,
            "--",
            "for i in $(seq 100); do [ -s /tmp/started.txt ] && break; sleep 0.1; done; cat /tmp/started.txt",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started-as-user\n", "the start command ran as the image's user");
    drop(sbx);

    // `--json`: the log goes to stderr, stdout is one JSON document.
    let failing = ctx.path().join("Dockerfile.fail");
    std::fs::write(&failing, "FROM base\nRUN echo going-down; exit 7\n").unwrap();
    let out =
        run(&e, &["template", "build", "-f", failing.to_str().unwrap(), "--name", &format!("{name}-fail"), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(stderr.contains("failed at step 3") && stderr.contains("going-down"), "{stderr}");
    let bad = ctx.path().join("Dockerfile.bad");
    std::fs::write(&bad, "FROM base\nHEALTHCHECK CMD true\n").unwrap();
    let out = run(&e, &["template", "build", "-f", bad.to_str().unwrap(), "--name", &name]);
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&out.stderr));

    let list = json(&run(&e, &["template", "list", "--json"]));
    assert!(list.as_array().unwrap().iter().any(|t| t["templateID"] == "base"), "{list}");
    let table = run(&e, &["template", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("TEMPLATE"));

    let out = run(&e, &["template", "delete", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&e, &["template", "delete", &name]);
    assert_eq!(out.status.code(), Some(3), "deleting a missing template is 'not found'");
}

/// `soulbox template prepare` refuses a name SoulBox does not ship before anything is built, naming what it
/// ships. (Preparing `code-interpreter-v1` itself is minutes of apt when cold: tests/e2e/test_code_interpreter.py.)
#[test]
fn template_prepare_refuses_a_template_soulbox_does_not_ship() {
    let e = live!();
    let out = run(&e, &["template", "prepare", "not-shipped-by-soulbox"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not a template SoulBox ships") && stderr.contains("code-interpreter-v1"), "{stderr}");
}
