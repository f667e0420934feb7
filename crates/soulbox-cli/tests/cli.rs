//! The client commands of the `soulbox` binary against a real server. Skipped (with a message) unless
//! `SOULBOX_TEST_API_URL` and `SOULBOX_TEST_API_KEY` are set; `crates/soulbox/tests/run.sh` sets them.

use soulbox_layer::testing::Tar;
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

fn text(out: &Output) -> String {
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `soulbox keys`/`teams` resolve the server's configuration: the config file's `database_url` and `[teams]`,
/// overridden by `SOULBOX_DATABASE_URL`, overridden by `--database-url`; `--json` everywhere.
#[test]
fn admin_commands_resolve_the_server_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = |name: &str| dir.path().join(name);
    let url = |name: &str| format!("sqlite://{}?mode=rwc", db(name).display());
    std::fs::write(
        data.join("config.toml"),
        format!("database_url = \"{}\"\n[teams]\nmax_sandboxes = 7\n", url("from-config.db")),
    )
    .unwrap();
    let admin = |args: &[&str], env_url: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_soulbox"));
        c.env_remove("SOULBOX_DATABASE_URL").env_remove("SOULBOX_CONFIG").env("SOULBOX_LOG", "warn");
        if let Some(u) = env_url {
            c.env("SOULBOX_DATABASE_URL", u);
        }
        c.arg("--data-dir").arg(&data).args(args).output().unwrap()
    };
    let created: serde_json::Value =
        serde_json::from_str(&text(&admin(&["keys", "create", "--name", "k1", "--json"], None))).unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("e2b_"), "{created}");
    assert_eq!(created["team"], "default");
    assert!(db("from-config.db").exists(), "the config file's database_url is used");
    assert!(!data.join("soulbox.db").exists(), "not the data dir's default SQLite file");

    let env_url = url("from-env.db");
    text(&admin(&["keys", "create", "--name", "k2"], Some(&env_url)));
    assert!(db("from-env.db").exists(), "SOULBOX_DATABASE_URL overrides the config file");
    text(&admin(&["keys", "create", "--name", "k3", "--database-url", &url("from-flag.db")], Some(&env_url)));
    assert!(db("from-flag.db").exists(), "--database-url overrides the environment");

    let keys: serde_json::Value = serde_json::from_str(&text(&admin(&["keys", "list", "--json"], None))).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "only k1 is in the config's database: {keys:?}");
    assert_eq!(keys[0]["name"], "k1");
    assert!(keys[0].get("key").is_none(), "never the secret");
    let id = keys[0]["id"].as_str().unwrap();
    let revoked: serde_json::Value =
        serde_json::from_str(&text(&admin(&["keys", "revoke", id, "--json"], None))).unwrap();
    assert_eq!(revoked["revoked"], true);

    let teams: serde_json::Value = serde_json::from_str(&text(&admin(&["teams", "list", "--json"], None))).unwrap();
    assert_eq!(teams[0]["limits"]["maxSandboxes"], 7, "[teams] of the config file: {teams}");
    let set: serde_json::Value =
        serde_json::from_str(&text(&admin(&["teams", "limits", "default", "--max-builds", "3", "--json"], None)))
            .unwrap();
    assert_eq!((set["maxSandboxes"].as_u64(), set["maxBuilds"].as_u64()), (Some(7), Some(3)));
}

