//! The process service over real HTTP: the router on 127.0.0.1:0 in-process, a raw HTTP/1.1 client (`harness.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use crate::state::InitRequest;

mod harness;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_echo_with_exit_codes_and_stderr() {
    let s = server().await;
    let (_, c) = run(&s, start_msg("/bin/echo", &["hello"])).await;
    assert_eq!(c.out(), "hello\n");
    assert_eq!(c.end, Some(json!({"exited": true, "status": "exit status 0"})));

    let (_, c) = run(&s, sh("echo oops >&2; exit 7")).await;
    assert_eq!(c.stderr, b"oops\n");
    assert_eq!(
        c.end,
        Some(json!({"exitCode": 7, "exited": true, "status": "exit status 7", "error": "exit status 7"}))
    );

    // A command that cannot be executed is a start error.
    let mut events = Events::open(s.addr, "Start", start_msg("/no/such/binary", &[]), &[]).await;
    assert!(events.next().await.is_none());
    assert_eq!(events.end.as_ref().unwrap()["error"]["code"], "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_built_per_call_and_never_leaks() {
    let s = server().await;
    let vars = BTreeMap::from([("A".to_owned(), "sandbox".to_owned()), ("B".to_owned(), "sandbox".to_owned())]);
    s.state.update_config(InitRequest { env_vars: Some(vars), ..Default::default() });
    let mut msg = sh("echo \"$A $B $USER $LOGNAME $PATH\"; env");
    msg["process"]["envs"] = json!({"B": "call"});
    let (_, c) = run(&s, msg).await;
    let out = c.out();
    let first = out.lines().next().unwrap();
    assert_eq!(first, format!("sandbox call root root {}", super::spawn::DEFAULT_PATH));
    assert!(!out.contains("CARGO_"), "envd's own environment leaked: {out}");

    let (_, c) = run(&s, sh("echo \"$A $B\"")).await;
    assert_eq!(c.out(), "sandbox sandbox\n", "per-call env leaked into a later call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwd_rules_and_unknown_users() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut msg = start_msg("/bin/pwd", &[]);
    msg["process"]["cwd"] = json!(dir.path());
    let (_, c) = run(&s, msg).await;
    assert_eq!(c.out().trim(), dir.path().to_str().unwrap());

    let home = crate::users::Accounts::load().user("root").unwrap().home;
    let mut msg = start_msg("/bin/pwd", &[]);
    msg["process"]["cwd"] = json!("~");
    assert_eq!(run(&s, msg).await.1.out().trim(), home.to_str().unwrap());

    for (cwd, shown) in [
        ("/definitely/not/here", "/definitely/not/here".to_owned()),
        ("not-here-rel", format!("{}/not-here-rel", home.display())),
    ] {
        let mut msg = start_msg("/bin/pwd", &[]);
        msg["process"]["cwd"] = json!(cwd);
        let mut events = Events::open(s.addr, "Start", msg, &[]).await;
        assert!(events.next().await.is_none());
        let error = &events.end.as_ref().unwrap()["error"];
        assert_eq!(error["code"], "invalid_argument");
        assert_eq!(error["message"], format!("cwd '{shown}' does not exist"));
    }

    let basic = format!("Basic {}", B64.encode("nosuchuser:"));
    let mut events = Events::open(s.addr, "Start", start_msg("/bin/true", &[]), &[("authorization", &basic)]).await;
    assert!(events.next().await.is_none());
    assert_eq!(
        events.end.unwrap()["error"],
        json!({"code": "unauthenticated", "message": "invalid username: 'nosuchuser'"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_another_user_with_its_groups() {
    let accounts = crate::users::Accounts::load();
    let Some(nobody) = accounts.user("nobody") else {
        eprintln!("skipping: no user 'nobody' in /etc/passwd");
        return;
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: not running as root");
        return;
    }
    let s = server().await;
    let basic = format!("Basic {}", B64.encode("nobody:"));
    let mut msg = sh("id -u; id -g; id -G; echo $HOME $USER");
    msg["process"]["cwd"] = json!("/");
    let mut events = Events::open(s.addr, "Start", msg, &[("authorization", &basic)]).await;
    events.start_pid().await;
    let c = events.collect().await;
    let out = c.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string());
    assert_eq!(lines[1], nobody.gid.to_string());
    let mut groups: Vec<u32> = lines[2].split(' ').map(|g| g.parse().unwrap()).collect();
    groups.sort_unstable();
    assert_eq!(groups, nobody.groups, "supplementary groups");
    assert_eq!(lines[3], format!("{} nobody", nobody.home.display()));
}

/// Root's processes get no_new_privs (a chain that drops privileges cannot climb back through setuid
/// binaries); other users' do not (`sudo` from `user` must keep working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privs_for_root_processes_only() {
    let accounts = crate::users::Accounts::load();
    let (Some(root), Some(nobody)) = (accounts.user("root"), accounts.user("nobody")) else {
        eprintln!("skipping: no users 'root' and 'nobody' in /etc/passwd");
        return;
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: not running as root");
        return;
    }
    assert!(super::spawn::no_new_privs_for(&root) && !super::spawn::no_new_privs_for(&nobody));
    let s = server().await;
    for (user, want) in [("root", "1"), ("nobody", "0")] {
        let basic = format!("Basic {}", B64.encode(format!("{user}:")));
        let mut msg = sh("sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status");
        msg["process"]["cwd"] = json!("/");
        let mut events = Events::open(s.addr, "Start", msg, &[("authorization", &basic)]).await;
        events.start_pid().await;
        assert_eq!(events.collect().await.out().trim(), want, "NoNewPrivs of a process started as {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_send_close_and_disabled() {
    let s = server().await;
    let mut events = Events::open(s.addr, "Start", start_msg("/bin/cat", &[]), &[]).await;
    let pid = events.start_pid().await;
    let sel = json!({"pid": pid});
    let (status, _) =
        unary(s.addr, "SendInput", json!({"process": sel, "input": {"stdin": B64.encode("abc")}}), &[]).await;
    assert_eq!(status, 200);
    // Input through the client-streaming RPC too.
    let mut body = envelope(0, &json!({"start": {"process": sel}}));
    body.extend(envelope(0, &json!({"data": {"input": {"stdin": B64.encode("def")}}})));
    body.extend(envelope(0, &json!({"keepalive": {}})));
    body.extend(envelope(2, &json!({})));
    let (status, resp) = request(s.addr, "/process.Process/StreamInput", "application/connect+json", &body, &[]).await;
    assert_eq!(status, 200);
    let resp = resp.all().await;
    assert_eq!(&resp[resp.len() - 2..], b"{}");
    let (status, _) = unary(s.addr, "CloseStdin", json!({"process": sel}), &[]).await;
    assert_eq!(status, 200);
    let c = events.collect().await;
    assert_eq!(c.out(), "abcdef");
    assert_eq!(c.end.unwrap()["status"], "exit status 0");

    // stdin: false ⇒ /dev/null (cat ends at once); input is refused.
    let mut msg = start_msg("/bin/sh", &["-c", "cat; sleep 5"]);
    msg["stdin"] = json!(false);
    let mut events = Events::open(s.addr, "Start", msg, &[]).await;
    let pid = events.start_pid().await;
    let (status, err) =
        unary(s.addr, "SendInput", json!({"process": {"pid": pid}, "input": {"stdin": "YQ=="}}), &[]).await;
    assert_eq!(status, 500);
    assert_eq!(err["code"], "internal");
    assert!(err["message"].as_str().unwrap().contains("stdin not enabled or closed"), "{err}");
    let (status, _) = unary(s.addr, "SendInput", json!({"process": {"pid": pid}, "input": {"pty": "YQ=="}}), &[]).await;
    assert_eq!(status, 500);
    let (status, _) =
        unary(s.addr, "SendSignal", json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}), &[]).await;
    assert_eq!(status, 200);
    events.collect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_output_input_and_resize() {
    let s = server().await;
    let mut msg = sh("stty size; read x; stty size; echo got:$x");
    msg["pty"] = json!({"size": {"cols": 80, "rows": 24}});
    let mut events = Events::open(s.addr, "Start", msg, &[]).await;
    let pid = events.start_pid().await;
    let sel = json!({"pid": pid});
    // Wait for the first `stty size` before resizing.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("24 80") {
        let event = events.next().await.unwrap();
        seen.extend(B64.decode(event["data"]["pty"].as_str().unwrap()).unwrap());
    }
    let (status, _) =
        unary(s.addr, "Update", json!({"process": sel, "pty": {"size": {"cols": 100, "rows": 30}}}), &[]).await;
    assert_eq!(status, 200);
    let (status, err) = unary(s.addr, "SendInput", json!({"process": sel, "input": {"stdin": "YQ=="}}), &[]).await;
    assert_eq!((status, err["code"].as_str()), (500, Some("internal")));
    let (status, err) = unary(s.addr, "CloseStdin", json!({"process": sel}), &[]).await;
    assert_eq!((status, err["code"].as_str()), (500, Some("unknown")));
    let (status, _) =
        unary(s.addr, "SendInput", json!({"process": sel, "input": {"pty": B64.encode("hi\n")}}), &[]).await;
    assert_eq!(status, 200);
    let c = events.collect().await;
    let out = String::from_utf8_lossy(&c.pty);
    assert!(out.contains("30 100"), "{out:?}");
    assert!(out.contains("got:hi"), "{out:?}");
    assert!(c.stdout.is_empty() && c.stderr.is_empty());
    assert_eq!(c.end.unwrap()["status"], "exit status 0");

    // Resizing a process without a pty is an error.
    let mut events = Events::open(s.addr, "Start", start_msg("/bin/cat", &[]), &[]).await;
    let pid = events.start_pid().await;
    let (status, _) =
        unary(s.addr, "Update", json!({"process": {"pid": pid}, "pty": {"size": {"cols": 1, "rows": 1}}}), &[]).await;
    assert_eq!(status, 500);
    unary(s.addr, "CloseStdin", json!({"process": {"pid": pid}}), &[]).await;
    events.collect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_end_the_process_group() {
    let s = server().await;
    // bash does not exec the last command here, so `sleep` is a child: it must die with the group.
    let mut events =
        Events::open(s.addr, "Start", start_msg("/bin/bash", &["-c", "sleep 100 & echo $!; wait"]), &[]).await;
    let pid = events.start_pid().await;
    let first = events.next().await.unwrap();
    let child: u64 = String::from_utf8(B64.decode(first["data"]["stdout"].as_str().unwrap()).unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (status, _) =
        unary(s.addr, "SendSignal", json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}), &[]).await;
    assert_eq!(status, 200);
    let c = events.collect().await;
    assert_eq!(c.end, Some(json!({"exitCode": -1, "status": "signal: killed", "error": "signal: killed"})));
    assert!(wait_gone(child).await, "the child in the process group survived");

    let mut events = Events::open(s.addr, "Start", start_msg("/bin/sleep", &["100"]), &[]).await;
    let pid = events.start_pid().await;
    let (status, err) =
        unary(s.addr, "SendSignal", json!({"process": {"pid": pid}, "signal": "SIGNAL_UNSPECIFIED"}), &[]).await;
    assert_eq!((status, err["code"].as_str()), (501, Some("unimplemented")));
    unary(s.addr, "SendSignal", json!({"process": {"pid": pid}, "signal": 15}), &[]).await;
    assert_eq!(events.collect().await.end.unwrap()["status"], "signal: terminated");

    let (status, err) =
        unary(s.addr, "SendSignal", json!({"process": {"pid": 999_999_999u32}, "signal": "SIGNAL_SIGKILL"}), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(err, json!({"code": "not_found", "message": "process with pid 999999999 not found"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_header_kills_and_client_close_does_not() {
    let s = server().await;
    let started = Instant::now();
    let mut events =
        Events::open(s.addr, "Start", start_msg("/bin/sleep", &["100"]), &[("connect-timeout-ms", "300")]).await;
    let pid = events.start_pid().await;
    assert!(events.next().await.is_none());
    assert_eq!(events.end.unwrap()["error"]["code"], "deadline_exceeded");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(wait_gone(pid).await, "the process outlived its deadline");

    // Closing the Start stream leaves the process running.
    let mut msg = start_msg("/bin/sleep", &["100"]);
    msg["tag"] = json!("keeper");
    let mut events = Events::open(s.addr, "Start", msg, &[]).await;
    let pid = events.start_pid().await;
    drop(events);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pid_gone(pid));
    let (_, list) = unary(s.addr, "List", json!({}), &[]).await;
    let entry = list["processes"].as_array().unwrap().iter().find(|p| p["pid"] == pid).cloned().unwrap();
    assert_eq!(entry["tag"], "keeper");
    assert_eq!(entry["config"], json!({"cmd": "/bin/sleep", "args": ["100"]}));
    unary(s.addr, "SendSignal", json!({"process": {"tag": "keeper"}, "signal": "SIGNAL_SIGKILL"}), &[]).await;
    assert!(wait_gone(pid).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_pid_and_tag_fans_out_and_late_connect_gets_the_end() {
    let s = server().await;
    let mut msg = sh("read a; echo $a; read b; echo $b >&2; exit 4");
    msg["tag"] = json!("fan");
    let mut start = Events::open(s.addr, "Start", msg, &[]).await;
    let pid = start.start_pid().await;
    let mut by_pid = Events::open(s.addr, "Connect", json!({"process": {"pid": pid}}), &[]).await;
    let mut by_tag = Events::open(s.addr, "Connect", json!({"process": {"tag": "fan"}}), &[]).await;
    assert_eq!(by_pid.start_pid().await, pid);
    assert_eq!(by_tag.start_pid().await, pid);
    unary(s.addr, "SendInput", json!({"process": {"pid": pid}, "input": {"stdin": B64.encode("one\ntwo\n")}}), &[])
        .await;
    for events in [&mut start, &mut by_pid, &mut by_tag] {
        let c = events.collect().await;
        assert_eq!((c.out().as_str(), c.stderr.as_slice()), ("one\n", b"two\n".as_slice()));
        assert_eq!(c.end.unwrap()["exitCode"], 4);
        assert_eq!(events.end, Some(json!({})));
    }

    // Finished: not listed, not signalable, but a late Connect still gets start + end.
    let (_, list) = unary(s.addr, "List", json!({}), &[]).await;
    assert!(!list.to_string().contains(&format!("\"pid\":{pid}")));
    let (status, _) =
        unary(s.addr, "SendSignal", json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}), &[]).await;
    assert_eq!(status, 404);
    let mut late = Events::open(s.addr, "Connect", json!({"process": {"tag": "fan"}}), &[]).await;
    assert_eq!(late.start_pid().await, pid);
    assert_eq!(late.collect().await.end.unwrap()["status"], "exit status 4");

    let mut missing = Events::open(s.addr, "Connect", json!({"process": {"pid": 999_999_999u32}}), &[]).await;
    assert!(missing.next().await.is_none());
    assert_eq!(
        missing.end.unwrap()["error"],
        json!({"code": "not_found", "message": "process with pid 999999999 not found"})
    );
    let mut missing = Events::open(s.addr, "Connect", json!({"process": {"tag": "nope"}}), &[]).await;
    assert!(missing.next().await.is_none());
    assert_eq!(missing.end.unwrap()["error"]["message"], "process with tag nope not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_arrives_on_the_requested_interval() {
    let s = server().await;
    let mut events =
        Events::open(s.addr, "Start", start_msg("/bin/sleep", &["1.5"]), &[("keepalive-ping-interval", "1")]).await;
    events.start_pid().await;
    let c = events.collect().await;
    assert_eq!(c.keepalives, 1);
    assert_eq!(c.end.unwrap()["status"], "exit status 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_grandchild_does_not_hold_the_command_open() {
    let s = server().await;
    let started = Instant::now();
    let (_, c) = run(&s, sh("sleep 3 & echo done")).await;
    assert_eq!(c.out(), "done\n");
    assert!(started.elapsed() < Duration::from_secs(2), "end waited for the background job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_arrives_whole_in_bounded_chunks() {
    let s = server().await;
    let mut events = Events::open(s.addr, "Start", sh("head -c 3000000 /dev/zero | tr '\\0' a"), &[]).await;
    events.start_pid().await;
    let mut total = 0;
    while let Some(event) = events.next().await {
        if let Some(b) = event["data"]["stdout"].as_str() {
            let chunk = B64.decode(b).unwrap();
            assert!(chunk.len() <= 32 * 1024);
            assert!(chunk.iter().all(|&c| c == b'a'));
            total += chunk.len();
        }
    }
    assert_eq!(total, 3_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_true_is_fast() {
    let s = server().await;
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        run(&s, start_msg("/bin/true", &[])).await;
        times.push(t.elapsed());
    }
    times.sort();
    let mut spawns = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        tokio::process::Command::new("/bin/true").status().await.unwrap();
        spawns.push(t.elapsed());
    }
    spawns.sort();
    eprintln!(
        "Start(/bin/true) round trip: p50 {:?}, p90 {:?}; plain spawn+wait p50 {:?} (debug build)",
        times[25], times[45], spawns[25]
    );
    assert!(times[25] < Duration::from_millis(50));
}

/// The program is looked up like `execvp` does, in the PATH of the process's own environment (the call's
/// `PATH` wins): a non-executable file earlier in PATH is skipped, a script without `#!` runs through
/// /bin/sh, and a file that cannot be executed at all is a start error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_lookup_follows_execvp() {
    use std::os::unix::fs::PermissionsExt;
    let s = server().await;
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let write = |dir: &tempfile::TempDir, name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(&first, "greet", "#!/bin/sh\necho not-executable\n", 0o644);
    write(&second, "greet", "#!/bin/sh\necho \"found $1\"\n", 0o755);
    write(&second, "bare", "echo \"no shebang $0 $1\"\n", 0o755);
    let path = format!("{}:{}", first.path().display(), second.path().display());

    let mut msg = start_msg("greet", &["it"]);
    msg["process"]["envs"] = json!({"PATH": path});
    assert_eq!(run(&s, msg).await.1.out(), "found it\n");

    let mut msg = start_msg("bare", &["arg"]);
    msg["process"]["envs"] = json!({"PATH": path});
    let script = second.path().join("bare");
    assert_eq!(run(&s, msg).await.1.out(), format!("no shebang {} arg\n", script.display()));

    // Without the call's PATH the default one applies: `echo` is /usr/bin/echo or /bin/echo.
    assert_eq!(run(&s, start_msg("echo", &["plain"])).await.1.out(), "plain\n");

    for (cmd, why) in [(first.path().join("greet"), "Permission denied"), (first.path().join("none"), "No such file")] {
        let mut events = Events::open(s.addr, "Start", start_msg(cmd.to_str().unwrap(), &[]), &[]).await;
        assert!(events.next().await.is_none());
        let error = &events.end.as_ref().unwrap()["error"];
        assert_eq!(error["code"], "invalid_argument");
        assert!(error["message"].as_str().unwrap().contains(why), "{error}");
    }
}

/// The child starts with no blocked signals and SIGPIPE at its default (envd ignores it, as Rust programs do),
/// whatever envd's own signal state: a shell pipeline into `head` must end its writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_signal_state_is_clean() {
    let s = server().await;
    let (_, c) = run(&s, start_msg("/bin/grep", &["-E", "^Sig(Blk|Ign):", "/proc/self/status"])).await;
    let out = c.out();
    let field = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(field("SigBlk:"), 0, "blocked signals leaked into the child: {out}");
    assert_eq!(field("SigIgn:") & (1 << (13 - 1)), 0, "SIGPIPE is ignored in the child: {out}");
    // Killed by SIGPIPE (128 + 13), not a write error of its own (1) as with SIGPIPE ignored.
    let (_, c) = run(&s, start_msg("/bin/bash", &["-c", "yes | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}"])).await;
    assert_eq!(c.out(), "141\n");
}
