"""PTY through the official SDK (spec §2.4 pty rows; mirrors E2B's tests/sync/sandbox_sync/pty/*)."""

import time

import pytest

from e2b import CommandExitException, Sandbox
from e2b.sandbox.commands.command_handle import PtySize


def _collect(chunks: list):
    return lambda data: chunks.append(bytes(data))


def _text(chunks: list) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


def test_pty_create_and_send_input(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    assert terminal.pid > 0
    sandbox.pty.send_stdin(terminal.pid, b"echo pty-$((40+2))\nexit\n")
    output = []
    result = terminal.wait(on_pty=_collect(output))
    assert result.exit_code == 0
    # the shell echoes the typed line and prints the expansion
    assert "pty-42" in _text(output)


def test_pty_send_input_exit(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    sandbox.pty.send_stdin(terminal.pid, b"exit\n")
    result = terminal.wait()
    assert result.exit_code == 0


def test_pty_is_a_terminal_with_sdk_env(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    sandbox.pty.send_stdin(terminal.pid, b'test -t 0 && echo "tty:$TERM:$(whoami)"\nexit\n')
    output = []
    terminal.wait(on_pty=_collect(output))
    assert "tty:xterm-256color:user" in _text(output)


def test_resize_tput(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    sandbox.pty.send_stdin(terminal.pid, b"tput cols\nexit\n")
    output = []
    result = terminal.wait(on_pty=_collect(output))
    assert result.exit_code == 0
    assert "80" in _text(output)

    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    sandbox.pty.resize(terminal.pid, PtySize(cols=100, rows=24))
    sandbox.pty.send_stdin(terminal.pid, b"tput cols\nexit\n")
    output = []
    result = terminal.wait(on_pty=_collect(output))
    assert result.exit_code == 0
    assert "100" in _text(output)


def test_resize_stty_size(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    sandbox.pty.send_stdin(terminal.pid, b"echo \"size=$(stty size)\"\n")
    # wait until the first answer is visible, then resize and ask again
    output = []
    for _, _, pty in terminal:
        if pty:
            output.append(bytes(pty))
            if "size=24 80" in _text(output):
                break
    assert "size=24 80" in _text(output)
    sandbox.pty.resize(terminal.pid, PtySize(cols=132, rows=43))
    sandbox.pty.send_stdin(terminal.pid, b"echo \"size=$(stty size)\"\nexit\n")
    result = terminal.wait(on_pty=_collect(output))
    assert result.exit_code == 0
    assert "size=43 132" in _text(output)


def test_pty_kill(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    pid = terminal.pid
    assert sandbox.pty.kill(pid) is True
    with pytest.raises(CommandExitException) as exc_info:
        terminal.wait()
    assert exc_info.value.exit_code == -1
    deadline = time.monotonic() + 3
    while pid in [p.pid for p in sandbox.commands.list()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in [p.pid for p in sandbox.commands.list()]
    assert sandbox.pty.kill(pid) is False


def test_pty_connect(sandbox: Sandbox):
    terminal = sandbox.pty.create(PtySize(cols=80, rows=24))
    connected = sandbox.pty.connect(terminal.pid)
    assert connected.pid == terminal.pid
    sandbox.pty.send_stdin(terminal.pid, b"echo from-$((6*7))\nexit\n")
    output = []
    result = connected.wait(on_pty=_collect(output))
    assert result.exit_code == 0
    assert "from-42" in _text(output)