/// A key made by `soulbox keys` on the running server's data dir works against that server at once, and stops
/// working when revoked (run.sh exports the data dir).
#[test]
fn admin_keys_on_the_live_server() {
    let e = live!();
    let Ok(data) = std::env::var("SOULBOX_TEST_DATA_DIR") else {
        eprintln!("skipped: SOULBOX_TEST_DATA_DIR is not set");
        return;
    };
    let admin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_soulbox"))
            .env("SOULBOX_LOG", "warn")
            .env_remove("SOULBOX_DATABASE_URL")
            .args(["--data-dir", &data])
            .args(args)
            .output()
            .unwrap()
    };
    let created: serde_json::Value =
        serde_json::from_str(&text(&admin(&["keys", "create", "--name", "cli-admin-test", "--json"]))).unwrap();
    let key = created["key"].as_str().unwrap();
    let list = cmd(&e).env("SOULBOX_API_KEY", key).args(["sandbox", "list", "-q"]).output().unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    text(&admin(&["keys", "revoke", created["id"].as_str().unwrap()]));
    let list = cmd(&e).env("SOULBOX_API_KEY", key).args(["sandbox", "list", "-q"]).output().unwrap();
    assert_eq!(list.status.code(), Some(4), "a revoked key is refused");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let bin = env!("CARGO_BIN_EXE_soulbox");
    let bash = text(&Command::new(bin).args(["completions", "bash"]).output().unwrap());
    assert!(bash.contains("_soulbox") && bash.contains("--quiet") && bash.contains("sandbox__subcmd__list"), "bash");
    let check = Command::new("bash").args(["-n", "-c", &bash]).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    assert!(text(&Command::new(bin).args(["completions", "zsh"]).output().unwrap()).starts_with("#compdef soulbox"));
    let fish = text(&Command::new(bin).args(["completions", "fish"]).output().unwrap());
    assert!(fish.contains("complete -c soulbox") && fish.contains("profile"), "fish");
    assert_eq!(Command::new(bin).args(["completions", "tcsh"]).output().unwrap().status.code(), Some(2));

    let top = text(&Command::new(bin).args(["man"]).output().unwrap());
    assert!(top.contains(".TH soulbox 1") && top.contains("sandbox"), "{top}");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin).args(["man", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(dir.path().join("soulbox-sandbox-list.1")).unwrap();
    assert!(page.contains(".TH soulbox-sandbox-list 1") && page.contains("quiet"), "{page}");
    for p in ["soulbox.1", "soulbox-keys-create.1", "soulbox-cp.1", "soulbox-profile-add.1"] {
        assert!(dir.path().join(p).exists(), "{p}");
    }
}

/// `-q` prints ids only; `sandbox url` prints the Host-routed URL of a port, and that URL reaches the sandbox.
#[test]
fn quiet_lists_and_port_urls() {
    let e = live!();
    let tag = format!("q{}", std::process::id());
    let s = create(&e, &["-m", &format!("suite={tag}")]);
    assert_eq!(text(&run(&e, &["sandbox", "list", "-q", "-m", &format!("suite={tag}")])), format!("{}\n", s.1));
    assert!(text(&run(&e, &["template", "list", "-q"])).lines().any(|l| l == "base"));
    let nodes = text(&run(&e, &["nodes", "list", "--quiet"]));
    assert!(!nodes.is_empty() && nodes.lines().all(|l| !l.contains(' ')), "{nodes}");

    let port = e.api_url.rsplit(':').next().unwrap().trim_end_matches('/');
    let url = text(&run(&e, &["sandbox", "url", &s.1, "49983"]));
    assert_eq!(url, format!("http://49983-{}.localhost:{port}\n", s.1));
    // What a browser does with that URL: connect to the loopback address, send the Host.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    let host = url.trim().trim_start_matches("http://");
    write!(conn, "GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 2"), "envd's /health through the URL's Host: {answer}");
    assert_eq!(run(&e, &["sandbox", "url", "nosuchsandbox", "80"]).status.code(), Some(3));
}

