"""The `bash` kernel of code-interpreter-v1: one bash per context, so variables, functions and the working
directory carry over between executions. A cell runs with `source` (its stdin is /dev/null: bash's own stdin
carries the cells); a non-zero status of its last command is the execution's error, as in Jupyter's bash_kernel."""

from __future__ import annotations

import os
import subprocess
import tempfile

from ipykernel.kernelapp import IPKernelApp

from process_kernel import ProcessKernel

# SIGINT ends the running cell (the `return` leaves the sourced file) and leaves the shell and its state alone.
SETUP = "trap 'return 130 2>/dev/null' INT\n"


class BashKernel(ProcessKernel):
    language = "bash"
    language_info = {"name": "bash", "mimetype": "text/x-sh", "file_extension": ".sh"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._cells = tempfile.mkdtemp(prefix="soulbox-bash-")

    def child_argv(self) -> list[str]:
        return ["bash", "--noprofile", "--norc"]

    def child_started(self, child: subprocess.Popen) -> None:
        child.stdin.write(SETUP.encode())
        child.stdin.flush()

    def send_cell(self, child: subprocess.Popen, code: str) -> None:
        cell = os.path.join(self._cells, "cell.sh")
        with open(cell, "w", encoding="utf-8") as f:
            f.write(code if code.endswith("\n") else code + "\n")
        control = self.child_control_fd
        ok = '{"type":"done","status":"ok"}'
        failed = '{"type":"done","status":"error","ename":"ExitError","evalue":"exit status \'$__sbx_status\'","traceback":[]}'
        line = (
            f"source {cell} </dev/null; __sbx_status=$?; "
            f"if [ $__sbx_status = 0 ]; then echo '{ok}' >&{control}; else echo '{failed}' >&{control}; fi\n"
        )
        child.stdin.write(line.encode())
        child.stdin.flush()

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=BashKernel)

