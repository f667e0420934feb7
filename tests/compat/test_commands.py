"""Commands through the official SDK (spec §2.4, §5; mirrors E2B's tests/sync/sandbox_sync/commands/*)."""

import grp
import os
import pwd
import time

import pytest

from e2b import (
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
    TimeoutException,
)

from conftest import HOME, INIT_ENVS


# --- run -------------------------------------------------------------------------------------------------------------


def test_run(sandbox: Sandbox):
    text = "Hello, World!"
    cmd = sandbox.commands.run(f'echo "{text}"')
    assert cmd.exit_code == 0
    assert cmd.stdout == f"{text}\n"
    assert cmd.stderr == ""
    assert cmd.error is None


def test_run_with_special_characters(sandbox: Sandbox):
    text = "!@#$%^&*()_+"
    cmd = sandbox.commands.run(f'echo "{text}"')
    assert cmd.exit_code == 0
    assert cmd.stdout == f"{text}\n"


def test_run_with_multiline_string(sandbox: Sandbox):
    text = "Hello,\nWorld!"
    cmd = sandbox.commands.run(f'echo "{text}"')
    assert cmd.exit_code == 0
    assert cmd.stdout == f"{text}\n"


def test_run_stdout_and_stderr(sandbox: Sandbox):
    cmd = sandbox.commands.run("echo out; echo err 1>&2")
    assert cmd.exit_code == 0
    assert cmd.stdout == "out\n"
    assert cmd.stderr == "err\n"


def test_run_non_zero_exit_raises(sandbox: Sandbox):
    with pytest.raises(CommandExitException) as exc_info:
        sandbox.commands.run("echo out; echo err 1>&2; exit 3")
    err = exc_info.value
    assert err.exit_code == 3
    assert err.stdout == "out\n"
    assert err.stderr == "err\n"
    # envd: EndEvent.error = cmd.Wait() error text (spec §2.4)
    assert err.error == "exit status 3"


def test_run_with_broken_utf8(sandbox: Sandbox):
    # 8191 'a' characters followed by the lone byte 0xe2 (spec §5, E2B test_run_with_broken_utf8).
    long_str = "a" * 8191 + "\\xe2"
    result = sandbox.commands.run(f'printf "{long_str}"')
    assert result.exit_code == 0
    assert result.stdout == ("a" * 8191 + "\ufffd")


def test_run_long_output(sandbox: Sandbox):
    # Several MB across many envelopes (envd reads in <= 32 KiB chunks): nothing lost, nothing reordered.
    cmd = sandbox.commands.run("seq 1 200000")
    assert cmd.exit_code == 0
    assert cmd.stdout == "".join(f"{i}\n" for i in range(1, 200001))

    cmd = sandbox.commands.run("head -c 3000000 /dev/zero | tr '\\0' 'a'")
    assert len(cmd.stdout) == 3_000_000
    assert set(cmd.stdout) == {"a"}


def test_run_with_timeout(sandbox: Sandbox):
    cmd = sandbox.commands.run('echo "Hello, World!"', timeout=10)
    assert cmd.exit_code == 0


def test_run_with_too_short_timeout(sandbox: Sandbox):
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 10", timeout=2)
    assert time.monotonic() - started < 8


def test_run_with_too_short_timeout_iterating(sandbox: Sandbox):
    cmd = sandbox.commands.run("sleep 10", timeout=2, background=True)
    with pytest.raises(TimeoutException):
        for _ in cmd:
            pass


def test_timeout_is_the_process_lifetime(sandbox: Sandbox):
    # Connect-Timeout-Ms is the process deadline on envd's side (spec §2.3 "Timeouts"): the process is killed.
    handle = sandbox.commands.run("sleep 30", timeout=1, background=True)
    pid = handle.pid
    handle.disconnect()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        if pid not in [p.pid for p in sandbox.commands.list()]:
            break
        time.sleep(0.2)
    alive = pid in [p.pid for p in sandbox.commands.list()]
    if alive:
        sandbox.commands.kill(pid)
    assert not alive, "process outlived its Connect-Timeout-Ms deadline"


