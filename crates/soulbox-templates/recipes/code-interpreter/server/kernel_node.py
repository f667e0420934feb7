"""The `javascript` and `typescript` kernels of code-interpreter-v1: one node process per context running
node_driver.cjs (state kept between executions; the last expression's value is the result). The kernelspec's
env says which language (SOULBOX_NODE_LANGUAGE)."""

from __future__ import annotations

import json
import os
import subprocess

from ipykernel.kernelapp import IPKernelApp

from process_kernel import ProcessKernel

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_driver.cjs")
LANGUAGE = os.environ.get("SOULBOX_NODE_LANGUAGE", "javascript")


class NodeKernel(ProcessKernel):
    language = LANGUAGE
    language_info = {
        "name": LANGUAGE,
        "mimetype": "text/typescript" if LANGUAGE == "typescript" else "text/javascript",
        "file_extension": ".ts" if LANGUAGE == "typescript" else ".js",
    }

    def child_argv(self) -> list[str]:
        return ["node", DRIVER]

    def send_cell(self, child: subprocess.Popen, code: str) -> None:
        child.stdin.write((json.dumps({"code": code}) + "\n").encode())
        child.stdin.flush()


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=NodeKernel)