/// `cp -r` both ways (names with spaces, nested dirs, a symlink, a binary file), like docker cp: into an existing
/// directory, else as the new directory.
#[test]
fn cp_recursive_round_trip() {
    let e = live!();
    let s = create(&e, &[]);
    let id = s.1.as_str();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("my project");
    std::fs::create_dir_all(src.join("a dir/deeper")).unwrap();
    std::fs::write(src.join("a dir/file one.txt"), "one\n").unwrap();
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(src.join("a dir/deeper/blob.bin"), &data).unwrap();
    std::os::unix::fs::symlink("a dir/file one.txt", src.join("link")).unwrap();

    let up = run(&e, &["cp", "-r", src.to_str().unwrap(), &format!("{id}:/home/user/up load")]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let out = run(
        &e,
        &[
            "exec",
            id,
            "--",
            "cat '/home/user/up load/a dir/file one.txt' '/home/user/up load/link'; readlink '/home/user/up load/link'; stat -c %s '/home/user/up load/a dir/deeper/blob.bin'",
        ],
    );
    assert_eq!(text(&out), format!("one\none\na dir/file one.txt\n{}\n", data.len()));
    // Again: the destination exists now, so the directory goes into it under its own name.
    text(&run(&e, &["cp", "-r", src.to_str().unwrap(), &format!("{id}:/home/user/up load")]));
    let out = run(&e, &["exec", id, "--", "cat '/home/user/up load/my project/a dir/file one.txt'"]);
    assert_eq!(text(&out), "one\n");

    let back = dir.path().join("back");
    let down = run(&e, &["cp", "-r", &format!("{id}:/home/user/up load/"), back.to_str().unwrap(), "--json"]);
    let report = json(&down);
    assert_eq!(report["files"], 4, "{report}");
    assert_eq!(std::fs::read_to_string(back.join("a dir/file one.txt")).unwrap(), "one\n");
    assert!(std::fs::read(back.join("a dir/deeper/blob.bin")).unwrap() == data);
    assert_eq!(std::fs::read_link(back.join("link")).unwrap().to_str(), Some("a dir/file one.txt"));
    assert!(back.join("my project/a dir/deeper").is_dir());
    // An existing local directory: the copy goes into it.
    text(&run(&e, &["cp", "-r", &format!("{id}:/home/user/up load/a dir"), back.to_str().unwrap()]));
    assert!(back.join("a dir/deeper/blob.bin").is_file());
    assert_eq!(run(&e, &["cp", "-r", &format!("{id}:/etc/hostname"), "x"]).status.code(), Some(8), "not a dir");
}

/// A hostile sandbox controls the tar it sends (here its `tar` is replaced by one that sends a crafted archive):
/// `..` and absolute paths abort the copy, and a symlink out of the destination is never made nor written through.
#[test]
fn cp_recursive_refuses_a_hostile_archive() {
    let e = live!();
    let s = create(&e, &[]);
    let id = s.1.as_str();
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let archives: [(&str, Vec<u8>); 3] = [
        ("dotdot", Tar::new().file("dotdot/../../escape.txt", b"pwned").bytes()),
        ("absolute", Tar::new().file(&format!("{}/abs.txt", outside.display()), b"pwned").bytes()),
        (
            "link",
            Tar::new()
                .dir("link/")
                .symlink("link/out", outside.to_str().unwrap())
                .file("link/out/pwned", b"pwned")
                .symlink("link/up", "../../outside")
                .bytes(),
        ),
    ];
    for (name, bytes) in &archives {
        let local = dir.path().join(format!("{name}.tar"));
        std::fs::write(&local, bytes).unwrap();
        text(&run(&e, &["cp", local.to_str().unwrap(), &format!("{id}:/tmp/evil/{name}.tar")]));
    }
    // The sandbox's tar now answers `tar -cf FILE -C PARENT NAME` with the crafted archive of that NAME.
    let fake = "printf '#!/bin/sh\\ncp \"/tmp/evil/$5.tar\" \"$2\"\\n' > /usr/bin/tar && mkdir -p /tmp/d/dotdot /tmp/d/absolute /tmp/d/link";
    text(&run(&e, &["exec", "--user", "root", id, "--", fake]));

    for name in ["dotdot", "absolute"] {
        let out = run(&e, &["cp", "-r", &format!("{id}:/tmp/d/{name}"), dir.path().join(name).to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("refusing archive entry"), "{name}: {stderr}");
    }
    assert!(!dir.path().join("escape.txt").exists() && !dir.path().parent().unwrap().join("escape.txt").exists());

    let dst = dir.path().join("link");
    let out = run(&e, &["cp", "-r", &format!("{id}:/tmp/d/link"), dst.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped link/out (symlink to") && stderr.contains("leaves the copy"), "{stderr}");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing was written outside the destination");
    assert!(!std::fs::symlink_metadata(dst.join("out")).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(dst.join("up")).is_err(), "the link up and out is not made");
}

/// `sandbox logs -f` prints lines as they come (NDJSON with --json), each once, and ends when the sandbox does.
#[test]
fn logs_follow_until_the_sandbox_ends() {
    let e = live!();
    let s = create(&e, &[]);
    let mut child = cmd(&e)
        .args(["sandbox", "logs", "-f", &s.1, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct KillChild(std::process::Child);
    let stdout = child.stdout.take().unwrap();
    let mut guard = KillChild(child);
    impl Drop for KillChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("a first log line while following");
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(v["timestamp"].is_string() && v["line"].is_string(), "{v}");
    // Several polls later: exactly the lines the one-shot `logs` returns, each once.
    let mut seen = vec![first];
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(3500)) {
        seen.push(l);
    }
    let seen: Vec<serde_json::Value> = seen.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let all = json(&run(&e, &["sandbox", "logs", &s.1, "--json"]));
    let all: Vec<serde_json::Value> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|l| serde_json::json!({ "timestamp": l["timestamp"], "line": l["line"] }))
        .collect();
    assert_eq!(seen, all, "the followed lines are the log, each once");

    text(&run(&e, &["sandbox", "kill", &s.1]));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "the follower ends when the sandbox does");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

/// Named profiles: the current profile connects with no environment; `--profile` picks another; the environment
/// overrides a profile; the file is owner-only.
#[test]
fn connection_profiles() {
    let e = live!();
    let home = tempfile::tempdir().unwrap();
    let p = |args: &[&str]| {
        let mut c = cmd(&e);
        c.env_remove("SOULBOX_API_URL").env_remove("SOULBOX_API_KEY").env_remove("SOULBOX_PROFILE");
        c.env("HOME", home.path()).env_remove("XDG_CONFIG_HOME").args(args).output().unwrap()
    };
    // Port 9 on loopback: nothing listens, so a profile pointing there fails to connect.
    text(&p(&["profile", "add", "dead", "--api-url", "http://127.0.0.1:9", "--api-key", &e.key]));
    text(&p(&["profile", "add", "local", "--api-url", &e.api_url, "--api-key", &e.key]));
    let file = home.path().join(".config/soulbox/profiles.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    assert_ne!(p(&["sandbox", "list", "-q"]).status.code(), Some(0), "the first profile added is current");
    text(&p(&["sandbox", "list", "-q", "--profile", "local"]));
    text(&p(&["profile", "use", "local"]));
    text(&p(&["sandbox", "list", "-q"]));
    let list = json(&p(&["profile", "list", "--json"]));
    let local = list.as_array().unwrap().iter().find(|x| x["name"] == "local").unwrap();
    assert_eq!(local["current"], true);
    assert!(!local["apiKey"].as_str().unwrap().contains(&e.key[10..]), "keys are masked");

    let env_wins = cmd(&e)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .args(["sandbox", "list", "-q", "--profile", "dead"])
        .output()
        .unwrap();
    assert!(env_wins.status.success(), "SOULBOX_API_URL overrides the profile");
    assert_eq!(p(&["sandbox", "list", "--profile", "nope"]).status.code(), Some(3));
    text(&p(&["profile", "remove", "dead"]));
    assert_eq!(p(&["profile", "use", "dead"]).status.code(), Some(3));
}

/// `sandbox metrics -f` piped: one NDJSON sample per line as the server takes them; ends with the sandbox.
#[test]
fn metrics_follow_prints_samples_until_the_sandbox_ends() {
    let e = live!();
    let s = create(&e, &[]);
    let mut child = cmd(&e)
        .args(["sandbox", "metrics", "-f", &s.1, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stamps = Vec::new();
    // The server samples every 5 s: two samples within 20 s.
    for _ in 0..2 {
        let line = lines.next().expect("a sample").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["memTotal"].as_i64().unwrap() > 0, "{v}");
        stamps.push(v["timestampUnix"].as_i64().unwrap());
    }
    assert!(stamps[1] > stamps[0], "each sample once, in order: {stamps:?}");
    text(&run(&e, &["sandbox", "kill", &s.1]));
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the follower did not end with the sandbox");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
}
