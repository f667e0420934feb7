"""A Jupyter kernel around one long-lived child process (bash, node) that keeps a context's state between
executions. The execution service drives it like any Jupyter kernel (contexts.py); the child gets each cell
through its stdin and says where an execution ended on a control pipe of its own, so the cell's stdout and stderr
stay the user's alone and stream as they come.

Control lines are JSON: `{"type": "result", "data": {mime: value}}` (the cell's value), `{"type": "display",
"data": {mime: value}}` (a value shown beside it, display_data) and
`{"type": "done", "status": "ok"}` or `{"type": "done", "status": "error", "ename", "evalue", "traceback"}`.

An interrupt (SIGINT to the kernel's process group, so the child and what it runs get it too) ends the cell in the
child; a child that does not say so within INTERRUPT_GRACE_S is killed and started again on the next execution."""

from __future__ import annotations

import codecs
import json
import os
import selectors
import subprocess
import time
from typing import Any, Optional

from ipykernel.kernelbase import Kernel

INTERRUPT_GRACE_S = 5
READ_CHUNK = 65536


class ProcessKernel(Kernel):
    implementation = "soulbox"
    implementation_version = "1"
    banner = ""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._child: Optional[subprocess.Popen] = None
        self._control_fd = -1
        self._control_buf = b""
        # The control pipe's number in the child (pass_fds keeps it): where the child writes control lines.
        self.child_control_fd = -1

    # What a subclass says: its child's command line, and how a cell reaches the child.
    def child_argv(self) -> list[str]:
        raise NotImplementedError

    def send_cell(self, child: subprocess.Popen, code: str) -> None:
        raise NotImplementedError

    def child_started(self, child: subprocess.Popen) -> None:
        pass

    def _start_child(self) -> subprocess.Popen:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, SOULBOX_CONTROL_FD=str(write_fd))
        child = subprocess.Popen(
            self.child_argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=env,
        )
        os.close(write_fd)
        self.child_control_fd = write_fd
        for fd in (child.stdout.fileno(), child.stderr.fileno(), read_fd):
            os.set_blocking(fd, False)
        self._child, self._control_fd, self._control_buf = child, read_fd, b""
        self.child_started(child)
        return child

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
        os.close(self._control_fd)
        self._control_fd = -1

    def do_execute(
        self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, *, cell_id=None
    ) -> dict[str, Any]:
        child = self._child if self._child is not None and self._child.poll() is None else None
        if child is None:
            self._stop_child()
            child = self._start_child()
        try:
            self.send_cell(child, code)
            done = self._pump(child, silent)
        except BrokenPipeError:
            done = None
        if done is None:  # the child is gone: its state with it
            status = child.wait()
            self._stop_child()
            done = {
                "status": "error",
                "ename": "ProcessExited",
                "evalue": f"the {self.language_info['name']} process exited (status {status}); "
                "the next execution starts a new one, without this context's state",
                "traceback": [],
            }
        if done.get("status") != "error":
            return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}
        error = {
            "ename": str(done.get("ename", "Error")),
            "evalue": str(done.get("evalue", "")),
            "traceback": [str(t) for t in done.get("traceback", [])],
        }
        if not silent:
            self.send_response(self.iopub_socket, "error", error)
        return {"status": "error", "execution_count": self.execution_count, **error}

    def _pump(self, child: subprocess.Popen, silent: bool) -> Optional[dict[str, Any]]:
        """Streams the child's output until it says the cell is done (that message), or exits (None)."""
        decoders = {
            child.stdout.fileno(): ("stdout", codecs.getincrementaldecoder("utf-8")("replace")),
            child.stderr.fileno(): ("stderr", codecs.getincrementaldecoder("utf-8")("replace")),
        }
        selector = selectors.DefaultSelector()
        for fd in (*decoders, self._control_fd):
            selector.register(fd, selectors.EVENT_READ)
        give_up_at: Optional[float] = None
        try:
            while True:
                try:
                    timeout = None if give_up_at is None else max(0.0, give_up_at - time.monotonic())
                    ready = selector.select(timeout)
                    if give_up_at is not None and not ready and time.monotonic() >= give_up_at:
                        child.kill()
                        return None
                    for key, _ in ready:
                        if key.fd == self._control_fd:
                            done = self._read_control(silent)
                            if done is not None:
                                self._drain(decoders, silent)  # the cell's last output came before "done"
                                return done if done != {} else None
                        else:
                            self._forward(key.fd, decoders, silent)
                except KeyboardInterrupt:
                    # The child got the same SIGINT: wait a bounded time for it to end the cell.
                    give_up_at = time.monotonic() + INTERRUPT_GRACE_S
        finally:
            selector.close()

    def _read_control(self, silent: bool) -> Optional[dict[str, Any]]:
        """The done message once it arrived; {} when the child closed the pipe (it exited)."""
        try:
            chunk = os.read(self._control_fd, READ_CHUNK)
        except BlockingIOError:
            return None
        if not chunk:
            return {}
        self._control_buf += chunk
        while b"\n" in self._control_buf:
            line, self._control_buf = self._control_buf.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("type") == "done":
                return message
            if message.get("type") == "result" and not silent:
                content = {"execution_count": self.execution_count, "data": message.get("data", {}), "metadata": {}}
                self.send_response(self.iopub_socket, "execute_result", content)
            elif message.get("type") == "display" and not silent:
                content = {"data": message.get("data", {}), "metadata": {}, "transient": {}}
                self.send_response(self.iopub_socket, "display_data", content)
        return None

    def _forward(self, fd: int, decoders: dict, silent: bool) -> bool:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            return False
        name, decoder = decoders[fd]
        text = decoder.decode(chunk)
        if text and not silent:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})
        return True

    def _drain(self, decoders: dict, silent: bool) -> None:
        for fd in decoders:
            while self._forward(fd, decoders, silent):
                pass

    def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self._stop_child()
        return {"status": "ok", "restart": restart}