# --- background, callbacks, streaming --------------------------------------------------------------------------------


def test_background_and_wait(sandbox: Sandbox):
    handle = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert handle.pid > 0
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "done\n"


def test_on_stdout_on_stderr_callbacks(sandbox: Sandbox):
    out, err = [], []
    result = sandbox.commands.run(
        "echo a; sleep 0.1; echo b; echo c 1>&2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "a\nb\n"
    assert "".join(err) == "c\n"
    assert result.stdout == "a\nb\n"
    assert result.stderr == "c\n"


def test_output_is_streamed_not_buffered(sandbox: Sandbox):
    # The first line must arrive while the process is still sleeping (events flushed as they happen).
    handle = sandbox.commands.run("echo first; sleep 3; echo second", background=True)
    started = time.monotonic()
    first_at = None
    for stdout, _, _ in handle:
        if stdout and "first" in stdout:
            first_at = time.monotonic() - started
            break
    assert first_at is not None
    assert first_at < 2, f"first output arrived after {first_at:.2f}s"
    result = handle.wait()
    assert "second" in result.stdout


def test_disconnect_does_not_kill(sandbox: Sandbox):
    handle = sandbox.commands.run("sleep 30", background=True)
    handle.disconnect()
    time.sleep(0.3)
    try:
        assert handle.pid in [p.pid for p in sandbox.commands.list()]
    finally:
        sandbox.commands.kill(handle.pid)


# --- stdin -----------------------------------------------------------------------------------------------------------


def test_send_stdin_to_process(sandbox: Sandbox):
    cmd = sandbox.commands.run("cat", background=True, stdin=True)
    try:
        sandbox.commands.send_stdin(cmd.pid, "Hello, World!")
        for stdout, _, _ in cmd:
            assert stdout == "Hello, World!"
            break
    finally:
        sandbox.commands.kill(cmd.pid)


def test_send_special_characters_to_process(sandbox: Sandbox):
    cmd = sandbox.commands.run("cat", background=True, stdin=True)
    try:
        sandbox.commands.send_stdin(cmd.pid, "!@#$%^&*()_+")
        for stdout, _, _ in cmd:
            assert stdout == "!@#$%^&*()_+"
            break
    finally:
        sandbox.commands.kill(cmd.pid)


def test_send_multiline_string_to_process(sandbox: Sandbox):
    cmd = sandbox.commands.run("cat", background=True, stdin=True)
    try:
        sandbox.commands.send_stdin(cmd.pid, "Hello,\nWorld!")
        for stdout, _, _ in cmd:
            assert stdout == "Hello,\nWorld!"
            break
    finally:
        sandbox.commands.kill(cmd.pid)


def test_close_stdin(sandbox: Sandbox):
    cmd = sandbox.commands.run("cat; echo eof", background=True, stdin=True)
    sandbox.commands.send_stdin(cmd.pid, "abc")
    sandbox.commands.close_stdin(cmd.pid)
    result = cmd.wait()
    assert result.exit_code == 0
    assert result.stdout == "abceof\n"


def test_stdin_off_by_default(sandbox: Sandbox):
    # run() sends "stdin": false => /dev/null, so `cat` ends at once instead of hanging.
    result = sandbox.commands.run("cat", timeout=10)
    assert result.exit_code == 0
    assert result.stdout == ""


# --- kill, list, connect ---------------------------------------------------------------------------------------------


def test_kill_process(sandbox: Sandbox):
    cmd = sandbox.commands.run("sleep 10", background=True)
    pid = cmd.pid
    assert sandbox.commands.kill(pid) is True
    with pytest.raises(CommandExitException):
        sandbox.commands.run(f"kill -0 {pid}")
    # The killed process's stream ends with a signal end event: exitCode -1 (spec §2.4).
    with pytest.raises(CommandExitException) as exc_info:
        cmd.wait()
    assert exc_info.value.exit_code == -1


def test_kill_non_existing_process(sandbox: Sandbox):
    assert sandbox.commands.kill(999999) is False


def test_list(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    handle = sandbox.commands.run("sleep 30", background=True, envs={"LISTED": "yes"}, cwd=name)
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert handle.pid in procs
        info = procs[handle.pid]
        assert info.cmd == "/bin/bash"
        assert info.args == ["-l", "-c", "sleep 30"]
        assert info.envs.get("LISTED") == "yes"
        assert info.cwd == name
        assert info.tag is None
    finally:
        sandbox.commands.kill(handle.pid)
    handle_pids = [p.pid for p in sandbox.commands.list()]
    # A killed process is no longer addressable once it has exited.
    deadline = time.monotonic() + 3
    while handle.pid in handle_pids and time.monotonic() < deadline:
        time.sleep(0.1)
        handle_pids = [p.pid for p in sandbox.commands.list()]
    assert handle.pid not in handle_pids


def test_connect_to_running_process(sandbox: Sandbox):
    handle = sandbox.commands.run("sleep 1; echo hello; sleep 0.2; echo world 1>&2", background=True)
    connected = sandbox.commands.connect(handle.pid)
    assert connected.pid == handle.pid
    result = connected.wait()
    assert result.exit_code == 0
    assert result.stdout == "hello\n"
    assert result.stderr == "world\n"
    # Several subscribers at once: the original stream got the same events.
    original = handle.wait()
    assert original.stdout == "hello\n"
    assert original.stderr == "world\n"


def test_late_connect_gets_end_event(sandbox: Sandbox):
    # The end event of a finished process stays available for a late Connect (spec §2.4: start + end).
    handle = sandbox.commands.run("exit 7", background=True)
    with pytest.raises(CommandExitException):
        handle.wait()
    late = sandbox.commands.connect(handle.pid)
    assert late.pid == handle.pid
    with pytest.raises(CommandExitException) as exc_info:
        late.wait()
    assert exc_info.value.exit_code == 7


def test_connect_to_non_existing_process(sandbox: Sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(999999)


# --- env vars --------------------------------------------------------------------------------------------------------


def test_command_envs(sandbox: Sandbox):
    cmd = sandbox.commands.run("echo $FOO", envs={"FOO": "bar"})
    assert cmd.stdout.strip() == "bar"


def test_bash_command_scoped_env_vars(sandbox: Sandbox):
    cmd = sandbox.commands.run("echo $FOO", envs={"FOO": "bar"})
    assert cmd.exit_code == 0
    assert cmd.stdout.strip() == "bar"

    # not accessible to subsequent commands (and sudo works for the default user)
    cmd2 = sandbox.commands.run('sudo echo "$FOO"')
    assert cmd2.exit_code == 0
    assert cmd2.stdout.strip() == ""


def test_python_command_scoped_env_vars(sandbox: Sandbox):
    cmd = sandbox.commands.run("python3 -c \"import os; print(os.environ['FOO'])\"", envs={"FOO": "bar"})
    assert cmd.exit_code == 0
    assert cmd.stdout.strip() == "bar"


def test_sandbox_level_env_vars(sandbox: Sandbox):
    assert INIT_ENVS, "run.sh passes envVars in the init JSON"
    for key, value in INIT_ENVS.items():
        cmd = sandbox.commands.run(f'printf %s "${key}"')
        assert cmd.stdout == value
    # per-call env vars win over sandbox-level ones, and only for that call
    key, value = next(iter(INIT_ENVS.items()))
    cmd = sandbox.commands.run(f'printf %s "${key}"', envs={key: "overridden"})
    assert cmd.stdout == "overridden"
    cmd = sandbox.commands.run(f'printf %s "${key}"')
    assert cmd.stdout == value


def test_access_token_not_leaked_to_processes(sandbox: Sandbox):
    from conftest import TOKEN

    cmd = sandbox.commands.run("env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n' || true")
    assert TOKEN not in cmd.stdout


# --- cwd -------------------------------------------------------------------------------------------------------------


def test_default_cwd_is_home(sandbox: Sandbox):
    assert sandbox.commands.run("pwd").stdout.strip() == HOME


def test_cwd_absolute_and_relative(sandbox: Sandbox, name):
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout.strip() == "/tmp"
    sandbox.files.make_dir(f"{name}/sub")
    # relative cwd is resolved against the user's home
    assert sandbox.commands.run("pwd", cwd=f"{name}/sub").stdout.strip() == f"{HOME}/{name}/sub"
    assert sandbox.commands.run("pwd", cwd=f"~/{name}").stdout.strip() == f"{HOME}/{name}"


def test_cwd_missing(sandbox: Sandbox):
    with pytest.raises(InvalidArgumentException):
        sandbox.commands.run("pwd", cwd="/definitely/not/here")


# --- users -----------------------------------------------------------------------------------------------------------


def _expected_id(user: str) -> tuple:
    pw = pwd.getpwnam(user)
    groups = sorted(set(os.getgrouplist(user, pw.pw_gid)))
    return pw.pw_uid, pw.pw_gid, groups, pw.pw_dir


def test_default_user(sandbox: Sandbox):
    assert sandbox.commands.run("whoami").stdout.strip() == "user"
    uid, gid, groups, home = _expected_id("user")
    assert sandbox.commands.run("id -u").stdout.strip() == str(uid)
    assert sandbox.commands.run("id -g").stdout.strip() == str(gid)
    assert sorted(int(g) for g in sandbox.commands.run("id -G").stdout.split()) == groups
    env = sandbox.commands.run('printf "%s:%s:%s" "$HOME" "$USER" "$LOGNAME"').stdout
    assert env == f"{home}:user:user"


def test_root_user(sandbox: Sandbox):
    assert sandbox.commands.run("whoami", user="root").stdout.strip() == "root"
    assert sandbox.commands.run("id -u", user="root").stdout.strip() == "0"
    env = sandbox.commands.run('printf "%s:%s:%s" "$HOME" "$USER" "$LOGNAME"', user="root").stdout
    assert env == f"{pwd.getpwnam('root').pw_dir}:root:root"
    # root's default cwd: template default workdir if set (envd /init defaultWorkdir), spec §2.4
    assert sandbox.commands.run("pwd", user="root").stdout.strip() == HOME


def test_explicit_user(sandbox: Sandbox):
    assert sandbox.commands.run("whoami", user="user").stdout.strip() == "user"


def test_unknown_user(sandbox: Sandbox):
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("true", user="no_such_user_xyz")


def test_sudo(sandbox: Sandbox):
    cmd = sandbox.commands.run("sudo -n whoami")
    assert cmd.exit_code == 0
    assert cmd.stdout.strip() == "root"


def test_umask_022(sandbox: Sandbox, name):
    cmd = sandbox.commands.run(f"mkdir {name} && touch {name}/f && stat -c %a {name} {name}/f")
    assert cmd.stdout.split() == ["755", "644"]
    info = sandbox.files.get_info(f"{name}/f")
    assert info.owner == "user" and info.group == "user"
    assert grp.getgrnam("user")  # the group exists on the host that envd runs on


# --- StreamInput (client stream; Python SDK 2.63+ only) --------------------------------------------------------------

needs_stream_input = pytest.mark.skipif(
    not hasattr(Sandbox.create().commands, "stream_input"), reason="this e2b SDK has no commands.stream_input"
)


@needs_stream_input
def test_stream_input(sandbox: Sandbox):
    cmd = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(cmd.pid, iter(["Hello, ", b"streamed ", "World!"]))
    sandbox.commands.close_stdin(cmd.pid)
    result = cmd.wait()
    assert result.exit_code == 0
    assert result.stdout == "Hello, streamed World!"


@needs_stream_input
def test_stream_input_unknown_pid(sandbox: Sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.stream_input(999999, iter(["x"]))


@needs_stream_input
def test_pty_stream_input(sandbox: Sandbox):
    from e2b.sandbox.commands.command_handle import PtySize

    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    sandbox.pty.stream_input(terminal.pid, iter([b"echo stre", b"amed-$((40+2))\n", b"exit\n"]))
    chunks = []
    result = terminal.wait(on_pty=lambda d: chunks.append(bytes(d)))
    assert result.exit_code == 0
    assert "streamed-42" in b"".join(chunks).decode("utf-8", "replace")
